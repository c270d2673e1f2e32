//! Captured-subscriber tests: a card number logged through a message, a field, a span field, the `Debug` of a
//! request and a third-party target never reaches the output; the audit layer records one scrubbed event per call.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use palisade_core::PaymentError;
use palisade_redaction::{
    AuditLayer, HttpAuditLayer, PanFormat, RedactingFields, RedactingMakeWriter, Redactor, Sensitive,
};
use palisade_testkit::{LogCapture, assert_no_card_numbers};
use tower::{ServiceBuilder, ServiceExt};

const PAN: &str = "4242424242424242";

/// A request type whose derived `Debug` prints a raw card number, like much third-party code does.
#[derive(Debug, Clone)]
#[allow(dead_code)] // fields are read through Debug only
struct LegacyChargeRequest {
    amount: u64,
    card_number: String,
    cvv: String,
    note: String,
}

fn legacy() -> LegacyChargeRequest {
    LegacyChargeRequest {
        amount: 1000,
        card_number: "4111 1111 1111 1111".into(),
        cvv: "123".into(),
        note: format!("customer read {PAN} over the phone, security code 987"),
    }
}

fn log_everything() {
    let span = tracing::info_span!("checkout", card = PAN, order = "o-1");
    let _e = span.enter();
    tracing::info!("customer card {PAN} on file");
    tracing::info!(card = PAN, "field");
    tracing::info!(card = %PAN, "display field");
    tracing::warn!(request = ?legacy(), "debug of a request");
    tracing::info!(target: "hyper::proto::h1", "third-party crate logged {}", "5555-5555-5555-4444");
    tracing::info!(secret = ?Sensitive::new(PAN), "sensitive field");
}

fn scrubbed_capture(redactor: Redactor) -> (LogCapture, impl tracing::Subscriber + Send + Sync) {
    let cap = LogCapture::new();
    let sub = tracing_subscriber::fmt()
        .with_ansi(false)
        .with_max_level(tracing::Level::TRACE)
        .with_writer(RedactingMakeWriter::new(redactor, cap.clone()))
        .finish();
    (cap, sub)
}

#[test]
fn the_unscrubbed_control_does_leak() {
    // Without the wrapper the same logging leaks, so the tests below can fail.
    let cap = LogCapture::new();
    cap.run(log_everything);
    assert!(cap.contents().contains(PAN));
    assert!(std::panic::catch_unwind(|| assert_no_card_numbers(&cap.contents())).is_err());
}

#[test]
fn make_writer_scrubs_message_fields_spans_debug_and_third_party_output() {
    let (cap, sub) = scrubbed_capture(Redactor::new());
    tracing::subscriber::with_default(sub, log_everything);
    let out = cap.contents();
    assert_no_card_numbers(&out);
    assert_eq!(out.lines().count(), 6, "{out}");
    assert!(out.contains("customer card ************4242 on file"), "{out}");
    assert!(out.contains("card=\"************4242\""), "{out}");
    assert!(out.contains("**** **** **** 1111"), "{out}");
    assert!(out.contains("cvv: \"***\""), "{out}");
    assert!(out.contains("security code ***"), "{out}");
    assert!(out.contains("****-****-****-4444"), "{out}");
    assert!(out.contains("secret=[REDACTED]"), "{out}");
    assert!(out.contains("checkout{card=\"************4242\""), "span field: {out}");
}

