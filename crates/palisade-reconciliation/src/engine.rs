//! The engine: both sides read at once on two threads into sharded hash tables of compact records, then the
//! shards joined on every core.
//!
//! Memory is per key: a record is a 48-byte slot (amount, currency, status, time, line, and where its id sits)
//! plus its id's bytes in one arena per side. No row's text is kept.

use std::future::Future;
use std::hash::BuildHasher;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll, Wake, Waker};

use hashbrown::HashTable;
use hashbrown::hash_table::Entry;
use palisade_core::Currency;

use crate::config::{Handler, Reconciler};
use crate::error::Error;
use crate::record::{Record, RecordRef, Status};
use crate::report::{Discrepancy, Kind, Report, SideSummary, Totals};
use crate::source::Source;

/// Shards per side: the join runs shard pairs in parallel, and a shard's table grows (rehashes) on its own,
/// which keeps the peak of a rehash to a sixteenth of the table.
const SHARDS: usize = 16;

/// Rows between updates of the progress counter.
const PROGRESS_EVERY: u64 = 1 << 16;

/// Seed of the table hasher: fixed, so a run's output order never depends on chance (the report is sorted
/// anyway). The ids come from the operator's own files, so there is no hash flooding to defend against.
const HASH_SEED: u64 = 0x5041_4c49_5341_4445;

#[derive(Clone, Copy)]
struct Slot {
    off: u64,
    len: u32,
    currency: Currency,
    status: Status,
    matched: bool,
    amount: i64,
    created_at: i64,
    line: u64,
}

impl Slot {
    fn record(&self) -> Record {
        Record::new(self.amount, self.currency, self.status, self.created_at, self.line)
    }
}

fn hasher() -> foldhash::fast::FixedState {
    foldhash::fast::FixedState::with_seed(HASH_SEED)
}

#[inline]
fn shard_of(hash: u64) -> usize {
    // Bits the table itself uses least (it takes the low bits for the bucket, the top 7 for the tag).
    (hash >> 40) as usize % SHARDS
}

/// One side, read.
struct Side {
    ids: Vec<u8>,
    shards: Vec<HashTable<Slot>>,
    duplicates: Vec<Discrepancy>,
    totals: Vec<Totals>,
    summary: SideSummary,
    latest: Option<i64>,
}

impl Side {
    fn new(rows_hint: Option<u64>) -> Self {
        let per_shard = rows_hint.map_or(0, |r| usize::try_from(r).unwrap_or(0) / SHARDS + 1);
        Side {
            ids: Vec::with_capacity(per_shard.saturating_mul(SHARDS).saturating_mul(12)),
            shards: (0..SHARDS).map(|_| HashTable::with_capacity(per_shard)).collect(),
            duplicates: Vec::new(),
            totals: Vec::new(),
            summary: SideSummary::default(),
            latest: None,
        }
    }

    #[inline]
    fn totals_for(&mut self, currency: Currency) -> &mut Totals {
        let i = match self.totals.iter().position(|t| t.currency == currency) {
            Some(i) => i,
            None => {
                self.totals.push(Totals::new(currency));
                self.totals.len() - 1
            }
        };
        &mut self.totals[i]
    }

    #[inline]
    fn add(&mut self, r: &RecordRef<'_>, internal: bool) {
        self.summary.records += 1;
        self.latest = Some(self.latest.map_or(r.created_at, |l| l.max(r.created_at)));
        if internal {
            self.totals_for(r.currency).internal += i128::from(r.amount);
        } else {
            self.totals_for(r.currency).gross += i128::from(r.amount);
            let t = self.totals_for(r.net_currency);
            t.fee += i128::from(r.fee);
            t.net += i128::from(r.net);
        }
        let state = hasher();
        let id = r.id.as_bytes();
        let hash = state.hash_one(id);
        let Side { ids, shards, duplicates, .. } = self;
        let table = &mut shards[shard_of(hash)];
        match table.entry(hash, |s| id_of(ids, s) == id, |s| state.hash_one(id_of(ids, s))) {
            Entry::Occupied(first) => {
                let extra = Record::new(r.amount, r.currency, r.status, r.created_at, r.line);
                let (kind, internal_rec, gateway_rec) = if internal {
                    (Kind::DuplicateInternal, Some(extra), None)
                } else {
                    (Kind::DuplicateGateway, None, Some(extra))
                };
                duplicates.push(Discrepancy {
                    kind,
                    id: r.id.into(),
                    internal: internal_rec,
                    gateway: gateway_rec,
                    first: Some(first.get().record()),
                });
            }
            Entry::Vacant(v) => {
                let off = ids.len() as u64;
                ids.extend_from_slice(id);
                v.insert(Slot {
                    off,
                    // An id longer than 4 GiB cannot come out of a CSV field the csv crate buffers.
                    len: u32::try_from(id.len()).unwrap_or(u32::MAX),
                    currency: r.currency,
                    status: r.status,
                    matched: false,
                    amount: r.amount,
                    created_at: r.created_at,
                    line: r.line,
                });
            }
        }
    }
}

