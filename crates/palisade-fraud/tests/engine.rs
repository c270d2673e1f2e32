//! The engine: every built-in rule, order and short-circuit, scores and thresholds, rule-file errors, shadow
//! mode, hot reload under load, the store-down policy.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use palisade_core::{Currency, Money};
use palisade_fraud::{
    Action, Attempt, Attributes, BoxFuture, CardTesting, Decision, Field, FraudEngine, Measure, OnStoreDown, Rule,
    RuleOutcome, RuleSet, Subject, Velocity, VelocityCounts, VelocityError, VelocityStore, Window,
};

fn usd(minor: i64) -> Attributes {
    Attributes::new(Money::from_minor(minor, Currency::USD))
}

fn engine(rules: impl IntoIterator<Item = Rule>) -> FraudEngine {
    FraudEngine::builder().rules(rules).build()
}

fn decide(e: &FraudEngine, a: &Attributes) -> Decision {
    e.evaluate(a, &VelocityCounts::default()).decision
}

fn counts(pairs: &[(Velocity, i64)]) -> VelocityCounts {
    let mut c = VelocityCounts::default();
    for (v, n) in pairs {
        c.set(*v, *n);
    }
    c
}

#[test]
fn blocklists_match_each_field_and_nothing_else() {
    let e = engine([
        Rule::blocklist("email", Field::Email, ["Fraud@Example.com"]),
        Rule::blocklist("card", Field::CardFingerprint, ["fp_bad"]),
        Rule::blocklist("ip", Field::Ip, ["203.0.113.9"]),
        Rule::blocklist("bin", Field::CardBin, ["411111"]),
        Rule::blocklist("country", Field::IpCountry, ["kp"]),
    ]);
    let cases = [
        (usd(100).email("fraud@EXAMPLE.com "), "email"),
        (usd(100).card_fingerprint("fp_bad"), "card"),
        (usd(100).ip("203.0.113.9"), "ip"),
        (usd(100).card_bin("411111"), "bin"),
        (usd(100).ip_country("KP"), "country"),
    ];
    for (a, rule) in cases {
        let v = e.evaluate(&a, &VelocityCounts::default());
        assert_eq!(v.decision, Decision::Block, "{rule}");
        assert_eq!(v.decided_by.as_deref(), Some(rule));
    }
    let clean = usd(100).email("ok@example.com").card_fingerprint("fp_ok").ip("198.51.100.1").card_bin("400000");
    assert_eq!(decide(&e, &clean), Decision::Approve);
    assert_eq!(decide(&e, &usd(100)), Decision::Approve, "absent values never match a blocklist");
}

/// One address is one value whatever its spelling: padded, IPv4-mapped IPv6, IPv6 in capitals or with its
/// zeros written out — to blocklists, to rule expressions and to velocity, which counts an IPv6 address as its
/// /64 network.
#[tokio::test]
async fn an_ip_address_is_one_value_in_every_spelling() {
    let e = engine([
        Rule::blocklist("v4", Field::Ip, ["203.0.113.9"]),
        Rule::blocklist("v6", Field::Ip, ["2001:DB8:0:0:0:0:0:1"]),
    ]);
    for ip in [" 203.0.113.9 ", "::ffff:203.0.113.9", "::FFFF:203.0.113.9"] {
        assert_eq!(decide(&e, &usd(100).ip(ip)), Decision::Block, "{ip:?}");
    }
    for ip in ["2001:db8::1", "2001:0db8:0000::0001", " 2001:DB8::1"] {
        assert_eq!(decide(&e, &usd(100).ip(ip)), Decision::Block, "{ip:?}");
    }
    assert_eq!(decide(&e, &usd(100).ip("203.0.113.90")), Decision::Approve);
    assert_eq!(decide(&e, &usd(100).ip("not an address")), Decision::Approve, "kept as given, matches nothing");

    let rule = FraudEngine::builder().rule_file("block if ip == \"203.0.113.9\"").unwrap().build();
    assert_eq!(decide(&rule, &usd(100).ip("::ffff:203.0.113.9")), Decision::Block);

    let velocity = FraudEngine::builder().rule_file("block if attempts_per_ip_1h > 2").unwrap().build();
    let spellings = ["198.51.100.4", "::ffff:198.51.100.4", " 198.51.100.4"];
    let mut seen = Vec::new();
    for (i, ip) in spellings.iter().enumerate() {
        seen.push(velocity.assess(&usd(100).ip(*ip).attempt_id(format!("ip{i}"))).await.decision);
    }
    assert_eq!(seen, [Decision::Approve, Decision::Approve, Decision::Block], "three attempts from one address");

    // IPv6: velocity counts a /64 (one host's network), blocklists and rules the address.
    let spellings = ["2001:db8:1:2::1", "2001:db8:1:2:ffff::9", "2001:DB8:1:2:0:0:0:77"];
    let mut seen = Vec::new();
    for (i, ip) in spellings.iter().enumerate() {
        seen.push(velocity.assess(&usd(100).ip(*ip).attempt_id(format!("v6-{i}"))).await.decision);
    }
    assert_eq!(seen, [Decision::Approve, Decision::Approve, Decision::Block], "three attempts from one /64");
    let other = velocity.assess(&usd(100).ip("2001:db8:1:3::1").attempt_id("v6-other")).await;
    assert_eq!(other.decision, Decision::Approve, "the next /64 is another network");
    assert_eq!(decide(&e, &usd(100).ip("2001:db8::2")), Decision::Approve, "the blocklist holds 2001:db8::1 alone");
}

