//! The simulator over a real socket: `SimServer` on 127.0.0.1:0, driven through `HttpGateway` and raw TCP.
use std::time::Duration;

use palisade_core::*;
use palisade_sim::http::{HttpFault, HttpGateway, InvalidBaseUrlKind, SimHandle, SimServer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tower::{Service, ServiceExt};

fn charge(order: &str, amount: &str, token: &str, key: Option<&str>) -> GatewayRequest {
    palisade_testkit::charge(order).amount(amount).token(token).maybe_key(key).build()
}

fn key(k: &str) -> Option<IdempotencyKey> {
    Some(IdempotencyKey::new(k).unwrap())
}

async fn start(builder: palisade_sim::http::SimServerBuilder) -> (SimHandle, HttpGateway) {
    let server = builder.bind("127.0.0.1:0").await.unwrap();
    let (handle, _task) = server.spawn();
    let client = HttpGateway::new(&handle.base_url()).unwrap().timeout(Duration::from_secs(5));
    (handle, client)
}

async fn call(gw: &mut HttpGateway, req: GatewayRequest) -> Result<GatewayResponse, PaymentError> {
    gw.ready().await.unwrap().call(req).await
}

/// Sends raw HTTP/1.1 (with `Connection: close`) and returns everything the server wrote before closing.
async fn raw(handle: &SimHandle, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> String {
    let mut s = TcpStream::connect(handle.local_addr()).await.unwrap();
    let mut req =
        format!("{method} {path} HTTP/1.1\r\nhost: sim\r\nconnection: close\r\ncontent-length: {}\r\n", body.len());
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    // A reset (the server closing with unread data) is a close too; what was read before it is in `out`.
    let _ =
        tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await.expect("server answered or closed");
    String::from_utf8(out).unwrap()
}

async fn ledger_json(handle: &SimHandle) -> serde_json::Value {
    let res = raw(handle, "GET", "/v1/_sim/ledger", &[], "").await;
    assert!(res.starts_with("HTTP/1.1 200"), "{res}");
    let body = res.split_once("\r\n\r\n").unwrap().1;
    serde_json::from_str(body).unwrap()
}

const CHARGE_BODY: &str = r#"{"amount":"12.34","currency":"USD","source":"tok_visa","order_id":"raw-1"}"#;

#[tokio::test]
async fn a_duplicate_with_the_same_key_returns_the_same_charge_and_charges_once() {
    let (handle, mut gw) = start(SimServer::builder()).await;
    let first = call(&mut gw, charge("o1", "12.34", "tok_visa", Some("k1"))).await.unwrap();
    assert_eq!(first.operation, Operation::Charge);
    assert_eq!(first.status, PaymentStatus::Captured);
    assert_eq!(first.amount, Money::parse("12.34", Currency::USD).unwrap());
    assert_eq!(first.order_reference.as_str(), "o1");
    let again = call(&mut gw, charge("o1", "12.34", "tok_visa", Some("k1"))).await.unwrap();
    assert_eq!(again, first);
    assert_eq!(handle.sim().charges_for("o1").len(), 1);
    let ledger = ledger_json(&handle).await;
    assert_eq!(ledger.as_array().unwrap().len(), 1, "{ledger}");
    assert_eq!(ledger[0]["id"], first.id.as_str());
    assert_eq!(ledger[0]["idempotency_key"], "k1");

    // The same key with other parameters is refused (422), as the in-process simulator does.
    let e = call(&mut gw, charge("o1", "99.00", "tok_visa", Some("k1"))).await.unwrap_err();
    assert_eq!(e, PaymentError::IdempotencyConflict);
    // Without a key, every request is a new charge.
    call(&mut gw, charge("o2", "1.00", "tok_visa", None)).await.unwrap();
    call(&mut gw, charge("o2", "1.00", "tok_visa", None)).await.unwrap();
    assert_eq!(handle.sim().charges_for("o2").len(), 2);
}

#[tokio::test]
async fn lost_response_closes_the_connection_after_the_commit() {
    let (handle, mut gw) = start(SimServer::builder()).await;
    handle.script([Some(HttpFault::LostResponse)]);
    let e = call(&mut gw, charge("o1", "5.00", "tok_visa", Some("k-lost"))).await.unwrap_err();
    assert!(matches!(e, PaymentError::GatewayTimeout { .. }), "{e:?}");
    assert_eq!(e.outcome().class(), OutcomeClass::Unknown);
    let committed = handle.sim().charges_for("o1");
    assert_eq!(committed.len(), 1, "the charge happened although its answer was lost");
    // The retry with the same key gets the stored charge, not a second one.
    let retry = call(&mut gw, charge("o1", "5.00", "tok_visa", Some("k-lost"))).await.unwrap();
    assert_eq!(retry.id.as_str(), committed[0].payment_id);
    assert_eq!(handle.sim().charges_for("o1").len(), 1);

    // On the wire: the server reads the request, commits, and closes the socket without writing a byte.
    handle.script([Some(HttpFault::LostResponse)]);
    let res = raw(&handle, "POST", "/v1/charges", &[("idempotency-key", "k-raw")], CHARGE_BODY).await;
    assert_eq!(res, "", "nothing was written before the close");
    assert_eq!(handle.sim().charges_for("raw-1").len(), 1);
}

#[tokio::test]
async fn refused_commits_nothing_and_is_retriable() {
    let (handle, mut gw) = start(SimServer::builder()).await;
    handle.script([Some(HttpFault::Refused)]);
    let e = call(&mut gw, charge("o1", "5.00", "tok_visa", Some("k1"))).await.unwrap_err();
    assert_eq!(e, PaymentError::GatewayUnavailable { retry_after: Some(Duration::from_secs(1)) });
    assert_eq!(e.outcome().class(), OutcomeClass::Retriable);
    assert!(handle.sim().ledger().is_empty());
    call(&mut gw, charge("o1", "5.00", "tok_visa", Some("k1"))).await.unwrap();
    assert_eq!(handle.sim().ledger().len(), 1);
}

#[tokio::test]
async fn rate_limited_is_a_429_with_retry_after() {
    let (handle, mut gw) = start(SimServer::builder().retry_after(Duration::from_secs(3))).await;
    handle.script([Some(HttpFault::RateLimited)]);
    let e = call(&mut gw, charge("o1", "5.00", "tok_visa", Some("k1"))).await.unwrap_err();
    assert_eq!(e, PaymentError::RateLimited { retry_after: Some(Duration::from_secs(3)) });
    handle.script([Some(HttpFault::RateLimited)]);
    let res = raw(&handle, "POST", "/v1/charges", &[], CHARGE_BODY).await;
    assert!(res.starts_with("HTTP/1.1 429"), "{res}");
    assert!(res.to_ascii_lowercase().contains("\r\nretry-after: 3\r\n"), "{res}");
    assert!(res.contains("application/problem+json"), "{res}");
    assert!(handle.sim().ledger().is_empty());
}

#[tokio::test]
async fn timeout_is_unknown_and_commits_nothing() {
    let (handle, gw) = start(SimServer::builder().timeout_hold(Duration::from_secs(30))).await;
    let mut gw = gw.timeout(Duration::from_millis(300));
    handle.script([Some(HttpFault::Timeout)]);
    let started = std::time::Instant::now();
    let e = call(&mut gw, charge("o1", "5.00", "tok_visa", Some("k1"))).await.unwrap_err();
    assert!(matches!(e, PaymentError::GatewayTimeout { .. }), "{e:?}");
    assert_eq!(e.outcome().class(), OutcomeClass::Unknown);
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(handle.sim().ledger().is_empty());
    // The held request claimed nothing: the retry with the same key runs.
    call(&mut gw, charge("o1", "5.00", "tok_visa", Some("k1"))).await.unwrap();
    assert_eq!(handle.sim().ledger().len(), 1);
}

#[tokio::test]
async fn error_5xx_is_unknown_and_commits_nothing() {
    let (handle, mut gw) = start(SimServer::builder()).await;
    handle.script([Some(HttpFault::Error5xx)]);
    let e = call(&mut gw, charge("o1", "5.00", "tok_visa", Some("k1"))).await.unwrap_err();
    assert_eq!(e, PaymentError::GatewayServerError { status: 500, code: Some(GatewayCode::new("api_error")) });
    assert_eq!(e.outcome().class(), OutcomeClass::Unknown);
    assert!(handle.sim().ledger().is_empty());
}

#[tokio::test]
async fn declines_are_402_with_their_kind() {
    let (handle, mut gw) = start(SimServer::builder()).await;
    let e = call(&mut gw, charge("o1", "5.00", "tok_chargeDeclined", Some("k1"))).await.unwrap_err();
    assert_eq!(e, PaymentError::declined("card_declined"));
    let e = call(&mut gw, charge("o1", "5.00", "tok_insufficientFunds", None)).await.unwrap_err();
    assert_eq!(e, PaymentError::InsufficientFunds);
    let e = call(&mut gw, charge("o1", "5.00", "tok_fraudulent", None)).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::FraudBlocked);
    // A stored decline replays as the same decline.
    let e = call(&mut gw, charge("o1", "5.00", "tok_chargeDeclined", Some("k1"))).await.unwrap_err();
    assert_eq!(e, PaymentError::declined("card_declined"));
    let res = raw(&handle, "POST", "/v1/charges", &[], &CHARGE_BODY.replace("tok_visa", "tok_chargeDeclined")).await;
    assert!(res.starts_with("HTTP/1.1 402"), "{res}");
    assert!(handle.sim().ledger().is_empty());
}

#[tokio::test]
async fn a_refused_connection_is_network_before_send() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let mut gw = HttpGateway::new(&format!("http://{addr}")).unwrap();
    let e = call(&mut gw, charge("o1", "5.00", "tok_visa", Some("k1"))).await.unwrap_err();
    assert!(matches!(e, PaymentError::NetworkBeforeSend { .. }), "{e:?}");
    assert_eq!(e.outcome().class(), OutcomeClass::Retriable);
}

