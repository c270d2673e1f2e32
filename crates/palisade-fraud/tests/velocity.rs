//! Velocity: N concurrent attempts on one card admit exactly the limit (memory, Redis, two instances sharing
//! Redis); a retry with the same idempotency key counts once; declines; the store-down policy on a dead Redis.

use std::sync::Arc;

use palisade_core::{Currency, Money};
use palisade_fraud::{
    Attributes, Decision, FraudEngine, Measure, MemoryVelocityStore, Subject, Velocity, VelocityCounts, VelocityStore,
    Window,
};

const LIMIT: i64 = 3;
const N: usize = 40;

fn rules() -> String {
    format!("velocity: block if attempts_per_card_1h > {LIMIT}")
}

fn attempt(card: &str, i: usize) -> Attributes {
    Attributes::new(Money::from_minor(1_000, Currency::USD)).card_fingerprint(card).attempt_id(format!("key-{i}"))
}

/// N concurrent attempts spread over `engines`, one card: returns how many were approved.
async fn race(engines: &[FraudEngine], card: &str) -> usize {
    let mut tasks = Vec::new();
    for i in 0..N {
        let e = engines[i % engines.len()].clone();
        let a = attempt(card, i);
        tasks.push(tokio::spawn(async move { e.assess(&a).await.decision }));
    }
    let mut approved = 0;
    for t in tasks {
        if t.await.unwrap() == Decision::Approve {
            approved += 1;
        }
    }
    approved
}