/// A challenge the customer has met raises nothing: the other rules decide, and the challenge rule's verdict is
/// still there (matched) for the audit. Only a rule set that can challenge asks whether the customer
/// authenticated.
#[test]
fn a_met_challenge_raises_nothing_and_is_still_reported() {
    let e = FraudEngine::builder()
        .rule_file("sca: challenge if amount > 1000 USD\nbig: review if amount > 500 USD")
        .unwrap()
        .build();
    let big = usd(200_000);
    let first = e.evaluate(&big, &VelocityCounts::default());
    assert_eq!((first.decision, first.decided_by.as_deref()), (Decision::Challenge, Some("sca")));
    let met = e.evaluate(&big.clone().authenticated(true), &VelocityCounts::default());
    assert_eq!((met.decision, met.decided_by.as_deref()), (Decision::Review, Some("big")));
    assert_eq!(met.verdicts().next().map(|v| v.outcome), Some(RuleOutcome::Matched), "sca matched, met");
    assert!(e.rules().fields().authentication());
    let no_challenge = FraudEngine::builder().rule_file("big: review if amount > 500 USD").unwrap().build();
    assert!(!no_challenge.rules().fields().authentication(), "nothing to authenticate for: not read");
}

/// An enforced rule that fails at run time sends the charge to review, decided by that rule; a shadow one
/// changes nothing; neither blocks.
#[test]
fn an_enforced_rule_that_fails_at_run_time_reviews() {
    let rules = "guard: block if amount_minor / (amount_minor - 60) > 5";
    let e = FraudEngine::builder().rule_file(rules).unwrap().build();
    let v = e.evaluate(&usd(60), &VelocityCounts::default());
    assert_eq!(v.outcomes(), [RuleOutcome::Error]);
    assert_eq!((v.decision, v.decided_by.as_deref()), (Decision::Review, Some("guard")));
    assert_eq!(decide(&e, &usd(61)), Decision::Block, "61 / 1 > 5: the rule works elsewhere");
    let shadow = FraudEngine::builder().rule_file(&rules.replace("guard: ", "guard: shadow ")).unwrap().build();
    assert_eq!(decide(&shadow, &usd(60)), Decision::Approve);
}

/// Velocity counts a mailbox: `a+1@x.com`, `A+2@X.com` and `a@x.com` are one; the rules still see the address
/// with its tag.
#[tokio::test]
async fn velocity_counts_an_email_without_its_plus_tag() {
    let e = FraudEngine::builder()
        .rule_file("tagged: review if email == \"a+1@x.com\"\nblock if attempts_per_email_1h > 2")
        .unwrap()
        .build();
    let mut seen = Vec::new();
    for (i, email) in ["a+1@x.com", "A+2@X.com", "a@x.com"].iter().enumerate() {
        seen.push(e.assess(&usd(100).email(*email).attempt_id(format!("m{i}"))).await.decision);
    }
    assert_eq!(seen, [Decision::Review, Decision::Approve, Decision::Block], "three attempts from one mailbox");
    let other = e.assess(&usd(100).email("b+1@x.com").attempt_id("m-other")).await;
    assert_eq!(other.decision, Decision::Approve, "another mailbox");
}

#[test]
fn avs_and_cvv_failures() {
    let e = engine([Rule::avs_fails("avs"), Rule::cvv_fails("cvv")]);
    assert_eq!(decide(&e, &usd(100).avs_result("FAIL")), Decision::Review);
    assert_eq!(decide(&e, &usd(100).avs_result("N")), Decision::Review);
    assert_eq!(decide(&e, &usd(100).cvv_result("fail")), Decision::Block);
    assert_eq!(decide(&e, &usd(100).avs_result("pass").cvv_result("pass")), Decision::Approve);
    assert_eq!(decide(&e, &usd(100).avs_result("unavailable")), Decision::Approve);
}

