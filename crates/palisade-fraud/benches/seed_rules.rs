//! The seed's fraud work, shared by `benches/engine.rs` and `examples/fraud_instr.rs`: its 50k varied contexts and
//! its 10-rule set (3 velocity rules) as Palisade built-in rules and as a rule file.
//!
//! The seed's velocity tracker is never fed, so its velocity rules never fire and every rule runs on every
//! context. Palisade records every attempt (one atomic record-and-read per decision); the velocity limits here
//! are set so they are never reached, so every rule runs on every context here too.

use palisade_core::{Currency, Money};
use palisade_fraud::{Action, Attributes, Field, FraudEngine, Measure, Rule, Subject, Velocity, VelocityStore, Window};

/// Contexts per pass, as in the seed.
pub const N: usize = 50_000;
/// Never reached: every rule runs on every context, as in the seed.
const HIGH: i64 = 1_000_000;

/// The seed's contexts.
pub fn contexts() -> Vec<Attributes> {
    contexts_of(0)
}

/// The seed's contexts with the attempt ids of pass `pass`: the same customers, cards, IPs and emails, each
/// decision a new attempt (another pass's contexts are retries of none of these).
pub fn contexts_of(pass: usize) -> Vec<Attributes> {
    (0..N)
        .map(|i| {
            Attributes::new(Money::from_minor((10 + (i % 3000) as i64) * 100, Currency::USD))
                .customer_id(format!("u{}", i % 5000))
                .email(format!("c{i}@example.com"))
                .ip(format!("10.0.{}.{}", i % 250, i % 200))
                .card_fingerprint(format!("tok_{}", i % 20000))
                .card_country("US")
                .billing_country(if i % 10 != 0 { "US" } else { "GB" })
                .avs_result("Y")
                .cvv_result("M")
                .attempt_id(if pass == 0 { format!("a{i}") } else { format!("a{pass}-{i}") })
        })
        .collect()
}

/// The seed's big blocklist (1000 emails, 100 IPs, 100 cards) is three Palisade rules.
fn blocklists() -> Vec<Rule> {
    vec![
        Rule::blocklist("bl_email", Field::Email, (0..1000).map(|i| format!("bad{i}@example.com"))),
        Rule::blocklist("bl_ip", Field::Ip, (0..100).map(|i| format!("10.9.{i}.1"))),
        Rule::blocklist("bl_card", Field::CardFingerprint, (0..100).map(|i| format!("tok_bad{i}"))),
    ]
}

/// The seed's rules as built-in rules (the seed's combined blocklist and AVS/CVV rules are 3 + 2: 14 rules).
#[allow(dead_code)] // not every user of this module runs both
pub fn builtin_engine() -> FraudEngine {
    seed_engine_on(palisade_fraud::MemoryVelocityStore::new())
}

/// The seed's rules as built-in rules on `store`.
pub fn seed_engine_on(store: impl VelocityStore) -> FraudEngine {
    let v = |s, w| Velocity::new(Measure::Attempts, s, w);
    FraudEngine::builder()
        .velocity_store(store)
        .review_threshold(50)
        .rules(blocklists())
        .rule(Rule::cvv_fails("cvv"))
        .rule(Rule::avs_fails("avs").action(Action::Block))
        .rule(Rule::velocity("user_hourly", v(Subject::Customer, Window::Hour), HIGH).action(Action::Block))
        .rule(Rule::velocity("card_10m", v(Subject::Card, Window::TenMinutes), HIGH).action(Action::Block))
        .rule(Rule::velocity("ip_hourly", v(Subject::Ip, Window::Hour), HIGH).action(Action::Block))
        .rule(Rule::country_mismatch("country", Field::CardCountry, Field::BillingCountry).action(Action::Challenge))
        .rule(Rule::amount_over("high_usd", [Money::from_minor(200_000, Currency::USD)]).action(Action::Challenge))
        .rule(Rule::amount_over("high_eur", [Money::from_minor(500_000, Currency::EUR)]).action(Action::Challenge))
        .rule(Rule::blocklist("fraud_email", Field::Email, ["fraud@example.com"]))
        .rule(Rule::country_mismatch("country_block", Field::CardCountry, Field::BillingCountry).action(Action::Block))
        .build()
}

/// The same rules, the blocklists built in and the rest from a rule file.
#[allow(dead_code)] // not every user of this module runs both
pub fn file_engine() -> FraudEngine {
    let file = format!(
        "cvv: block if cvv_result == \"mismatch\"\n\
         avs: block if avs_result == \"mismatch\"\n\
         avs_partial: challenge if avs_result == \"partial\"\n\
         user_hourly: block if attempts_per_customer_1h >= {HIGH}\n\
         card_10m: block if attempts_per_card_10m >= {HIGH}\n\
         ip_hourly: block if attempts_per_ip_1h >= {HIGH}\n\
         country: challenge if card_country != billing_country\n\
         high_usd: challenge if amount >= 2000 USD\n\
         high_eur: challenge if amount >= 5000 EUR\n\
         fraud_email: block if email == \"fraud@example.com\"\n\
         country_block: block if card_country != billing_country\n"
    );
    // The rule file is a constant of this module: it loads.
    FraudEngine::builder().review_threshold(50).rules(blocklists()).rule_file(&file).unwrap().build()
}
