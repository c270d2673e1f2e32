//! Idempotency overhead per call against the bare service (memory store, typed and HTTP mode), and Redis-store
//! throughput at 50 concurrent requests (compare with `redis-benchmark -c 50 -t set -q` run in the same window).
//!
//! ```text
//! cargo bench -p palisade-idempotency --features redis --bench idempotency -- --warm-up-time 1 --measurement-time 3
//! ```

use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use http_body_util::Full;
use palisade_core::*;
use palisade_idempotency::{Claim, HttpIdempotencyLayer, IdempotencyLayer, MemoryStore, Payload};
use tower::{Layer, Service};

fn request(key: &str) -> GatewayRequest {
    GatewayRequest::Charge(
        ChargeRequest::new(
            Money::parse("12.34", Currency::USD).expect("amount"),
            PaymentToken::new("tok_visa").expect("token"),
            "order-bench".parse().unwrap(),
        )
        .idempotency_key(IdempotencyKey::new(key).expect("key")),
    )
}

/// A charge as a gateway returns it, with an id of Stripe's length (27 characters).
fn response() -> GatewayResponse {
    GatewayResponse {
        id: "ch_3MqBz2LkdIwHu7ix0snN0B15".into(),
        operation: Operation::Charge,
        status: PaymentStatus::Captured,
        amount: Money::parse("12.34", Currency::USD).expect("amount"),
        order_reference: "order-bench".parse().expect("reference"),
    }
}

/// The bare service: answers at once, so the benchmark measures the layer, not a gateway.
fn bare() -> impl Service<GatewayRequest, Response = GatewayResponse, Error = PaymentError, Future: Send> + Clone + Send
{
    let res = response();
    tower::service_fn(move |_req: GatewayRequest| std::future::ready(Ok::<_, PaymentError>(res.clone())))
}

/// New keys every call, records kept `ttl`: expired ones are reclaimed as new ones come in, so the store holds
/// about (calls/s × ttl) records in a steady state. 1 ms keeps that to a few hundred (warm caches); 200 ms to
/// some hundred thousand, so a new record and the one reclaimed for it are in cold memory.
fn layer(store: &MemoryStore, ttl: Duration) -> IdempotencyLayer {
    IdempotencyLayer::builder().store(store.clone()).lease(ttl).ttl(ttl).build()
}

const WARM: Duration = Duration::from_millis(1);
const COLD: Duration = Duration::from_millis(200);

fn typed(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let mut g = c.benchmark_group("idempotency_typed_memory");
    g.throughput(Throughput::Elements(1));
    let reqs: Vec<GatewayRequest> = (0..1000).map(|i| request(&format!("key-{i}"))).collect();

    let mut svc = bare();
    let req = request("bare");
    g.bench_function("bare_service", |b| {
        b.to_async(&rt).iter(|| {
            let r = req.clone();
            let fut = svc.call(r);
            async move { fut.await.expect("ok") }
        })
    });

    let n = AtomicU64::new(0);
    // `new_request_default_ttl` keeps the defaults (24 h): nothing expires during the run, so the store grows to
    // millions of records.
    for (name, ttl) in
        [("new_request", Some(COLD)), ("new_request_warm", Some(WARM)), ("new_request_default_ttl", None)]
    {
        let store = MemoryStore::new();
        let layer = match ttl {
            Some(ttl) => layer(&store, ttl),
            None => IdempotencyLayer::builder().store(store.clone()).build(),
        };
        let mut svc = layer.layer(bare());
        g.bench_function(name, |b| {
            b.to_async(&rt).iter(|| {
                let i = n.fetch_add(1, Ordering::Relaxed);
                // A fresh key per call: the request is cloned from a small pool and re-keyed.
                let mut r = reqs[(i % 1000) as usize].clone();
                r.set_gateway_key(IdempotencyKey::new(format!("n{i}")).expect("key"));
                let fut = svc.call(r);
                async move { fut.await.expect("ok") }
            })
        });
        eprintln!("{name}: {} records held at the end", store.len());
    }

    // A floor for the store's part: the least any in-memory record keeping does per new request, with no
    // lock, fingerprint, lease or expiry clock. A std `HashMap` from key to a boxed copy of the response, and a
    // FIFO of keys that evicts the oldest once `held` records are kept: the cold size matches what
    // `new_request` holds in a steady state, the warm one a few hundred records.
    for (name, held) in [("floor_map_fifo", 140_000), ("floor_map_fifo_warm", 1_000)] {
        let mut svc = bare();
        let map: std::collections::HashMap<IdempotencyKey, Box<GatewayResponse>> =
            std::collections::HashMap::with_capacity(held + 1);
        let state = std::cell::RefCell::new((map, std::collections::VecDeque::with_capacity(held + 1)));
        g.bench_function(name, |b| {
            b.to_async(&rt).iter(|| {
                let i = n.fetch_add(1, Ordering::Relaxed);
                let mut r = reqs[(i % 1000) as usize].clone();
                r.set_gateway_key(IdempotencyKey::new(format!("n{i}")).expect("key"));
                let key = r.gateway_key().cloned().expect("key");
                let fut = svc.call(r);
                let state = &state;
                async move {
                    let res = fut.await.expect("ok");
                    let (map, fifo) = &mut *state.borrow_mut();
                    map.insert(key.clone(), Box::new(res.clone()));
                    fifo.push_back(key);
                    if fifo.len() > held
                        && let Some(old) = fifo.pop_front()
                    {
                        map.remove(&old);
                    }
                    res
                }
            })
        });
    }

    let n = AtomicU64::new(0);
    g.bench_function("rekey_only", |b| {
        // What `new_request` spends outside the layer (clone + key formatting), to subtract.
        b.to_async(&rt).iter(|| {
            let i = n.fetch_add(1, Ordering::Relaxed);
            let mut r = reqs[(i % 1000) as usize].clone();
            r.set_gateway_key(IdempotencyKey::new(format!("n{i}")).expect("key"));
            async move { r }
        })
    });

    let mut replay_svc = IdempotencyLayer::builder().store(MemoryStore::new()).build().layer(bare());
    rt.block_on(async { replay_svc.call(request("replayed")).await.expect("first") });
    let req = request("replayed");
    g.bench_function("replay", |b| {
        b.to_async(&rt).iter(|| {
            let fut = replay_svc.call(req.clone());
            async move { fut.await.expect("ok") }
        })
    });
    g.finish();
}

