//! The engine: both sides read at once on two threads into sharded hash tables of compact records, then the
//! shards joined on every core.
//!
//! Memory is per key: a record is a 48-byte slot (amount, currency, status, time, line, and where its id sits)
//! plus its id's bytes in one arena per side. No row's text is kept.

use std::future::Future;
use std::hash::BuildHasher;
use std::pin::Pin;
use std::sync::Arc;
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

/// Partitions per side, by the top bits of the id's hash. Both sides are split the same way while they are
/// read, so partition `k` of the ledger can only meet partition `k` of the report: each pair is joined on its
/// own, with tables small enough to stay in cache, and the pairs are spread over every core.
const PARTITION_BITS: u32 = 8;
const PARTITIONS: usize = 1 << PARTITION_BITS;

/// Rows between updates of the progress counter.
const PROGRESS_EVERY: u64 = 1 << 16;

/// Seed of the hasher: fixed, so a run never depends on chance (the report is sorted anyway). The ids come from
/// the operator's own files, so there is no hash flooding to defend against.
const HASH_SEED: u64 = 0x5041_4c49_5341_4445;

/// One record, compact: 48 bytes, its id's bytes in its partition's arena.
#[derive(Clone, Copy)]
struct Rec {
    hash: u64,
    amount: i64,
    created_at: i64,
    line: u64,
    id_off: u32,
    id_len: u32,
    currency: Currency,
    status: Status,
    /// Matched with the other side, or a duplicate of an earlier row (either way, not missing).
    settled: bool,
    /// Only later activity on a payment charged before the source begins ([`Source::activity_only`]).
    activity_only: bool,
}

// The memory per record the docs promise (docs/reconciliation.md, Memory).
const _: () = assert!(std::mem::size_of::<Rec>() == 48);

impl Rec {
    fn record(&self) -> Record {
        Record::new(self.amount, self.currency, self.status, self.created_at, self.line)
    }
}

/// One partition of one side: its records in file order and their ids' bytes.
#[derive(Default)]
struct Partition {
    recs: Vec<Rec>,
    ids: Vec<u8>,
}

impl Partition {
    #[inline]
    fn id(&self, r: &Rec) -> &[u8] {
        // `id_off..id_off + id_len` was appended to this arena when the record was pushed.
        &self.ids[r.id_off as usize..r.id_off as usize + r.id_len as usize]
    }
}

/// One side, read and partitioned.
struct Side {
    parts: Vec<Partition>,
    totals: Vec<Totals>,
    summary: SideSummary,
    latest: Option<i64>,
}