#[test]
fn field_level_option_scrubs_fields_without_a_wrapped_writer() {
    let cap = LogCapture::new();
    let sub = tracing_subscriber::fmt()
        .with_ansi(false)
        .fmt_fields(RedactingFields::new(Redactor::builder().pan_format(PanFormat::Full).build()))
        .with_writer(cap.clone())
        .finish();
    tracing::subscriber::with_default(sub, || {
        let span = tracing::info_span!("pay", card = PAN);
        let _e = span.enter();
        tracing::info!(note = "card 5555555555554444", "message {PAN}");
        // Fields named like card data are hidden whatever their value (a 3-digit CVV is no card number).
        tracing::info!(cardNumber = "4111 1111 1111 1111", cvv = 123, r#type = "sale", amount = 5, "named");
    });
    let out = cap.contents();
    assert_no_card_numbers(&out);
    assert!(out.contains("pay{card=\"[REDACTED_PAN]\"}"), "{out}");
    assert!(out.contains("message [REDACTED_PAN] note=\"card [REDACTED_PAN]\""), "{out}");
    assert!(out.contains("named cardNumber=[REDACTED] cvv=[REDACTED] type=\"sale\" amount=5"), "{out}");
}

#[test]
fn install_sets_the_global_subscriber_once() {
    assert!(palisade_redaction::install().is_ok());
    let again = palisade_redaction::install();
    assert!(again.is_err());
    let msg = again.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(msg.contains("RedactingMakeWriter"), "{msg}");
}

#[tokio::test(start_paused = true)]
async fn audit_layer_records_one_scrubbed_event_per_call_with_outcome_and_duration() {
    // The audit layer redacts on its own: the capture's writer is NOT wrapped here, so this proves the layer.
    let plain = LogCapture::new();
    let plain_sub = tracing_subscriber::fmt().with_ansi(false).with_writer(plain.clone()).finish();
    let _g = tracing::subscriber::set_default(plain_sub);
    let svc = ServiceBuilder::new().layer(AuditLayer::builder().service_name("legacy-gw").build()).service_fn(
        |req: LegacyChargeRequest| async move {
            tokio::time::sleep(Duration::from_millis(250)).await;
            match req.amount {
                1000 => Ok(format!("charged card {}", req.card_number)),
                2000 => Err(PaymentError::declined("do_not_honor")),
                _ => Err(PaymentError::timeout("read timed out")),
            }
        },
    );
    let ok = svc.clone().oneshot(legacy()).await;
    assert!(ok.is_ok());
    let declined = svc.clone().oneshot(LegacyChargeRequest { amount: 2000, ..legacy() }).await;
    assert!(declined.is_err());
    let lost = svc.clone().oneshot(LegacyChargeRequest { amount: 3000, ..legacy() }).await;
    assert!(lost.is_err());
    let out = plain.contents();
    assert_no_card_numbers(&out);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    assert!(lines.iter().all(|l| l.contains("palisade::audit") && l.contains("service=\"legacy-gw\"")), "{out}");
    assert!(lines.iter().all(|l| l.contains("duration_ms=250")), "{out}");
    assert!(lines[0].contains(" INFO ") && lines[0].contains("outcome=\"success\""), "{out}");
    assert!(lines[0].contains("result=\"\\\"charged card **** **** **** 1111\\\"\""), "{out}");
    assert!(lines[0].contains("security code ***"), "{out}");
    assert!(lines[1].contains(" INFO ") && lines[1].contains("outcome=\"terminal\""), "{out}");
    assert!(lines[2].contains(" WARN ") && lines[2].contains("outcome=\"unknown\""), "{out}");
}

/// A request that counts how often it is rendered (its `Debug`), shared by its clones.
#[derive(Clone)]
struct Counted {
    amount: u64,
    renders: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl std::fmt::Debug for Counted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.renders.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        write!(f, "charge {} on card {PAN}", self.amount)
    }
}

/// A capture of what a subscriber at WARN (a service logging warnings and errors) writes, set as this thread's
/// default while the guard lives.
fn capture_at_warn() -> (LogCapture, tracing::subscriber::DefaultGuard) {
    let cap = LogCapture::new();
    let sub = tracing_subscriber::fmt()
        .with_ansi(false)
        .with_max_level(tracing::Level::WARN)
        .with_writer(cap.clone())
        .finish();
    (cap, tracing::subscriber::set_default(sub))
}

