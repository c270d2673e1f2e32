//! The example server's HTTP interface (examples/server), in process and under paused time: the routes, the
//! statuses the issue promises, and exactly one charge under concurrent duplicates. Fast: no sockets, no sleeps.

#[path = "../examples/server/app.rs"]
mod app;
#[path = "../examples/server/charges.rs"]
mod charges;
#[path = "../examples/server/ledger.rs"]
mod ledger;

use std::time::Duration;

use axum::Router;
use axum::body::Body;
use http::{Request, StatusCode, header};
use http_body_util::BodyExt;
use palisade::idempotency::MemoryStore;
use palisade::sim::{GatewaySim, Latency};
use serde_json::{Value, json};
use tower::ServiceExt;

fn server(latency_ms: u64) -> (Router, GatewaySim) {
    let sim = GatewaySim::builder().latency(Latency::fixed(Duration::from_millis(latency_ms))).build();
    (app::router(sim.clone(), MemoryStore::new()), sim)
}

fn charge(key: Option<&str>, body: &Value) -> Request<Body> {
    let mut b = Request::post("/v1/charges").header(header::CONTENT_TYPE, "application/json");
    if let Some(k) = key {
        b = b.header("Idempotency-Key", k);
    }
    b.body(Body::from(body.to_string())).unwrap()
}