/// New requests/s from 1 and 2 threads (this machine has 2 cores), each thread driving its own clone of the
/// service in a loop on a current-thread runtime, as a server's workers would. `bare` runs the same loop (clone,
/// re-key, call) without the layer, so the difference is the layer's cost per call.
fn threads(c: &mut Criterion) {
    use std::sync::Barrier;
    use std::time::Instant;
    let mut g = c.benchmark_group("idempotency_typed_memory_threads");
    g.throughput(Throughput::Elements(1));
    let base = AtomicU64::new(0);
    for threads in [1u64, 2] {
        for (name, ttl) in [("bare", None), ("new_request_warm", Some(WARM)), ("new_request", Some(COLD))] {
            let store = MemoryStore::new();
            let layer = ttl.map(|ttl| layer(&store, ttl));
            g.bench_function(format!("{name}/{threads}"), |b| {
                b.iter_custom(|iters| {
                    let run = base.fetch_add(1, Ordering::Relaxed);
                    let per_thread = iters.div_ceil(threads);
                    let barrier = Barrier::new(threads as usize);
                    let elapsed = std::thread::scope(|s| {
                        let workers: Vec<_> = (0..threads)
                            .map(|t| {
                                let (barrier, layer) = (&barrier, layer.clone());
                                s.spawn(move || {
                                    let rt = tokio::runtime::Builder::new_current_thread()
                                        .enable_all()
                                        .build()
                                        .expect("runtime");
                                    let template = request("template");
                                    let mut plain = bare();
                                    let mut layered = layer.map(|l| l.layer(bare()));
                                    barrier.wait();
                                    let start = Instant::now();
                                    rt.block_on(async {
                                        for i in 0..per_thread {
                                            let mut r = template.clone();
                                            let key = format!("{run}-{t}-{i}");
                                            r.set_gateway_key(IdempotencyKey::new(key).expect("key"));
                                            let res = match &mut layered {
                                                Some(svc) => svc.call(r).await,
                                                None => plain.call(r).await,
                                            };
                                            std::hint::black_box(res.expect("ok"));
                                        }
                                    });
                                    start.elapsed()
                                })
                            })
                            .collect();
                        workers.into_iter().map(|w| w.join().expect("worker")).max().unwrap_or_default()
                    });
                    // Time per call across all threads: wall time over the calls made.
                    elapsed.mul_f64(iters as f64 / (per_thread * threads) as f64)
                })
            });
            if ttl.is_some() {
                eprintln!("{name}/{threads}: {} records held at the end", store.len());
            }
        }
    }
    g.finish();
}

