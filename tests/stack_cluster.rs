//! `palisade::StackStores` on a real Redis Cluster (`PALISADE_REDIS_CLUSTER`, see palisade-testkit): two
//! instances built from the cluster URL share idempotency records, fraud velocity and the breaker's shared state.
#![cfg(feature = "redis")]

use palisade::circuit_breaker::CircuitBreakerLayer;
use palisade::core::*;
use palisade::fraud::FraudEngine;
use palisade::idempotency::IdempotencyLayer;
use palisade::sim::GatewaySim;
use palisade::{Backend, Stack, StackStores};
use tower::{Service, ServiceExt};

async fn call<S>(svc: &mut S, req: GatewayRequest) -> Result<GatewayResponse, PaymentError>
where
    S: Service<GatewayRequest, Response = GatewayResponse, Error = PaymentError>,
{
    svc.ready().await?.call(req).await
}

#[tokio::test]
async fn two_instances_share_one_cluster_through_stack_stores() {
    let Some(t) = palisade_testkit::redis_cluster("stack_cluster").await else { return };
    // StackStores uses each layer's default key prefix: the test's keys carry its run id instead.
    let run = t.prefix.rsplit(':').nth(1).unwrap().to_owned();
    let sim = GatewaySim::new();
    let build = |stores: StackStores| {
        assert_eq!(stores.backend(), Backend::Redis);
        Stack::new()
            .stores(stores)
            .idempotency(IdempotencyLayer::builder())
            .fraud(FraudEngine::builder().rule_file("block if attempts_per_card_1h > 2").unwrap())
            .circuit_breaker(CircuitBreakerLayer::builder().name(format!("psp-{run}")))
            .service(sim.clone())
            .unwrap()
    };
    let mut a = build(StackStores::redis(&t.url).await.unwrap());
    let mut b = build(StackStores::redis(&t.url).await.unwrap());
    let charge = |n: usize| {
        let mut c = palisade_testkit::charge(&format!("o{n}")).key(&format!("{run}-k{n}")).request();
        c.metadata.insert("card_fingerprint".into(), Reference::new(format!("fp-{run}")).unwrap());
        GatewayRequest::Charge(c)
    };
    let first = call(&mut a, charge(1)).await.unwrap();
    assert_eq!(call(&mut b, charge(1)).await.unwrap(), first, "b replays a's record from the cluster");
    assert_eq!(sim.calls(), 1);
    call(&mut b, charge(2)).await.unwrap();
    let e = call(&mut a, charge(3)).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::FraudBlocked, "a counted b's attempts with the same card");
    t.delete_matching(&format!("*{run}*")).await;
}
