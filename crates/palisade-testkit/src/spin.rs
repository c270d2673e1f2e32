//! Driving services and futures that answer without waiting on anything, with no runtime: allocation tests and
//! benches, where a runtime's own work would be counted or timed.

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use tower_service::Service;

/// Polls `fut` with a no-op waker until it is ready. Only for futures that become ready without being woken
/// (every poll makes progress): one that waits on a timer or a socket spins forever.
pub fn spin<F: Future>(fut: F) -> F::Output {
    let mut fut = pin!(fut);
    let mut cx = Context::from_waker(Waker::noop());
    loop {
        if let Poll::Ready(v) = fut.as_mut().poll(&mut cx) {
            return v;
        }
    }
}

/// `poll_ready` (spinning until ready), `call`, then [`spin`] on the response.
///
/// # Errors
/// The service's error, from `poll_ready` or from the call.
pub fn call_spinning<S: Service<R>, R>(svc: &mut S, req: R) -> Result<S::Response, S::Error> {
    spin(std::future::poll_fn(|cx| svc.poll_ready(cx)))?;
    spin(svc.call(req))
}