#[tokio::test(start_paused = true)]
async fn a_subscriber_at_warn_gets_failed_calls_and_no_success_is_rendered() {
    let (cap, _g) = capture_at_warn();
    let svc = ServiceBuilder::new().layer(AuditLayer::builder().service_name("gw").build()).service_fn(
        |req: Counted| async move {
            match req.amount {
                1000 => Ok("charged"),
                2000 => Err(PaymentError::declined("do_not_honor")),
                3000 => Err(PaymentError::timeout("read timed out")),
                _ => std::future::pending().await,
            }
        },
    );
    let renders = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let req = |amount| Counted { amount, renders: renders.clone() };
    let rendered = || renders.load(std::sync::atomic::Ordering::SeqCst);

    // A success and a decline are INFO events, which this subscriber drops: nothing is rendered for them.
    assert!(svc.clone().oneshot(req(1000)).await.is_ok());
    assert!(svc.clone().oneshot(req(2000)).await.is_err());
    assert_eq!(rendered(), 0, "a request was rendered for an event nobody records");
    assert_eq!(cap.contents(), "");

    // A timeout (unknown outcome) is a WARN event: the request kept at the call is rendered once, masked.
    assert!(svc.clone().oneshot(req(3000)).await.is_err());
    assert_eq!(rendered(), 1);
    // A call dropped before it completes is recorded as cancelled, with its request.
    let gave_up = tokio::time::timeout(Duration::from_secs(1), svc.clone().oneshot(req(4000))).await;
    assert!(gave_up.is_err());
    assert_eq!(rendered(), 2);

    let out = cap.contents();
    assert_no_card_numbers(&out);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert!(lines[0].contains(" WARN ") && lines[0].contains("outcome=\"unknown\""), "{out}");
    assert!(lines[0].contains("charge 3000 on card ************4242") && lines[0].contains("read timed out"), "{out}");
    assert!(lines[1].contains("charge 4000 on card ************4242"), "{out}");
    assert!(lines[1].contains(palisade_redaction::CANCELLED), "{out}");
}

