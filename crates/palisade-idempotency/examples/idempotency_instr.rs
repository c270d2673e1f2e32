//! Instructions per call through the idempotency layer on the memory store, for before/after comparisons that
//! hold on a busy machine: run under `valgrind --tool=callgrind` with two call counts and divide the difference
//! (docs/BENCHMARKS.md, issue 17). Usage: `idempotency_instr <typed_new|typed_replay|http_new|http_replay> <calls>`.
use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::Full;
use palisade_core::*;
use palisade_idempotency::{HttpIdempotencyLayer, IdempotencyLayer, MemoryStore};
use palisade_testkit::spin;
use tower::{Layer, Service};

fn request(key: &str) -> GatewayRequest {
    GatewayRequest::Charge(
        ChargeRequest::new(
            Money::parse("12.34", Currency::USD).unwrap(),
            PaymentToken::new("tok_visa").unwrap(),
            "order-bench".parse().unwrap(),
        )
        .idempotency_key(IdempotencyKey::new(key).unwrap()),
    )
}
fn response() -> GatewayResponse {
    GatewayResponse {
        id: "ch_3MqBz2LkdIwHu7ix0snN0B15".into(),
        operation: Operation::Charge,
        status: PaymentStatus::Captured,
        amount: Money::parse("12.34", Currency::USD).unwrap(),
        order_reference: "order-bench".parse().unwrap(),
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (what, n): (&str, usize) = (&args[1], args[2].parse().unwrap());
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let _g = rt.enter();
    let res = response();
    let bare = tower::service_fn(move |_r: GatewayRequest| std::future::ready(Ok::<_, PaymentError>(res.clone())));
    match what {
        "typed_new" | "typed_replay" => {
            let mut svc = IdempotencyLayer::builder().store(MemoryStore::new()).build().layer(bare);
            let reqs: Vec<_> = (0..n)
                .map(|i| request(&if what == "typed_new" { format!("k{i}") } else { "same".to_owned() }))
                .collect();
            for r in reqs {
                spin(svc.call(r)).unwrap();
            }
        }
        "http_new" | "http_replay" => {
            let handler = tower::service_fn(|_req: http::Request<Full<Bytes>>| async {
                let mut res =
                    http::Response::new(Full::new(Bytes::from_static(br#"{"id":"ch_1","status":"captured"}"#)));
                *res.status_mut() = http::StatusCode::CREATED;
                Ok::<_, Infallible>(res)
            });
            let body =
                Bytes::from_static(br#"{"amount":"12.34","currency":"USD","source":"tok_visa","order_id":"o1"}"#);
            let mut svc = HttpIdempotencyLayer::builder().store(MemoryStore::new()).build().layer(handler);
            for i in 0..n {
                let key = if what == "http_new" { format!("k{i}") } else { "same".to_owned() };
                let req = http::Request::post("/v1/charges")
                    .header("idempotency-key", key)
                    .header("content-type", "application/json")
                    .body(Full::new(body.clone()))
                    .unwrap();
                spin(svc.call(req)).unwrap();
            }
        }
        "none" => {}
        _ => panic!("workload"),
    }
}
