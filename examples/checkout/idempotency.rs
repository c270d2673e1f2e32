//! Scenario: idempotent replay — the IdempotencyLayer in front of the gateway.

use std::time::Duration;

use palisade::core::*;
use palisade::idempotency::{IdempotencyLayer, LeaseStore, MemoryStore, PostgresStore, RedisStore};
use palisade::sim::{Fault, GatewaySim, Latency};
use tower::{Layer, ServiceExt};

use crate::Env;
use crate::report::Report;

fn charge(order: &str, amount: &str, key: &str) -> GatewayRequest {
    GatewayRequest::Charge(
        ChargeRequest::new(
            Money::parse(amount, Currency::USD).expect("valid amount"),
            PaymentToken::new("tok_visa").expect("valid token"),
            order.parse().expect("a reference without card data"),
        )
        .idempotency_key(IdempotencyKey::new(key).expect("valid key")),
    )
}

fn layered<S: LeaseStore>(store: S, sim: &GatewaySim) -> Gateway {
    // A walkthrough keeps its records ten minutes, not the default 24 h, so a dev Redis does not fill up.
    let layer =
        IdempotencyLayer::builder().store(store).lease(Duration::from_secs(30)).ttl(Duration::from_secs(600)).build();
    tower::util::BoxCloneService::new(layer.layer(sim.clone()))
}

/// A PostgreSQL store's schema of its own, dropped when the scenario ends.
struct PostgresSchema {
    store: PostgresStore,
    schema: String,
}

impl PostgresSchema {
    async fn drop_schema(self, r: &Report) {
        let sql = format!("DROP SCHEMA IF EXISTS {} CASCADE", self.schema);
        match sqlx::query(&sql).execute(self.store.pool()).await {
            Ok(_) => r.step(format!("dropped the schema {}", self.schema)),
            Err(e) => r.step(format!("could not drop the schema {} ({e})", self.schema)),
        }
        self.store.pool().close().await;
    }
}

/// The records in PostgreSQL, in a schema of this run's own (created by `migrate`).
async fn postgres(r: &Report, url: &str, sim: &GatewaySim) -> Option<(Gateway, PostgresSchema)> {
    let nonce = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_micros());
    let schema = format!("palisade_checkout_{}_{nonce}", std::process::id());
    let shown = redact_password(url);
    let store = match PostgresStore::connect(url).await {
        Ok(s) => s,
        Err(e) => {
            r.step(format!("PostgreSQL unavailable at {shown} ({e}); using the in-memory store"));
            return None;
        }
    };
    let store = match store.with_prefix(&format!("{schema}.palisade_")) {
        Ok(s) => s,
        Err(e) => {
            r.step(format!("invalid PostgreSQL prefix ({e}); using the in-memory store"));
            return None;
        }
    };
    let pg = PostgresSchema { store: store.clone(), schema };
    if let Err(e) = store.migrate().await {
        r.step(format!("could not create the idempotency tables at {shown} ({e}); using the in-memory store"));
        pg.drop_schema(r).await;
        return None;
    }
    r.step(format!("idempotency records are kept in PostgreSQL at {shown}, in the schema {}", pg.schema));
    Some((layered(store, sim), pg))
}

/// `url` with its password, if any, replaced by `***`.
fn redact_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_owned() };
    let Some((userinfo, host)) = rest.rsplit_once('@') else { return url.to_owned() };
    match userinfo.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_owned(),
    }
}

/// The gateway behind the layer: PostgreSQL records (in a schema of their own, returned to be dropped) when
/// `PALISADE_POSTGRES_URL` is set, else Redis records (under a prefix of their own, so runs never replay each
/// other) when `PALISADE_REDIS_URL` is set, in memory otherwise.
async fn gateway(r: &Report, env: &Env, sim: &GatewaySim) -> (Gateway, Option<PostgresSchema>) {
    if let Some(url) = &env.postgres_url {
        if env.redis_url.is_some() {
            r.step("both PALISADE_POSTGRES_URL and PALISADE_REDIS_URL are set: this scenario uses PostgreSQL");
        }
        if let Some((gw, pg)) = postgres(r, url, sim).await {
            return (gw, Some(pg));
        }
    } else if let Some(url) = &env.redis_url {
        let nonce = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        match RedisStore::connect(url).await {
            Ok(s) => {
                r.step(format!("idempotency records are kept in Redis at {url}"));
                let gw = layered(s.with_prefix(format!("palisade:checkout:{}:{nonce}:", std::process::id())), sim);
                return (gw, None);
            }
            Err(e) => r.step(format!("Redis unavailable ({e}); using the in-memory store")),
        }
    }
    (layered(MemoryStore::new(), sim), None)
}

