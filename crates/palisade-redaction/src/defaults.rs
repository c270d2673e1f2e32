//! Every default of `palisade-redaction` in one place, each with the reason for its value. They are re-exported where
//! they were always found (the crate root and their modules), so either path works.

/// The default `service` field: the layer sits in front of a payment gateway.
pub const DEFAULT_SERVICE_NAME: &str = "gateway";

/// Headers whose values are never logged, only named: credentials (`Authorization`, `Proxy-Authorization`,
/// `X-Api-Key`), session cookies (`Cookie`, `Set-Cookie`) and webhook signatures (`Stripe-Signature`,
/// `Webhook-Signature`, `X-Hub-Signature-256`), which let anyone holding one replay or forge a call.
pub const DEFAULT_SENSITIVE_HEADERS: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "cookie",
    "set-cookie",
    "x-api-key",
    "stripe-signature",
    "webhook-signature",
    "x-hub-signature-256",
];

/// How many bytes of each (already redacted) body the audit event keeps: 4 KiB shows a payment request or a
/// gateway answer whole, and keeps one event from flooding the log with an upload.
pub const DEFAULT_BODY_LOG_LIMIT: usize = 4096;