#[inline]
fn id_of<'a>(ids: &'a [u8], s: &Slot) -> &'a [u8] {
    // `off..off + len` was appended to this very arena when the slot was made.
    let start = usize::try_from(s.off).unwrap_or(usize::MAX);
    &ids[start..start + s.len as usize]
}

fn read_side<S: Source>(rec: &Reconciler, mut source: S, internal: bool) -> Result<Side, Error> {
    let mut side = Side::new(source.rows_hint());
    let mut since_progress = 0u64;
    loop {
        match source.next_record(&rec.statuses) {
            Ok(Some(r)) => side.add(&r, internal),
            Ok(None) => break,
            Err(Error::Row(e)) if rec.reject.is_some() => {
                side.summary.rejected += 1;
                if let Some(sink) = &rec.reject {
                    sink(&e);
                }
            }
            Err(e) => return Err(e),
        }
        since_progress += 1;
        if since_progress == PROGRESS_EVERY {
            if let Some(p) = &rec.progress {
                p.fetch_add(since_progress, Ordering::Relaxed);
            }
            since_progress = 0;
        }
    }
    if let Some(p) = &rec.progress {
        p.fetch_add(since_progress, Ordering::Relaxed);
    }
    side.summary.skipped = source.skipped();
    Ok(side)
}

/// Where found discrepancies go besides the report.
pub(crate) enum Emit {
    /// Call the handlers here, on the worker thread.
    Direct,
    /// Send them to the caller's task, which calls the handlers.
    Channel(tokio::sync::mpsc::UnboundedSender<Discrepancy>),
}

impl Emit {
    fn emit(&self, rec: &Reconciler, d: &Discrepancy) {
        if !rec.has_handlers(d.kind) {
            return;
        }
        match self {
            Emit::Direct => {
                for h in &rec.handlers[d.kind.index()] {
                    match h {
                        Handler::Sync(f) => f(d),
                        Handler::Async(f) => block_on(f(d.clone())),
                    }
                }
            }
            Emit::Channel(tx) => {
                // The receiver lives until the run ends; a dropped receiver means the caller stopped listening.
                let _ = tx.send(d.clone());
            }
        }
    }
}

/// Found in one shard pair.
#[derive(Default)]
struct Found {
    matched: u64,
    discrepancies: Vec<Discrepancy>,
    pending: Vec<Discrepancy>,
}

impl Found {
    fn push(&mut self, rec: &Reconciler, emit: &Emit, d: Discrepancy) {
        emit.emit(rec, &d);
        if d.kind.is_discrepancy() {
            self.discrepancies.push(d);
        } else {
            self.pending.push(d);
        }
    }
}

fn id_str(bytes: &[u8]) -> Box<str> {
    // Ids were `&str` when they went into the arena.
    String::from_utf8_lossy(bytes).into()
}

#[allow(clippy::too_many_arguments)]
fn join_shard(
    rec: &Reconciler,
    emit: &Emit,
    cutoff: i64,
    internal_ids: &[u8],
    internal: &mut HashTable<Slot>,
    gateway_ids: &[u8],
    gateway: &HashTable<Slot>,
    found: &mut Found,
) {
    let state = hasher();
    for g in gateway {
        let id = id_of(gateway_ids, g);
        let hash = state.hash_one(id);
        match internal.find_mut(hash, |s| id_of(internal_ids, s) == id) {
            Some(i) => {
                i.matched = true;
                let mut clean = true;
                let mut report = |kind| {
                    clean = false;
                    let d = Discrepancy {
                        kind,
                        id: id_str(id),
                        internal: Some(i.record()),
                        gateway: Some(g.record()),
                        first: None,
                    };
                    found.push(rec, emit, d);
                };
                if i.currency != g.currency {
                    report(Kind::CurrencyMismatch);
                } else if i.amount != g.amount {
                    report(Kind::AmountMismatch);
                }
                if i.status != g.status {
                    report(Kind::StatusMismatch);
                }
                if clean {
                    found.matched += 1;
                }
            }
            None => {
                let kind = if g.created_at > cutoff { Kind::Pending } else { Kind::MissingInternal };
                let d = Discrepancy { kind, id: id_str(id), internal: None, gateway: Some(g.record()), first: None };
                found.push(rec, emit, d);
            }
        }
    }
    for i in internal.iter().filter(|i| !i.matched) {
        let kind = if i.created_at > cutoff { Kind::Pending } else { Kind::MissingGateway };
        let d = Discrepancy {
            kind,
            id: id_str(id_of(internal_ids, i)),
            internal: Some(i.record()),
            gateway: None,
            first: None,
        };
        found.push(rec, emit, d);
    }
}