#[test]
fn velocity_threshold_is_strictly_above() {
    let v = Velocity::new(Measure::Attempts, Subject::Card, Window::Hour);
    let e = engine([Rule::velocity("card_1h", v, 3).action(Action::Challenge)]);
    let a = usd(100).card_fingerprint("fp");
    assert_eq!(e.evaluate(&a, &counts(&[(v, 3)])).decision, Decision::Approve);
    assert_eq!(e.evaluate(&a, &counts(&[(v, 4)])).decision, Decision::Challenge);
    let amount = Velocity::new(Measure::Amount, Subject::Email, Window::Day);
    let e = engine([Rule::velocity("email_spend", amount, 100_000)]);
    assert_eq!(e.evaluate(&a, &counts(&[(amount, 100_001)])).decision, Decision::Review);
}

#[test]
fn country_mismatch_needs_both_countries() {
    let e = engine([Rule::country_mismatch("card_vs_ip", Field::CardCountry, Field::IpCountry).action(Action::Review)]);
    assert_eq!(decide(&e, &usd(1).card_country("US").ip_country("RU")), Decision::Review);
    assert_eq!(decide(&e, &usd(1).card_country("us").ip_country("US")), Decision::Approve);
    assert_eq!(decide(&e, &usd(1).card_country("US")), Decision::Approve);
    let e = engine([Rule::country_mismatch("card_vs_billing", Field::CardCountry, Field::BillingCountry)]);
    let v = e.evaluate(&usd(1).card_country("US").billing_country("GB"), &VelocityCounts::default());
    assert_eq!(v.score, 20, "default action adds 20 to the score");
}

#[test]
fn amount_thresholds_are_exact_and_per_currency() {
    let e = engine([Rule::amount_over(
        "big",
        [Money::from_minor(50_000, Currency::USD), Money::from_minor(100_000, Currency::JPY)],
    )]);
    assert_eq!(decide(&e, &usd(50_000)), Decision::Approve, "500.00 USD is not over 500.00 USD");
    assert_eq!(decide(&e, &usd(50_001)), Decision::Review, "500.01 USD is");
    let jpy = |m| Attributes::new(Money::from_minor(m, Currency::JPY));
    assert_eq!(decide(&e, &jpy(100_000)), Decision::Approve);
    assert_eq!(decide(&e, &jpy(100_001)), Decision::Review);
    let eur = Attributes::new(Money::from_minor(10_000_000, Currency::EUR));
    assert_eq!(decide(&e, &eur), Decision::Approve, "no threshold for EUR: never matches");
}

#[test]
fn card_testing_small_attempts_or_declines() {
    let e = engine([Rule::card_testing("card_testing", CardTesting::new(Subject::Card))]);
    let attempts = Velocity::new(Measure::Attempts, Subject::Card, Window::TenMinutes);
    let declines = Velocity::new(Measure::Declines, Subject::Card, Window::TenMinutes);
    let small = usd(100).card_fingerprint("fp");
    let big = usd(5_000).card_fingerprint("fp");
    assert_eq!(e.evaluate(&small, &counts(&[(attempts, 4)])).decision, Decision::Approve);
    assert_eq!(e.evaluate(&small, &counts(&[(attempts, 5)])).decision, Decision::Block);
    assert_eq!(e.evaluate(&big, &counts(&[(attempts, 5)])).decision, Decision::Approve, "not small");
    assert_eq!(e.evaluate(&big, &counts(&[(declines, 3)])).decision, Decision::Block, "many declines");
    assert_eq!(e.evaluate(&big, &counts(&[(declines, 2)])).decision, Decision::Approve);
    let by_ip = engine([Rule::card_testing("ip_testing", CardTesting::new(Subject::Ip))]);
    let ip_decl = Velocity::new(Measure::Declines, Subject::Ip, Window::TenMinutes);
    assert_eq!(by_ip.evaluate(&usd(100).ip("1.2.3.4"), &counts(&[(ip_decl, 3)])).decision, Decision::Block);
}

#[test]
fn rules_run_in_order_and_a_block_short_circuits() {
    let e = engine([
        Rule::expression("first", "amount_minor > 0").unwrap().action(Action::Score(10)),
        Rule::blocklist("block", Field::Email, ["x@y.z"]),
        Rule::expression("after", "true").unwrap().action(Action::Challenge),
    ]);
    let v = e.evaluate(&usd(1).email("x@y.z"), &VelocityCounts::default());
    assert_eq!(v.decision, Decision::Block);
    assert_eq!(v.decided_by.as_deref(), Some("block"));
    let verdicts: Vec<_> = v.verdicts().collect();
    let outcomes: Vec<_> = verdicts.iter().map(|r| (&*r.rule, r.outcome)).collect();
    assert_eq!(
        outcomes,
        [("first", RuleOutcome::Matched), ("block", RuleOutcome::Matched), ("after", RuleOutcome::Skipped)]
    );
    assert_eq!(v.score, 10);
    // Without the block, the later challenge applies and every verdict carries its reason.
    let v = e.evaluate(&usd(1), &VelocityCounts::default());
    assert_eq!(v.decision, Decision::Challenge);
    assert_eq!(v.verdict("block").unwrap().outcome, RuleOutcome::NotMatched);
    assert_eq!(&*v.verdict("first").unwrap().reason, "amount_minor > 0");
}

