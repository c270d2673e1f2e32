//! The checkout walkthrough: each scenario tells what happens at a payment gateway, runs it through Palisade
//! over the simulated gateway, and checks its own claim. The program exits non-zero if any claim fails.
//!
//! ```text
//! cargo run --example checkout                                    # in-memory stores
//! PALISADE_REDIS_URL=redis://127.0.0.1:6379 cargo run --example checkout   # Redis-backed stores
//! PALISADE_POSTGRES_URL=postgres://postgres@127.0.0.1:5432/postgres cargo run --example checkout
//!                                        # the idempotency records in PostgreSQL (a schema of their own)
//! ```

mod report;

// Scenarios, one module per layer, in the order they run below.
mod breaker;
mod foundation;
mod fraud;
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
    /// PostgreSQL URL when `PALISADE_POSTGRES_URL` is set; the idempotency scenario keeps its records there then
    /// (in a schema of its own, dropped at the end), ahead of Redis when both are set.
    pub postgres_url: Option<String>,
}

#[tokio::main]
async fn main() {
    let var = |name: &str| std::env::var(name).ok().filter(|s| !s.is_empty());
    let env = Env { redis_url: var("PALISADE_REDIS_URL"), postgres_url: var("PALISADE_POSTGRES_URL") };
    match (&env.redis_url, &env.postgres_url) {
        (Some(url), None) => println!("Palisade checkout walkthrough (stores: Redis at {url})\n"),
        (Some(url), Some(_)) => println!(
            "Palisade checkout walkthrough (stores: Redis at {url}; the idempotency scenario uses PostgreSQL)\n"
        ),
        (None, Some(_)) => println!(
            "Palisade checkout walkthrough (stores: PostgreSQL for the idempotency scenario, in memory otherwise)\n"
        ),
        (None, None) => println!(
            "Palisade checkout walkthrough (stores: in memory; set PALISADE_REDIS_URL for Redis, \
             PALISADE_POSTGRES_URL for PostgreSQL)\n"
        ),
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
    fraud::fraud_block(&mut report, &env).await;
    reconciliation::reconciliation(&mut report, &env).await;

    std::process::exit(report.finish());
}