impl Side {
    fn new(rows_hint: Option<u64>) -> Self {
        // 10 % over the even share, so most partitions never grow.
        let per = rows_hint.map_or(0, |r| usize::try_from(r / PARTITIONS as u64).unwrap_or(0) * 11 / 10);
        Side {
            parts: (0..PARTITIONS)
                .map(|_| Partition { recs: Vec::with_capacity(per), ids: Vec::with_capacity(per * 20) })
                .collect(),
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

    /// Adds a record; returns where it went (partition, index) for [`Side::mark_activity_only`].
    #[inline]
    fn add(&mut self, r: &RecordRef<'_>, internal: bool) -> Result<(usize, usize), Error> {
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
        let id = r.id.as_bytes();
        let hash = hasher().hash_one(id);
        let p = (hash >> (64 - PARTITION_BITS)) as usize;
        let part = &mut self.parts[p];
        let (Ok(id_off), Ok(id_len)) = (u32::try_from(part.ids.len()), u32::try_from(id.len())) else {
            return Err(Error::Io {
                file: "<reconciler>".into(),
                source: std::io::Error::other("more than 4 GiB of ids in one partition: split the files"),
            });
        };
        part.ids.extend_from_slice(id);
        part.recs.push(Rec {
            hash,
            amount: r.amount,
            created_at: r.created_at,
            line: r.line,
            id_off,
            id_len,
            currency: r.currency,
            status: r.status,
            settled: false,
            activity_only: false,
        });
        Ok((p, part.recs.len() - 1))
    }

    fn mark_activity_only(&mut self, (p, j): (usize, usize)) {
        self.parts[p].recs[j].activity_only = true;
    }
}

fn hasher() -> foldhash::fast::FixedState {
    foldhash::fast::FixedState::with_seed(HASH_SEED)
}

fn read_side<S: Source>(rec: &Reconciler, mut source: S, internal: bool) -> Result<Side, Error> {
    let mut side = Side::new(source.rows_hint());
    // A source that counts the rows it reads (a folded report) leaves the records uncounted here.
    let progress = rec.progress.as_ref().filter(|p| !source.count_rows(Arc::clone(p)));
    let mut since_progress = 0u64;
    loop {
        match source.next_record(&rec.statuses) {
            Ok(Some(r)) => {
                let at = side.add(&r, internal)?;
                if source.activity_only() {
                    side.mark_activity_only(at);
                }
            }
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
            if let Some(p) = progress {
                p.fetch_add(since_progress, Ordering::Relaxed);
            }
            since_progress = 0;
        }
    }
    if let Some(p) = progress {
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

/// Found in some partition pairs.
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
    // Ids were `&str` when they went into the arena, so this never replaces anything.
    String::from_utf8_lossy(bytes).into()
}

/// A table of record indexes keyed by id; extra rows with an id already in it are reported as duplicates of
/// `kind` and marked settled.
fn index_with_duplicates(
    rec: &Reconciler,
    emit: &Emit,
    part: &mut Partition,
    kind: Kind,
    found: &mut Found,
) -> HashTable<u32> {
    let mut table: HashTable<u32> = HashTable::with_capacity(part.recs.len());
    for j in 0..part.recs.len() {
        let r = part.recs[j];
        let (recs, id) = (&part.recs, part.id(&r));
        let entry = table.entry(
            r.hash,
            |&k| recs[k as usize].hash == r.hash && part.id(&recs[k as usize]) == id,
            |&k| recs[k as usize].hash,
        );
        match entry {
            Entry::Occupied(first) => {
                let first = recs[*first.get() as usize].record();
                let (internal, gateway) =
                    if kind == Kind::DuplicateInternal { (Some(r.record()), None) } else { (None, Some(r.record())) };
                let d = Discrepancy { kind, id: id_str(id), internal, gateway, first: Some(first) };
                found.push(rec, emit, d);
                part.recs[j].settled = true;
            }
            // At most 2^32 records per partition: `add` caps the ids' arena at 4 GiB and every id has a byte.
            Entry::Vacant(v) => {
                v.insert(u32::try_from(j).unwrap_or(u32::MAX));
            }
        }
    }
    table
}

fn join_partition(rec: &Reconciler, emit: &Emit, cutoff: i64, i: &mut Partition, g: &mut Partition, found: &mut Found) {
    let internal = index_with_duplicates(rec, emit, i, Kind::DuplicateInternal, found);
    let _gateway = index_with_duplicates(rec, emit, g, Kind::DuplicateGateway, found);
    for gr in g.recs.iter().filter(|r| !r.settled) {
        let id = g.id(gr);
        let hit = internal.find(gr.hash, |&k| {
            let ir = &i.recs[k as usize];
            ir.hash == gr.hash && i.id(ir) == id
        });
        match hit {
            Some(&k) => {
                let ir = &mut i.recs[k as usize];
                ir.settled = true;
                let ir = *ir;
                let mut clean = true;
                let mut report = |kind| {
                    clean = false;
                    let d = Discrepancy {
                        kind,
                        id: id_str(id),
                        internal: Some(ir.record()),
                        gateway: Some(gr.record()),
                        first: None,
                    };
                    found.push(rec, emit, d);
                };
                // A record of later activity only (a T-1 report's refund of an earlier charge) holds that
                // activity's amount, not the payment's: its amount is not compared, its status as far as the
                // activity implies it.
                let activity_only = ir.activity_only || gr.activity_only;
                if ir.currency != gr.currency {
                    report(Kind::CurrencyMismatch);
                } else if ir.amount != gr.amount && !activity_only {
                    report(Kind::AmountMismatch);
                }
                let status_agrees = match (ir.activity_only, gr.activity_only) {
                    (false, false) => ir.status == gr.status,
                    (false, true) => implies(gr.status, ir.status),
                    (true, false) => implies(ir.status, gr.status),
                    (true, true) => implies(gr.status, ir.status) || implies(ir.status, gr.status),
                };
                if !status_agrees {
                    report(Kind::StatusMismatch);
                }
                if clean {
                    found.matched += 1;
                }
            }
            None => {
                let kind = if gr.created_at > cutoff { Kind::Pending } else { Kind::MissingInternal };
                let d = Discrepancy { kind, id: id_str(id), internal: None, gateway: Some(gr.record()), first: None };
                found.push(rec, emit, d);
            }
        }
    }
    for ir in i.recs.iter().filter(|r| !r.settled) {
        let kind = if ir.created_at > cutoff { Kind::Pending } else { Kind::MissingGateway };
        let d = Discrepancy { kind, id: id_str(i.id(ir)), internal: Some(ir.record()), gateway: None, first: None };
        found.push(rec, emit, d);
    }
    // Done with this pair: give the memory back now, not at the end.
    *i = Partition::default();
    *g = Partition::default();
}

/// Whether a payment's `status` agrees with `activity`, the status of a record of later activity on it only: a
/// refund leaves it refunded or partially refunded, a dispute disputed, a failure failed; other activity (a fee,
/// a refund reversed) implies nothing.
fn implies(activity: Status, status: Status) -> bool {
    match activity {
        Status::Refunded | Status::PartiallyRefunded => {
            matches!(status, Status::Refunded | Status::PartiallyRefunded)
        }
        Status::Disputed | Status::Failed => status == activity,
        _ => true,
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

        let workers = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
        let pairs: Vec<std::sync::Mutex<(Partition, Partition)>> = std::mem::take(&mut internal.parts)
            .into_iter()
            .zip(std::mem::take(&mut gateway.parts))
            .map(std::sync::Mutex::new)
            .collect();
        let next = std::sync::atomic::AtomicUsize::new(0);
        let results: Vec<Found> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..workers)
                .map(|_| {
                    s.spawn(|| {
                        let mut f = Found::default();
                        loop {
                            let k = next.fetch_add(1, Ordering::Relaxed);
                            let Some(pair) = pairs.get(k) else { break };
                            // Each index is taken by one worker only, so the lock is never contended.
                            let mut pair = pair.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                            let (i, g) = &mut *pair;
                            join_partition(self, emit, cutoff, i, g, &mut f);
                        }
                        f
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p))).collect()
        });
        let mut found = Found::default();
        for f in results {
            found.matched += f.matched;
            found.discrepancies.extend(f.discrepancies);
            found.pending.extend(f.pending);
        }
        // By id, then kind, then the lines (several duplicates of one id), so every run prints the same order.
        let line = |r: &Option<Record>| r.as_ref().map(|r| r.line);
        let key = |d: &Discrepancy| (d.kind, line(&d.internal), line(&d.gateway));
        found.discrepancies.sort_unstable_by(|a, b| a.id.cmp(&b.id).then_with(|| key(a).cmp(&key(b))));
        found.pending.sort_unstable_by(|a, b| a.id.cmp(&b.id).then_with(|| key(a).cmp(&key(b))));

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