/// Where a new request's time goes: fingerprint, store round trip, result encoding.
fn components(c: &mut Criterion) {
    use palisade_idempotency::{Fingerprinted, LeaseStore};
    let mut g = c.benchmark_group("idempotency_components");
    let req = request("component");
    g.bench_function("fingerprint", |b| b.iter(|| std::hint::black_box(&req).fingerprint()));
    let store = MemoryStore::new();
    let fp = req.fingerprint();
    let n = AtomicU64::new(0);
    let keys: Vec<String> = (0..4096).map(|i| format!("k:c{i}")).collect();
    g.bench_function("memory_claim_complete", |b| {
        b.iter(|| {
            let i = n.fetch_add(1, Ordering::Relaxed) as usize;
            let key = &keys[i % 4096];
            // Through the trait: the memory store answers at once (`now`), no future is awaited.
            if let Ok(Ok(Claim::Acquired { hold, .. })) =
                store.claim(key, &fp, Duration::from_millis(1), Duration::from_millis(1)).now()
            {
                let _ = store.complete(&hold, Payload::from(Bytes::from_static(b"x")), Duration::ZERO).now();
            }
        })
    });
    // The store alone with the cold `new_request`'s size (TTL 200 ms: 100 k+ records held).
    let cold_store = MemoryStore::new();
    let cold_keys: Vec<String> = (0..1 << 21).map(|i| format!("k:n{i}")).collect();
    g.bench_function("memory_claim_complete_cold", |b| {
        b.iter(|| {
            let i = n.fetch_add(1, Ordering::Relaxed) as usize;
            let key = &cold_keys[i % (1 << 21)];
            if let Ok(Ok(Claim::Acquired { hold, .. })) = cold_store.claim(key, &fp, COLD, COLD).now() {
                let _ = cold_store.complete(&hold, Payload::from(Bytes::from_static(b"x")), COLD).now();
            }
        })
    });
    eprintln!("memory_claim_complete_cold: {} records held at the end", cold_store.len());
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    g.bench_function("memory_claim_complete_async", |b| {
        b.to_async(&rt).iter(|| {
            let i = n.fetch_add(1, Ordering::Relaxed) as usize;
            let key = &keys[i % 4096];
            let (store, fp) = (&store, &fp);
            async move {
                if let Ok(Claim::Acquired { hold, .. }) =
                    store.claim(key, fp, Duration::from_millis(1), Duration::from_millis(1)).await
                {
                    let _ = store.complete(&hold, Payload::from(Bytes::from_static(b"x")), Duration::ZERO).await;
                }
            }
        })
    });
    let res: Result<GatewayResponse, PaymentError> = Ok(response());
    g.bench_function("encode_result", |b| b.iter(|| serde_json::to_vec(std::hint::black_box(&res)).expect("json")));
    let bytes = serde_json::to_vec(&res).expect("json");
    g.bench_function("decode_result", |b| {
        b.iter(|| {
            serde_json::from_slice::<Result<GatewayResponse, PaymentError>>(std::hint::black_box(&bytes)).expect("json")
        })
    });
    g.bench_function("now", |b| b.iter(tokio::time::Instant::now));
    g.bench_function("std_now", |b| b.iter(std::time::Instant::now));
    g.finish();
}

