//! The [`Reconciler`] and its builder.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use crate::error::RowError;
use crate::record::{Status, StatusMap};
use crate::report::{Discrepancy, Kind};

/// The defaults, each with its reason.
pub mod defaults {
    use std::time::Duration;

    /// 24 hours. Finance reconciles T-1 data, and a gateway's report or the ledger's webhook may trail a payment
    /// by up to a day; a record on one side only that is younger than this at the cut-off is `pending`, not
    /// `missing_*`.
    pub const LAG: Duration = Duration::from_secs(24 * 60 * 60);

    /// The cut-off: `None`, meaning the latest `created_at` on either side, so yesterday's files reconcile the
    /// same way whenever they are run.
    pub const AS_OF: Option<i64> = None;
}

type SyncHandler = Arc<dyn Fn(&Discrepancy) + Send + Sync>;
type AsyncHandler = Arc<dyn Fn(Discrepancy) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

#[derive(Clone)]
pub(crate) enum Handler {
    Sync(SyncHandler),
    Async(AsyncHandler),
}

/// Where malformed rows go instead of stopping the run.
pub(crate) type RejectSink = Arc<dyn Fn(&RowError) + Send + Sync>;

/// Compares an internal ledger with a gateway report (see the crate docs). Cheap to clone.
#[derive(Clone)]
pub struct Reconciler {
    pub(crate) lag: Duration,
    pub(crate) as_of: Option<i64>,
    pub(crate) statuses: Arc<StatusMap>,
    pub(crate) handlers: Arc<[Vec<Handler>; Kind::ALL.len()]>,
    pub(crate) reject: Option<RejectSink>,
    pub(crate) progress: Option<Arc<AtomicU64>>,
}

impl std::fmt::Debug for Reconciler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reconciler")
            .field("lag", &self.lag)
            .field("as_of", &self.as_of)
            .field("handlers", &self.handlers.iter().map(Vec::len).sum::<usize>())
            .field("reject", &self.reject.is_some())
            .finish_non_exhaustive()
    }
}

impl Default for Reconciler {
    fn default() -> Self {
        Reconciler::builder().build()
    }
}

impl Reconciler {
    /// A builder with the [`defaults`].
    pub fn builder() -> ReconcilerBuilder {
        ReconcilerBuilder {
            lag: defaults::LAG,
            as_of: defaults::AS_OF,
            statuses: StatusMap::default(),
            handlers: Default::default(),
            reject: None,
            progress: None,
        }
    }

    pub(crate) fn has_handlers(&self, kind: Kind) -> bool {
        !self.handlers[kind.index()].is_empty()
    }
}

/// Builds a [`Reconciler`].
#[must_use]
pub struct ReconcilerBuilder {
    lag: Duration,
    as_of: Option<i64>,
    statuses: StatusMap,
    handlers: [Vec<Handler>; Kind::ALL.len()],
    reject: Option<RejectSink>,
    progress: Option<Arc<AtomicU64>>,
}

impl ReconcilerBuilder {
    /// How long before the cut-off a one-sided record is still `pending` (default [`defaults::LAG`]).
    pub fn lag(mut self, lag: Duration) -> Self {
        self.lag = lag;
        self
    }
    /// The cut-off, Unix seconds (default [`defaults::AS_OF`]: the latest `created_at` on either side).
    pub fn as_of(mut self, unix_seconds: i64) -> Self {
        self.as_of = Some(unix_seconds);
        self
    }
    /// Maps a status name (any case) onto a [`Status`], on top of [`StatusMap::default`].
    pub fn status(mut self, name: &str, status: Status) -> Self {
        self.statuses.insert(name, status);
        self
    }
    /// Replaces the whole status mapping.
    pub fn statuses(mut self, map: StatusMap) -> Self {
        self.statuses = map;
        self
    }
    /// Calls `handler` with every discrepancy of `kind` as it is found (several handlers per kind all run, in
    /// the order registered). With [`Reconciler::reconcile`] it runs on the worker threads, so keep it quick
    /// or hand the work off; with [`Reconciler::reconcile_async`] it runs in the caller's task.
    pub fn on(mut self, kind: Kind, handler: impl Fn(&Discrepancy) + Send + Sync + 'static) -> Self {
        self.handlers[kind.index()].push(Handler::Sync(Arc::new(handler)));
        self
    }
    /// Like [`on`](Self::on) with an async handler (page on-call, open a ticket). [`Reconciler::reconcile_async`]
    /// awaits it in the caller's task, one discrepancy after the other; [`Reconciler::reconcile`] drives it to
    /// completion on the worker thread, so it must not need a runtime's timers or I/O there.
    pub fn on_async<F, Fut>(mut self, kind: Kind, handler: F) -> Self
    where
        F: Fn(Discrepancy) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.handlers[kind.index()].push(Handler::Async(Arc::new(move |d| Box::pin(handler(d)))));
        self
    }
    /// Hands malformed rows to `sink` and goes on, instead of stopping at the first one (the default). They are
    /// counted in [`SideSummary::rejected`](crate::SideSummary::rejected).
    pub fn reject(mut self, sink: impl Fn(&RowError) + Send + Sync + 'static) -> Self {
        self.reject = Some(Arc::new(sink));
        self
    }
    /// A counter of rows read on both sides, updated as the files are read (for a progress bar).
    pub fn progress(mut self, rows: Arc<AtomicU64>) -> Self {
        self.progress = Some(rows);
        self
    }
    /// The reconciler.
    #[must_use]
    pub fn build(self) -> Reconciler {
        Reconciler {
            lag: self.lag,
            as_of: self.as_of,
            statuses: Arc::new(self.statuses),
            handlers: Arc::new(self.handlers),
            reject: self.reject,
            progress: self.progress,
        }
    }
}