/// A gateway (or something posing as one) that answers with an endless 200 body: the client stops reading at
/// `MAX_BODY_BYTES` instead of buffering it all, and the call is Unknown (the request was sent and may have
/// acted), never a success.
#[tokio::test]
async fn an_oversized_answer_is_unknown_and_not_read_to_the_end() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let written = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let w = written.clone();
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut buf = vec![0u8; 4096];
        let _ = s.read(&mut buf).await;
        let head = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n";
        s.write_all(head.as_bytes()).await.unwrap();
        let chunk = format!("{:x}\r\n{}\r\n", 16 * 1024, " ".repeat(16 * 1024));
        // 64 MiB unless the client hangs up first.
        for _ in 0..4096 {
            if s.write_all(chunk.as_bytes()).await.is_err() {
                break;
            }
            w.fetch_add(16 * 1024, std::sync::atomic::Ordering::SeqCst);
        }
    });
    let mut gw = HttpGateway::new(&format!("http://{addr}")).unwrap().timeout(Duration::from_secs(30));
    let e = call(&mut gw, charge("o1", "5.00", "tok_visa", Some("k1"))).await.unwrap_err();
    assert!(matches!(e, PaymentError::GatewayTimeout { .. }), "{e:?}");
    assert_eq!(e.outcome().class(), OutcomeClass::Unknown);
    assert!(e.to_string().contains("larger than"), "{e}");
    let sent = written.load(std::sync::atomic::Ordering::SeqCst);
    assert!(sent < 16 * 1024 * 1024, "the client stopped reading early, the server wrote {sent} bytes");
}

