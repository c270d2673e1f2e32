//! Behaviour of the retry layer under paused time: what is retried, when, how often, with which key.

use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use palisade_core::backoff::{Backoff, Jitter};
use palisade_core::*;
use palisade_retry::{RetryBudget, RetryLayer};
use palisade_sim::{Fault, GatewaySim};
use palisade_testkit::{Answer, TestGateway};
use tokio::time::Instant;
use tower::{Layer, Service, ServiceExt};

/// Body and key of each HTTP call.
type HttpLog = Arc<Mutex<Vec<(String, Option<IdempotencyKey>)>>>;

type Gateway = TestGateway<GatewayRequest, &'static str>;

/// A gateway that answers from a script, then `then` for every later call, and records each call.
fn scripted(script: impl IntoIterator<Item = Answer<&'static str>>, then: Answer<&'static str>) -> Gateway {
    TestGateway::script(script).then(then).recording()
}

/// When each call arrived and which key it carried.
fn log(gw: &Gateway) -> Vec<(Instant, Option<IdempotencyKey>)> {
    gw.log().into_iter().map(|c| (c.at, c.request.gateway_key().cloned())).collect()
}

fn charge(order: &str, key: Option<&str>) -> GatewayRequest {
    palisade_testkit::charge(order).maybe_key(key).build()
}

fn net() -> PaymentError {
    PaymentError::network("refused")
}

/// Delays without randomness, so the schedule is exact.
fn fixed(base_ms: u64) -> Backoff {
    Backoff { base: Duration::from_millis(base_ms), max: Duration::from_secs(10), factor: 2.0, jitter: Jitter::None }
}

async fn run<S>(svc: &mut S, req: GatewayRequest) -> Result<S::Response, S::Error>
where
    S: Service<GatewayRequest>,
{
    svc.ready().await?.call(req).await
}