#[tokio::test(start_paused = true)]
async fn http_mode_at_warn_records_failed_and_cancelled_calls_with_their_kept_request() {
    let (cap, _g) = capture_at_warn();
    let layer: HttpAuditLayer = AuditLayer::builder().service_name("api").http().build();
    let svc = ServiceBuilder::new().layer(layer).service_fn(|req: http::Request<Full<Bytes>>| async move {
        let status = match req.uri().path() {
            "/ok" => 200,
            "/busy" => 503,
            _ => std::future::pending().await,
        };
        let res = http::Response::builder()
            .status(status)
            .body(Full::new(Bytes::from_static(b"{\"card\":\"5555555555554444\"}")));
        Ok::<_, Box<dyn std::error::Error + Send + Sync>>(res?)
    });
    let req = |path: &str| {
        http::Request::post(format!("{path}?pan={PAN}"))
            .header("authorization", "Bearer sk_live_123")
            .body(Full::new(Bytes::from_static(br#"{"card_number":"4111111111111111","amount":500}"#)))
            .unwrap_or_default()
    };
    // A success is an INFO event, which this subscriber drops.
    let ok = svc.clone().oneshot(req("/ok")).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(ok.status(), 200);
    assert_eq!(cap.contents(), "");
    // A 503 (retriable) is a WARN event, with the request as it was sent, redacted.
    let busy = svc.clone().oneshot(req("/busy")).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(busy.status(), 503);
    // A call dropped before it completes is recorded as cancelled, with its request.
    let gave_up = tokio::time::timeout(Duration::from_secs(1), svc.clone().oneshot(req("/hang"))).await;
    assert!(gave_up.is_err());

    let out = cap.contents();
    assert_no_card_numbers(&out);
    assert!(!out.contains("sk_live_123"), "{out}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert!(lines[0].contains(" WARN ") && lines[0].contains("outcome=\"retriable\""), "{out}");
    assert!(lines[0].contains("POST /busy?pan=************4242"), "{out}");
    assert!(lines[0].contains("authorization: [REDACTED]") && lines[0].contains("amount"), "{out}");
    assert!(lines[0].contains("result=\"503 Service Unavailable"), "{out}");
    assert!(
        lines[1].contains("POST /hang?pan=************4242") && lines[1].contains(palisade_redaction::CANCELLED),
        "{out}"
    );
}

#[tokio::test]
async fn http_mode_masks_secret_headers_and_bodies() {
    let plain = LogCapture::new();
    let _g = tracing::subscriber::set_default(plain.subscriber());
    let layer: HttpAuditLayer = AuditLayer::builder().service_name("api").http().build();
    let svc = ServiceBuilder::new().layer(layer).service_fn(|req: http::Request<Full<Bytes>>| async move {
        let body = req.into_body().collect().await?.to_bytes();
        // The inner service sees the body unchanged.
        assert!(body.windows(16).any(|w| w == b"4111111111111111"));
        let res = http::Response::builder()
            .status(503)
            .header("set-cookie", "session=abc")
            .header("retry-after", "3")
            .body(Full::new(Bytes::from_static(b"{\"error\":\"busy\",\"card\":\"5555555555554444\"}")))?;
        Ok::<_, Box<dyn std::error::Error + Send + Sync>>(res)
    });
    let req = http::Request::post("/v1/charges?pan=4242424242424242")
        .header("authorization", "Bearer sk_live_123")
        .header("stripe-signature", "t=1,v1=deadbeef")
        .header("webhook-signature", "v1,abc")
        .header("cookie", "sid=xyz")
        .header("x-note", "cvv=123")
        .body(Full::new(Bytes::from_static(br#"{"Card_Number":"4111111111111111","cvc":"123","amount":500}"#)))
        .unwrap_or_default();
    let res = svc.oneshot(req).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(res.status(), 503);
    let body = res.into_body().collect().await.unwrap_or_else(|e| panic!("{e}")).to_bytes();
    assert!(body.starts_with(b"{\"error\":\"busy\""), "response body passed on unchanged");
    let out = plain.contents();
    assert_no_card_numbers(&out);
    for secret in ["sk_live_123", "deadbeef", "v1,abc", "sid=xyz", "session=abc", "cvv=123"] {
        assert!(!out.contains(secret), "{secret} leaked: {out}");
    }
    assert!(out.contains("authorization: [REDACTED]"), "{out}");
    assert!(out.contains("stripe-signature: [REDACTED]") && out.contains("webhook-signature: [REDACTED]"), "{out}");
    assert!(out.contains("x-note: cvv=***"), "{out}");
    assert!(out.contains("amount") && !out.contains("Card_Number"), "{out}");
    assert!(out.contains("outcome=\"retriable\""), "{out}");
    assert!(out.contains("pan=************4242"), "{out}");
}

#[tokio::test(start_paused = true)]
async fn a_call_dropped_by_a_timeout_is_still_audited_as_unknown() {
    let plain = LogCapture::new();
    let _g = tracing::subscriber::set_default(plain.subscriber());
    let svc = ServiceBuilder::new().layer(AuditLayer::new()).service_fn(|_req: LegacyChargeRequest| async {
        tokio::time::sleep(Duration::from_secs(60)).await;
        Ok::<_, PaymentError>(())
    });
    let r = tokio::time::timeout(Duration::from_secs(5), svc.oneshot(legacy())).await;
    assert!(r.is_err(), "timed out");
    let out = plain.contents();
    assert_no_card_numbers(&out);
    assert_eq!(out.lines().count(), 1, "{out}");
    assert!(out.contains("outcome=\"unknown\"") && out.contains("cancelled before completion"), "{out}");
    assert!(out.contains("duration_ms=5000"), "{out}");
}

#[tokio::test(start_paused = true)]
async fn an_http_call_dropped_by_a_timeout_is_still_audited_as_unknown() {
    let plain = LogCapture::new();
    let _g = tracing::subscriber::set_default(plain.subscriber());
    let svc = ServiceBuilder::new().layer(AuditLayer::builder().http().build()).service_fn(
        |_req: http::Request<Full<Bytes>>| async {
            tokio::time::sleep(Duration::from_secs(60)).await;
            Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(Bytes::new())))
        },
    );
    let req = http::Request::post("/charges").body(Full::new(Bytes::from_static(b"card 4111111111111111")));
    let r = tokio::time::timeout(Duration::from_secs(2), svc.oneshot(req.unwrap_or_default())).await;
    assert!(r.is_err(), "timed out");
    let out = plain.contents();
    assert_no_card_numbers(&out);
    assert_eq!(out.lines().count(), 1, "{out}");
    assert!(out.contains("outcome=\"unknown\"") && out.contains("body: card ************1111"), "{out}");
}

/// A request as third-party code often carries one: the raw JSON it will send, and a note typed with no-break
/// spaces. Its derived `Debug` escapes both (`\"cvc\":\"987\"`, `4111\u{a0}1111…`).
#[derive(Debug, Clone)]
#[allow(dead_code)] // fields are read through Debug only
struct RawJsonRequest {
    raw: String,
    note: String,
}

/// Debug output escapes quotes and writes a no-break space as `\u{a0}`; neither hides card data from the audit
/// layer or the redacting writer.
#[tokio::test]
async fn escaped_text_in_debug_output_is_scrubbed() {
    let req = RawJsonRequest {
        raw: r#"{"amount":500,"card_cvc":"987","cvc":"986","number":"5555 5555 5555 4444"}"#.into(),
        note: "card 4111\u{a0}1111\u{a0}1111\u{a0}1111".into(),
    };
    let plain = LogCapture::new();
    let sub = tracing_subscriber::fmt().with_ansi(false).with_writer(plain.clone()).finish();
    let _g = tracing::subscriber::set_default(sub);
    let svc = ServiceBuilder::new()
        .layer(AuditLayer::builder().build())
        .service_fn(|_req: RawJsonRequest| async { Ok::<_, PaymentError>("ok") });
    svc.oneshot(req.clone()).await.unwrap_or_else(|e| panic!("{e}"));
    let (cap, sub) = scrubbed_capture(Redactor::new());
    tracing::subscriber::with_default(sub, || tracing::info!(request = ?req, "debug of a request"));
    for out in [plain.contents(), cap.contents()] {
        assert_no_card_numbers(&out);
        for secret in ["987", "986", "4111\\u{a0}1111\\u{a0}1111\\u{a0}1111", "5555 5555 5555 4444"] {
            assert!(!out.contains(secret), "{secret} leaked: {out}");
        }
        assert!(out.contains("1111") && out.contains("amount"), "{out}");
    }
}

/// A form-encoded charge (Stripe's API takes `card[number]=…&card[cvc]=…`) in the query and the body: the
/// brackets are percent-encoded and spaces are `+`.
#[tokio::test]
async fn http_mode_scrubs_form_encoded_cards() {
    let plain = LogCapture::new();
    let _g = tracing::subscriber::set_default(plain.subscriber());
    let svc = ServiceBuilder::new().layer(AuditLayer::builder().http().build()).service_fn(
        |_req: http::Request<Full<Bytes>>| async {
            Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(Bytes::from_static(b"{}"))))
        },
    );
    let req = http::Request::post("/v1/charges?card%5Bnumber%5D=4242+4242+4242+4242&card%5Bcvc%5D=123&amount=500")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Full::new(Bytes::from_static(b"card%5Bnumber%5D=4111+1111+1111+1111&card%5Bcvc%5D=987&amount=500")))
        .unwrap_or_default();
    svc.oneshot(req).await.unwrap_or_else(|e| panic!("{e}"));
    let out = plain.contents();
    for secret in ["4242+4242+4242+4242", "cvc%5D=123", "4111+1111+1111+1111", "987"] {
        assert!(!out.contains(secret), "{secret} leaked: {out}");
    }
    assert!(out.contains("****+****+****+4242") && out.contains("card%5Bcvc%5D=***"), "{out}");
}

/// A request body over the buffer limit is refused with 413 before the inner service runs; one under it passes.
#[tokio::test]
async fn http_mode_refuses_a_body_over_the_buffer_limit() {
    let calls = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen = calls.clone();
    let svc = ServiceBuilder::new().layer(AuditLayer::builder().http().body_buffer_limit(1024).build()).service_fn(
        move |_req: http::Request<Full<Bytes>>| {
            seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            async { Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(Bytes::new()))) }
        },
    );
    let big = http::Request::post("/v1/charges").body(Full::new(Bytes::from(vec![b'x'; 1025]))).unwrap_or_default();
    let res = svc.clone().oneshot(big).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(res.status(), 413);
    let body = res.into_body().collect().await.unwrap_or_else(|e| panic!("{e}")).to_bytes();
    assert!(String::from_utf8_lossy(&body).contains("payload_too_large"), "{body:?}");
    assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 0);
    let small = http::Request::post("/v1/charges").body(Full::new(Bytes::from(vec![b'x'; 1024]))).unwrap_or_default();
    assert_eq!(svc.oneshot(small).await.unwrap_or_else(|e| panic!("{e}")).status(), 200);
    assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 1);
}
