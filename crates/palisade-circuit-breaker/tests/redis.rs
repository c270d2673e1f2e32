//! Shared breaker state on a real Redis: instances open together on the aggregated failure rate, one bad
//! instance does not open the others, and an unreachable Redis falls back to local decisions.
#![cfg(feature = "redis")]

mod common;

use std::sync::Arc;
use std::time::Duration;

use palisade_circuit_breaker::{Event, State};
use palisade_core::PaymentError;
use parking_lot::Mutex;
use tower::{Layer, Service, ServiceExt, service_fn};

use common::*;

#[tokio::test]
async fn instances_open_together_on_the_aggregated_failure_rate() {
    let Some(r) = palisade_testkit::redis("cb_shared_aggregate").await else { return };
    instances_open_together(shared(r.conn.clone(), &r.prefix, "a"), shared(r.conn.clone(), &r.prefix, "b")).await;
    r.cleanup().await;
}

#[tokio::test]
async fn one_failing_instance_does_not_open_the_others() {
    let Some(r) = palisade_testkit::redis("cb_shared_one_bad").await else { return };
    let (sa, sb) = (shared(r.conn.clone(), &r.prefix, "a"), shared(r.conn.clone(), &r.prefix, "b"));
    let (sta, stb) = (sa.status(), sb.status());
    let la = builder().shared(sa).build().unwrap();
    let lb = builder().shared(sb).build().unwrap();
    let (ha, hb) = (la.handle(), lb.handle());
    let (mut a, mut b) = (la.layer(echo()), lb.layer(echo()));
    // Instance A's every call fails (its network path is broken); B is healthy and busier.
    for _ in 0..15 {
        let _ = call(&mut a, down()).await;
    }
    for _ in 0..40 {
        call(&mut b, Ok(())).await.unwrap();
    }
    let agg_a = sta.sync_now().await.unwrap();
    let agg_b = stb.sync_now().await.unwrap();
    // 15 failures of 35 calls across instances: below 50 %.
    assert_eq!((agg_b.calls, agg_b.failures, agg_b.instances), (35, 15, 2), "{agg_a:?} {agg_b:?}");
    assert_eq!(agg_b.open_for, None);
    assert_eq!(hb.state(), State::Closed, "B keeps serving");
    assert_eq!(ha.state(), State::Closed);
    call(&mut b, Ok(())).await.unwrap();
    r.cleanup().await;
}

/// A TCP proxy to Redis that the test can cut.
async fn proxy(upstream: String) -> (String, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let mut conns = tokio::task::JoinSet::new();
        loop {
            let Ok((mut inbound, _)) = listener.accept().await else { return };
            let upstream = upstream.clone();
            conns.spawn(async move {
                if let Ok(mut out) = tokio::net::TcpStream::connect(upstream).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut out).await;
                }
            });
        }
    });
    (format!("redis://{addr}"), task)
}

#[tokio::test]
async fn unreachable_redis_falls_back_to_the_local_breaker_and_says_so() {
    let Some(r) = palisade_testkit::redis("cb_shared_down").await else { return };
    let hostport = r.url.trim_start_matches("redis://").trim_end_matches('/').to_owned();
    let (url, cut) = proxy(hostport).await;
    let client = redis::Client::open(url.as_str()).unwrap();
    let cfg = redis::aio::ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_millis(500)))
        .set_response_timeout(Some(Duration::from_millis(500)))
        .set_number_of_retries(1);
    let conn = redis::aio::ConnectionManager::new_with_config(client, cfg).await.unwrap();
    let events: Arc<Mutex<Vec<Event>>> = Arc::default();
    let ev = events.clone();
    let s = shared(conn, &r.prefix, "a").sync_interval(Duration::from_secs(1));
    let st = s.status();
    let layer = builder().on_event(move |_, e| ev.lock().push(e.clone())).shared(s).build().unwrap();
    let h = layer.handle();
    let mut svc = layer.layer(echo());
    st.sync_now().await.unwrap();
    assert!(st.available());

    cut.abort(); // Redis is gone for this instance
    let _ = cut.await;
    let err = st.sync_now().await.unwrap_err();
    assert!(matches!(err, PaymentError::StoreUnavailable { .. }), "{err}");
    assert!(!st.available(), "the status says the breaker is local-only now");
    assert!(events.lock().iter().any(|e| matches!(e, Event::SharedUnavailable { .. })));
    // Fail open: calls still pass while the local breaker is closed ...
    call(&mut svc, Ok(())).await.unwrap();
    // ... and the local rules still protect the gateway.
    for _ in 0..20 {
        let _ = call(&mut svc, down()).await;
    }
    assert_eq!(h.state(), State::Open);
    r.cleanup().await;
}

