//! The layer: typed and HTTP refusals, review annotations, declines fed back into velocity, logs without
//! emails, metrics per rule and decision.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use http_body_util::Full;
use palisade_core::{ErrorKind, GatewayRequest, PaymentError, Reference, RefundRequest};
use palisade_fraud::{Attributes, Decision, FraudEngine, FraudLayer, FraudVerdict};
use palisade_testkit::{TestGateway, charge};
use tower::{Layer, Service, ServiceExt};

const RULES: &str = "\
no_fraudsters: block if email == \"fraud@example.com\"
sca: challenge if amount > 1000 USD
big: review if amount > 500 USD
";

fn engine() -> FraudEngine {
    FraudEngine::builder().rule_file(RULES).unwrap().build()
}

fn with_meta(req: GatewayRequest, pairs: &[(&str, &str)]) -> GatewayRequest {
    let GatewayRequest::Charge(mut c) = req else { unreachable!() };
    for (k, v) in pairs {
        c.metadata.insert((*k).to_owned(), Reference::new(*v).unwrap());
    }
    GatewayRequest::Charge(c)
}

#[tokio::test]
async fn typed_block_never_reaches_the_gateway() {
    let gw = TestGateway::ok("ok").recording();
    let mut svc = FraudLayer::new(engine()).layer(gw.clone());
    let req = with_meta(charge("o1").key("k1").build(), &[("email", "Fraud@Example.com")]);
    let err = svc.ready().await.unwrap().call(req).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::FraudBlocked);
    assert!(matches!(&err, PaymentError::FraudBlocked { rule: Some(r) } if r.as_str() == "no_fraudsters"));
    assert_eq!(err.http_status(), 402);
    assert_eq!(gw.calls(), 0, "a blocked charge never reaches the gateway");
}

#[tokio::test]
async fn typed_challenge_asks_for_authentication() {
    let gw = TestGateway::ok("ok").recording();
    let layer = FraudLayer::builder(engine()).challenge_url("https://shop.example/3ds").build();
    let mut svc = layer.layer(gw.clone());
    let err = svc.ready().await.unwrap().call(charge("o2").amount("1000.01").build()).await.unwrap_err();
    assert_eq!(err, PaymentError::AuthenticationRequired { challenge_url: Some("https://shop.example/3ds".into()) });
    assert_eq!(gw.calls(), 0);
}

/// Once the customer has authenticated (the merchant marks the charge with the verified 3-D Secure result), the
/// challenge is met: the charge, sent again under a new key, reaches the gateway — reviewed, as the other rule
/// says, not challenged again for ever. Anything but `authenticated` is no authentication.
#[tokio::test]
async fn a_met_challenge_lets_the_charge_through() {
    let gw = TestGateway::ok("ok").recording();
    let mut svc = FraudLayer::new(engine()).layer(gw.clone());
    let big = |key: &str, three_ds: &str| {
        with_meta(charge("o2").amount("1000.01").key(key).build(), &[("three_d_secure", three_ds)])
    };
    for not_done in ["attempted", "failed", "AUTHENTICATED "] {
        let err = svc.ready().await.unwrap().call(big("k-3ds-0", not_done)).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::AuthenticationRequired, "{not_done}");
    }
    assert_eq!(gw.calls(), 0);
    svc.ready().await.unwrap().call(big("k-3ds-1", "authenticated")).await.unwrap();
    assert_eq!(gw.calls(), 1, "the authenticated charge reached the gateway");
}

#[tokio::test]
async fn typed_review_passes_annotated_with_an_event() {
    let gw = TestGateway::ok("ok").recording();
    let reviews = Arc::new(AtomicUsize::new(0));
    let seen = reviews.clone();
    let layer = FraudLayer::builder(engine())
        .on_review(move |a| {
            assert_eq!(a.decision, Decision::Review);
            seen.fetch_add(1, Ordering::SeqCst);
        })
        .build();
    let mut svc = layer.layer(gw.clone());
    assert_eq!(svc.ready().await.unwrap().call(charge("o3").amount("600").build()).await, Ok("ok"));
    assert_eq!(reviews.load(Ordering::SeqCst), 1);
    let log = gw.log();
    let GatewayRequest::Charge(c) = &log[0].request else { panic!() };
    assert_eq!(c.metadata["fraud_decision"].as_str(), "review");
    assert_eq!(c.metadata["fraud_rule"].as_str(), "big");
    // Approved: passes untouched.
    assert_eq!(svc.ready().await.unwrap().call(charge("o4").build()).await, Ok("ok"));
    let GatewayRequest::Charge(c) = &gw.log()[1].request else { panic!() };
    assert!(!c.metadata.contains_key("fraud_decision"));
}

#[tokio::test]
async fn refunds_are_not_screened() {
    let gw = TestGateway::ok("ok").recording();
    let e = FraudEngine::builder().rule_file("block if true").unwrap().build();
    let mut svc = FraudLayer::new(e).layer(gw.clone());
    let refund =
        GatewayRequest::Refund(RefundRequest { payment_id: "ch_1".into(), amount: None, idempotency_key: None });
    assert_eq!(svc.ready().await.unwrap().call(refund).await, Ok("ok"));
    assert!(svc.ready().await.unwrap().call(charge("o").build()).await.is_err());
}

