//! Tracing events and (behind the `metrics` feature) counters, with stable names.
//!
//! Events: target `palisade_webhook`, fields `scheme`, `check` (a [`VerifyError::kind`](crate::VerifyError::kind)),
//! `event_id` (in delivery events the deduplication id: the event id, or `sha256:<hex>` of the body for GitHub),
//! `outcome`. Counters: `palisade_webhook_verifications_total{scheme, result}` and
//! `palisade_webhook_deliveries_total{outcome}`.

use crate::error::VerifyError;

/// A verification's result: the index of the secret that matched, or why it failed.
pub(crate) fn verified(scheme: &'static str, result: Result<usize, &VerifyError>) {
    match result {
        Ok(secret_index) => {
            tracing::debug!(target: "palisade_webhook", scheme, secret_index, "webhook signature verified");
        }
        Err(e) => {
            tracing::warn!(target: "palisade_webhook", scheme, check = e.kind(), "webhook rejected: {e}");
        }
    }
    #[cfg(feature = "metrics")]
    metrics::counter!(
        "palisade_webhook_verifications_total",
        "scheme" => scheme,
        "result" => match result { Ok(_) => "valid", Err(e) => e.kind() }
    )
    .increment(1);
}

pub(crate) fn delivery(outcome: &'static str, event_id: &str) {
    tracing::info!(target: "palisade_webhook", outcome, event_id, "webhook delivery");
    #[cfg(feature = "metrics")]
    metrics::counter!("palisade_webhook_deliveries_total", "outcome" => outcome).increment(1);
}