#[test]
fn most_severe_decision_wins_and_the_first_rule_to_reach_it_decides() {
    let e = FraudEngine::builder()
        .rule_file("r1: review if true\nr2: challenge if true\nr3: review if true")
        .unwrap()
        .build();
    let v = e.evaluate(&usd(1), &VelocityCounts::default());
    assert_eq!(v.decision, Decision::Challenge);
    assert_eq!(v.decided_by.as_deref(), Some("r2"));
}

#[test]
fn scores_add_up_and_later_rules_read_the_running_score() {
    let e = FraudEngine::builder()
        .rule_file(
            "a: score 30 if email_domain == \"mailinator.com\"\n\
             b: score 25 if card_country != ip_country\n\
             c: challenge if risk_score >= 55 and risk_score < 65\n\
             d: score -100 if customer_id == \"vip\"",
        )
        .unwrap()
        .build();
    let a = usd(1).email("x@Mailinator.com").card_country("US").ip_country("FR");
    let v = e.evaluate(&a, &VelocityCounts::default());
    assert_eq!(v.score, 55);
    assert_eq!(v.decision, Decision::Challenge, "c sees the running score of 55");
    let v = e.evaluate(&a.clone().risk_score(10), &VelocityCounts::default());
    assert_eq!(v.score, 65);
    assert_eq!(v.decision, Decision::Review, "65 reaches the review threshold");
    assert_eq!(v.decided_by.as_deref(), Some("review_threshold"));
    let v = e.evaluate(&a.clone().risk_score(20), &VelocityCounts::default());
    assert_eq!((v.decision, v.decided_by.as_deref()), (Decision::Block, Some("block_threshold")));
    let v = e.evaluate(&a.risk_score(20).customer_id("vip"), &VelocityCounts::default());
    assert_eq!((v.score, v.decision), (-25, Decision::Approve));
}

#[test]
fn thresholds_are_configurable() {
    let e = FraudEngine::builder()
        .review_threshold(10)
        .block_threshold(20)
        .rule(Rule::expression("s", "true").unwrap().action(Action::Score(15)))
        .build();
    assert_eq!(decide(&e, &usd(1)), Decision::Review);
    assert_eq!(decide(&e, &usd(1).risk_score(5)), Decision::Block);
}

#[test]
fn rule_file_errors_name_the_line() {
    let cases: &[(&str, usize, &str)] = &[
        ("review if true\n\n# c\nblock if cart_total > 3", 4, "unknown attribute `cart_total`"),
        ("block if amount > 500", 1, "`amount` needs a currency"),
        ("review if true\nblock if amount > 1.5", 2, "not an integer"),
        ("review if true\nblock if amount > 0.001 USD", 2, "not an exact amount"),
        ("deny if true", 1, "unknown action `deny`"),
        ("block amount_minor > 3", 1, "expected `if`"),
        ("score x if true", 1, "needs an integer"),
        ("block if email == \"a", 1, "unterminated string"),
        ("block if email + 1", 1, "does not evaluate to true or false"),
        ("block if amount_minor", 1, "does not evaluate to true or false"),
        ("block if ((", 1, "invalid expression"),
        ("a: block if true\na: review if true", 2, "already defined"),
        ("block if amount_minor = 5", 1, "cannot assign"),
        ("block if", 1, "condition after `if` is empty"),
        ("review if true\nblock if ip_country == 'RU'", 2, "double quotes"),
    ];
    for (text, line, needle) in cases {
        let err = RuleSet::parse(text).unwrap_err();
        assert_eq!(err.line, *line, "{text}: {err}");
        assert!(err.message.contains(needle), "{text}: {err}");
        assert!(err.to_string().starts_with(&format!("rule file line {line}:")));
    }
}

#[test]
fn money_literals_compare_exactly_in_their_currency() {
    let e = FraudEngine::builder().rule_file("block if amount > 500 USD").unwrap().build();
    assert_eq!(decide(&e, &usd(50_000)), Decision::Approve);
    assert_eq!(decide(&e, &usd(50_001)), Decision::Block);
    let eur = Attributes::new(Money::from_minor(50_001, Currency::EUR));
    assert_eq!(decide(&e, &eur), Decision::Approve, "a USD threshold says nothing about EUR");
    let e = FraudEngine::builder().rule_file("block if amount >= 1.5 KWD").unwrap().build();
    assert_eq!(decide(&e, &Attributes::new(Money::from_minor(1_499, Currency::KWD))), Decision::Approve);
    assert_eq!(decide(&e, &Attributes::new(Money::from_minor(1_500, Currency::KWD))), Decision::Block);
}

