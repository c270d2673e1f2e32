//! Gateways that answer at once, instead of a copy per test file: [`TestGateway`] answers from a script and counts
//! (and, on request, records) its calls; [`InstantGateway`] keeps no state at all, for benchmarks.

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};

use palisade_core::PaymentError;
use tokio::time::Instant;
use tower_service::Service;

/// One answer of a [`TestGateway`].
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Answer<Res> {
    /// `Ok(res)`, at once.
    Ok(Res),
    /// `Err(error)`, at once.
    Err(PaymentError),
    /// No answer ever: the call's future stays pending (for timeouts).
    Hang,
}

/// A call a [`recording`](TestGateway::recording) gateway received.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Call<Req> {
    /// When it arrived (`tokio::time`, so paused time shows exact instants).
    pub at: Instant,
    /// The request, as received.
    pub request: Req,
}

/// A gateway for tests: a tower `Service` over any request type (usually
/// [`GatewayRequest`](palisade_core::GatewayRequest)) that answers each call at once from a script, counts its
/// calls and, when asked, records them. Clones share the script, the count and the record, so a test keeps one
/// clone to inspect while the layer under test owns another.
///
/// ```
/// use palisade_core::{GatewayKeyed, PaymentError};
/// use palisade_testkit::{Answer, TestGateway, charge};
/// use tower::{Service, ServiceExt};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// // Refused twice, then "ok" for every later call.
/// let refused = Answer::Err(PaymentError::network("refused"));
/// let gw = TestGateway::script([refused.clone(), refused]).then(Answer::Ok("ok")).recording();
/// let mut svc = gw.clone();
/// for _ in 0..2 {
///     assert!(svc.ready().await.unwrap().call(charge("o1").key("k1").build()).await.is_err());
/// }
/// assert_eq!(svc.ready().await.unwrap().call(charge("o1").key("k1").build()).await, Ok("ok"));
/// assert_eq!(gw.calls(), 3);
/// assert!(gw.log().iter().all(|c| c.request.gateway_key().unwrap().as_str() == "k1"));
/// # }
/// ```
///
/// Answering takes one uncontended lock and clones the answer; it allocates nothing unless recording, so the
/// layers' allocation tests can use it. Benchmarks want a gateway that costs nothing: see [`InstantGateway`].
pub struct TestGateway<Req, Res> {
    shared: Arc<Shared<Req, Res>>,
}

struct Shared<Req, Res> {
    calls: AtomicUsize,
    state: Mutex<State<Req, Res>>,
}

struct State<Req, Res> {
    script: VecDeque<Answer<Res>>,
    /// Each scripted answer goes back to the end of the script once given.
    cycle: bool,
    /// The answer once the script is used up; `None` panics (the test did not expect that call).
    then: Option<Answer<Res>>,
    /// `Some` when recording.
    record: Option<Record<Req>>,
}

struct Record<Req> {
    /// `Req::clone`, taken where `Req: Clone` is known.
    copy: fn(&Req) -> Req,
    calls: Vec<Call<Req>>,
}

impl<Req, Res> TestGateway<Req, Res> {
    fn with(script: VecDeque<Answer<Res>>, cycle: bool, then: Option<Answer<Res>>) -> Self {
        let state = State { script, cycle, then, record: None };
        TestGateway { shared: Arc::new(Shared { calls: AtomicUsize::new(0), state: Mutex::new(state) }) }
    }

    fn state(&self) -> MutexGuard<'_, State<Req, Res>> {
        // A test that panicked while holding the lock cannot leave the state half-changed: every change is one
        // push or pop.
        self.shared.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Answers every call with `Ok(res)`.
    #[must_use]
    pub fn ok(res: Res) -> Self {
        Self::with(VecDeque::new(), false, Some(Answer::Ok(res)))
    }

    /// Answers every call with `Err(error)`.
    #[must_use]
    pub fn err(error: PaymentError) -> Self {
        Self::with(VecDeque::new(), false, Some(Answer::Err(error)))
    }