/// The keys `"q"` (quotes part of the key) and `q` are two keys: the client sends the first as an sf-string so
/// the server does not read it as the second, and two orders are charged, not one charge and a conflict.
#[tokio::test]
async fn a_key_that_begins_with_a_quote_is_not_taken_for_the_unquoted_key() {
    let (handle, mut gw) = start(SimServer::builder()).await;
    let a = call(&mut gw, charge("oq1", "5.00", "tok_visa", Some("\"q\""))).await.unwrap();
    let b = call(&mut gw, charge("oq2", "6.00", "tok_visa", Some("q"))).await.unwrap();
    assert_ne!(a.id, b.id);
    let keys: Vec<_> =
        ["oq1", "oq2"].iter().flat_map(|o| handle.sim().entries_for(o)).filter_map(|e| e.gateway_key).collect();
    assert_eq!(keys, ["\"q\"", "q"]);
}

#[tokio::test]
async fn authorize_capture_void_refund_and_the_ledger_shape() {
    let (handle, mut gw) = start(SimServer::builder()).await;
    let auth = GatewayRequest::Authorize(palisade_testkit::charge("o1").amount("12.34").key("a1").request());
    let auth = call(&mut gw, auth).await.unwrap();
    assert_eq!(auth.status, PaymentStatus::Authorized);
    let capture = GatewayRequest::Capture(CaptureRequest {
        authorization_id: auth.id.clone(),
        amount: Some(Money::parse("10.00", Currency::USD).unwrap()),
        idempotency_key: key("c1"),
    });
    let captured = call(&mut gw, capture).await.unwrap();
    assert_eq!(
        (captured.status, captured.amount.to_string()),
        (PaymentStatus::Captured, Money::parse("10.00", Currency::USD).unwrap().to_string())
    );
    let refund =
        GatewayRequest::Refund(RefundRequest { payment_id: auth.id.clone(), amount: None, idempotency_key: key("r1") });
    let refunded = call(&mut gw, refund).await.unwrap();
    assert_eq!(refunded.status, PaymentStatus::Refunded);
    assert!(refunded.id.as_str().starts_with("re_"));
    let auth2 = GatewayRequest::Authorize(palisade_testkit::charge("o2").amount("1.00").request());
    let auth2 = call(&mut gw, auth2).await.unwrap();
    let void = GatewayRequest::Void(VoidRequest { authorization_id: auth2.id.clone(), idempotency_key: None });
    assert_eq!(call(&mut gw, void.clone()).await.unwrap().status, PaymentStatus::Voided);
    // Voiding twice is an invalid request (400), not a second effect.
    assert_eq!(call(&mut gw, void).await.unwrap_err().kind(), ErrorKind::InvalidRequest);

    let ledger = ledger_json(&handle).await;
    let rows = ledger.as_array().unwrap();
    let ops: Vec<&str> = rows.iter().map(|r| r["op"].as_str().unwrap()).collect();
    assert_eq!(ops, ["authorize", "capture", "refund", "authorize", "void"]);
    assert_eq!(rows[0]["order_id"], "o1");
    assert_eq!(rows[0]["amount"], "12.34");
    assert_eq!(rows[0]["currency"], "USD");
    assert_eq!(rows[0]["id"], auth.id.as_str());
    assert_eq!(rows[0]["seq"], 1);
    assert_eq!(rows[1]["amount"], "10.00");
    assert_eq!(rows[2]["id"], auth.id.as_str(), "a refund's id is the payment it refunds");
    assert_eq!(rows[3]["idempotency_key"], serde_json::Value::Null);

    // Routes the API does not have.
    let res = raw(&handle, "GET", "/v1/charges", &[], "").await;
    assert!(res.starts_with("HTTP/1.1 404"), "{res}");
    // Bad bodies are 400s and run nothing.
    let res = raw(
        &handle,
        "POST",
        "/v1/charges",
        &[],
        r#"{"amount":"1.001","currency":"USD","source":"tok_visa","order_id":"x"}"#,
    )
    .await;
    assert!(res.starts_with("HTTP/1.1 400"), "{res}");
    assert_eq!(handle.sim().ledger().len(), 5);
}