async fn send(app: &Router, req: Request<Body>) -> (StatusCode, http::HeaderMap, Value) {
    let res = app.clone().oneshot(req).await.unwrap();
    let (parts, body) = res.into_parts();
    let bytes = body.collect().await.unwrap().to_bytes();
    (parts.status, parts.headers, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

async fn ledger(app: &Router) -> Vec<Value> {
    let (status, _, v) = send(app, Request::get("/v1/_sim/ledger").body(Body::empty()).unwrap()).await;
    assert_eq!(status, StatusCode::OK);
    v.as_array().unwrap().clone()
}

fn visa(order: &str) -> Value {
    json!({"amount":"12.34","currency":"USD","source":"tok_visa","order_id":order})
}

#[tokio::test(start_paused = true)]
async fn charge_replay_conflict_and_ledger() {
    let (app, _) = server(0);
    let (status, h, first) = send(&app, charge(Some("k1"), &visa("o1"))).await;
    assert_eq!(status, StatusCode::CREATED);
    assert!(h.get("idempotent-replayed").is_none());
    assert_eq!(first["amount"], "12.34");
    assert_eq!(first["currency"], "USD");
    assert_eq!(first["order_id"], "o1");
    let (status, h, again) = send(&app, charge(Some("\"k1\""), &visa("o1"))).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(h["idempotent-replayed"], "true");
    assert_eq!(again, first);
    let mut other = visa("o1");
    other["amount"] = json!("99.00");
    let (status, h, p) = send(&app, charge(Some("k1"), &other)).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(h[header::CONTENT_TYPE], "application/problem+json");
    assert_eq!(p["status"], 422);

    let entries = ledger(&app).await;
    let ops: Vec<&str> = entries.iter().map(|e| e["op"].as_str().unwrap()).collect();
    assert_eq!(ops, ["authorize", "capture"]);
    for e in &entries {
        assert_eq!(
            (e["order_id"].as_str(), e["amount"].as_str(), e["currency"].as_str()),
            (Some("o1"), Some("12.34"), Some("USD"))
        );
    }
    assert_eq!(entries[0]["gateway_key"], "k1", "the edge key reaches the gateway");
}

#[tokio::test(start_paused = true)]
async fn declines_missing_keys_bad_bodies_and_big_bodies() {
    let (app, sim) = server(0);
    let declined = json!({"amount":"5.00","currency":"USD","source":"tok_chargeDeclined","order_id":"o2"});
    let (status, h, p) = send(&app, charge(Some("d1"), &declined)).await;
    assert_eq!(status, StatusCode::PAYMENT_REQUIRED);
    assert_eq!(h[header::CONTENT_TYPE], "application/problem+json");
    assert_eq!(p["type"], "urn:palisade:problem:card_declined");
    let (status, h, replay) = send(&app, charge(Some("d1"), &declined)).await;
    assert_eq!((status, &h["idempotent-replayed"]), (StatusCode::PAYMENT_REQUIRED, &"true".parse().unwrap()));
    assert_eq!(replay, p);
    assert_eq!(sim.calls(), 1, "the replayed decline never reached the gateway");

    assert_eq!(send(&app, charge(None, &visa("o3"))).await.0, StatusCode::BAD_REQUEST);
    let (status, _, p) = send(&app, charge(Some("bad-body"), &json!({"amount":"x"}))).await;
    assert_eq!((status, p["type"].as_str()), (StatusCode::BAD_REQUEST, Some("urn:palisade:problem:invalid_request")));
    let big = Request::post("/v1/charges")
        .header("Idempotency-Key", "big")
        .body(Body::from(vec![b'a'; app::BODY_LIMIT + 1]))
        .unwrap();
    assert_eq!(send(&app, big).await.0, StatusCode::PAYLOAD_TOO_LARGE);
    // A zero or negative amount: 400 before the gateway, and the key stays usable.
    for amount in ["-5.00", "0"] {
        let bad = json!({"amount": amount, "currency":"USD","source":"tok_visa","order_id":"o-neg"});
        let (status, _, p) = send(&app, charge(Some("neg"), &bad)).await;
        assert_eq!(
            (status, p["type"].as_str()),
            (StatusCode::BAD_REQUEST, Some("urn:palisade:problem:invalid_request"))
        );
    }
    assert!(ledger(&app).await.is_empty());
    assert_eq!(send(&app, charge(Some("neg"), &visa("o-neg"))).await.0, StatusCode::CREATED, "the key was not spent");
}

#[tokio::test(start_paused = true)]
async fn concurrent_duplicates_charge_once() {
    let (app, sim) = server(50);
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..200 {
        let app = app.clone();
        set.spawn(async move { send(&app, charge(Some("same"), &visa("o-conc"))).await.0 });
    }
    let (mut created, mut in_flight) = (0, 0);
    while let Some(s) = set.join_next().await {
        match s.unwrap() {
            StatusCode::CREATED => created += 1,
            StatusCode::CONFLICT => in_flight += 1,
            other => panic!("unexpected status {other}"),
        }
    }
    assert_eq!(created + in_flight, 200);
    assert!(in_flight > 0, "the duplicates did not overlap");
    assert_eq!(sim.charges_for("o-conc").len(), 1, "ledger: {:?}", sim.ledger());
}

/// Issue 16, finding 1: order ids reach the gateway exactly as sent (ids with Luhn-valid digit runs were once
/// masked to `order-[REDACTED_PAN]` on the way), and an order id holding a card number is refused before any
/// gateway call.
#[tokio::test(start_paused = true)]
async fn order_ids_reach_the_gateway_unchanged_and_card_numbers_are_refused() {
    let (app, sim) = server(0);
    let ids = ["order-1733270400000", "order-1733270400018", "order-1796343902980048107"];
    for (i, id) in ids.iter().enumerate() {
        let (status, _, body) = send(&app, charge(Some(&format!("ids-{i}")), &visa(id))).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        assert_eq!(body["order_id"], *id);
        assert_eq!(sim.charges_for(id).len(), 1, "{id} in the ledger as sent: {:?}", sim.ledger());
    }
    for e in ledger(&app).await {
        assert!(ids.contains(&e["order_id"].as_str().unwrap()), "{e}");
    }

    let (status, _, p) = send(&app, charge(Some("pan-in-id"), &visa("order-4242424242424242"))).await;
    assert_eq!((status, p["type"].as_str()), (StatusCode::BAD_REQUEST, Some("urn:palisade:problem:invalid_request")));
    assert!(!p.to_string().contains("4242424242424242"), "{p}");
    assert_eq!(ledger(&app).await.len(), 2 * ids.len(), "the refused order never reached the gateway");
}

/// Issue 16, finding 2: amounts that do not fit minor units, or that stray from the one amount grammar, are a
/// 400 and never reach the gateway; a charge answers with its amount in the currency's canonical form.
#[tokio::test(start_paused = true)]
async fn amounts_follow_one_grammar_and_print_canonically() {
    let (app, _) = server(0);
    for (i, bad) in
        ["99999999999999999999999", "92233720368547758.08", " 12.34", "+12.34", ".5", "5.", "00012.34", "1e3"]
            .into_iter()
            .enumerate()
    {
        let body = json!({"amount": bad, "currency":"USD","source":"tok_visa","order_id":"o-amount"});
        let (status, _, p) = send(&app, charge(Some(&format!("amount-{i}")), &body)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad:?}: {p}");
    }
    assert!(ledger(&app).await.is_empty(), "no refused amount reached the gateway");

    for (i, (amount, currency, shown)) in
        [("12.3", "USD", "12.30"), ("100", "JPY", "100"), ("1.2", "BHD", "1.200")].into_iter().enumerate()
    {
        let body = json!({"amount": amount, "currency": currency, "source":"tok_visa","order_id":"o-canon"});
        let (status, _, c) = send(&app, charge(Some(&format!("canon-{i}")), &body)).await;
        assert_eq!(status, StatusCode::CREATED, "{c}");
        assert_eq!(c["amount"], shown);
    }
    for e in ledger(&app).await {
        assert!(["12.30", "100", "1.200"].contains(&e["amount"].as_str().unwrap()), "{e}");
    }
}

/// Issue 16, finding 7: two accounts sending the same key get their own charges; a request without the account
/// header keeps the unscoped behaviour; a malformed account header is refused before anything runs.
#[tokio::test(start_paused = true)]
async fn the_account_header_scopes_keys() {
    let (app, sim) = server(0);
    let as_account = |account: Option<&str>, order: &str| {
        let mut req = charge(Some("shared-key"), &visa(order));
        if let Some(a) = account {
            req.headers_mut().insert("x-account", a.parse().unwrap());
        }
        req
    };
    let (sa, _, a) = send(&app, as_account(Some("acct_a"), "order-a")).await;
    let (sb, hb, b) = send(&app, as_account(Some("acct_b"), "order-b")).await;
    assert_eq!((sa, sb), (StatusCode::CREATED, StatusCode::CREATED), "{b}");
    assert!(hb.get("idempotent-replayed").is_none(), "account b was not replayed account a's charge");
    assert_ne!(a["id"], b["id"]);
    assert_eq!((sim.charges_for("order-a").len(), sim.charges_for("order-b").len()), (1, 1));
    // Each account replays its own; the unscoped key is a third record.
    let (_, h, again) = send(&app, as_account(Some("acct_a"), "order-a")).await;
    assert_eq!((&h["idempotent-replayed"], &again["id"]), (&"true".parse().unwrap(), &a["id"]));
    let (s, _, _) = send(&app, as_account(None, "order-none")).await;
    assert_eq!(s, StatusCode::CREATED);
    assert_eq!(sim.charges_for("order-none").len(), 1);

    for bad in ["", &"a".repeat(65), "acct a"] {
        let mut req = charge(Some("k-bad-account"), &visa("order-bad"));
        req.headers_mut().insert("x-account", bad.parse().unwrap());
        assert_eq!(send(&app, req).await.0, StatusCode::BAD_REQUEST, "{bad:?}");
    }
    assert!(sim.charges_for("order-bad").is_empty());
}

/// Issue 16, finding 5: a PATCH (405 from the router) and an invalid body (400 from the handler's validation)
/// sent with a key leave that key unused: the real POST with it then charges (201), instead of a 422 for 24 h.
#[tokio::test(start_paused = true)]
async fn refusals_before_any_effect_leave_the_key_unused() {
    let (app, sim) = server(0);
    let patch = Request::patch("/v1/charges")
        .header("Idempotency-Key", "k-refused")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(visa("o-refused").to_string()))
        .unwrap();
    assert_eq!(send(&app, patch).await.0, StatusCode::METHOD_NOT_ALLOWED);
    let (status, _, _) = send(&app, charge(Some("k-refused"), &json!({"amount":"x"}))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _, _) = send(&app, charge(Some("k-refused"), &visa("order-4242424242424242"))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    let (status, h, body) = send(&app, charge(Some("k-refused"), &visa("o-refused"))).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert!(h.get("idempotent-replayed").is_none());
    assert_eq!(sim.charges_for("o-refused").len(), 1);
}