#[test]
fn shadow_rules_are_counted_and_logged_but_not_enforced() {
    let e = FraudEngine::builder()
        .rule_file(
            "trial: shadow block if email_domain == \"evil.test\"\nshadow score 90 if true\nlive: review if false",
        )
        .unwrap()
        .build();
    let v = e.evaluate(&usd(1).email("a@evil.test"), &VelocityCounts::default());
    assert_eq!(v.decision, Decision::Approve);
    assert_eq!(v.score, 0, "a shadow score rule adds nothing");
    let shadow: Vec<_> = v.shadow_matches().map(|r| r.rule).collect();
    assert_eq!(shadow, [Arc::from("trial"), Arc::from("line_2")]);
    assert_eq!(v.verdict("live").unwrap().outcome, RuleOutcome::NotMatched, "a shadow block does not short-circuit");
    let rules = e.rules();
    assert_eq!(rules.rules()[0].stats().shadow_matched.load(Ordering::Relaxed), 1);
    assert_eq!(rules.rules()[0].stats().matched.load(Ordering::Relaxed), 0);
}

#[test]
fn reload_swaps_rules_and_keeps_the_old_ones_on_error() {
    let e = FraudEngine::builder()
        .rule(Rule::blocklist("builtin", Field::Email, ["b@b.b"]))
        .rule_file("v1: review if true")
        .unwrap()
        .build();
    assert_eq!(e.rules().names(), ["builtin", "v1"]);
    e.reload("v2: challenge if true").unwrap();
    assert_eq!(e.rules().names(), ["builtin", "v2"], "built-ins stay first");
    let err = e.reload("ok: review if true\nbad: block if nope > 1").unwrap_err();
    assert_eq!(err.line, 2);
    assert_eq!(e.rules().names(), ["builtin", "v2"], "a bad file changes nothing");
    assert_eq!(decide(&e, &usd(1)), Decision::Challenge);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hot_reload_under_load_never_fails_a_decision() {
    let e = FraudEngine::builder().rule_file("a: review if amount_minor > 0").unwrap().build();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut workers = Vec::new();
    for w in 0..8 {
        let e = e.clone();
        let stop = stop.clone();
        workers.push(tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) || n < 200 {
                let a = usd(100).card_fingerprint(format!("fp{w}")).attempt_id(format!("w{w}-{n}"));
                let v = e.assess(&a).await;
                // Either rule set decides whole: v1 reviews, v2 challenges; never an error, never a mix.
                assert!(matches!(v.decision, Decision::Review | Decision::Challenge), "{v:?}");
                assert_eq!(v.verdicts().len(), 1);
                assert!(v.verdicts().all(|r| r.outcome == RuleOutcome::Matched));
                n += 1;
                tokio::task::yield_now().await;
            }
            n
        }));
    }
    for i in 0..200 {
        let text = if i % 2 == 0 { "b: challenge if amount_minor > 0" } else { "a: review if amount_minor > 0" };
        e.reload(text).unwrap();
        if i % 10 == 0 {
            assert!(e.reload("broken if").is_err());
        }
        tokio::task::yield_now().await;
    }
    stop.store(true, Ordering::Relaxed);
    let mut total = 0;
    for w in workers {
        total += w.await.expect("a decision panicked during reload");
    }
    assert!(total >= 1_600);
}

struct DownStore;
impl VelocityStore for DownStore {
    fn record_attempt<'a>(&'a self, _: &'a Attempt<'a>) -> BoxFuture<'a, Result<VelocityCounts, VelocityError>> {
        Box::pin(async { Err(VelocityError("connection refused".into())) })
    }
    fn record_decline<'a>(&'a self, _: &'a Attempt<'a>) -> BoxFuture<'a, Result<(), VelocityError>> {
        Box::pin(async { Err(VelocityError("connection refused".into())) })
    }
}

