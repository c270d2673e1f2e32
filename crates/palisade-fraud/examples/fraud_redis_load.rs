//! Decisions per second of the seed's 10-rule set (`benches/seed_rules.rs`, built-in rules) on the Redis velocity
//! store, `concurrency` decisions in flight at once (one connection, multiplexed, as an instance runs it). Each
//! decision is one EVALSHA (`tests/velocity.rs` counts it). `bench/fraud/run.sh` runs it next to
//! `redis-benchmark` running the same script at the same concurrency.
//!
//! Usage: `fraud_redis_load [url] [concurrency] [passes]` (defaults: `$PALISADE_REDIS_URL` or
//! redis://127.0.0.1:6379, 50, 1). Every pass assesses the 50k contexts, new attempts under a fresh namespace.
use std::sync::Arc;
use std::time::Instant;

use palisade_fraud::{FraudEngine, RedisVelocityStore};
use palisade_store::redis::RedisConnection;

#[path = "../benches/seed_rules.rs"]
mod seed_rules;
use seed_rules::{contexts, seed_engine_on};

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let default_url = std::env::var("PALISADE_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
    let url = args.get(1).cloned().unwrap_or(default_url);
    let concurrency: usize = args.get(2).and_then(|c| c.parse().ok()).unwrap_or(50);
    let passes: usize = args.get(3).and_then(|c| c.parse().ok()).unwrap_or(1);
    let conn = RedisConnection::connect(&url).await.expect("Redis answers");
    let ctxs = Arc::new(contexts());
    for pass in 0..passes {
        let ns = format!("load-{}-{pass}", std::process::id());
        let store = RedisVelocityStore::new(conn.clone()).prefix("palisade-bench:fraud:").namespace(ns);
        let engine: FraudEngine = seed_engine_on(store);
        let t = Instant::now();
        let mut tasks = Vec::new();
        for w in 0..concurrency {
            let (engine, ctxs) = (engine.clone(), ctxs.clone());
            tasks.push(tokio::spawn(async move {
                let mut unavailable = 0usize;
                for a in ctxs.iter().skip(w).step_by(concurrency) {
                    if !engine.assess(a).await.velocity_available {
                        unavailable += 1;
                    }
                }
                unavailable
            }));
        }
        let mut unavailable = 0;
        for t in tasks {
            unavailable += t.await.expect("task");
        }
        let dt = t.elapsed().as_secs_f64();
        assert_eq!(unavailable, 0, "every decision reached Redis");
        println!(
            "redis, {concurrency} concurrent: {:.0} decisions/s ({} decisions in {dt:.2} s)",
            ctxs.len() as f64 / dt,
            ctxs.len()
        );
        // Leave nothing behind: the namespace's keys.
        let mut c = redis::Client::open(url.as_str()).and_then(|c| c.get_connection()).expect("Redis answers");
        let keys: Vec<String> = redis::cmd("KEYS").arg("palisade-bench:fraud:*").query(&mut c).unwrap_or_default();
        for chunk in keys.chunks(1000) {
            let _: () = redis::cmd("DEL").arg(chunk).query(&mut c).unwrap_or(());
        }
    }
}