    /// Answers the calls with `answers`, in order. A call after the last one panics, unless
    /// [`then`](Self::then) says what comes next.
    #[must_use]
    pub fn script(answers: impl IntoIterator<Item = Answer<Res>>) -> Self {
        Self::with(answers.into_iter().collect(), false, None)
    }

    /// Answers the calls with `answers`, in order, over and over.
    #[must_use]
    pub fn cycle(answers: impl IntoIterator<Item = Answer<Res>>) -> Self {
        Self::with(answers.into_iter().collect(), true, None)
    }

    /// The answer to every call after the script.
    #[must_use]
    pub fn then(self, answer: Answer<Res>) -> Self {
        self.state().then = Some(answer);
        self
    }

    /// Records every call from now on: when it arrived and a copy of the request (see [`log`](Self::log)).
    #[must_use]
    pub fn recording(self) -> Self
    where
        Req: Clone,
    {
        self.state().record.get_or_insert_with(|| Record { copy: Req::clone, calls: Vec::new() });
        self
    }

    /// How many calls reached the gateway, through any clone.
    #[must_use]
    pub fn calls(&self) -> usize {
        self.shared.calls.load(Ordering::SeqCst)
    }

    /// The calls recorded so far, in order.
    ///
    /// # Panics
    /// When the gateway is not [`recording`](Self::recording): an empty record would make assertions over it
    /// pass vacuously.
    #[must_use]
    pub fn log(&self) -> Vec<Call<Req>>
    where
        Req: Clone,
    {
        match &self.state().record {
            Some(record) => record.calls.clone(),
            None => panic!("TestGateway::log() needs .recording() on the gateway"),
        }
    }

    fn answer(&self, req: &Req) -> Answer<Res>
    where
        Res: Clone,
    {
        let n = self.shared.calls.fetch_add(1, Ordering::SeqCst) + 1;
        let mut state = self.state();
        if let Some(record) = &mut state.record {
            record.calls.push(Call { at: Instant::now(), request: (record.copy)(req) });
        }
        if let Some(answer) = state.script.pop_front() {
            if state.cycle {
                state.script.push_back(answer.clone());
            }
            return answer;
        }
        match &state.then {
            Some(answer) => answer.clone(),
            None => panic!("TestGateway: call {n} came after the last scripted answer; add .then(..) to the script"),
        }
    }
}

impl<Req, Res> Clone for TestGateway<Req, Res> {
    fn clone(&self) -> Self {
        TestGateway { shared: self.shared.clone() }
    }
}

impl<Req, Res> fmt::Debug for TestGateway<Req, Res> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TestGateway").field("calls", &self.calls()).finish_non_exhaustive()
    }
}

impl<Req, Res: Clone> Service<Req> for TestGateway<Req, Res> {
    type Response = Res;
    type Error = PaymentError;
    type Future = AnswerFuture<Res>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), PaymentError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Req) -> AnswerFuture<Res> {
        AnswerFuture {
            out: match self.answer(&req) {
                Answer::Ok(res) => Out::Ready(Some(Ok(res))),
                Answer::Err(e) => Out::Ready(Some(Err(e))),
                Answer::Hang => Out::Hang,
            },
        }
    }
}

/// The future of a [`TestGateway`] call: ready at its first poll, or never for [`Answer::Hang`].
#[must_use = "futures do nothing unless polled"]
pub struct AnswerFuture<Res> {
    out: Out<Res>,
}

enum Out<Res> {
    Ready(Option<Result<Res, PaymentError>>),
    Hang,
}

// Nothing in the future is ever pinned in place (the answer is moved out by value), as in `std::future::Ready`.
impl<Res> Unpin for AnswerFuture<Res> {}

impl<Res> fmt::Debug for AnswerFuture<Res> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AnswerFuture").field("hangs", &matches!(self.out, Out::Hang)).finish_non_exhaustive()
    }
}