#[tokio::test]
async fn faults_can_be_scripted_over_http() {
    let (handle, mut gw) = start(SimServer::builder()).await;
    let res = raw(&handle, "POST", "/v1/_sim/faults", &[], r#"["none","rate_limited"]"#).await;
    assert!(res.starts_with("HTTP/1.1 204"), "{res}");
    call(&mut gw, charge("o1", "5.00", "tok_visa", None)).await.unwrap();
    let e = call(&mut gw, charge("o1", "5.00", "tok_visa", None)).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::RateLimited);
    let res = raw(&handle, "POST", "/v1/_sim/faults", &[], r#"["bogus"]"#).await;
    assert!(res.starts_with("HTTP/1.1 400"), "{res}");
}

#[tokio::test]
async fn injected_counts_each_fault_given_scripted_or_drawn() {
    let (handle, mut gw) = start(SimServer::builder().fault(HttpFault::Error5xx, 1.0)).await;
    handle.script([Some(HttpFault::RateLimited), None, Some(HttpFault::LostResponse), Some(HttpFault::RateLimited)]);
    for i in 0..6 {
        let _ = call(&mut gw, charge(&format!("o{i}"), "1.00", "tok_visa", None)).await;
    }
    let counts: Vec<(&str, u64)> = handle.injected().iter().map(|(f, n)| (f.as_str(), *n)).collect();
    assert_eq!(
        counts,
        [("lost_response", 1), ("timeout", 0), ("error_5xx", 2), ("rate_limited", 2), ("refused", 0)],
        "three scripted faults, one scripted `none`, then two drawn 5xx"
    );
    let _ = ledger_json(&handle).await;
    assert_eq!(handle.injected()[2], (HttpFault::Error5xx, 2), "the ledger route draws no fault");
}

/// What each of `n` charges came back as, for a server with random faults.
async fn fault_sequence(seed: u64, n: usize) -> Vec<String> {
    let builder = SimServer::builder()
        .seed(seed)
        .fault(HttpFault::LostResponse, 0.15)
        .fault(HttpFault::Error5xx, 0.15)
        .fault(HttpFault::RateLimited, 0.15)
        .fault(HttpFault::Refused, 0.15);
    let (_handle, mut gw) = start(builder).await;
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let r = call(&mut gw, charge(&format!("o{i}"), "1.00", "tok_visa", Some(&format!("k{i}")))).await;
        out.push(match r {
            Ok(_) => "ok".to_owned(),
            Err(e) => e.kind().as_str().to_owned(),
        });
    }
    out
}

