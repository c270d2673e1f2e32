//! Logs and metrics of the layer, alone in this binary: tracing caches per-callsite interest process-wide, so a
//! test that installs a thread-local subscriber must not share its process with tests that log without one.

use palisade_core::{GatewayRequest, Reference};
use palisade_fraud::{FraudEngine, FraudLayer};
use palisade_testkit::{TestGateway, charge};
use tower::{Layer, Service, ServiceExt};

const RULES: &str = "\
no_fraudsters: block if email == \"fraud@example.com\"
sca: challenge if amount > 1000 USD
big: review if amount > 500 USD
";

fn with_meta(req: GatewayRequest, pairs: &[(&str, &str)]) -> GatewayRequest {
    let GatewayRequest::Charge(mut c) = req else { unreachable!() };
    for (k, v) in pairs {
        c.metadata.insert((*k).to_owned(), Reference::new(*v).unwrap());
    }
    GatewayRequest::Charge(c)
}

#[tokio::test(flavor = "current_thread")]
async fn logs_mask_emails_and_metrics_count_rules_and_decisions() {
    let logs = palisade_testkit::LogCapture::new();
    let _log = tracing::subscriber::set_default(logs.subscriber());
    let metrics = palisade_testkit::MetricsCapture::default();
    let _m = metrics::set_default_local_recorder(&metrics);
    let e = FraudEngine::builder()
        .rule_file(&format!("{RULES}trial: shadow block if email_domain == \"example.com\""))
        .unwrap()
        .build();
    let mut svc = FraudLayer::new(e).layer(TestGateway::ok("ok"));
    for (email, amount) in [("fraud@example.com", "5"), ("alice.secret@example.com", "600"), ("bob@example.org", "1")] {
        let req = with_meta(charge("o").amount(amount).build(), &[("email", email)]);
        let _ = svc.ready().await.unwrap().call(req).await;
    }
    let text = logs.contents();
    assert!(text.contains("decision=\"block\"") || text.contains("decision=block"), "{text}");
    assert!(text.contains("a***@example.com"), "{text}");
    for secret in ["alice.secret", "fraud@example.com", "bob@example.org", "tok_visa"] {
        assert!(!text.contains(secret), "{secret} in logs:\n{text}");
    }
    assert!(text.contains("shadow rule matched"), "{text}");
    assert_eq!(metrics.counter("palisade_fraud_decisions_total{engine=fraud,decision=block}"), 1);
    assert_eq!(metrics.counter("palisade_fraud_decisions_total{engine=fraud,decision=review}"), 1);
    assert_eq!(metrics.counter("palisade_fraud_decisions_total{engine=fraud,decision=approve}"), 1);
    assert_eq!(
        metrics.counter("palisade_fraud_rule_matches_total{engine=fraud,rule=no_fraudsters,outcome=matched}"),
        1
    );
    assert_eq!(metrics.counter("palisade_fraud_rule_matches_total{engine=fraud,rule=trial,outcome=shadow_matched}"), 1);
}

/// Past the 31 rules whose matches an assessment notes one bit each, the rest are scanned: every match of a
/// 40-rule set is counted and logged, whatever its place.
#[tokio::test(flavor = "current_thread")]
async fn matches_of_long_rule_sets_are_counted_at_every_place() {
    let logs = palisade_testkit::LogCapture::new();
    let _log = tracing::subscriber::set_default(logs.subscriber());
    let metrics = palisade_testkit::MetricsCapture::default();
    let _m = metrics::set_default_local_recorder(&metrics);
    let matching = [0, 3, 30, 31, 35, 39];
    let file: String = (0..40)
        .map(|i| {
            let shadow = if i == 39 { "shadow " } else { "" };
            let cond = if matching.contains(&i) { "amount_minor > 0" } else { "amount_minor < 0" };
            format!("r{i}: {shadow}score 1 if {cond}\n")
        })
        .collect();
    let e = FraudEngine::builder().rule_file(&file).unwrap().build();
    let a = palisade_fraud::Attributes::new(palisade_core::Money::from_minor(100, palisade_core::Currency::USD));
    let verdict = e.assess(&a).await;
    assert_eq!(verdict.score, 5);
    for i in 0..40 {
        let (outcome, n) = match i {
            39 => ("shadow_matched", 1),
            i if matching.contains(&i) => ("matched", 1),
            _ => ("matched", 0),
        };
        let key = format!("palisade_fraud_rule_matches_total{{engine=fraud,rule=r{i},outcome={outcome}}}");
        assert_eq!(metrics.counter(&key), n, "{key}");
    }
    assert!(logs.contents().contains("shadow rule matched"), "{}", logs.contents());
}

/// A rule that fails at run time is logged without any value of the charge: not the email (an `if(...)` whose
/// branches differ in type, which could put the email into evalexpr's message, is refused at load) and not the
/// operands of the failed arithmetic (the amount here).
#[tokio::test(flavor = "current_thread")]
async fn evaluation_errors_log_no_values() {
    let logs = palisade_testkit::LogCapture::new();
    let _log = tracing::subscriber::set_default(logs.subscriber());
    let e =
        FraudEngine::builder().rule_file("guard: block if amount_minor / (amount_minor - 4242) > 5").unwrap().build();
    let refused = e.reload("odd: block if if(currency == \"USD\", amount_minor, email) > 5");
    let charge = palisade_fraud::Attributes::new(palisade_core::Money::from_minor(4242, palisade_core::Currency::EUR))
        .email("alice.secret@example.com");
    let verdict = e.assess(&charge).await;
    assert_eq!(verdict.decision, palisade_fraud::Decision::Review);
    let text = logs.contents();
    assert!(text.contains("fraud rule failed to evaluate"), "{text}");
    for secret in ["alice.secret", "4242 /", "4242 %"] {
        assert!(!text.contains(secret), "{secret} in logs:\n{text}");
    }
    assert!(!format!("{verdict:?}").contains("alice.secret"), "{verdict:?}");
    assert_eq!(refused.map_err(|e| e.line), Err(1), "if() with branches of two types is refused at load");
    assert_eq!(verdict.decided_by.as_deref(), Some("guard"));
}