#[tokio::test]
async fn per_key_breakers_share_each_key_separately() {
    let Some(r) = palisade_testkit::redis("cb_shared_keyed").await else { return };
    let (sa, sb) = (shared(r.conn.clone(), &r.prefix, "a"), shared(r.conn.clone(), &r.prefix, "b"));
    let (sta, stb) = (sa.status(), sb.status());
    let key = |req: &(&'static str, Res)| req.0;
    let la = builder().shared(sa).build_keyed(key).unwrap();
    let lb = builder().shared(sb).build_keyed(key).unwrap();
    let (ha, hb) = (la.handle(), lb.handle());
    let svc = || service_fn(|(_, r): (&'static str, Res)| async move { r });
    let (mut a, mut b) = (la.layer(svc()), lb.layer(svc()));
    // "adyen" fails half the time on both instances (12 calls each, below the local minimum); "stripe" is fine.
    for i in 0..12 {
        let res = if i % 2 == 0 { down() } else { Ok(()) };
        let _ = a.ready().await.unwrap().call(("adyen", res.clone())).await;
        let _ = b.ready().await.unwrap().call(("adyen", res)).await;
        a.ready().await.unwrap().call(("stripe", Ok(()))).await.unwrap();
        b.ready().await.unwrap().call(("stripe", Ok(()))).await.unwrap();
    }
    sta.sync_now().await.unwrap();
    let agg = stb.sync_now().await.unwrap();
    assert!(agg.tripped || agg.open_for.is_some(), "{agg:?}");
    sta.sync_now().await.unwrap();
    for h in [&ha, &hb] {
        assert_eq!(h.get(&"adyen").unwrap().state(), State::Open);
        assert_eq!(h.get(&"stripe").unwrap().state(), State::Closed, "another key is not affected");
    }
    r.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_instances_syncing_at_once_trip_the_shared_breaker_exactly_once() {
    let Some(r) = palisade_testkit::redis("cb_shared_concurrent").await else { return };
    let mut instances = Vec::new();
    for i in 0..12 {
        let s = shared(r.conn.clone(), &r.prefix, &format!("i{i}"));
        let st = s.status();
        let layer = builder().shared(s).build().unwrap();
        let mut svc = layer.layer(echo());
        // 10 calls, 5 failing: 50 % locally but below the local minimum of 20 calls.
        for j in 0..10 {
            let res = if j % 2 == 0 { down() } else { Ok(()) };
            let _ = call(&mut svc, res).await;
        }
        assert_eq!(layer.handle().state(), State::Closed);
        instances.push((layer, st));
    }
    // Everyone reports at once (explicitly here, and on their own: a window at the threshold wakes the sync task
    // early). The 50 % rate is reached once 20 calls are in, and exactly one script run opens the shared breaker:
    // Lua scripts are atomic, and an open shared breaker is not opened again.
    let mut tasks = Vec::new();
    for (_, st) in &instances {
        let st = st.clone();
        tasks.push(tokio::spawn(async move { st.sync_now().await }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let mut conn = r.conn.clone();
    let trips: Option<u64> =
        redis::cmd("HGET").arg(format!("{}{{psp}}:state", r.prefix)).arg("trips").query_async(&mut conn).await.unwrap();
    assert_eq!(trips, Some(1), "exactly one sync opened the shared breaker");
    // Second round: every instance learns it.
    for (layer, st) in &instances {
        let agg = st.sync_now().await.unwrap();
        assert!(agg.open_for.is_some());
        assert_eq!(layer.handle().state(), State::Open);
    }
    r.cleanup().await;
}