#[tokio::test]
async fn the_same_seed_gives_the_same_faults() {
    let a = fault_sequence(42, 40).await;
    let b = fault_sequence(42, 40).await;
    assert_eq!(a, b);
    for kind in ["ok", "gateway_timeout", "gateway_server_error", "rate_limited", "gateway_unavailable"] {
        assert!(a.iter().any(|k| k == kind), "{kind} missing from {a:?}");
    }
    assert_ne!(a, fault_sequence(7, 40).await, "another seed, other faults");
}

#[tokio::test]
async fn a_slow_operation_commits_after_the_client_gave_up_and_a_concurrent_duplicate_is_in_flight() {
    let (handle, gw) = start(SimServer::builder().latency(Duration::from_millis(1000))).await;
    let mut impatient = gw.clone().timeout(Duration::from_millis(200));
    let e = call(&mut impatient, charge("o1", "5.00", "tok_visa", Some("k1"))).await.unwrap_err();
    assert!(matches!(e, PaymentError::GatewayTimeout { .. }), "{e:?}");
    // While the first request runs, the same key is in flight (409 with Retry-After).
    let mut patient = gw.clone();
    let e = call(&mut patient, charge("o1", "5.00", "tok_visa", Some("k1"))).await.unwrap_err();
    assert_eq!(e, PaymentError::IdempotencyInFlight { retry_after: Some(Duration::from_secs(1)) });
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let committed = handle.sim().charges_for("o1");
    assert_eq!(committed.len(), 1, "the gateway finished the charge the client stopped waiting for");
    let replay = call(&mut patient, charge("o1", "5.00", "tok_visa", Some("k1"))).await.unwrap();
    assert_eq!(replay.id.as_str(), committed[0].payment_id);
    assert_eq!(handle.sim().charges_for("o1").len(), 1);
}