#[tokio::test]
async fn store_down_reviews_by_default_blocks_or_ignores_when_configured() {
    let rules = "score 10 if true\nblock if email == \"x@y.z\"\nreview if attempts_per_card_1h > 100";
    let review = FraudEngine::builder().velocity_store(DownStore).rule_file(rules).unwrap().build();
    let v = review.assess(&usd(1)).await;
    assert_eq!((v.decision, v.decided_by.as_deref()), (Decision::Review, Some("velocity_store")));
    assert!(!v.velocity_available);
    let v = review.assess(&usd(1).email("x@y.z")).await;
    assert_eq!(v.decision, Decision::Block, "a blocking rule still blocks");

    let velocity = "review if attempts_per_email_1h > 100";
    let down = |p| FraudEngine::builder().velocity_store(DownStore).on_store_down(p).rule_file(velocity).unwrap();
    assert_eq!(down(OnStoreDown::Block).build().assess(&usd(1)).await.decision, Decision::Block);
    assert_eq!(down(OnStoreDown::Ignore).build().assess(&usd(1)).await.decision, Decision::Approve);

    // A rule set that reads no velocity attribute needs no record: the store is not asked, so it cannot fail.
    let no_velocity = FraudEngine::builder().velocity_store(DownStore).on_store_down(OnStoreDown::Block).build();
    let v = no_velocity.assess(&usd(1)).await;
    assert_eq!(v.decision, Decision::Approve);
    assert!(v.velocity_available);
}

#[tokio::test]
async fn rule_file_velocity_attributes_come_from_the_store() {
    let e = FraudEngine::builder()
        .rule_file("challenge if attempts_per_card_1h > 3\nblock if amount_per_email_24h > 100 USD")
        .unwrap()
        .build();
    let mut seen = Vec::new();
    for i in 0..5 {
        let a = usd(1_000).card_fingerprint("fp").attempt_id(format!("k{i}"));
        seen.push(e.assess(&a).await.decision);
    }
    assert_eq!(
        seen,
        [Decision::Approve, Decision::Approve, Decision::Approve, Decision::Challenge, Decision::Challenge]
    );
    // 60 + 50 USD on one email: the second crosses 100 USD.
    assert_eq!(e.assess(&usd(6_000).email("m@x.io")).await.decision, Decision::Approve);
    assert_eq!(e.assess(&usd(5_000).email("M@x.io")).await.decision, Decision::Block);
}

/// The evaluation loop against a plain model of the documented semantics, on short (inline outcomes) and long
/// (more than 32 rules: outcomes on the heap) rule sets with every kind of outcome: matched, shadow-matched, not
/// matched, failed (a division by zero at run time) and skipped after a block.
#[test]
fn outcomes_follow_the_documented_order_on_short_and_long_rule_sets() {
    for n in [3usize, 9, 32, 33, 47] {
        // Rule i matches when amount_minor % (i % 7 + 2) == 0; every 11th rule divides by (amount_minor - 60).
        let rules: Vec<(Rule, Action, bool, usize)> = (0..n)
            .map(|i| {
                let k = i % 7 + 2;
                let (action, shadow) = match i % 6 {
                    0 => (Action::Score(9), false),
                    1 => (Action::Review, false),
                    2 => (Action::Block, true),
                    3 => (Action::Challenge, false),
                    4 => (Action::Score(-4), true),
                    _ => (Action::Block, i % 4 == 1),
                };
                let text = if i % 11 == 10 {
                    format!("amount_minor / (amount_minor - 60) > 0 || amount_minor % {k} == 0")
                } else {
                    format!("amount_minor % {k} == 0")
                };
                let rule = Rule::expression(&format!("r{i}"), &text).unwrap().action(action).shadow(shadow);
                (rule, action, shadow, k)
            })
            .collect();
        let e = FraudEngine::builder()
            .review_threshold(30)
            .block_threshold(60)
            .rules(rules.iter().map(|(r, ..)| r.clone()))
            .build();
        for amount in 1..=130i64 {
            let v = e.evaluate(&usd(amount), &VelocityCounts::default());
            // The model.
            let (mut decision, mut by, mut score) = (Decision::Approve, None::<String>, 0i64);
            let mut expected = vec![RuleOutcome::Skipped; n];
            for (i, (_, action, shadow, k)) in rules.iter().enumerate() {
                let fails = i % 11 == 10 && amount == 60;
                if fails {
                    expected[i] = RuleOutcome::Error;
                    // An enforced rule that fails sends the charge to review.
                    if !*shadow && decision < Decision::Review {
                        (decision, by) = (Decision::Review, Some(format!("r{i}")));
                    }
                    continue;
                }
                let divides = i % 11 == 10 && amount > 60; // amount / (amount - 60) > 0
                if !divides && amount % *k as i64 != 0 {
                    expected[i] = RuleOutcome::NotMatched;
                    continue;
                }
                if *shadow {
                    expected[i] = RuleOutcome::ShadowMatched;
                    continue;
                }
                expected[i] = RuleOutcome::Matched;
                let d = match action {
                    Action::Score(s) => {
                        score += s;
                        continue;
                    }
                    Action::Review => Decision::Review,
                    Action::Challenge => Decision::Challenge,
                    _ => Decision::Block,
                };
                if d > decision {
                    decision = d;
                    by = Some(format!("r{i}"));
                }
                if d == Decision::Block {
                    break;
                }
            }
            if decision < Decision::Block && score >= 60 {
                (decision, by) = (Decision::Block, Some("block_threshold".into()));
            } else if decision < Decision::Review && score >= 30 {
                (decision, by) = (Decision::Review, Some("review_threshold".into()));
            }
            assert_eq!(v.outcomes(), expected.as_slice(), "n = {n}, amount = {amount}");
            assert_eq!(v.decision, decision, "n = {n}, amount = {amount}");
            assert_eq!(v.score, score, "n = {n}, amount = {amount}");
            assert_eq!(v.decided_by.as_deref(), by.as_deref(), "n = {n}, amount = {amount}");
            assert_eq!(v.verdicts().len(), n);
        }
    }
}