type Gateway = tower::util::BoxCloneService<GatewayRequest, GatewayResponse, PaymentError>;

pub async fn idempotent_replay(r: &mut Report, env: &Env) {
    r.scenario(
        "idempotent replay",
        "The customer clicks Pay twice, the browser retries, a load balancer replays the request: the same\n\
         Idempotency-Key arrives again and again, some copies while the first is still running. The\n\
         IdempotencyLayer claims the key atomically, so the charge runs once; later copies get the stored\n\
         charge back, and a different payload under the same key is refused.",
    );
    let sim = GatewaySim::builder().latency(Latency::fixed(Duration::from_millis(50))).build();
    let (gw, pg) = gateway(r, env, &sim).await;
    replay(r, &gw, &sim).await;
    if let Some(pg) = pg {
        drop(gw);
        pg.drop_schema(r).await;
    }
}

/// The scenario's requests and claims, on whichever store `gw` has.
async fn replay(r: &mut Report, gw: &Gateway, sim: &GatewaySim) {
    let first = gw.clone().oneshot(charge("order-2001", "49.99", "checkout-order-2001")).await;
    let Ok(first) = first else {
        r.check("the first charge succeeds", false);
        return;
    };
    r.step(format!("first request charged {} as {}", first.amount, first.id));
    let again = gw.clone().oneshot(charge("order-2001", "49.99", "checkout-order-2001")).await;
    r.check("the same key and payload return the stored charge", again.as_ref().ok() == Some(&first));

    let calls_before = sim.calls();
    let mut copies = tokio::task::JoinSet::new();
    for _ in 0..20 {
        let gw = gw.clone();
        copies.spawn(async move { gw.oneshot(charge("order-2002", "15.00", "checkout-order-2002")).await });
    }
    let (mut ok, mut in_flight, mut other) = (0, 0, Vec::new());
    while let Some(res) = copies.join_next().await {
        match res {
            Ok(Ok(_)) => ok += 1,
            Ok(Err(PaymentError::IdempotencyInFlight { .. })) => in_flight += 1,
            // Anything else (a 503 from a stalled store, a panic) is named, so a failed claim says why.
            Ok(Err(e)) => other.push(e.to_string()),
            Err(e) => other.push(format!("task failed: {e}")),
        }
    }
    r.step(format!(
        "20 concurrent copies of another payment: {ok} answered with the charge, {in_flight} told 409 in flight"
    ));
    if !other.is_empty() {
        r.step(format!("{} copies got something else: {}", other.len(), other.join("; ")));
    }
    r.check(
        "every copy got the charge or a 409, and only one reached the gateway",
        ok + in_flight == 20 && sim.calls() - calls_before == 1,
    );

    let different = gw.clone().oneshot(charge("order-2001", "99.00", "checkout-order-2001")).await;
    if let Err(e) = &different {
        r.step(format!("same key, different amount: {e}"));
    }
    r.check("a different payload under the same key is refused", different == Err(PaymentError::IdempotencyConflict));

    sim.script(Operation::Charge, [Fault::FailAfterCommit]);
    let lost = gw.clone().oneshot(charge("order-2003", "20.00", "checkout-order-2003")).await;
    let retried = gw.clone().oneshot(charge("order-2003", "20.00", "checkout-order-2003")).await;
    r.step(format!(
        "a lost response ({}) is released, and the retry carries the same gateway key",
        lost.as_ref().err().map_or("no error".to_owned(), ToString::to_string)
    ));
    r.check("the retry after a lost response gets the charge", retried.is_ok());

    r.check("the ledger shows exactly one charge for order-2001", sim.charges_for("order-2001").len() == 1);
    r.check("the ledger shows exactly one charge for order-2002", sim.charges_for("order-2002").len() == 1);
    r.check("the ledger shows exactly one charge for order-2003", sim.charges_for("order-2003").len() == 1);
}