#[tokio::test]
async fn gateway_declines_feed_the_decline_counters() {
    let gw = TestGateway::<GatewayRequest, &str>::err(PaymentError::declined("do_not_honor")).recording();
    let e = FraudEngine::builder().rule_file("block if declines_per_card_1h >= 2").unwrap().build();
    let mut svc = FraudLayer::new(e).layer(gw.clone());
    for i in 0..2 {
        let err = svc.ready().await.unwrap().call(charge("o").key(&format!("k{i}")).build()).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::CardDeclined);
    }
    let err = svc.ready().await.unwrap().call(charge("o").key("k9").build()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::FraudBlocked, "two declines on the card: blocked before the gateway");
    assert_eq!(gw.calls(), 2);
}

type Req = http::Request<Full<Bytes>>;
type Res = http::Response<Full<Bytes>>;

fn http_req(attrs: Option<Attributes>) -> Req {
    let mut r = http::Request::new(Full::new(Bytes::new()));
    if let Some(a) = attrs {
        r.extensions_mut().insert(a);
    }
    r
}

async fn body_json(res: Res) -> serde_json::Value {
    use http_body_util::BodyExt;
    let b = res.into_body().collect().await.unwrap().to_bytes();
    serde_json::from_slice(&b).unwrap()
}

fn usd(major: &str) -> Attributes {
    Attributes::new(palisade_core::Money::parse(major, palisade_core::Currency::USD).unwrap())
}

#[tokio::test]
async fn http_block_challenge_and_review() {
    let calls = Arc::new(AtomicUsize::new(0));
    let c2 = calls.clone();
    let inner = tower::service_fn(move |req: Req| {
        c2.fetch_add(1, Ordering::SeqCst);
        let review = req.extensions().get::<FraudVerdict>().map(|v| v.0.decision.as_str().to_owned());
        async move { Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from(review.unwrap_or_default())))) }
    });
    let layer = FraudLayer::builder(engine()).challenge_url("https://shop.example/3ds").http().build();
    let mut svc = layer.layer(inner);

    let res = svc.ready().await.unwrap().call(http_req(Some(usd("5").email("fraud@example.com")))).await.unwrap();
    assert_eq!(res.status(), 402);
    assert_eq!(res.headers()["content-type"], "application/problem+json");
    let v = body_json(res).await;
    assert_eq!(v["type"], "urn:palisade:problem:fraud_blocked");
    assert_eq!(v["rule"], "no_fraudsters");
    assert!(v.get("next_action").is_none());

    let res = svc.ready().await.unwrap().call(http_req(Some(usd("2000")))).await.unwrap();
    assert_eq!(res.status(), 402);
    let v = body_json(res).await;
    assert_eq!(v["type"], "urn:palisade:problem:authentication_required");
    assert_eq!(v["next_action"]["type"], "authenticate");
    assert_eq!(v["next_action"]["challenge_url"], "https://shop.example/3ds");
    assert_eq!(calls.load(Ordering::SeqCst), 0);

    let res = svc.ready().await.unwrap().call(http_req(Some(usd("600")))).await.unwrap();
    assert_eq!(res.status(), 200);
    use http_body_util::BodyExt;
    assert_eq!(res.into_body().collect().await.unwrap().to_bytes(), "review", "the verdict is in the extensions");

    let res = svc.ready().await.unwrap().call(http_req(None)).await.unwrap();
    assert_eq!(res.status(), 200, "no attributes: not screened");
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[test]
fn extraction_takes_what_the_rules_read_and_the_email_and_risk_score_always() {
    use palisade_fraud::{Field, FieldSet, RuleSet};
    let req = with_meta(
        charge("o1").key("k1").build(),
        &[("email", "a@example.com"), ("ip", "10.0.0.1"), ("card_country", "US"), ("risk_score", "7")],
    );
    let rules = RuleSet::parse("block if card_country == \"XX\"").unwrap();
    let fields = rules.fields();
    assert!(fields.contains(Field::CardCountry) && !fields.contains(Field::Ip) && !fields.attempt_id());
    let a = Attributes::from_gateway_request_reading(&req, fields).unwrap();
    assert_eq!(a.card_country.as_deref(), Some("US"));
    assert_eq!((a.ip.as_deref(), a.card_fingerprint.as_deref(), a.attempt_id.as_deref()), (None, None, None));
    assert_eq!((a.email.as_deref(), a.risk_score), (Some("a@example.com"), 7));

    // A rule that reads velocity needs every subject and the attempt id: the attempt is recorded under each.
    let velocity = RuleSet::parse("review if attempts_per_card_1h > 3").unwrap().fields();
    let a = Attributes::from_gateway_request_reading(&req, velocity).unwrap();
    assert_eq!(a.ip.as_deref(), Some("10.0.0.1"));
    assert_eq!(a.attempt_id.as_deref(), Some("k1"));
    assert!(a.card_fingerprint.is_some());
    assert_eq!(a.card_country, None);
    assert_eq!(Attributes::from_gateway_request(&req), Attributes::from_gateway_request_reading(&req, FieldSet::ALL));
}