/// A server that answers every connection with `HTTP/1.1 <status>` and an empty body, after reading the request.
async fn answering(status: u16) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let mut buf = vec![0u8; 8192];
            let _ = s.read(&mut buf).await;
            let head = format!("HTTP/1.1 {status} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
            let _ = s.write_all(head.as_bytes()).await;
        }
    });
    format!("http://{addr}")
}

/// `HttpGateway` classifies a bare status as core's `HttpClassifier` does (DESIGN.md's table): before, 408 and
/// 425 (the gateway acted on nothing) were `InvalidRequest`, Terminal, so a saga step failed at once and its
/// checkout was compensated where a retry would have completed it.
#[tokio::test]
async fn a_bare_status_has_the_outcome_core_gives_it() {
    for code in [400, 401, 403, 404, 405, 408, 409, 410, 413, 422, 425, 429, 500, 501, 502, 503, 504, 599] {
        let mut gw = HttpGateway::new(&answering(code).await).unwrap().timeout(Duration::from_secs(10));
        let e = call(&mut gw, charge("o1", "5.00", "tok_visa", Some("k1"))).await.unwrap_err();
        let status = http::StatusCode::from_u16(code).unwrap();
        let core = HttpClassifier::classify_parts(status, &http::HeaderMap::new(), std::time::SystemTime::now());
        assert_eq!(e.outcome().class(), core.class(), "HTTP {code}: {e:?}");
    }
}

/// `timeout(Duration::MAX)` is a caller asking for no deadline: the call runs (before, computing the deadline
/// overflowed `Instant` and every call panicked).
#[tokio::test]
async fn a_timeout_of_duration_max_means_no_deadline() {
    let (handle, gw) = start(SimServer::builder()).await;
    let mut gw = gw.timeout(Duration::MAX);
    let r = call(&mut gw, charge("o1", "5.00", "tok_visa", Some("k1"))).await.unwrap();
    assert_eq!(r.status, PaymentStatus::Captured);
    assert_eq!(handle.sim().ledger().len(), 1);
}

/// A fault rate that is not a finite number counts as 0: the rule never fires (before, a NaN passed the clamp
/// and `random_bool` panicked the connection task of every operation request: every call was Unknown).
#[tokio::test]
async fn a_fault_rate_that_is_not_a_number_never_fires() {
    let builder = SimServer::builder()
        .fault(HttpFault::Error5xx, f64::NAN)
        .fault(HttpFault::LostResponse, f64::INFINITY)
        .fault(HttpFault::RateLimited, f64::NEG_INFINITY);
    let (handle, mut gw) = start(builder).await;
    for i in 0..5 {
        let order = format!("o{i}");
        call(&mut gw, charge(&order, "5.00", "tok_visa", None)).await.unwrap();
    }
    assert_eq!(handle.sim().ledger().len(), 5);
    assert!(handle.injected().iter().all(|&(_, n)| n == 0), "{:?}", handle.injected());
}