fn engine_on(store: Arc<dyn VelocityStore>) -> FraudEngine {
    FraudEngine::builder().shared_velocity_store(store).rule_file(&rules()).unwrap().build()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn memory_concurrent_attempts_on_one_card_admit_exactly_the_limit() {
    let e = engine_on(Arc::new(MemoryVelocityStore::new()));
    assert_eq!(race(std::slice::from_ref(&e), "fp_hot").await, LIMIT as usize);
    assert_eq!(race(&[e], "fp_other").await, LIMIT as usize, "another card has its own count");
}

async fn retry_counts_once(e: &FraudEngine) {
    let a = attempt("fp_retry", 0);
    for _ in 0..10 {
        let v = e.assess(&a).await;
        assert_eq!(v.decision, Decision::Approve, "a retry of the same request is the same attempt");
    }
    let counts = (1..=LIMIT as usize).map(|i| attempt("fp_retry", i));
    let mut last = Decision::Approve;
    for a in counts {
        last = e.assess(&a).await.decision;
    }
    assert_eq!(last, Decision::Block, "the 4th distinct attempt is over the limit: retries added nothing");
}

#[tokio::test]
async fn memory_retry_with_the_same_idempotency_key_counts_once() {
    retry_counts_once(&engine_on(Arc::new(MemoryVelocityStore::new()))).await;
}

/// A request re-executed after an Unknown outcome (the gateway may have charged it) is decided on the velocity its
/// first decision saw: the attempts that came after it do not turn its approval into a block, and a blocked
/// attempt stays blocked.
async fn a_retry_is_decided_on_the_velocity_its_first_attempt_saw(e: &FraudEngine) {
    let mut first = Vec::new();
    for i in 0..=LIMIT as usize + 2 {
        first.push(e.assess(&attempt("fp_first", i)).await.decision);
    }
    let approved = LIMIT as usize;
    assert!(first[..approved].iter().all(|d| *d == Decision::Approve), "{first:?}");
    assert!(first[approved..].iter().all(|d| *d == Decision::Block), "{first:?}");
    for (i, want) in first.iter().enumerate().rev() {
        let again = e.assess(&attempt("fp_first", i)).await;
        assert_eq!(again.decision, *want, "the retry of attempt {i}");
    }
}

#[tokio::test]
async fn memory_a_retry_is_decided_on_the_velocity_its_first_attempt_saw() {
    a_retry_is_decided_on_the_velocity_its_first_attempt_saw(&engine_on(Arc::new(MemoryVelocityStore::new()))).await;
}

#[tokio::test]
async fn attempts_without_a_key_each_count() {
    let e = engine_on(Arc::new(MemoryVelocityStore::new()));
    let a = Attributes::new(Money::from_minor(1_000, Currency::USD)).card_fingerprint("fp_nokey");
    let mut d = Vec::new();
    for _ in 0..4 {
        d.push(e.assess(&a).await.decision);
    }
    assert_eq!(d, [Decision::Approve, Decision::Approve, Decision::Approve, Decision::Block]);
}

#[tokio::test(start_paused = true)]
async fn memory_windows_slide() {
    let store = MemoryVelocityStore::new();
    let e =
        FraudEngine::builder().velocity_store(store).rule_file("block if attempts_per_card_10m > 2").unwrap().build();
    for i in 0..2 {
        assert_eq!(e.assess(&attempt("fp_w", i)).await.decision, Decision::Approve);
    }
    assert_eq!(e.assess(&attempt("fp_w", 2)).await.decision, Decision::Block);
    tokio::time::advance(std::time::Duration::from_secs(601)).await;
    let v = e.assess(&attempt("fp_w", 3)).await;
    assert_eq!(v.decision, Decision::Approve, "ten minutes later the 10m window is empty again");
}

#[tokio::test]
async fn declines_are_counted_once_per_attempt_and_feed_card_testing() {
    let e = FraudEngine::builder()
        .rule(palisade_fraud::Rule::card_testing("ct", palisade_fraud::CardTesting::new(Subject::Card)))
        .build();
    for i in 0..3 {
        let a = attempt("fp_dec", i).amount(Money::from_minor(50_000, Currency::USD));
        assert_eq!(e.assess(&a).await.decision, Decision::Approve);
        e.record_decline(&a).await.unwrap();
        e.record_decline(&a).await.unwrap(); // the same attempt's decline again: counted once
    }
    let a = attempt("fp_dec", 9).amount(Money::from_minor(50_000, Currency::USD));
    let v = e.assess(&a).await;
    assert_eq!(v.decision, Decision::Block, "three declines on the card in ten minutes: card testing");
}

#[tokio::test]
async fn amount_velocity_sums_the_same_currency_only() {
    let store = MemoryVelocityStore::new();
    let a = |m: i64, c: Currency, i: usize| {
        Attributes::new(Money::from_minor(m, c)).email("S@x.io").attempt_id(format!("a{i}"))
    };
    let record = |a: &Attributes| store.record_attempt_now(&palisade_fraud::Attempt::from_attributes(a));
    record(&a(1_000, Currency::USD, 0));
    record(&a(9_999, Currency::EUR, 1));
    let c = record(&a(500, Currency::USD, 2));
    assert_eq!(c.get(Velocity::new(Measure::Amount, Subject::Email, Window::Day)), 1_500);
    assert_eq!(c.get(Velocity::new(Measure::Attempts, Subject::Email, Window::Day)), 3);
}

/// A negative (or zero) amount adds nothing to `amount_per_*`: otherwise one attempt of -1,000,000.00 on a card
/// would lower its 24-hour sum and let the next large charge through.
async fn negative_amounts_do_not_lower_amount_velocity(e: &FraudEngine) {
    let card = |m: i64, i: usize| {
        Attributes::new(Money::from_minor(m, Currency::USD)).card_fingerprint("fp_neg").attempt_id(format!("n{i}"))
    };
    e.assess(&card(-100_000_000, 0)).await;
    e.assess(&card(0, 1)).await;
    let v = e.assess(&card(150_000, 2)).await;
    assert_eq!(v.decision, Decision::Block, "1,500.00 USD on the card today is over the limit: {v:?}");
}

fn amount_limit_engine(store: Arc<dyn VelocityStore>) -> FraudEngine {
    FraudEngine::builder()
        .shared_velocity_store(store)
        .rule_file("daily: block if amount_per_card_24h > 1000 USD")
        .unwrap()
        .build()
}

#[tokio::test]
async fn memory_negative_amounts_do_not_lower_amount_velocity() {
    negative_amounts_do_not_lower_amount_velocity(&amount_limit_engine(Arc::new(MemoryVelocityStore::new()))).await;
}

/// Amount sums saturate instead of wrapping: two attempts of 5,000,000,000,000,000,000 JPY on one email sum past
/// `i64::MAX`, and every store reads the sum as `i64::MAX` (over any limit), never as a negative number that no
/// `amount_per_*` rule would match for a day.
async fn huge_amount_sums_saturate(store: Arc<dyn VelocityStore>) {
    let e = FraudEngine::builder()
        .shared_velocity_store(store.clone())
        .rule_file("daily: block if amount_per_email_24h > 100000 JPY")
        .unwrap()
        .build();
    let jpy = |m: i64, id: &str| {
        Attributes::new(Money::from_minor(m, Currency::JPY)).email("big@spender.example").attempt_id(id)
    };
    let huge = 5_000_000_000_000_000_000;
    assert_eq!(e.assess(&jpy(huge, "a")).await.decision, Decision::Block);
    let second = e.assess(&jpy(huge, "b")).await;
    assert_eq!((second.decision, second.decided_by.as_deref()), (Decision::Block, Some("daily")), "{second:?}");
    // The largest amount there is, on top: still saturated, in every window.
    let max = jpy(i64::MAX, "c");
    let counts = store.record_attempt(&palisade_fraud::Attempt::from_attributes(&max)).await.unwrap();
    for w in Window::ALL {
        assert_eq!(counts.get(Velocity::new(Measure::Amount, Subject::Email, w)), i64::MAX, "{w:?}");
    }
    let small = jpy(1, "d");
    let counts = store.record_attempt(&palisade_fraud::Attempt::from_attributes(&small)).await.unwrap();
    assert_eq!(counts.get(Velocity::new(Measure::Amount, Subject::Email, Window::Day)), i64::MAX);
    assert_eq!(counts.get(Velocity::new(Measure::Attempts, Subject::Email, Window::Day)), 4);
}

#[tokio::test]
async fn memory_huge_amount_sums_saturate() {
    huge_amount_sums_saturate(Arc::new(MemoryVelocityStore::new())).await;
}

/// An idempotency key is one attempt only with the same amount and currency: the same key with another amount
/// (or currency) is another attempt, counted and decided on its own; a true retry (same key, same amount, same
/// currency) still counts once and reads its first decision's velocity.
async fn same_key_with_another_amount_is_another_attempt(store: Arc<dyn VelocityStore>) {
    let e = amount_limit_engine(store.clone());
    let card =
        |m: i64, c: Currency| Attributes::new(Money::from_minor(m, c)).card_fingerprint("fp_same_key").attempt_id("K");
    assert_eq!(e.assess(&card(1_000, Currency::USD)).await.decision, Decision::Approve);
    let big = e.assess(&card(900_000, Currency::USD)).await;
    assert_eq!(big.decision, Decision::Block, "9,000 USD more on the card is over 1,000 USD: {big:?}");
    assert_eq!(e.assess(&card(900_000, Currency::USD)).await.decision, Decision::Block, "its retry");
    assert_eq!(e.assess(&card(1_000, Currency::USD)).await.decision, Decision::Approve, "the first's retry");
    // The same key in another currency: another attempt too.
    let eur = card(1_000, Currency::EUR);
    let eur = palisade_fraud::Attempt::from_attributes(&eur);
    let counts = store.record_attempt(&eur).await.unwrap();
    assert_eq!(counts.get(Velocity::new(Measure::Attempts, Subject::Card, Window::Day)), 3);
    assert_eq!(counts.get(Velocity::new(Measure::Amount, Subject::Card, Window::Day)), 1_000);
    let again = store.record_attempt(&eur).await.unwrap();
    assert_eq!(again, counts, "a retry of it counts once");
}

#[tokio::test]
async fn memory_same_key_with_another_amount_is_another_attempt() {
    same_key_with_another_amount_is_another_attempt(Arc::new(MemoryVelocityStore::new())).await;
}

/// Sums are kept exactly past `i64::MAX` (only reading saturates): when a huge attempt leaves a window, the
/// attempts still in it are all still counted.
#[tokio::test(start_paused = true)]
async fn memory_amount_sums_stay_exact_after_saturating() {
    use std::time::Duration;
    let store = MemoryVelocityStore::new();
    let card = |m: i64, id: &str| {
        Attributes::new(Money::from_minor(m, Currency::USD)).card_fingerprint("fp_sat").attempt_id(id)
    };
    let record = |a: &Attributes| store.record_attempt_now(&palisade_fraud::Attempt::from_attributes(a));
    let sum = |c: &VelocityCounts, w| c.get(Velocity::new(Measure::Amount, Subject::Card, w));
    record(&card(i64::MAX, "huge"));
    record(&card(i64::MAX, "huge2"));
    tokio::time::advance(Duration::from_secs(1)).await;
    let c = record(&card(1_000, "small"));
    assert_eq!(sum(&c, Window::TenMinutes), i64::MAX);
    // The huge ones have left the 10-minute window, the small one has not.
    tokio::time::advance(Duration::from_millis(599_500)).await;
    let c = record(&card(0, "zero"));
    assert_eq!(sum(&c, Window::TenMinutes), 1_000, "the attempts still in the window");
    assert_eq!(sum(&c, Window::Hour), i64::MAX);
    // And out of the day.
    tokio::time::advance(Duration::from_secs(86_400 - 600)).await;
    let c = record(&card(5, "five"));
    assert_eq!(sum(&c, Window::Day), 1_005, "{c:?}");
    assert_eq!(c.get(Velocity::new(Measure::Attempts, Subject::Card, Window::Day)), 3);
}

trait WithAmount {
    fn amount(self, m: Money) -> Self;
}
impl WithAmount for Attributes {
    fn amount(mut self, m: Money) -> Self {
        self.amount = m;
        self
    }
}

#[cfg(feature = "redis")]
mod redis_store {
    use super::*;
    use palisade_fraud::{OnStoreDown, RedisVelocityStore};
    use palisade_store::redis::RedisConnection;

    fn store(r: &palisade_testkit::RedisTest) -> RedisVelocityStore {
        RedisVelocityStore::new(RedisConnection::new(r.conn.clone())).prefix(r.prefix.clone())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn redis_concurrent_attempts_on_one_card_admit_exactly_the_limit() {
        let Some(r) = palisade_testkit::redis("fraud_velocity_race").await else { return };
        let e = engine_on(Arc::new(store(&r)));
        assert_eq!(race(&[e], "fp_hot").await, LIMIT as usize);
        r.cleanup().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn redis_two_instances_sharing_redis_admit_exactly_the_limit_together() {
        let Some(r) = palisade_testkit::redis("fraud_velocity_two").await else { return };
        // Two stores with their own connections: two service instances.
        let conn2 = redis::aio::ConnectionManager::new(r.client.clone()).await.unwrap();
        let a = engine_on(Arc::new(store(&r)));
        let b = engine_on(Arc::new(RedisVelocityStore::new(RedisConnection::new(conn2)).prefix(r.prefix.clone())));
        assert_eq!(race(&[a, b], "fp_shared").await, LIMIT as usize);
        r.cleanup().await;
    }

    #[tokio::test]
    async fn redis_retry_with_the_same_idempotency_key_counts_once() {
        let Some(r) = palisade_testkit::redis("fraud_velocity_retry").await else { return };
        retry_counts_once(&engine_on(Arc::new(store(&r)))).await;
        r.cleanup().await;
    }

    #[tokio::test]
    async fn redis_a_retry_is_decided_on_the_velocity_its_first_attempt_saw() {
        let Some(r) = palisade_testkit::redis("fraud_velocity_first").await else { return };
        a_retry_is_decided_on_the_velocity_its_first_attempt_saw(&engine_on(Arc::new(store(&r)))).await;
        r.cleanup().await;
    }

    #[tokio::test]
    async fn redis_negative_amounts_do_not_lower_amount_velocity() {
        let Some(r) = palisade_testkit::redis("fraud_velocity_negative").await else { return };
        negative_amounts_do_not_lower_amount_velocity(&amount_limit_engine(Arc::new(store(&r)))).await;
        r.cleanup().await;
    }

    #[tokio::test]
    async fn redis_huge_amount_sums_saturate() {
        let Some(r) = palisade_testkit::redis("fraud_velocity_saturate").await else { return };
        huge_amount_sums_saturate(Arc::new(store(&r))).await;
        r.cleanup().await;
    }

    #[tokio::test]
    async fn redis_same_key_with_another_amount_is_another_attempt() {
        let Some(r) = palisade_testkit::redis("fraud_velocity_same_key").await else { return };
        same_key_with_another_amount_is_another_attempt(Arc::new(store(&r))).await;
        r.cleanup().await;
    }

    #[tokio::test]
    async fn redis_counts_match_memory_and_keys_hold_no_plain_values() {
        let Some(r) = palisade_testkit::redis("fraud_velocity_same").await else { return };
        let redis_store = store(&r);
        let mem = MemoryVelocityStore::new();
        let mk = |m: i64, c: Currency, i: usize| {
            Attributes::new(Money::from_minor(m, c))
                .email("Someone@Example.com")
                .card_fingerprint("fp_same")
                .ip("203.0.113.7")
                .customer_id("cus_1")
                .attempt_id(format!("a{i}"))
        };
        // The last: the first's idempotency key with another card, another attempt to both stores.
        let attrs = [
            mk(1_000, Currency::USD, 0),
            mk(2_000, Currency::EUR, 1),
            mk(500, Currency::USD, 2),
            mk(700, Currency::USD, 0).card_fingerprint("fp_other"),
        ];
        let attempts = attrs.each_ref().map(palisade_fraud::Attempt::from_attributes);
        for (i, at) in attempts.iter().enumerate() {
            if i == 1 {
                redis_store.record_decline(at).await.unwrap();
                mem.record_decline_now(at);
            }
            let x = redis_store.record_attempt(at).await.unwrap();
            let y = mem.record_attempt_now(at);
            assert_eq!(x, y, "attempt {i}");
        }
        let other_card = redis_store.record_attempt(&attempts[3]).await.unwrap();
        assert_eq!(other_card.get(Velocity::new(Measure::Attempts, Subject::Email, Window::Hour)), 4);
        let last = redis_store.record_attempt(&attempts[2]).await.unwrap();
        assert_eq!(last.get(Velocity::new(Measure::Amount, Subject::Customer, Window::Hour)), 1_500);
        assert_eq!(last.get(Velocity::new(Measure::Declines, Subject::Ip, Window::TenMinutes)), 1);
        let keys = r.keys().await.unwrap();
        assert!(!keys.is_empty());
        for k in &keys {
            assert!(
                !k.to_lowercase().contains("someone") && !k.contains("203.0.113.7") && !k.contains("fp_same"),
                "{k}"
            );
            assert!(k.contains("{default}"), "one hash tag per namespace: {k}");
        }
        r.cleanup().await;
    }

    #[tokio::test]
    async fn redis_down_reviews_by_default_and_blocks_when_configured() {
        let url = palisade_testkit::unreachable_redis_url();
        let down = || RedisVelocityStore::new(RedisConnection::lazy(&url));
        let review = FraudEngine::builder().velocity_store(down()).rule_file(&rules()).unwrap().build();
        let v = review.assess(&attempt("fp_down", 0)).await;
        assert_eq!((v.decision, v.decided_by.as_deref()), (Decision::Review, Some("velocity_store")));
        assert!(!v.velocity_available);
        let block = FraudEngine::builder()
            .velocity_store(down())
            .on_store_down(OnStoreDown::Block)
            .rule_file(&rules())
            .unwrap()
            .build();
        assert_eq!(block.assess(&attempt("fp_down", 1)).await.decision, Decision::Block);
        assert!(review.record_decline(&attempt("fp_down", 0)).await.is_err());
    }

    /// Every command clients send that names one of `prefix`'s keys, as `MONITOR` shows them (commands a script
    /// runs are shown as coming from `lua` and left out), while `work` runs.
    async fn commands_sent(
        r: &palisade_testkit::RedisTest,
        work: impl std::future::Future<Output = ()>,
    ) -> Vec<String> {
        use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
        let addr = r.url.trim_start_matches("redis://").trim_end_matches('/');
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        stream.write_all(b"MONITOR\r\n").await.unwrap();
        let mut monitor = tokio::io::BufReader::new(stream);
        let mut line = String::new();
        monitor.read_line(&mut line).await.unwrap();
        assert_eq!(line.trim_end(), "+OK");
        work.await;
        // A marker sent after the work: once MONITOR shows it, it has shown everything sent before.
        let marker = format!("{}monitor-end", r.prefix);
        let _: String = redis::cmd("ECHO").arg(&marker).query_async(&mut r.conn.clone()).await.unwrap();
        let mut sent = Vec::new();
        let read = async {
            loop {
                line.clear();
                assert!(monitor.read_line(&mut line).await.unwrap() > 0, "MONITOR closed");
                if line.contains(&marker) {
                    break;
                }
                if line.contains(&r.prefix) && !line.contains(" lua]") {
                    let name = line.split('"').nth(1).unwrap_or("").to_ascii_lowercase();
                    sent.push(name);
                }
            }
        };
        tokio::time::timeout(std::time::Duration::from_secs(30), read).await.expect("MONITOR shows the marker");
        sent
    }

    /// One round trip per decision for all velocity rules together: a decision whose rules read velocity of all
    /// four subjects and all three measures sends Redis one command, an EVALSHA.
    #[tokio::test]
    async fn redis_one_command_per_decision_for_all_velocity_rules() {
        let Some(r) = palisade_testkit::redis("fraud_velocity_round_trip").await else { return };
        let rules = "block if attempts_per_card_1h > 100\n\
                     block if amount_per_email_24h > 1000000 USD\n\
                     review if declines_per_ip_10m > 5\n\
                     challenge if attempts_per_customer_10m > 50\n\
                     score 10 if amount_per_card_10m > 500 USD";
        let e = FraudEngine::builder().velocity_store(store(&r)).rule_file(rules).unwrap().build();
        let charge = |i: usize| attempt("fp_rt", i).email("rt@example.com").ip("198.51.100.7").customer_id("cus_rt");
        // The first decision loads the script (EVALSHA answers NOSCRIPT, then EVAL): not counted.
        e.assess(&charge(0)).await;
        let sent = commands_sent(&r, async {
            let v = e.assess(&charge(1)).await;
            assert!(v.velocity_available);
            assert_eq!(v.decision, Decision::Approve);
        })
        .await;
        assert_eq!(sent, ["evalsha"], "one decision, one command");
        r.cleanup().await;
    }
}
