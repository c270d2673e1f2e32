//! [`ResponseFuture`]: the named future of a retried call. No boxing: when the first attempt succeeds, polling it
//! costs one poll of the inner future and one classification.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use palisade_core::backoff::LONGEST_WAIT;
use palisade_core::{Classify, GatewayKeyed, Outcome};
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep, sleep_until};
use tower_service::Service;

use crate::policy::Policy;
use crate::service::Shared;
use palisade_core::mode::Refuse;

use crate::error::AttemptTimedOut;

/// Why the layer retried or stopped: the `reason` field of its tracing events and metrics.
mod reason {
    /// Retrying after the wait the outcome asked for.
    pub(super) const RETRY_AFTER: &str = "retry_after";
    /// Retrying after the computed backoff.
    pub(super) const BACKOFF: &str = "backoff";
    /// Stopped: no attempts left.
    pub(super) const MAX_ATTEMPTS: &str = "max_attempts";
    /// Stopped: the next attempt (or its wait) would end after the total deadline.
    pub(super) const DEADLINE: &str = "deadline";
    /// Stopped: the outcome's `retry_after` is longer than the max delay, and retrying sooner would call the other
    /// side before the time it gave.
    pub(super) const RETRY_AFTER_OVER_MAX_DELAY: &str = "retry_after_over_max_delay";
    /// Stopped: the retry budget is empty.
    pub(super) const BUDGET: &str = "budget";
    /// Stopped: `Unknown` and no gateway key on the request (or `retry_unknown(false)`).
    pub(super) const UNKNOWN_WITHOUT_KEY: &str = "unknown_without_key";
}