/// Credentials in the base URL are refused, and the error does not repeat them: the simulator's API takes none,
/// and `user:password@` would otherwise have gone out in the `Host` header of every request.
#[test]
fn a_base_url_with_credentials_is_refused_without_repeating_them() {
    for url in [
        "http://user:s3cret@127.0.0.1:4242",
        "http://s3cret@127.0.0.1:4242/prefix",
        "http://user:s3cret@127.0.0.1:4242/p?q=1",
        "http://user:s3cret@[::1]:4242",
        "http://:s3cret@localhost",
        "http://user:s3cret@h:x",
    ] {
        let e = HttpGateway::new(url).unwrap_err();
        assert_eq!(e.kind(), InvalidBaseUrlKind::Credentials, "{url}: {e}");
        assert!(e.to_string().contains("credentials"), "{url}: {e}");
        assert!(!e.to_string().contains("s3cret") && !format!("{e:?}").contains("s3cret"), "{url}: {e} / {e:?}");
    }
    // A URL that does not parse does not repeat its credentials either.
    // Nor does one whose password holds an unescaped `/`: `Uri` reads `user:s3c` as host and port, and a port that
    // is not a number is refused (before, it was taken as 80 and `Host: user:s3c` went out).
    for url in ["http://user:s3cret@exa mple.com", "http://user:s3c/ret@example.com"] {
        let e = HttpGateway::new(url).unwrap_err();
        assert_eq!(e.kind(), InvalidBaseUrlKind::Unparsable, "{url}: {e}");
        for secret in ["s3cret", "s3c/ret"] {
            assert!(!e.to_string().contains(secret) && !format!("{e:?}").contains(secret), "{e} / {e:?}");
        }
    }
    // The other refusals keep their kinds.
    assert_eq!(HttpGateway::new("https://127.0.0.1").unwrap_err().kind(), InvalidBaseUrlKind::NotHttp);
    assert_eq!(HttpGateway::new("http://127.0.0.1/?q").unwrap_err().kind(), InvalidBaseUrlKind::Query);
    assert_eq!(HttpGateway::new("/v1").unwrap_err().kind(), InvalidBaseUrlKind::NotHttp);
    assert_eq!(HttpGateway::new("http://127.0.0.1:99999").unwrap_err().kind(), InvalidBaseUrlKind::Unparsable);
    for ok in ["http://127.0.0.1", "http://127.0.0.1:", "http://[::1]:4242/prefix/", "http://localhost:80"] {
        assert!(HttpGateway::new(ok).is_ok(), "{ok}");
    }
}

/// RFC 9457 §3.1.4: a problem's `status` member is the status of the response. Before, an unknown route was a
/// 404 whose body said `"status":400`.
#[tokio::test]
async fn an_unknown_route_is_a_404_whose_problem_says_404() {
    let (handle, _gw) = start(SimServer::builder()).await;
    let res = raw(&handle, "GET", "/v1/nope", &[], "").await;
    assert!(res.starts_with("HTTP/1.1 404"), "{res}");
    assert!(res.contains("application/problem+json"), "{res}");
    let body: serde_json::Value = serde_json::from_str(res.split_once("\r\n\r\n").unwrap().1).unwrap();
    assert_eq!(body["status"], 404, "{body}");
    assert_eq!(body["error"]["kind"], "invalid_request", "{body}");
}

/// A client that sends the head and stalls the body does not hold a connection for ever: after the body-read
/// timeout it gets a 408 problem+json, the connection is closed, and nothing ran (before, only the head had a
/// timeout and the connection was held as long as the client kept it open).
#[tokio::test]
async fn a_request_whose_body_stalls_gets_408_and_runs_nothing() {
    let (handle, _gw) = start(SimServer::builder().body_read_timeout(Duration::from_millis(300))).await;
    let mut s = TcpStream::connect(handle.local_addr()).await.unwrap();
    let head = "POST /v1/charges HTTP/1.1\r\nhost: sim\r\nidempotency-key: k1\r\ncontent-length: 100\r\n\r\n{";
    s.write_all(head.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let started = std::time::Instant::now();
    let r = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await;
    assert!(r.is_ok(), "the server still holds the connection after 10 s");
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
    let res = String::from_utf8(out).unwrap();
    assert!(res.starts_with("HTTP/1.1 408"), "{res}");
    assert!(res.contains("application/problem+json"), "{res}");
    let body: serde_json::Value = serde_json::from_str(res.split_once("\r\n\r\n").unwrap().1).unwrap();
    assert_eq!(body["status"], 408, "{body}");
    assert!(handle.sim().ledger().is_empty());
    // The key claimed nothing: the same request, whole, runs once.
    let ok = raw(&handle, "POST", "/v1/charges", &[("idempotency-key", "k1")], CHARGE_BODY).await;
    assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
    assert_eq!(handle.sim().ledger().len(), 1);
}