#[tokio::test(start_paused = true)]
async fn never_retries_terminal() {
    let gw = scripted([Answer::Err(PaymentError::declined("do_not_honor"))], Answer::Ok("ok"));
    let mut svc = RetryLayer::builder().max_attempts(5).build().layer(gw.clone());
    let res = run(&mut svc, charge("o1", None)).await;
    assert_eq!(res, Err(PaymentError::declined("do_not_honor")));
    assert_eq!(gw.calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn retriable_failures_are_retried_with_the_same_assigned_key() {
    let gw = scripted([Answer::Err(net()), Answer::Err(net())], Answer::Ok("ok"));
    let mut svc = RetryLayer::builder().max_attempts(3).build().layer(gw.clone());
    let res = run(&mut svc, charge("o1", None)).await;
    assert_eq!(res, Ok("ok"));
    let calls = log(&gw);
    assert_eq!(calls.len(), 3);
    let key = calls[0].1.clone().expect("the layer assigns a key before the first attempt");
    assert!(calls.iter().all(|(_, k)| k.as_ref() == Some(&key)), "every attempt carries the same key");
}

#[tokio::test(start_paused = true)]
async fn an_existing_key_is_kept() {
    let gw = scripted([Answer::Err(PaymentError::timeout("lost"))], Answer::Ok("ok"));
    let mut svc = RetryLayer::builder().build().layer(gw.clone());
    assert_eq!(run(&mut svc, charge("o1", Some("edge-key-1"))).await, Ok("ok"));
    assert!(log(&gw).iter().all(|(_, k)| k.as_ref().map(IdempotencyKey::as_str) == Some("edge-key-1")));
}

#[tokio::test(start_paused = true)]
async fn stops_at_max_attempts_and_returns_the_last_outcome() {
    let gw = scripted([Answer::Err(net()), Answer::Err(net())], Answer::Err(PaymentError::timeout("last")));
    let mut svc = RetryLayer::builder().max_attempts(4).backoff(fixed(10)).build().layer(gw.clone());
    let res = run(&mut svc, charge("o1", None)).await;
    assert_eq!(res, Err(PaymentError::timeout("last")));
    assert_eq!(gw.calls(), 4);
}

#[tokio::test(start_paused = true)]
async fn a_lost_answer_outweighs_later_refusals() {
    // The first attempt's answer is lost (the gateway may have charged); the next ones are refused before they
    // act. The caller must learn that the call may have acted, not that nothing happened.
    let gw = scripted([Answer::Err(PaymentError::timeout("lost"))], Answer::Err(net()));
    let mut svc = RetryLayer::builder().max_attempts(3).backoff(fixed(10)).build().layer(gw.clone());
    let res = run(&mut svc, charge("o1", None)).await;
    assert_eq!(res, Err(PaymentError::timeout("lost")));
    assert_eq!(DefaultClassifier.classify(&res), Outcome::Unknown);
    assert_eq!(gw.calls(), 3);

    // A later Unknown is returned as itself; an earlier refusal changes nothing.
    let gw = scripted([Answer::Err(net()), Answer::Err(PaymentError::timeout("lost"))], Answer::Err(net()));
    let mut svc = RetryLayer::builder().max_attempts(3).backoff(fixed(10)).build().layer(gw.clone());
    assert_eq!(run(&mut svc, charge("o1", None)).await, Err(PaymentError::timeout("lost")));

    // An answer after the lost one is the call's answer: the gateway replays the first attempt's outcome under
    // the same key, so a decline (terminal) or a success ends the call as it is.
    let gw =
        scripted([Answer::Err(PaymentError::timeout("lost"))], Answer::Err(PaymentError::declined("do_not_honor")));
    let mut svc = RetryLayer::builder().max_attempts(3).backoff(fixed(10)).build().layer(gw.clone());
    assert_eq!(run(&mut svc, charge("o1", None)).await, Err(PaymentError::declined("do_not_honor")));

    // The deadline passing between attempts returns the lost answer too, not the refusal after it.
    let gw = scripted([Answer::Err(PaymentError::timeout("lost")), Answer::Err(net())], Answer::Ok("ok"));
    let mut svc = RetryLayer::builder()
        .max_attempts(5)
        .backoff(fixed(400))
        .deadline(Duration::from_millis(1000))
        .build()
        .layer(gw.clone());
    assert_eq!(run(&mut svc, charge("o1", None)).await, Err(PaymentError::timeout("lost")));
    assert_eq!(gw.calls(), 2);
}

/// A gateway whose first call loses its answer, and which is unusable (`poll_ready` fails) from then on.
#[derive(Clone, Default)]
struct BreaksAfterOneCall(Arc<Mutex<u32>>);

impl Service<GatewayRequest> for BreaksAfterOneCall {
    type Response = &'static str;
    type Error = PaymentError;
    type Future = std::future::Ready<Result<&'static str, PaymentError>>;
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), PaymentError>> {
        Poll::Ready(if *self.0.lock().unwrap() == 0 { Ok(()) } else { Err(net()) })
    }
    fn call(&mut self, _: GatewayRequest) -> Self::Future {
        *self.0.lock().unwrap() += 1;
        std::future::ready(Err(PaymentError::timeout("lost")))
    }
}

#[tokio::test(start_paused = true)]
async fn a_lost_answer_outweighs_a_failed_readiness_after_it() {
    let gw = BreaksAfterOneCall::default();
    let mut svc = RetryLayer::builder().max_attempts(3).backoff(fixed(10)).build().layer(gw.clone());
    assert_eq!(run(&mut svc, charge("o1", None)).await, Err(PaymentError::timeout("lost")));
    assert_eq!(*gw.0.lock().unwrap(), 1);
}

#[tokio::test(start_paused = true)]
async fn an_endless_retry_after_does_not_overflow_the_clock() {
    let gw = scripted([Answer::Err(PaymentError::RateLimited { retry_after: Some(Duration::MAX) })], Answer::Ok("ok"));
    let mut svc = RetryLayer::builder().max_delay(Duration::MAX).no_deadline().build().layer(gw.clone());
    let call = tokio::spawn(async move { run(&mut svc, charge("o1", None)).await });
    // The retry waits (a year at most) instead of panicking on `Instant + Duration::MAX`.
    tokio::time::sleep(Duration::from_secs(3600)).await;
    assert!(!call.is_finished(), "still waiting out the Retry-After");
    call.abort();
    assert!(call.await.unwrap_err().is_cancelled(), "the call did not panic");
}

#[tokio::test(start_paused = true)]
async fn unknown_is_retried_only_with_a_gateway_key() {
    // Without key assignment and without a key: an Unknown outcome is returned at once.
    let gw = scripted([Answer::Err(PaymentError::timeout("lost"))], Answer::Ok("ok"));
    let mut svc = RetryLayer::builder().assign_gateway_key(false).build().layer(gw.clone());
    assert!(matches!(run(&mut svc, charge("o1", None)).await, Err(PaymentError::GatewayTimeout { .. })));
    assert_eq!(gw.calls(), 1);
    assert_eq!(log(&gw)[0].1, None);

    // Same settings, but the request carries a key: retried.
    let gw = scripted([Answer::Err(PaymentError::timeout("lost"))], Answer::Ok("ok"));
    let mut svc = RetryLayer::builder().assign_gateway_key(false).build().layer(gw.clone());
    assert_eq!(run(&mut svc, charge("o1", Some("k"))).await, Ok("ok"));
    assert_eq!(gw.calls(), 2);

    // A retriable outcome needs no key.
    let gw = scripted([Answer::Err(net())], Answer::Ok("ok"));
    let mut svc = RetryLayer::builder().assign_gateway_key(false).build().layer(gw.clone());
    assert_eq!(run(&mut svc, charge("o1", None)).await, Ok("ok"));
    assert_eq!(gw.calls(), 2);

    // retry_unknown(false): never, key or not.
    let gw = scripted([Answer::Err(PaymentError::timeout("lost"))], Answer::Ok("ok"));
    let mut svc = RetryLayer::builder().retry_unknown(false).build().layer(gw.clone());
    assert!(run(&mut svc, charge("o1", Some("k"))).await.is_err());
    assert_eq!(gw.calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn retry_after_is_honoured_exactly() {
    let ra = Duration::from_millis(2_750);
    let gw = scripted([Answer::Err(PaymentError::RateLimited { retry_after: Some(ra) })], Answer::Ok("ok"));
    // A backoff that would wait much longer, to show Retry-After replaces it.
    let mut svc = RetryLayer::builder().backoff(fixed(5_000)).build().layer(gw.clone());
    assert_eq!(run(&mut svc, charge("o1", None)).await, Ok("ok"));
    let calls = log(&gw);
    assert_eq!(calls[1].0 - calls[0].0, ra);
}

#[tokio::test(start_paused = true)]
async fn a_retry_after_longer_than_max_delay_is_returned_at_once_not_retried_early() {
    // The gateway asks for 5 s; the layer will wait at most 2 s. Calling it again at 2 s would be calling it
    // before the time it gave, so the layer returns its answer at once (well within the 30 s deadline).
    let busy = PaymentError::GatewayUnavailable { retry_after: Some(Duration::from_secs(5)) };
    let gw = scripted([Answer::Err(busy.clone())], Answer::Ok("ok"));
    let mut svc = RetryLayer::builder().max_delay(Duration::from_secs(2)).build().layer(gw.clone());
    let t0 = Instant::now();
    assert_eq!(run(&mut svc, charge("o1", None)).await, Err(busy));
    assert_eq!(gw.calls(), 1, "not called again before the Retry-After it gave");
    assert_eq!(t0.elapsed(), Duration::ZERO, "no waiting for a retry the layer will not make");

    // A Retry-After of exactly the max delay is waited out and retried.
    let gw = scripted(
        [Answer::Err(PaymentError::GatewayUnavailable { retry_after: Some(Duration::from_secs(2)) })],
        Answer::Ok("ok"),
    );
    let mut svc = RetryLayer::builder().max_delay(Duration::from_secs(2)).build().layer(gw.clone());
    assert_eq!(run(&mut svc, charge("o1", None)).await, Ok("ok"));
    let calls = log(&gw);
    assert_eq!(calls[1].0 - calls[0].0, Duration::from_secs(2));
}

#[tokio::test(start_paused = true)]
async fn a_retry_after_past_the_deadline_is_returned_at_once_even_when_longer_than_max_delay() {
    // Defaults: max_delay 10 s, deadline 30 s. An open breaker asking for 60 s cannot be retried in time: the
    // caller gets it at once, and the breaker is not called again at 10 s and 20 s, before the time it gave.
    let open = PaymentError::CircuitOpen { retry_after: Some(Duration::from_secs(60)) };
    let gw = scripted([], Answer::Err(open.clone()));
    let mut svc = RetryLayer::builder().build().layer(gw.clone());
    let t0 = Instant::now();
    assert_eq!(run(&mut svc, charge("o1", None)).await, Err(open));
    let at: Vec<Duration> = log(&gw).iter().map(|(t, _)| *t - t0).collect();
    assert_eq!(at, [Duration::ZERO]);
    assert_eq!(t0.elapsed(), Duration::ZERO, "no waiting for a retry that cannot happen");
}

#[tokio::test(start_paused = true)]
async fn retry_after_past_the_deadline_returns_the_last_outcome_at_once() {
    let open = PaymentError::CircuitOpen { retry_after: Some(Duration::from_secs(8)) };
    let gw = scripted([Answer::Err(open.clone())], Answer::Ok("ok"));
    let mut svc = RetryLayer::builder()
        .deadline(Duration::from_secs(5))
        .max_delay(Duration::from_secs(30))
        .build()
        .layer(gw.clone());
    let t0 = Instant::now();
    assert_eq!(run(&mut svc, charge("o1", None)).await, Err(open));
    assert_eq!(gw.calls(), 1);
    assert_eq!(t0.elapsed(), Duration::ZERO, "no waiting for a retry that cannot happen");
}

#[tokio::test(start_paused = true)]
async fn stops_at_the_deadline() {
    // Delays 1 s, 2 s, 4 s ...: attempts at 0, 1, 3; the next would start at 7 > 5.
    let gw = scripted([], Answer::Err(net()));
    let mut svc = RetryLayer::builder()
        .max_attempts(10)
        .backoff(fixed(1_000))
        .deadline(Duration::from_secs(5))
        .build()
        .layer(gw.clone());
    let t0 = Instant::now();
    assert_eq!(run(&mut svc, charge("o1", None)).await, Err(net()));
    let at: Vec<Duration> = log(&gw).iter().map(|(t, _)| *t - t0).collect();
    assert_eq!(at, [Duration::ZERO, Duration::from_secs(1), Duration::from_secs(3)]);
    assert_eq!(t0.elapsed(), Duration::from_secs(3));
}

#[tokio::test(start_paused = true)]
async fn an_attempt_over_its_timeout_is_unknown_and_retried_with_the_same_key() {
    let gw = scripted([Answer::Hang], Answer::Ok("ok"));
    let mut svc =
        RetryLayer::builder().attempt_timeout(Duration::from_secs(2)).backoff(fixed(100)).build().layer(gw.clone());
    let t0 = Instant::now();
    assert_eq!(run(&mut svc, charge("o1", None)).await, Ok("ok"));
    let calls = log(&gw);
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[1].0 - t0, Duration::from_millis(2_100), "2 s timeout, then the 100 ms backoff");
    assert!(calls[0].1.is_some() && calls[0].1 == calls[1].1);

    // Without a key it is not retried (Unknown), and the caller gets a gateway timeout.
    let gw = scripted([Answer::Hang], Answer::Ok("ok"));
    let mut svc = RetryLayer::builder()
        .attempt_timeout(Duration::from_secs(2))
        .assign_gateway_key(false)
        .build()
        .layer(gw.clone());
    let res = run(&mut svc, charge("o1", None)).await;
    assert!(matches!(res, Err(PaymentError::GatewayTimeout { .. })), "{res:?}");
    assert_eq!(gw.calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn the_deadline_caps_the_attempt_timeout() {
    let gw = scripted([], Answer::Hang);
    let mut svc = RetryLayer::builder()
        .attempt_timeout(Duration::from_secs(10))
        .deadline(Duration::from_secs(3))
        .build()
        .layer(gw.clone());
    let t0 = Instant::now();
    let res = run(&mut svc, charge("o1", None)).await;
    assert!(matches!(res, Err(PaymentError::GatewayTimeout { .. })), "{res:?}");
    assert_eq!(t0.elapsed(), Duration::from_secs(3));
    assert_eq!(gw.calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn timeouts_convert_into_box_errors_too() {
    let gw = scripted([], Answer::Hang).map_err(tower::BoxError::from);
    let mut svc = RetryLayer::builder().attempt_timeout(Duration::from_secs(1)).max_attempts(1).build().layer(gw);
    let err = run(&mut svc, charge("o1", None)).await.unwrap_err();
    let timed_out = err.downcast_ref::<palisade_retry::AttemptTimedOut>().expect("the layer's own error");
    assert_eq!(timed_out.after, Duration::from_secs(1));
    assert_eq!(ErrorOutcome::outcome(&err), Outcome::Unknown);
}

#[tokio::test(start_paused = true)]
async fn budget_exhaustion_stops_retries_and_recovers() {
    // No share of calls, a floor of one retry per second.
    let budget = RetryBudget::new(0.0, 1, Duration::from_secs(10)).unwrap();
    let gw = scripted([], Answer::Err(net()));
    let layer = RetryLayer::builder().max_attempts(5).backoff(fixed(10)).budget(budget).build();
    let mut a = layer.layer(gw.clone());
    // A clone of the layer shares the budget.
    let mut b = layer.clone().layer(gw.clone());

    assert!(run(&mut a, charge("o1", None)).await.is_err());
    assert_eq!(gw.calls(), 2, "the floor's one retry, then the budget is empty");
    assert!(run(&mut b, charge("o2", None)).await.is_err());
    assert_eq!(gw.calls(), 3, "the other clone finds the budget empty too: no retry");

    tokio::time::advance(Duration::from_secs(1)).await;
    assert!(run(&mut b, charge("o3", None)).await.is_err());
    assert_eq!(gw.calls(), 5, "a second later the floor has refilled one retry");
}

#[tokio::test(start_paused = true)]
async fn the_budget_grants_its_share_of_recent_calls() {
    // 50 % of calls, no floor: ten good calls fund five retries.
    let budget = RetryBudget::new(0.5, 0, Duration::from_secs(10)).unwrap();
    let gw = scripted(std::iter::repeat_n(Answer::Ok("ok"), 10), Answer::Err(net()));
    let mut svc = RetryLayer::builder().max_attempts(100).backoff(fixed(1)).budget(budget).build().layer(gw.clone());
    for i in 0..10 {
        assert!(run(&mut svc, charge(&format!("ok{i}"), None)).await.is_ok());
    }
    assert!(run(&mut svc, charge("bad", None)).await.is_err());
    // The failing call deposited half a retry too: 11 × 0.5 = 5.5 → 5 retries, 6 attempts.
    assert_eq!(gw.calls(), 10 + 6);
}

/// A gateway that takes a ready slot in `poll_ready` and gives it back when the call's future ends, and that
/// panics if called without one: `tower::limit::ConcurrencyLimit(1)` around the script.
#[tokio::test(start_paused = true)]
async fn no_ready_slot_is_held_while_sleeping() {
    let gw = scripted(
        [Answer::Err(PaymentError::RateLimited { retry_after: Some(Duration::from_secs(5)) })],
        Answer::Ok("ok"),
    );
    let limited = tower::limit::ConcurrencyLimitLayer::new(1).layer(gw.clone());
    let svc = RetryLayer::builder().build().layer(limited);

    let t0 = Instant::now();
    let mut first = svc.clone();
    let slow = tokio::spawn(async move { run(&mut first, charge("slow", None)).await });
    // Let the first call fail and start its 5 s wait.
    tokio::time::sleep(Duration::from_millis(1)).await;
    assert_eq!(gw.calls(), 1);
    let mut second = svc.clone();
    assert_eq!(run(&mut second, charge("fast", None)).await, Ok("ok"));
    assert!(t0.elapsed() < Duration::from_secs(5), "the second call did not wait for the first one's sleep");
    assert_eq!(slow.await.unwrap(), Ok("ok"));
    assert_eq!(gw.calls(), 3);
}

#[tokio::test(start_paused = true)]
async fn failing_after_commit_twice_charges_once_and_succeeds() {
    let sim = GatewaySim::new();
    sim.script(Operation::Charge, [Fault::FailAfterCommit, Fault::FailAfterCommit]);
    let mut svc = RetryLayer::builder().max_attempts(3).build().layer(sim.clone());
    let res = run(&mut svc, charge("order-42", None)).await;
    let ok = res.expect("the third attempt returns the stored charge");
    assert_eq!(ok.operation, Operation::Charge);
    assert_eq!(sim.calls(), 3);
    let charges = sim.charges_for("order-42");
    assert_eq!(charges.len(), 1, "{charges:?}");
    assert!(charges[0].gateway_key.is_some());
}

#[tokio::test(start_paused = true)]
async fn http_mode_replays_the_body_and_answers_timeouts_with_problem_json() {
    use http::{Request, Response, StatusCode};

    let seen: HttpLog = Arc::default();
    let seen2 = seen.clone();
    let gw = tower::service_fn(move |req: Request<String>| {
        let seen = seen2.clone();
        async move {
            let n = {
                let mut s = seen.lock().unwrap();
                s.push((req.body().clone(), req.gateway_key().cloned()));
                s.len()
            };
            let res = match n {
                1 => Response::builder().status(503).header("retry-after", "2").body(Vec::new()).unwrap(),
                2 => Response::builder().status(502).body(Vec::new()).unwrap(),
                _ => Response::new(b"charged".to_vec()),
            };
            Ok::<_, std::convert::Infallible>(res)
        }
    });
    let mut svc = RetryLayer::builder().http().build().layer(gw);
    let req = Request::post("/v1/charges").body("amount=1000&currency=usd".to_owned()).unwrap();
    let res = svc.ready().await.unwrap().call(req).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 3, "503 retried after Retry-After, 502 (Unknown) retried with the key");
    assert!(seen.iter().all(|(body, key)| body == "amount=1000&currency=usd" && key.is_some() && *key == seen[0].1));

    // A hanging gateway: the timeout is a 504 problem+json response, not an error.
    let hang = tower::service_fn(|_req: Request<String>| async {
        std::future::pending::<Result<Response<Vec<u8>>, std::convert::Infallible>>().await
    });
    let mut svc =
        RetryLayer::builder().http().attempt_timeout(Duration::from_secs(1)).max_attempts(2).build().layer(hang);
    let res: Response<Vec<u8>> = svc.ready().await.unwrap().call(Request::new(String::new())).await.unwrap();
    assert_eq!(res.status(), StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(res.headers()[http::header::CONTENT_TYPE], palisade_core::problem::PROBLEM_JSON);
    let body: serde_json::Value = serde_json::from_slice(res.body()).unwrap();
    assert_eq!(body["type"], "urn:palisade:problem:gateway_timeout");
}

/// Around a plain HTTP client, which sends the request as it is (extensions never reach the wire): the key the
/// layer assigns goes out as the `Idempotency-Key` header, the same on every attempt, so a gateway that charged
/// and lost its answer (502) replays the charge instead of making another. A key the client set itself is left
/// as it is. Before, the key lived only in the extensions: three attempts, three unkeyed charges.
#[tokio::test(start_paused = true)]
async fn http_mode_sends_the_key_on_the_wire_of_every_attempt() {
    use http::{Request, Response};

    let wire: Arc<Mutex<Vec<Option<String>>>> = Arc::default();
    let gateway = |wire: Arc<Mutex<Vec<Option<String>>>>| {
        tower::service_fn(move |req: Request<String>| {
            let wire = wire.clone();
            async move {
                let key = req.headers().get(IDEMPOTENCY_KEY).map(|v| v.to_str().unwrap().to_owned());
                wire.lock().unwrap().push(key);
                Ok::<_, std::convert::Infallible>(Response::builder().status(502).body(Vec::<u8>::new()).unwrap())
            }
        })
    };
    let mut svc = RetryLayer::builder().http().build().layer(gateway(wire.clone()));
    let req = Request::post("/v1/charges").body("amount=1000&currency=usd".to_owned()).unwrap();
    let _ = svc.ready().await.unwrap().call(req).await.unwrap();
    let keys = wire.lock().unwrap().clone();
    assert_eq!(keys.len(), 3, "502 is Unknown, retried with the key: {keys:?}");
    assert!(keys[0].is_some() && keys.iter().all(|k| *k == keys[0]), "one key on every attempt: {keys:?}");

    let wire: Arc<Mutex<Vec<Option<String>>>> = Arc::default();
    let mut svc = RetryLayer::builder().http().build().layer(gateway(wire.clone()));
    let req = Request::post("/v1/charges").header(IDEMPOTENCY_KEY, "client-key-1").body(String::new()).unwrap();
    let _ = svc.ready().await.unwrap().call(req).await.unwrap();
    let keys = wire.lock().unwrap().clone();
    assert_eq!(keys, vec![Some("client-key-1".to_owned()); 3], "the client's own key goes out unchanged");
}

/// A gateway that stops being ready after its first call (its connection pool is gone).
#[derive(Clone)]
struct GoesUnready {
    calls: Arc<Mutex<u32>>,
}

impl Service<GatewayRequest> for GoesUnready {
    type Response = &'static str;
    type Error = PaymentError;
    type Future = std::future::Ready<Result<&'static str, PaymentError>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), PaymentError>> {
        if *self.calls.lock().unwrap() == 0 { Poll::Ready(Ok(())) } else { Poll::Pending }
    }
    fn call(&mut self, _req: GatewayRequest) -> Self::Future {
        *self.calls.lock().unwrap() += 1;
        std::future::ready(Err(PaymentError::GatewayUnavailable { retry_after: Some(Duration::from_secs(1)) }))
    }
}

#[tokio::test(start_paused = true)]
async fn the_deadline_holds_while_waiting_for_readiness() {
    let gw = GoesUnready { calls: Arc::default() };
    let mut svc = RetryLayer::builder().deadline(Duration::from_secs(5)).build().layer(gw.clone());
    let t0 = Instant::now();
    let res = run(&mut svc, charge("o1", None)).await;
    assert_eq!(res, Err(PaymentError::GatewayUnavailable { retry_after: Some(Duration::from_secs(1)) }));
    assert_eq!(t0.elapsed(), Duration::from_secs(5), "gave up at the deadline, not before and not never");
    assert_eq!(*gw.calls.lock().unwrap(), 1, "no attempt without readiness");
}
