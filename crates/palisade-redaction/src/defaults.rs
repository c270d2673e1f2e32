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

/// The largest request body HTTP mode buffers (1 MiB, as the idempotency layer's): the body must be read whole
/// to be logged and passed on, and an unbounded read lets one client hold any amount of memory. A larger request
/// is answered `413` problem+json before the inner service sees it, so nothing is charged. Responses are read
/// whole: the gateway has already acted on the request, and refusing its answer would turn a completed charge
/// into an unknown one.
pub const DEFAULT_BODY_BUFFER_LIMIT: usize = 1024 * 1024;
