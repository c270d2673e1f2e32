//! The checkout walkthrough: each scenario tells what happens at a payment gateway, runs it through Palisade
//! over the simulated gateway, and checks its own claim. The program exits non-zero if any claim fails.
//!
//! ```text
//! cargo run --example checkout                                    # in-memory stores
//! PALISADE_REDIS_URL=redis://127.0.0.1:6379 cargo run --example checkout   # Redis-backed stores
//! ```

mod report;

// Scenarios, one module per layer, in the order they run below.
mod breaker;
mod foundation;
mod idempotency;
mod rate_limit;
mod reconciliation;
mod redaction;
mod retry;
mod saga;
mod webhook;

use report::Report;

/// What every scenario may use.
pub struct Env {
    /// Redis URL when `PALISADE_REDIS_URL` is set; scenarios with stores use Redis then, memory otherwise.
    pub redis_url: Option<String>,
}

#[tokio::main]
async fn main() {
    let env = Env { redis_url: std::env::var("PALISADE_REDIS_URL").ok().filter(|s| !s.is_empty()) };
    match &env.redis_url {
        Some(url) => println!("Palisade checkout walkthrough (stores: Redis at {url})\n"),
        None => println!("Palisade checkout walkthrough (stores: in memory; set PALISADE_REDIS_URL for Redis)\n"),
    }
    let mut report = Report::default();

    foundation::successful_charge(&mut report, &env).await;
    foundation::decline_is_terminal(&mut report, &env).await;
    foundation::lost_response_is_unknown(&mut report, &env).await;
    retry::transient_failure_recovers(&mut report, &env).await;
    idempotency::idempotent_replay(&mut report, &env).await;
    breaker::outage_opens_and_recovers(&mut report, &env).await;
    rate_limit::card_testing_is_throttled(&mut report, &env).await;
    webhook::webhook_handling(&mut report, &env).await;
    redaction::log_redaction(&mut report, &env).await;
    saga::transient_failure_saga_completes(&mut report, &env).await;
    saga::compensation_in_reverse_order(&mut report, &env).await;
    reconciliation::reconciliation(&mut report, &env).await;

    std::process::exit(report.finish());
}