fn http_mode(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let mut g = c.benchmark_group("idempotency_http_memory");
    g.throughput(Throughput::Elements(1));
    let body = Bytes::from_static(br#"{"amount":"12.34","currency":"USD","source":"tok_visa","order_id":"o1"}"#);
    let handler = tower::service_fn(|_req: http::Request<Full<Bytes>>| async {
        let mut res = http::Response::new(Full::new(Bytes::from_static(br#"{"id":"ch_1","status":"captured"}"#)));
        *res.status_mut() = http::StatusCode::CREATED;
        res.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
        Ok::<_, Infallible>(res)
    });
    let mk = |key: &str, body: &Bytes| {
        http::Request::post("/v1/charges")
            .header("idempotency-key", key)
            .header("content-type", "application/json")
            .body(Full::new(body.clone()))
            .expect("request")
    };

    let mut bare = handler;
    g.bench_function("bare_service", |b| {
        b.to_async(&rt).iter(|| {
            let fut = bare.call(mk("k", &body));
            async move { fut.await.expect("ok") }
        })
    });

    let layer = HttpIdempotencyLayer::builder().store(MemoryStore::new()).lease(COLD).ttl(COLD).build();
    let mut svc = layer.layer(handler);
    let n = AtomicU64::new(0);
    g.bench_function("new_request", |b| {
        b.to_async(&rt).iter(|| {
            let i = n.fetch_add(1, Ordering::Relaxed);
            let fut = svc.call(mk(&format!("n{i}"), &body));
            async move { fut.await.expect("ok") }
        })
    });

    let mut svc = HttpIdempotencyLayer::builder().store(MemoryStore::new()).build().layer(handler);
    rt.block_on(async { svc.call(mk("replayed", &body)).await.expect("first") });
    g.bench_function("replay", |b| {
        b.to_async(&rt).iter(|| {
            let fut = svc.call(mk("replayed", &body));
            async move { fut.await.expect("ok") }
        })
    });
    g.finish();
}

/// Requests/s through the Redis store at 50 concurrent callers. Criterion's time per element converts to
/// requests/s; compare with `redis-benchmark -c 50 -t set -q` in the same window.
#[cfg(feature = "redis")]
fn redis_store(c: &mut Criterion) {
    use palisade_idempotency::RedisStore;
    use std::time::Instant;
    use tower::ServiceExt;
    const CONCURRENCY: usize = 50;

    // One client thread, like `redis-benchmark` (one event loop for its 50 connections). Redis runs on the same
    // machine; a second client thread would compete with it for the CPUs and measure the scheduler instead.
    // PALISADE_BENCH_WORKERS overrides it.
    let workers = std::env::var("PALISADE_BENCH_WORKERS").ok().and_then(|w| w.parse().ok()).unwrap_or(1);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(workers).enable_all().build().expect("runtime");
    let url = std::env::var("PALISADE_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let Ok(store) = rt.block_on(RedisStore::connect(&url)) else {
        eprintln!("SKIPPED redis benchmarks: nothing answers at {url}");
        return;
    };
    let prefix = format!("palisade-bench:{}:", std::process::id());
    let store = store.with_prefix(prefix.clone());
    let mut g = c.benchmark_group("idempotency_redis_c50");
    g.throughput(Throughput::Elements(1));
    g.sample_size(10);

    // Runs `iters` calls over CONCURRENCY tasks; `key(i)` picks each call's key.
    let run = |svc: palisade_idempotency::IdempotencyService<_, GatewayRequest, DefaultClassifier>,
               iters: u64,
               fresh: bool,
               base: u64| {
        let svc = svc.clone();
        rt.block_on(async move {
            let next = std::sync::Arc::new(AtomicU64::new(0));
            let start = Instant::now();
            let mut tasks = Vec::with_capacity(CONCURRENCY);
            for _ in 0..CONCURRENCY {
                let (svc, next) = (svc.clone(), next.clone());
                tasks.push(tokio::spawn(async move {
                    let replay = request("replayed");
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= iters {
                            break;
                        }
                        let req = if fresh {
                            let mut r = replay.clone();
                            r.set_gateway_key(IdempotencyKey::new(format!("r{base}-{i}")).expect("key"));
                            r
                        } else {
                            replay.clone()
                        };
                        svc.clone().oneshot(req).await.expect("ok");
                    }
                }));
            }
            for t in tasks {
                t.await.expect("task");
            }
            start.elapsed()
        })
    };
    let svc = IdempotencyLayer::builder().store(store.clone()).ttl(Duration::from_secs(60)).build().layer(bare());
    rt.block_on(svc.clone().oneshot(request("replayed"))).expect("first");
    let base = AtomicU64::new(0);
    g.bench_function("new_request", |b| {
        b.iter_custom(|iters| run(svc.clone(), iters, true, base.fetch_add(1, Ordering::Relaxed)))
    });
    g.bench_function("replay", |b| b.iter_custom(|iters| run(svc.clone(), iters, false, 0)));
    g.finish();
    // Leave nothing behind (records expire after 60 s anyway).
    rt.block_on(async {
        if let Ok(mut conn) = palisade_store::redis::connect(&url).await {
            let keys: Vec<String> =
                redis::cmd("KEYS").arg(format!("{prefix}*")).query_async(&mut conn).await.unwrap_or_default();
            for chunk in keys.chunks(1000) {
                let _: Result<(), _> = redis::cmd("DEL").arg(chunk).query_async(&mut conn).await;
            }
        }
    });
}

#[cfg(not(feature = "redis"))]
fn redis_store(_c: &mut Criterion) {
    eprintln!("redis benchmarks need --features redis");
}

#[allow(missing_docs)]
mod group {
    use super::*;
    criterion_group!(benches, typed, threads, components, http_mode, redis_store);
}
criterion_main!(group::benches);
