//! The audit layer's cost per call around a service that answers at once, by what the subscriber records:
//! nothing (no subscriber), WARN (a service logging warnings: only failed calls are recorded) and INFO (every
//! call). Typed mode over a gateway charge request, HTTP mode over a JSON request with an `Authorization` header.
//! Every call succeeds, so at WARN nothing is written: what is measured is what the layer does for an event it
//! does not emit. The subscribers write to `io::sink`, so the INFO figures are the rendering, not the I/O.
//!
//! `cargo bench -p palisade-redaction --bench audit -- --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;

use bytes::Bytes;
use criterion::{Criterion, criterion_main};
use http_body_util::Full;
use palisade_core::{GatewayRequest, GatewayResponse, PaymentError};
use palisade_redaction::AuditLayer;
use palisade_testkit::{call_spinning, stripe_charge};
use tower::{Layer, service_fn};

fn subscriber(level: tracing::Level) -> impl tracing::Subscriber + Send + Sync {
    tracing_subscriber::fmt().with_max_level(level).with_writer(std::io::sink).finish()
}

fn http_request() -> http::Request<Full<Bytes>> {
    http::Request::post("/v1/charges?order=o-1")
        .header("authorization", "Bearer sk_test_123")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(
            br#"{"amount":"12.34","currency":"USD","source":"tok_visa","order_id":"o-1"}"#,
        )))
        .unwrap_or_else(|e| panic!("{e}"))
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap_or_else(|e| panic!("{e}"));
    let _guard = rt.enter();
    let mut g = c.benchmark_group("audit");
    let levels: [(&str, Option<tracing::Level>); 3] =
        [("none", None), ("warn", Some(tracing::Level::WARN)), ("info", Some(tracing::Level::INFO))];
    for (name, level) in levels {
        let _sub = level.map(|l| tracing::subscriber::set_default(subscriber(l)));
        let mut typed = AuditLayer::new()
            .layer(service_fn(|_req: GatewayRequest| async { Ok::<GatewayResponse, PaymentError>(stripe_charge()) }));
        let template = palisade_testkit::charge("o-1").amount("12.34").key("k-1").build();
        g.bench_function(format!("typed_{name}"), |b| {
            b.iter_batched(
                || template.clone(),
                |req| call_spinning(&mut typed, black_box(req)).map(|_| ()),
                criterion::BatchSize::SmallInput,
            )
        });
        let mut http =
            AuditLayer::builder().http().build().layer(service_fn(|_req: http::Request<Full<Bytes>>| async {
                Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(Bytes::from_static(
                    br#"{"id":"ch_1"}"#,
                ))))
            }));
        g.bench_function(format!("http_{name}"), |b| {
            b.iter_batched(
                http_request,
                |req| call_spinning(&mut http, black_box(req)).map(|_| ()),
                criterion::BatchSize::SmallInput,
            )
        });
    }
    g.finish();
}

fn benches() {
    let mut c = Criterion::default().configure_from_args();
    bench(&mut c);
}

criterion_main!(benches);