impl Reconciler {
    /// Reconciles `internal` (the ledger) with `gateway` (the gateway's report): reads both at once on two
    /// threads, joins on every core, calls the handlers as discrepancies are found, returns the [`Report`].
    ///
    /// # Errors
    /// The first [`Error`] of either side: a file that cannot be read, a missing column, or (without a reject
    /// sink) a malformed row.
    pub fn reconcile<I: Source, G: Source>(&self, internal: I, gateway: G) -> Result<Report, Error> {
        self.run(internal, gateway, &Emit::Direct)
    }

    /// Like [`reconcile`](Self::reconcile), with the handlers (async ones awaited) run in the caller's task as
    /// discrepancies are found, while the work goes on on its own threads.
    ///
    /// # Errors
    /// As [`reconcile`](Self::reconcile).
    pub async fn reconcile_async<I, G>(&self, internal: I, gateway: G) -> Result<Report, Error>
    where
        I: Source + 'static,
        G: Source + 'static,
    {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let (done_tx, done_rx) = tokio::sync::oneshot::channel();
        let me = self.clone();
        std::thread::spawn(move || {
            let result = me.run(internal, gateway, &Emit::Channel(tx));
            let _ = done_tx.send(result);
        });
        while let Some(d) = rx.recv().await {
            for h in &self.handlers[d.kind.index()] {
                match h {
                    Handler::Sync(f) => f(&d),
                    Handler::Async(f) => f(d.clone()).await,
                }
            }
        }
        match done_rx.await {
            Ok(result) => result,
            Err(_) => Err(Error::Io {
                file: "<reconciler>".into(),
                source: std::io::Error::other("the reconciliation thread panicked"),
            }),
        }
    }

    fn run<I: Source, G: Source>(&self, internal: I, gateway: G, emit: &Emit) -> Result<Report, Error> {
        let (internal, gateway) = std::thread::scope(|s| {
            let g = s.spawn(|| read_side(self, gateway, false));
            let i = read_side(self, internal, true);
            let g = g.join().unwrap_or_else(|p| std::panic::resume_unwind(p));
            (i, g)
        });
        let (mut internal, mut gateway) = (internal?, gateway?);
        let as_of = self.as_of.or(internal.latest.max(gateway.latest)).unwrap_or(0);
        let lag = i64::try_from(self.lag.as_secs()).unwrap_or(i64::MAX);
        let cutoff = as_of.saturating_sub(lag);

        let mut found = Found::default();
        for d in internal.duplicates.drain(..).chain(gateway.duplicates.drain(..)) {
            found.push(self, emit, d);
        }

        let workers = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get).clamp(1, SHARDS);
        let (internal_ids, gateway_ids) = (&internal.ids, &gateway.ids);
        let mut pairs: Vec<(&mut HashTable<Slot>, &HashTable<Slot>)> =
            internal.shards.iter_mut().zip(gateway.shards.iter()).collect();
        let per_worker = pairs.len().div_ceil(workers);
        let results: Vec<Found> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..workers)
                .map(|_| {
                    let mine: Vec<_> = pairs.drain(..per_worker.min(pairs.len())).collect();
                    s.spawn(move || {
                        let mut f = Found::default();
                        for (i, g) in mine {
                            join_shard(self, emit, cutoff, internal_ids, i, gateway_ids, g, &mut f);
                        }
                        f
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p))).collect()
        });
        for f in results {
            found.matched += f.matched;
            found.discrepancies.extend(f.discrepancies);
            found.pending.extend(f.pending);
        }
        found.discrepancies.sort_unstable_by(|a, b| (&a.id, a.kind).cmp(&(&b.id, b.kind)));
        found.pending.sort_unstable_by(|a, b| a.id.cmp(&b.id));

        let mut totals: Vec<Totals> = Vec::new();
        for t in internal.totals.iter().chain(&gateway.totals) {
            let into = match totals.iter_mut().find(|x| x.currency == t.currency) {
                Some(x) => x,
                None => {
                    totals.push(Totals::new(t.currency));
                    totals.last_mut().unwrap_or_else(|| unreachable!("pushed just above"))
                }
            };
            into.internal += t.internal;
            into.gross += t.gross;
            into.fee += t.fee;
            into.net += t.net;
        }
        totals.sort_by(|a, b| a.currency.code().cmp(b.currency.code()));

        Ok(Report {
            matched: found.matched,
            discrepancies: found.discrepancies,
            pending: found.pending,
            totals,
            internal: internal.summary,
            gateway: gateway.summary,
            as_of,
            lag: self.lag,
        })
    }
}

/// Drives a future to completion on this thread (for async handlers under the synchronous entry point).
fn block_on<F: Future<Output = ()>>(fut: F) {
    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: std::sync::Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(std::sync::Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut fut: Pin<&mut F> = std::pin::pin!(fut);
    while fut.as_mut().poll(&mut cx) == Poll::Pending {
        std::thread::park();
    }
}