/// `if(...)` whose branches have different types is refused at load: on a charge the sample values do not take
/// (here a EUR charge), it would fail at run time comparing the email with a number.
#[test]
fn if_branches_of_different_types_are_refused_at_load() {
    let text = "ok: review if true\nodd: block if if(currency == \"USD\", amount_minor, email) > 5";
    let err = RuleSet::parse(text).unwrap_err();
    assert_eq!(err.line, 2, "{err}");
    assert!(err.message.contains("if("), "{err}");
    // Nested, and inside a tuple.
    for bad in [
        "block if if(true, if(currency == \"EUR\", 1, \"x\"), 2) > 1",
        "block if len(if(currency == \"USD\", (email, 1), (email, 1, 2))) > 1",
    ] {
        assert_eq!(RuleSet::parse(bad).unwrap_err().line, 1, "{bad}");
    }
    // Branches of one type load, and choose.
    let e = FraudEngine::builder()
        .rule_file("limit: block if if(currency == \"USD\", amount_minor, amount_minor * 2) > 100")
        .unwrap()
        .build();
    assert_eq!(decide(&e, &usd(100)), Decision::Approve);
    assert_eq!(decide(&e, &Attributes::new(Money::from_minor(100, Currency::EUR))), Decision::Block);
}

/// An evaluation error keeps no value of the charge: the verdict's reason says what kind of error it was, and
/// neither it nor the assessment's `Debug` holds the operands.
#[test]
fn evaluation_errors_keep_no_values() {
    let e = FraudEngine::builder()
        .rule_file(
            "guard: block if amount_minor / (amount_minor - 4242) > 5\n\
             big: review if amount_per_card_24h * 1000000000000 > 1",
        )
        .unwrap()
        .build();
    let a = Attributes::new(Money::from_minor(4242, Currency::EUR)).email("alice.secret@example.com");
    let spent = Velocity::new(Measure::Amount, Subject::Card, Window::Day);
    let v = e.evaluate(&a, &counts(&[(spent, 987_654_321)]));
    assert_eq!(v.outcomes(), [RuleOutcome::Error, RuleOutcome::Error]);
    assert_eq!((v.decision, v.decided_by.as_deref()), (Decision::Review, Some("guard")));
    let guard = v.verdict("guard").unwrap();
    assert!(guard.reason.contains("division by zero"), "{}", guard.reason);
    let big = v.verdict("big").unwrap();
    assert!(big.reason.contains("overflow"), "{}", big.reason);
    let debug = format!("{v:?}");
    for secret in ["4242", "987654321", "alice.secret"] {
        assert!(!debug.contains(secret), "{secret} in {debug}");
    }
}

/// A shadow rule never changes what is enforced, even when the velocity store is down: with only shadow rules
/// reading velocity, the store-down policy does not apply, and those rules are reported as errors (not evaluated
/// on made-up zeros). An enforced velocity rule still brings the policy in.
#[tokio::test]
async fn shadow_velocity_rules_do_not_change_enforcement_when_the_store_is_down() {
    let rules = "trial: shadow block if attempts_per_card_1h > 100\nshadow review if attempts_per_card_1h < 1";
    for policy in [OnStoreDown::Review, OnStoreDown::Block, OnStoreDown::Ignore] {
        let e =
            FraudEngine::builder().velocity_store(DownStore).on_store_down(policy).rule_file(rules).unwrap().build();
        let v = e.assess(&usd(1).card_fingerprint("fp_shadow")).await;
        assert_eq!((v.decision, v.decided_by.as_deref()), (Decision::Approve, None), "{policy:?}: {v:?}");
        assert!(!v.velocity_available);
        assert_eq!(v.outcomes(), [RuleOutcome::Error, RuleOutcome::Error], "{policy:?}");
        assert!(v.verdict("trial").unwrap().reason.contains("velocity store"), "{v:?}");
        assert_eq!(e.rules().rules()[1].stats().shadow_matched.load(Ordering::Relaxed), 0, "not run on zeros");
    }
    let enforced = format!("{rules}\nlive: review if attempts_per_card_24h > 1000");
    let e = FraudEngine::builder().velocity_store(DownStore).rule_file(&enforced).unwrap().build();
    let v = e.assess(&usd(1).card_fingerprint("fp_shadow")).await;
    assert_eq!((v.decision, v.decided_by.as_deref()), (Decision::Review, Some("velocity_store")));
}