pin_project! {
    /// The future a [`Retry`](crate::Retry) service returns.
    pub struct ResponseFuture<S, Req, C, M>
    where
        S: Service<Req>,
    {
        // The layer's policy and the retrying service's spare clone of its inner service, behind the one `Arc`
        // the retrying service keeps for its calls: a retry clones its service from the spare into `service`.
        // The first attempt was sent by the retrying service itself, so a call that is not retried clones no
        // service (and the future does not carry a whole inner service, which every outer layer would move).
        shared: Arc<Shared<S, C, M>>,
        // The service retries are sent through, cloned from `spare` at the first retry. Boxed: only a retried
        // call has one, and inline it would make every call's future larger by a whole service.
        service: Option<Box<S>>,
        // The clone the next attempt sends (same gateway key); `None` once no attempt is left.
        request: Option<Req>,
        #[pin]
        state: State<S::Future>,
        // One timer, reused: the attempt timeout while calling, the backoff while waiting, the deadline while
        // waiting for readiness. Boxed and created only when first needed, so a call that succeeds without an
        // attempt timeout neither allocates nor registers a timer, and the future stays small.
        timer: Option<Pin<Box<Sleep>>>,
        timer_role: TimerRole,
        // When the timer is an attempt timeout: how long it gives the attempt.
        armed_for: Duration,
        // The failed result the caller gets if no attempt succeeds (see [`worst`]): the last one, or an earlier
        // `Unknown`, kept until the call ends; returned too if the deadline passes while waiting for readiness.
        // Boxed: set only once an attempt failed, and a result inline would make every call's future (which each
        // outer layer moves) larger by a whole result.
        last: Option<Box<Failed<S::Response, S::Error>>>,
        start: Option<Instant>,
        attempt: u32,
        previous_delay: Option<Duration>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F> {
        Calling { #[pin] future: F },
        Waiting,
        Preparing,
        Done,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TimerRole {
    Idle,
    Attempt,
    Backoff,
    Guard,
}

/// A failed attempt's result and its outcome.
type Failed<Res, E> = (Last<Res, E>, Outcome);

/// What the fast path already learned before handing over to `drive`.
enum Entry<Res, E> {
    /// Nothing: poll from the current state.
    Fresh,
    /// The attempt failed with this result.
    Failed(Failed<Res, E>),
    /// The attempt was just polled and is still running.
    Pending,
}

enum Last<Res, E> {
    Result(Result<Res, E>),
    TimedOut(AttemptTimedOut),
}

enum Decision {
    Stop(Option<&'static str>),
    Retry { delay: Duration, reason: &'static str },
}

impl<S, Req, C, M> ResponseFuture<S, Req, C, M>
where
    S: Service<Req>,
{
    #[inline]
    pub(crate) fn new(
        shared: Arc<Shared<S, C, M>>,
        request: Option<Req>,
        future: S::Future,
        start: Option<Instant>,
    ) -> Self {
        let mut armed_for = Duration::ZERO;
        let policy = &shared.policy;
        let timer = match (policy.attempt_timeout, start) {
            (Some(t), Some(now)) => {
                let at = attempt_deadline(policy, start, now, t);
                armed_for = at.saturating_duration_since(now);
                Some(Box::pin(sleep_until(at)))
            }
            _ => None,
        };
        let timer_role = if timer.is_some() { TimerRole::Attempt } else { TimerRole::Idle };
        ResponseFuture {
            shared,
            service: None,
            request,
            state: State::Calling { future },
            timer,
            timer_role,
            armed_for,
            last: None,
            start,
            attempt: 1,
            previous_delay: None,
        }
    }
}

fn deadline_at<C, M>(policy: &Policy<C, M>, start: Option<Instant>) -> Option<Instant> {
    start.zip(policy.deadline).and_then(|(s, d)| s.checked_add(d))
}

fn attempt_deadline<C, M>(policy: &Policy<C, M>, start: Option<Instant>, now: Instant, timeout: Duration) -> Instant {
    let at = now.checked_add(timeout).unwrap_or(now + LONGEST_WAIT);
    match deadline_at(policy, start) {
        Some(dl) => at.min(dl),
        None => at,
    }
}

impl<S, Req, C, M> Future for ResponseFuture<S, Req, C, M>
where
    S: Service<Req> + Clone,
    Req: GatewayKeyed + Clone,
    C: Classify<S::Response, S::Error>,
    M: Refuse<AttemptTimedOut, S::Response, S::Error>,
{
    type Output = Result<S::Response, S::Error>;

    #[inline]
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // The fast path, kept small so it inlines: poll the attempt, classify, return. Everything else (timers,
        // retries, readiness) lives in `drive`.
        let this = self.as_mut().project();
        if let StateProj::Calling { future } = this.state.project() {
            match future.poll(cx) {
                Poll::Ready(result) => {
                    let outcome = this.shared.policy.classifier.classify(&result);
                    if matches!(outcome, Outcome::Success | Outcome::Terminal) {
                        // Nothing to retry. When nothing fails this is the whole path: no clock, no budget, no
                        // event, no state change.
                        return Poll::Ready(result);
                    }
                    return self.drive(cx, Entry::Failed((Last::Result(result), outcome)));
                }
                Poll::Pending if *this.timer_role != TimerRole::Attempt => return Poll::Pending,
                // Still running, and an attempt timeout is armed: `drive` checks it without polling again.
                Poll::Pending => return self.drive(cx, Entry::Pending),
            }
        }
        self.drive(cx, Entry::Fresh)
    }
}

impl<S, Req, C, M> ResponseFuture<S, Req, C, M>
where
    S: Service<Req> + Clone,
    Req: GatewayKeyed + Clone,
    C: Classify<S::Response, S::Error>,
    M: Refuse<AttemptTimedOut, S::Response, S::Error>,
{
    /// The state machine. `entry` is what the fast path already learned about the current attempt.
    #[inline(never)]
    fn drive(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        mut entry: Entry<S::Response, S::Error>,
    ) -> Poll<Result<S::Response, S::Error>> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Calling { future } => {
                    let (last, outcome) = match std::mem::replace(&mut entry, Entry::Fresh) {
                        Entry::Failed(taken) => taken,
                        entered => {
                            match if matches!(entered, Entry::Pending) { Poll::Pending } else { future.poll(cx) } {
                                Poll::Ready(result) => {
                                    let outcome = this.shared.policy.classifier.classify(&result);
                                    if matches!(outcome, Outcome::Success | Outcome::Terminal) {
                                        return Poll::Ready(result);
                                    }
                                    (Last::Result(result), outcome)
                                }
                                Poll::Pending => {
                                    if *this.timer_role != TimerRole::Attempt {
                                        return Poll::Pending;
                                    }
                                    let fired = this.timer.as_mut().is_some_and(|t| t.as_mut().poll(cx).is_ready());
                                    if !fired {
                                        return Poll::Pending;
                                    }
                                    let timed_out = AttemptTimedOut { after: *this.armed_for, attempt: *this.attempt };
                                    (Last::TimedOut(timed_out), Outcome::Unknown)
                                }
                            }
                        }
                    };
                    let policy: &Policy<C, M> = &this.shared.policy;
                    match decide(
                        policy,
                        this.request.as_ref(),
                        *this.attempt,
                        *this.start,
                        *this.previous_delay,
                        outcome,
                    ) {
                        Decision::Stop(why) => {
                            // An earlier attempt that may have acted outweighs a later one refused unacted.
                            let (last, outcome) = worst(this.last.take(), (last, outcome));
                            if let Some(why) = why {
                                gave_up(*this.attempt, outcome, why);
                            }
                            this.state.set(State::Done);
                            return Poll::Ready(finish(&this.shared.policy, last));
                        }
                        Decision::Retry { delay, reason } => {
                            retrying(*this.attempt, delay, outcome, reason);
                            *this.previous_delay = Some(delay);
                            let kept = worst(this.last.take(), (last, outcome));
                            *this.last = Some(Box::new(kept));
                            if delay.is_zero() {
                                this.state.set(State::Preparing);
                                arm_guard(policy, *this.start, this.timer, this.timer_role);
                            } else {
                                set_timer(this.timer, Instant::now() + delay.min(LONGEST_WAIT));
                                *this.timer_role = TimerRole::Backoff;
                                this.state.set(State::Waiting);
                            }
                        }
                    }
                }
                StateProj::Waiting => {
                    if let Some(t) = this.timer.as_mut() {
                        ready!(t.as_mut().poll(cx));
                    }
                    this.state.set(State::Preparing);
                    arm_guard(&this.shared.policy, *this.start, this.timer, this.timer_role);
                }
                StateProj::Preparing => {
                    let shared = &*this.shared;
                    let service = this.service.get_or_insert_with(|| Box::new(shared.spare.lock().clone()));
                    match service.poll_ready(cx) {
                        Poll::Ready(Ok(())) => {}
                        Poll::Ready(Err(e)) => {
                            // A failed `poll_ready` means the inner service is unusable (tower's contract): return
                            // its error as is, unless an earlier attempt may have acted (see [`worst`]).
                            this.state.set(State::Done);
                            return Poll::Ready(match this.last.take().map(|b| *b) {
                                Some((last, Outcome::Unknown)) => finish(&this.shared.policy, last),
                                _ => Err(e),
                            });
                        }
                        Poll::Pending => {
                            if *this.timer_role == TimerRole::Guard
                                && let Some(t) = this.timer.as_mut()
                                && t.as_mut().poll(cx).is_ready()
                            {
                                // The deadline passed while the inner service was not ready.
                                this.state.set(State::Done);
                                return match this.last.take().map(|b| *b) {
                                    Some((last, outcome)) => {
                                        gave_up(*this.attempt, outcome, reason::DEADLINE);
                                        Poll::Ready(finish(&this.shared.policy, last))
                                    }
                                    // Unreachable: `last` is set before every retry. Answer as a timeout.
                                    None => Poll::Ready(
                                        this.shared
                                            .policy
                                            .mode
                                            .refuse(AttemptTimedOut { after: Duration::ZERO, attempt: *this.attempt }),
                                    ),
                                };
                            }
                            return Poll::Pending;
                        }
                    }
                    *this.attempt += 1;
                    let policy: &Policy<C, M> = &this.shared.policy;
                    // The last attempt takes the retained request; earlier ones send a clone of it. Either way the
                    // request (and its gateway key) is the one the first attempt sent.
                    let request =
                        if *this.attempt >= policy.max_attempts { this.request.take() } else { this.request.clone() };
                    let Some(request) = request else {
                        // Unreachable: `decide` retries only while a request is retained.
                        this.state.set(State::Done);
                        return match this.last.take().map(|b| *b) {
                            Some((last, _)) => Poll::Ready(finish(&this.shared.policy, last)),
                            None => Poll::Ready(
                                this.shared.policy.mode.refuse(AttemptTimedOut { after: Duration::ZERO, attempt: 0 }),
                            ),
                        };
                    };
                    // The failure kept for a deadline while not ready is this attempt's to replace, unless it
                    // may have acted: an Unknown is kept until the call ends.
                    if this.last.as_ref().is_some_and(|l| l.1 != Outcome::Unknown) {
                        *this.last = None;
                    }
                    match policy.attempt_timeout {
                        Some(t) => {
                            let now = Instant::now();
                            let at = attempt_deadline(policy, *this.start, now, t);
                            *this.armed_for = at.saturating_duration_since(now);
                            set_timer(this.timer, at);
                            *this.timer_role = TimerRole::Attempt;
                        }
                        None => *this.timer_role = TimerRole::Idle,
                    }
                    let Some(service) = this.service.as_mut() else {
                        // Unreachable: made just above, before its readiness was polled.
                        this.state.set(State::Done);
                        return Poll::Ready(
                            this.shared
                                .policy
                                .mode
                                .refuse(AttemptTimedOut { after: Duration::ZERO, attempt: *this.attempt }),
                        );
                    };
                    let future = service.call(request);
                    this.state.set(State::Calling { future });
                }
                StateProj::Done => panic!("ResponseFuture polled after completion"),
            }
        }
    }
}

/// Of an earlier failure kept (if any) and the latest, the one the caller must see: the latest, unless the kept
/// one is `Unknown` (the call may have acted: the gateway may have charged) and the latest is not. An attempt
/// refused without acting (a network error before sending, a 503, a rate limit, an open breaker) after a lost
/// answer does not make the call "nothing happened": a saga would skip the step's compensation, and a client
/// would be told it may simply try again.
fn worst<Res, E>(kept: Option<Box<Failed<Res, E>>>, latest: Failed<Res, E>) -> Failed<Res, E> {
    match kept {
        Some(kept) if kept.1 == Outcome::Unknown && latest.1 != Outcome::Unknown => *kept,
        _ => latest,
    }
}

fn finish<Res, E, C, M: Refuse<AttemptTimedOut, Res, E>>(policy: &Policy<C, M>, last: Last<Res, E>) -> Result<Res, E> {
    match last {
        Last::Result(r) => r,
        Last::TimedOut(t) => policy.mode.refuse(t),
    }
}

fn set_timer(timer: &mut Option<Pin<Box<Sleep>>>, at: Instant) {
    match timer {
        Some(t) => t.as_mut().reset(at),
        None => *timer = Some(Box::pin(sleep_until(at))),
    }
}

/// While waiting for readiness, the timer watches the deadline (if there is one).
fn arm_guard<C, M>(
    policy: &Policy<C, M>,
    start: Option<Instant>,
    timer: &mut Option<Pin<Box<Sleep>>>,
    role: &mut TimerRole,
) {
    match deadline_at(policy, start) {
        Some(dl) => {
            set_timer(timer, dl);
            *role = TimerRole::Guard;
        }
        None => *role = TimerRole::Idle,
    }
}

fn decide<Req: GatewayKeyed, C, M>(
    policy: &Policy<C, M>,
    request: Option<&Req>,
    attempt: u32,
    start: Option<Instant>,
    previous_delay: Option<Duration>,
    outcome: Outcome,
) -> Decision {
    let retry_after = match outcome {
        Outcome::Retriable { retry_after } => retry_after,
        Outcome::Unknown => None,
        // Success, Terminal, and any outcome a later core adds: never retried.
        _ => return Decision::Stop(None),
    };
    let Some(request) = request else { return Decision::Stop(Some(reason::MAX_ATTEMPTS)) };
    if attempt >= policy.max_attempts {
        return Decision::Stop(Some(reason::MAX_ATTEMPTS));
    }
    if matches!(outcome, Outcome::Unknown) && !(policy.retry_unknown && request.gateway_key().is_some()) {
        return Decision::Stop(Some(reason::UNKNOWN_WITHOUT_KEY));
    }
    let (delay, why) = match retry_after {
        // The other side said when: that wait exactly, no jitter, never shortened (checked against the max delay
        // below, after the deadline).
        Some(ra) => (ra, reason::RETRY_AFTER),
        None => (policy.backoff_delay(attempt - 1, previous_delay), reason::BACKOFF),
    };
    let now = Instant::now();
    if let Some(dl) = deadline_at(policy, start) {
        // An attempt starting at or after the deadline could not finish by it: return the last outcome now.
        if now.checked_add(delay).is_none_or(|at| at >= dl) {
            return Decision::Stop(Some(reason::DEADLINE));
        }
    }
    // A `retry_after` longer than the layer waits: retrying at the max delay would call the other side before the
    // time it gave (a breaker still open, a limit still spent), so return its answer now.
    if retry_after.is_some_and(|ra| ra > policy.backoff.max) {
        return Decision::Stop(Some(reason::RETRY_AFTER_OVER_MAX_DELAY));
    }
    if let Some(budget) = &policy.budget
        && !budget.withdraw_at(now)
    {
        return Decision::Stop(Some(reason::BUDGET));
    }
    Decision::Retry { delay, reason: why }
}

fn retrying(attempt: u32, delay: Duration, outcome: Outcome, why: &'static str) {
    let delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
    tracing::info!(
        target: "palisade_retry",
        attempt,
        delay_ms,
        outcome = outcome.class().as_str(),
        reason = why,
        "retrying gateway call"
    );
    #[cfg(feature = "metrics")]
    metrics::counter!("palisade_retry_retries_total", "outcome" => outcome.class().as_str(), "reason" => why)
        .increment(1);
}

fn gave_up(attempt: u32, outcome: Outcome, why: &'static str) {
    tracing::warn!(
        target: "palisade_retry",
        attempt,
        outcome = outcome.class().as_str(),
        reason = why,
        "not retrying gateway call; returning the last outcome"
    );
    #[cfg(feature = "metrics")]
    metrics::counter!("palisade_retry_gave_up_total", "outcome" => outcome.class().as_str(), "reason" => why)
        .increment(1);
}

impl<S, Req, C, M> fmt::Debug for ResponseFuture<S, Req, C, M>
where
    S: Service<Req>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("attempt", &self.attempt)
            .field("previous_delay", &self.previous_delay)
            .finish_non_exhaustive()
    }
}