impl<Res> Future for AnswerFuture<Res> {
    type Output = Result<Res, PaymentError>;

    fn poll(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Self::Output> {
        match &mut self.get_mut().out {
            Out::Ready(out) => match out.take() {
                Some(out) => Poll::Ready(out),
                None => panic!("AnswerFuture polled after completion"),
            },
            Out::Hang => Poll::Pending,
        }
    }
}

/// A gateway that answers every call with `Ok(res)` at once and keeps no state (no count, no lock, no record), so
/// in a benchmark the figures are the layer's own cost. Tests that count calls or need failures use
/// [`TestGateway`].
#[derive(Debug, Clone, Copy, Default)]
pub struct InstantGateway<Res> {
    res: Res,
}

impl<Res> InstantGateway<Res> {
    /// Answers every call with `Ok(res)`.
    #[must_use]
    pub const fn ok(res: Res) -> Self {
        InstantGateway { res }
    }
}

impl<Req, Res: Clone> Service<Req> for InstantGateway<Res> {
    type Response = Res;
    type Error = PaymentError;
    type Future = std::future::Ready<Result<Res, PaymentError>>;

    #[inline]
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), PaymentError>> {
        Poll::Ready(Ok(()))
    }

    #[inline]
    fn call(&mut self, _: Req) -> Self::Future {
        std::future::ready(Ok(self.res.clone()))
    }
}

#[cfg(test)]
mod tests {
    use std::task::Waker;

    use super::*;

    fn call<S: Service<u32>>(svc: &mut S) -> Poll<Result<S::Response, S::Error>> {
        let mut cx = Context::from_waker(Waker::noop());
        assert!(svc.poll_ready(&mut cx).is_ready());
        std::pin::pin!(svc.call(7)).poll(&mut cx)
    }

    #[test]
    fn answers_the_script_in_order_then_the_fallback_and_counts_every_clone() {
        let gw = TestGateway::script([Answer::Err(PaymentError::InsufficientFunds), Answer::Hang]).then(Answer::Ok(1));
        let mut a = gw.clone();
        let mut b = gw.clone();
        assert_eq!(call(&mut a), Poll::Ready(Err(PaymentError::InsufficientFunds)));
        assert_eq!(call(&mut b), Poll::Pending);
        assert_eq!(call(&mut a), Poll::Ready(Ok(1)));
        assert_eq!(call(&mut b), Poll::Ready(Ok(1)));
        assert_eq!(gw.calls(), 4);
    }

    #[test]
    fn a_cycle_repeats_and_a_bare_script_refuses_an_unexpected_call() {
        let mut gw = TestGateway::cycle([Answer::Ok(1), Answer::Ok(2)]);
        let got: Vec<_> = (0..5).map(|_| call(&mut gw)).collect();
        assert_eq!(got, [1, 2, 1, 2, 1].map(|n| Poll::Ready(Ok(n))));

        let mut gw = TestGateway::<u32, u32>::script([Answer::Ok(1)]);
        assert_eq!(call(&mut gw), Poll::Ready(Ok(1)));
        let unexpected = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| call(&mut gw)));
        assert!(unexpected.is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn records_when_asked_and_refuses_to_read_an_empty_record() {
        let gw = TestGateway::ok(()).recording();
        let mut svc = gw.clone();
        let _ = call(&mut svc);
        tokio::time::advance(std::time::Duration::from_secs(2)).await;
        let _ = call(&mut svc);
        let log = gw.log();
        assert_eq!(log.iter().map(|c| c.request).collect::<Vec<_>>(), [7, 7]);
        assert_eq!(log[1].at - log[0].at, std::time::Duration::from_secs(2));

        let silent = TestGateway::<u32, ()>::ok(());
        assert!(std::panic::catch_unwind(|| silent.log()).is_err());
    }

    #[test]
    fn the_instant_gateway_answers_at_once() {
        let mut gw = InstantGateway::ok(200u16);
        assert_eq!(call(&mut gw), Poll::Ready(Ok(200)));
    }
}