/// A masked email shows the domain only when it reads as one: text after the last `@` that is not a domain
/// (card digits, free text) is masked too.
#[test]
fn mask_email_keeps_only_a_plausible_domain() {
    use palisade_fraud::mask_email;
    assert_eq!(mask_email("jane.doe@example.com"), "j***@example.com");
    let masked = mask_email("x@4111111111111111 cvv 123");
    assert!(!masked.contains("4111") && !masked.contains("123"), "{masked}");
    assert_eq!(mask_email("a@b@example.com"), "a***@example.com");
    assert!(!mask_email("secret@evil@4111111111111111").contains("4111"));
    assert!(!mask_email("bob@localhost").contains("localhost"), "no dot: not a domain");
    assert_eq!(mask_email("nobody"), "***");
    let debug = format!("{:?}", usd(1).email("x@4111111111111111 cvv 123"));
    assert!(!debug.contains("4111"), "{debug}");
}

/// A rule file with bare carriage returns (old Mac line endings) has one rule per line, like `\n` and `\r\n`
/// files, with the same line numbers in errors.
#[test]
fn carriage_return_line_endings_end_lines() {
    let e = FraudEngine::builder().build();
    e.reload("# v2\rblock if true").unwrap();
    assert_eq!(e.rules().names(), ["line_2"]);
    assert_eq!(decide(&e, &usd(1)), Decision::Block);
    for text in [
        "review if true\rblock if nope > 1",
        "review if true\r\nblock if nope > 1",
        "review if true\nblock if nope > 1",
    ] {
        assert_eq!(RuleSet::parse(text).unwrap_err().line, 2, "{text:?}");
    }
    let mixed = RuleSet::parse("a: review if true\r\rb: block if false\r\nc: score 1 if true\n").unwrap();
    assert_eq!(mixed.names(), ["a", "b", "c"]);
}

/// No floats anywhere: a number written with a leading dot is refused at load, with its line.
#[test]
fn leading_dot_floats_are_refused() {
    for text in ["review if true\nreview if risk_score > .5", "review if true\nreview if risk_score > 0 + .5"] {
        let err = RuleSet::parse(text).unwrap_err();
        assert_eq!(err.line, 2, "{text}: {err}");
        assert!(err.message.contains("not an integer"), "{text}: {err}");
    }
}

/// Rule names are unique across the built-in rules and the rule file, and the names the engine gives its own
/// decisions (`velocity_store`, `review_threshold`, `block_threshold`) are no rule's.
#[test]
fn rule_names_are_unique_and_not_reserved() {
    for reserved in ["velocity_store", "review_threshold", "block_threshold"] {
        let err = RuleSet::parse(&format!("review if true\n{reserved}: block if true")).unwrap_err();
        assert_eq!(err.line, 2, "{reserved}: {err}");
        assert!(err.message.contains("reserved"), "{err}");
    }
    let builtin = || FraudEngine::builder().rule(Rule::blocklist("bad_email", Field::Email, ["x@y.z"]));
    let err = builtin().rule_file("ok: review if true\nbad_email: review if true").err().expect("refused");
    assert_eq!(err.line, 2, "{err}");
    assert!(err.message.contains("built-in"), "{err}");
    assert!(builtin().rule_file("review if true\n\nreview if false").is_ok(), "unnamed rules are called line_<n>");
    let e = builtin().rule_file("ok: review if true").unwrap().build();
    let err = e.reload("bad_email: block if true").unwrap_err();
    assert_eq!(err.line, 1);
    assert_eq!(e.rules().names(), ["bad_email", "ok"], "refused: the old rules stay");
    let line_named = FraudEngine::builder().rule(Rule::avs_fails("line_2")).build();
    assert_eq!(line_named.reload("# one\nreview if true").unwrap_err().line, 2, "line_2 is taken");
}

#[test]
#[should_panic(expected = "velocity_store")]
fn a_built_in_rule_with_a_reserved_name_is_refused() {
    let _ = FraudEngine::builder().rule(Rule::avs_fails("velocity_store"));
}

#[test]
#[should_panic(expected = "two built-in fraud rules")]
fn two_built_in_rules_with_one_name_are_refused() {
    let _ = FraudEngine::builder().rule(Rule::avs_fails("checks")).rule(Rule::cvv_fails("checks"));
}

#[test]
#[should_panic(expected = "rule file")]
fn a_built_in_rule_named_like_a_file_rule_is_refused() {
    let _ = FraudEngine::builder().rule_file("checks: review if true").unwrap().rule(Rule::cvv_fails("checks"));
}
