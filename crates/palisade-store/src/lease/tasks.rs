//! What every holder of a lease does besides the store calls: keep the lease alive while it works, and undo a
//! claim whose answer never arrived. Both layers (idempotency, webhook deliveries) use these, and say in their
//! own logs what each result means for their requests.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::{Hold, LeaseStore, StoreError};

/// The heartbeat interval for a lease: a third of it (at least 1 ms). One failed renewal then costs nothing,
/// and the lease ends about a lease after the holder died or stalled.
#[must_use]
pub fn beat_every(lease: Duration) -> Duration {
    (lease / 3).max(Duration::from_millis(1))
}

/// Runs `work` while renewing `hold`'s lease every [`beat_every`] of it, so a live holder keeps its key however
/// long it works and a dead one blocks it for at most a lease. The renewals are polled inside this future, so
/// they stop when the work ends or the future is dropped, and they follow `tokio::time` (tests can pause it).
///
/// `on_beat` hears every renewal's answer. After an `Ok(false)` (the lease ended, or was taken over) renewing
/// stops: a lease that ended cannot be renewed again.
pub async fn renewing<F: Future>(
    store: &dyn LeaseStore,
    hold: &Hold,
    lease: Duration,
    work: F,
    mut on_beat: impl FnMut(Result<bool, StoreError>),
) -> F::Output {
    let beats = async {
        let every = beat_every(lease);
        let mut tick = tokio::time::interval_at(Instant::now() + every, every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let renewed = store.renew(hold, lease).await;
            let ended = matches!(renewed, Ok(false));
            on_beat(renewed);
            if ended {
                return std::future::pending::<Infallible>().await;
            }
        }
    };
    tokio::select! {
        biased;
        out = work => out,
        never = beats => match never {},
    }
}

/// Attempts to undo a lost claim, and the pause after the first failure (doubling): 0, 0.25, 0.75 and 1.75 s
/// after the claim failed, so the undo lands before a client that was told `Retry-After: 1` and then again
/// before one that waited twice that.
pub const ABANDON_TRIES: u32 = 4;
/// See [`ABANDON_TRIES`].
pub const ABANDON_FIRST_PAUSE: Duration = Duration::from_millis(250);

/// Undoes, in the background, a claim whose answer never arrived (it failed or timed out): it may have landed,
/// or land later (a stalled store runs it when it resumes, and the undo after it). A failed undo is tried again
/// up to [`ABANDON_TRIES`] times, never past one lease, after which a claim that landed has ended by itself.
/// `on_done` hears the last answer (`Ok(true)`: a claim was undone). Does nothing outside a Tokio runtime.
pub fn abandon_in_background(
    store: Arc<dyn LeaseStore>,
    key: Arc<str>,
    attempt: u64,
    lease: Duration,
    on_done: impl FnOnce(Result<bool, StoreError>) + Send + 'static,
) {
    let Ok(rt) = tokio::runtime::Handle::try_current() else { return };
    rt.spawn(async move {
        let give_up = Instant::now() + lease;
        let mut pause = ABANDON_FIRST_PAUSE;
        let mut tries_left = ABANDON_TRIES;
        loop {
            tries_left -= 1;
            match store.abandon(&key, attempt).await {
                Err(e) if tries_left > 0 && Instant::now() + pause < give_up => {
                    tracing::debug!(error = %e, "could not undo a claim whose answer was lost yet; trying again");
                    tokio::time::sleep(pause).await;
                    pause *= 2;
                }
                answer => return on_done(answer),
            }
        }
    });
}
