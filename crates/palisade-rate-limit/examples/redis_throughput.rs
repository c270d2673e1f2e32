//! Redis decisions per second at 50 concurrent callers, next to `redis-benchmark -c 50` running a trivial EVAL
//! on the same machine, in the same run.
//!
//! ```text
//! cargo run --release -p palisade-rate-limit --features redis --example redis_throughput [-- <redis-url> <n>]
//! ```

use std::time::{Duration, Instant};

use palisade_rate_limit::RateLimitLayer;
use palisade_rate_limit::redis::RedisStore;
use tower::{Layer, Service, ServiceExt};

const CONCURRENCY: usize = 50;

#[tokio::main]
async fn main() -> Result<(), tower::BoxError> {
    let mut args = std::env::args().skip(1);
    let url = args.next().unwrap_or_else(|| "redis://127.0.0.1:6379".to_owned());
    let total: usize = args.next().and_then(|n| n.parse().ok()).unwrap_or(200_000);
    let conn = palisade_store::redis::connect(&url).await?;
    let prefix = format!("palisade-bench:{}:", std::process::id());
    let layer = RateLimitLayer::builder()
        .rate(1_000_000_000, Duration::from_secs(1))
        .key_by(|k: &u64| *k)
        .redis(RedisStore::new(conn.clone()).prefix(prefix.clone()))
        .build()?;
    let svc = layer.layer(tower::service_fn(|_: u64| async { Ok::<_, tower::BoxError>(()) }));

    // Warm up (loads the script).
    svc.clone().oneshot(0).await?;
    let started = Instant::now();
    let tasks: Vec<_> = (0..CONCURRENCY)
        .map(|t| {
            let mut svc = svc.clone();
            tokio::spawn(async move {
                let mut admitted = 0usize;
                for i in 0..total / CONCURRENCY {
                    let key = (t * 1_000 + i % 100) as u64;
                    if svc.ready().await?.call(key).await.is_ok() {
                        admitted += 1;
                    }
                }
                Ok::<_, tower::BoxError>(admitted)
            })
        })
        .collect();
    let mut admitted = 0;
    for t in tasks {
        admitted += t.await??;
    }
    let elapsed = started.elapsed();
    let ours = (total / CONCURRENCY * CONCURRENCY) as f64 / elapsed.as_secs_f64();
    println!("palisade GCRA decisions: {ours:.0}/s at {CONCURRENCY} concurrent ({admitted} admitted in {elapsed:.2?})");

    // Clean up our keys.
    let mut c = conn.clone();
    let keys: Vec<String> = redis::cmd("KEYS").arg(format!("{prefix}*")).query_async(&mut c).await?;
    if !keys.is_empty() {
        let _: () = redis::cmd("DEL").arg(keys).query_async(&mut c).await?;
    }

    // The reference, on the same machine and server.
    let (host, port) = host_port(&url);
    let out = std::process::Command::new("redis-benchmark")
        .args(["-h", &host, "-p", &port, "-c", "50", "-n", &total.to_string(), "-q", "eval", "return 1", "0"])
        .output();
    match out {
        Ok(out) => {
            let text = String::from_utf8_lossy(&out.stdout);
            let line = text.split('\r').rfind(|l| l.contains("requests per second")).unwrap_or("").trim();
            println!("redis-benchmark -c 50 -n {total} eval \"return 1\" 0: {line}");
            let words: Vec<&str> = line.split_whitespace().collect();
            let theirs = words.windows(2).find(|w| w[1] == "requests").and_then(|w| w[0].parse::<f64>().ok());
            if let Some(theirs) = theirs {
                println!("ratio: {:.2}x", ours / theirs);
            }
        }
        Err(e) => println!("redis-benchmark not run: {e}"),
    }
    Ok(())
}

fn host_port(url: &str) -> (String, String) {
    let rest = url.trim_start_matches("redis://");
    let hostport = rest.split('/').next().unwrap_or("127.0.0.1:6379");
    let hostport = hostport.rsplit('@').next().unwrap_or(hostport);
    match hostport.rsplit_once(':') {
        Some((h, p)) => (h.to_owned(), p.to_owned()),
        None => (hostport.to_owned(), "6379".to_owned()),
    }
}
