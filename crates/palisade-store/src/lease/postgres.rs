//! `PostgresStore`: lease records in a PostgreSQL table, durable, and completable inside the caller's own
//! transaction.
//!
//! Every operation is one statement, timed by the server (`statement_timestamp()`), so instances with skewed
//! clocks agree and a claim is never read-then-write:
//!
//! - **claim**: `INSERT … ON CONFLICT (key) DO UPDATE … WHERE <the row expired, or the same request's lease
//!   ended> RETURNING token`. A row comes back: acquired (a takeover when the old row was still alive). No row:
//!   the key is held, done, or another request's; one `SELECT` says which (if the row changed in between, the
//!   claim is tried again).
//! - **complete / release / renew / abandon**: one `UPDATE … WHERE key = $1 AND NOT done AND token = $2 …`;
//!   **forget**: one `DELETE` with the same condition. Each reports whether it acted.
//! - Fencing tokens come from a sequence and never go down for a key (`GREATEST(nextval, old token + 1)`).
//! - Expired rows are ignored at once (every condition checks `expires_at`) and deleted in batches by
//!   [`PostgresStore::purge_expired`] or the background task of [`PostgresStore::purge_in_background`].

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use sqlx::postgres::{PgPool, PgRow};
use sqlx::{PgConnection, Row};

use super::{Claim, FencingToken, Fingerprint, Hold, LeaseStore, Payload, Record, StoreError, StoreFuture};

/// Default table prefix: `palisade_`, so the store's objects are `palisade_leases`, `palisade_lease_tokens` and
/// `palisade_lease_migrations`, easy to find next to the application's own tables.
pub const DEFAULT_POSTGRES_PREFIX: &str = "palisade_";

pub use crate::postgres::DEFAULT_ACQUIRE_TIMEOUT;

/// Rows deleted per statement by [`PostgresStore::purge_expired`]: 1000, short enough that a purge never holds
/// many row locks or a long transaction.
pub const DEFAULT_PURGE_BATCH: i64 = 1000;

/// The schema, in order. Each step runs once per prefix (recorded in `<prefix>lease_migrations`), under an
/// advisory lock, so instances starting together do not race. `{p}` is the prefix, `{n}` its part after the
/// schema (index names take no schema: an index lives in its table's).
const MIGRATIONS: &[(i32, &str)] = &[(
    1,
    "CREATE SEQUENCE IF NOT EXISTS {p}lease_tokens;
     CREATE TABLE IF NOT EXISTS {p}leases (
         key         text PRIMARY KEY,
         fingerprint bytea NOT NULL,
         done        boolean NOT NULL DEFAULT false,
         token       bigint NOT NULL,
         attempt     bigint,
         took_over   boolean NOT NULL DEFAULT false,
         lease_until timestamptz NOT NULL,
         expires_at  timestamptz NOT NULL,
         response    bytea
     );
     CREATE INDEX IF NOT EXISTS {n}leases_expires_at ON {p}leases (expires_at);",
)];

/// The statements, with the prefix filled in once.
#[derive(Debug)]
struct Sql {
    prefix: String,
    claim: String,
    read: String,
    complete: String,
    release: String,
    renew: String,
    forget: String,
    abandon: String,
    get: String,
    purge: String,
}

impl Sql {
    fn new(prefix: &str) -> Sql {
        let t = format!("{prefix}leases");
        let now = "statement_timestamp()";
        let ms = "* interval '1 millisecond'";
        let held = format!("key = $1 AND NOT done AND token = $2 AND expires_at > {now}");
        Sql {
            prefix: prefix.to_owned(),
            claim: format!(
                "INSERT INTO {t} AS r (key, fingerprint, done, token, attempt, took_over, lease_until, expires_at)
                 VALUES ($1, $2, false, nextval('{prefix}lease_tokens'), $5, false, {now} + $3 {ms}, {now} + $4 {ms})
                 ON CONFLICT (key) DO UPDATE SET
                     fingerprint = EXCLUDED.fingerprint, done = false,
                     token = GREATEST(EXCLUDED.token, r.token + 1), attempt = EXCLUDED.attempt,
                     took_over = (r.expires_at > {now} AND r.attempt IS DISTINCT FROM EXCLUDED.attempt),
                     lease_until = EXCLUDED.lease_until, expires_at = EXCLUDED.expires_at, response = NULL
                 WHERE r.expires_at <= {now}
                    OR (NOT r.done AND r.fingerprint = EXCLUDED.fingerprint
                        AND (r.lease_until <= {now} OR r.attempt = EXCLUDED.attempt))
                 RETURNING token, took_over"
            ),
            read: format!(
                "SELECT fingerprint, done, response, expires_at > {now} AS live,
                        GREATEST(CEIL(EXTRACT(EPOCH FROM (lease_until - {now})) * 1000), 0)::bigint AS lease_ms,
                        token
                 FROM {t} WHERE key = $1"
            ),
            complete: format!(
                "UPDATE {t} SET done = true, response = $3, expires_at = {now} + $4 {ms}, attempt = NULL WHERE {held}"
            ),
            release: format!("UPDATE {t} SET lease_until = {now}, attempt = NULL WHERE {held}"),
            renew: format!(
                "UPDATE {t} SET lease_until = {now} + $3 {ms}, expires_at = GREATEST(expires_at, {now} + $3 {ms})
                 WHERE {held} AND lease_until > {now}"
            ),
            forget: format!("DELETE FROM {t} WHERE {held}"),
            abandon: format!(
                "UPDATE {t} SET lease_until = {now}, attempt = NULL
                 WHERE key = $1 AND NOT done AND attempt = $2 AND expires_at > {now}"
            ),
            get: format!(
                "SELECT fingerprint, done, response, token,
                        GREATEST(CEIL(EXTRACT(EPOCH FROM (lease_until - {now})) * 1000), 0)::bigint AS lease_ms
                 FROM {t} WHERE key = $1 AND expires_at > {now}"
            ),
            purge: format!(
                "DELETE FROM {t} WHERE key IN (SELECT key FROM {t} WHERE expires_at <= {now} LIMIT $1 FOR UPDATE SKIP LOCKED)"
            ),
        }
    }
}

/// A PostgreSQL-backed [`LeaseStore`]: records survive restarts, every instance sharing the database shares
/// them, and a handler can complete a record inside its own transaction ([`complete_in`](Self::complete_in)), so
/// the record and the business rows commit or roll back together.
///
/// Runs on the caller's `sqlx::PgPool`. Apply the schema once with [`migrate`](Self::migrate). When the database
/// cannot be reached or the pool has no free connection within its acquire timeout, every operation returns a
/// [`StoreError`]: the layers answer 503 without calling the inner service (they never fail open).
///
/// Cheap to clone.
#[derive(Clone)]
pub struct PostgresStore {
    pool: PgPool,
    sql: Arc<Sql>,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore").field("prefix", &self.sql.prefix).finish_non_exhaustive()
    }
}

use crate::postgres::db;

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX).max(1)
}

fn fingerprint_of(row: &PgRow) -> Result<Fingerprint, StoreError> {
    let raw: Vec<u8> = row.try_get("fingerprint").map_err(db)?;
    let fp: [u8; 32] =
        raw.try_into().map_err(|_| StoreError::new("postgres: a lease row holds a fingerprint of the wrong size"))?;
    Ok(Fingerprint(fp))
}

fn token(row: &PgRow) -> Result<FencingToken, StoreError> {
    let t: i64 = row.try_get("token").map_err(db)?;
    // Tokens come from a sequence starting at 1, so they are positive.
    Ok(FencingToken(u64::try_from(t).unwrap_or(0)))
}

fn response(row: &PgRow) -> Result<Payload, StoreError> {
    let r: Option<Vec<u8>> = row.try_get("response").map_err(db)?;
    Ok(Payload::Bytes(Bytes::from(r.unwrap_or_default())))
}

fn lease_left(row: &PgRow) -> Result<Duration, StoreError> {
    let left: i64 = row.try_get("lease_ms").map_err(db)?;
    Ok(Duration::from_millis(u64::try_from(left).unwrap_or(0)))
}

/// How often a claim that keeps meeting a row that changed under it is tried again before it gives up.
const CLAIM_TRIES: usize = 4;

impl PostgresStore {
    /// A store on an existing pool, with [`DEFAULT_POSTGRES_PREFIX`].
    #[must_use]
    pub fn new(pool: PgPool) -> Self {
        PostgresStore { pool, sql: Arc::new(Sql::new(DEFAULT_POSTGRES_PREFIX)) }
    }

    /// Connects a pool to `url` (at most 20 connections, [`DEFAULT_ACQUIRE_TIMEOUT`], no ping before each use) and
    /// checks that the server answers. A pool of your own works as well; turn sqlx's `test_before_acquire` off
    /// for it, or every operation costs a second round trip.
    ///
    /// # Errors
    /// [`StoreError`] when the URL is invalid or the server does not answer.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        Ok(PostgresStore::new(crate::postgres::connect(url).await?))
    }

    /// A store whose pool connects on first use, so a service can start while PostgreSQL is down (and answer 503
    /// meanwhile).
    ///
    /// # Errors
    /// [`StoreError`] when the URL cannot be parsed.
    pub fn open(url: &str) -> Result<Self, StoreError> {
        Ok(PostgresStore::new(crate::postgres::open(url)?))
    }

    /// Sets the prefix of the store's table, sequence and index names (default [`DEFAULT_POSTGRES_PREFIX`]), as
    /// [`check_prefix`](crate::postgres::check_prefix) allows (`payments.palisade_` puts them in schema
    /// `payments`, which `migrate` creates).
    ///
    /// # Errors
    /// [`StoreError`] for a prefix that is not such a name (it is spliced into SQL, so nothing else is allowed).
    pub fn with_prefix(mut self, prefix: &str) -> Result<Self, StoreError> {
        crate::postgres::check_prefix(prefix)?;
        self.sql = Arc::new(Sql::new(prefix));
        Ok(self)
    }

    /// The pool, to share with the application (its transactions, its own queries).
    #[must_use]
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Applies the schema (table, sequence, expiry index) if it is not there yet. Safe to run from every
    /// instance at start-up: the steps run under an advisory lock and each runs once per prefix.
    ///
    /// # Errors
    /// [`StoreError`] when the database refuses (no `CREATE` privilege, unreachable).
    pub async fn migrate(&self) -> Result<(), StoreError> {
        crate::postgres::migrate(&self.pool, &self.sql.prefix, "lease", MIGRATIONS).await
    }

    /// Deletes expired rows, `batch` per statement, until none is left; returns how many. Expired rows are
    /// already ignored by every operation; this only gives their space back.
    ///
    /// # Errors
    /// [`StoreError`] when the database does not answer.
    pub async fn purge_expired(&self, batch: i64) -> Result<u64, StoreError> {
        let mut total = 0;
        loop {
            let n =
                sqlx::query(&self.sql.purge).bind(batch.max(1)).execute(&self.pool).await.map_err(db)?.rows_affected();
            total += n;
            if n < u64::try_from(batch.max(1)).unwrap_or(u64::MAX) {
                return Ok(total);
            }
        }
    }

    /// Runs [`purge_expired`](Self::purge_expired) every `every` ([`DEFAULT_PURGE_BATCH`] rows per statement)
    /// until the returned handle is aborted or dropped with the runtime. A failed purge is logged and tried
    /// again at the next tick.
    pub fn purge_in_background(&self, every: Duration) -> tokio::task::JoinHandle<()> {
        let store = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                match store.purge_expired(DEFAULT_PURGE_BATCH).await {
                    Ok(0) => {}
                    Ok(n) => tracing::debug!(purged = n, "expired lease records deleted"),
                    Err(e) => tracing::warn!(error = %e, "could not purge expired lease records; trying again later"),
                }
            }
        })
    }

    /// [`complete`](LeaseStore::complete), as one statement of the caller's transaction (`&mut *tx`): the record
    /// becomes DONE when, and only when, the transaction commits, together with the caller's own writes. If the
    /// transaction rolls back, the record stays HELD by the hold, and the holder releases it.
    ///
    /// # Errors
    /// [`StoreError`] when the statement fails (the transaction is then aborted: roll it back).
    pub async fn complete_in(
        &self,
        conn: &mut PgConnection,
        hold: &Hold,
        response: Payload,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        self.complete_on(conn, hold, response, ttl).await
    }

    async fn complete_on<'e>(
        &self,
        on: impl sqlx::PgExecutor<'e>,
        hold: &Hold,
        response: Payload,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let key = hold.key_or_err()?;
        let done = sqlx::query(&self.sql.complete)
            .bind(key)
            .bind(i64::try_from(hold.token().0).unwrap_or(i64::MAX))
            .bind(&response.to_bytes()[..])
            .bind(ms(ttl))
            .execute(on)
            .await
            .map_err(db)?;
        Ok(done.rows_affected() == 1)
    }

    async fn claim_once(
        &self,
        key: &str,
        fingerprint: &Fingerprint,
        lease: Duration,
        ttl: Duration,
        attempt: u64,
    ) -> Result<Option<Claim>, StoreError> {
        // One connection for the claim and the read that may follow it.
        let mut conn = self.pool.acquire().await.map_err(db)?;
        let acquired = sqlx::query(&self.sql.claim)
            .bind(key)
            .bind(&fingerprint.0[..])
            .bind(ms(lease))
            .bind(ms(ttl.max(lease)))
            .bind(attempt as i64)
            .fetch_optional(&mut *conn)
            .await
            .map_err(db)?;
        if let Some(row) = acquired {
            let took_over: bool = row.try_get("took_over").map_err(db)?;
            return Ok(Some(Claim::Acquired { hold: Hold::new(key, token(&row)?), took_over }));
        }
        let Some(row) = sqlx::query(&self.sql.read).bind(key).fetch_optional(&mut *conn).await.map_err(db)? else {
            // Forgotten between the two statements: claim again.
            return Ok(None);
        };
        let live: bool = row.try_get("live").map_err(db)?;
        let done: bool = row.try_get("done").map_err(db)?;
        Ok(if !live {
            None
        } else if fingerprint_of(&row)? != *fingerprint {
            Some(Claim::Mismatch)
        } else if done {
            Some(Claim::Done { response: response(&row)? })
        } else {
            let left = lease_left(&row)?;
            // A lease that ended since the claim: claim again (a takeover).
            (!left.is_zero()).then_some(Claim::Held { lease_remaining: left })
        })
    }

    async fn held(&self, sql: &str, hold: &Hold, extra: Option<i64>) -> Result<bool, StoreError> {
        let key = hold.key_or_err()?;
        let mut q = sqlx::query(sql).bind(key).bind(i64::try_from(hold.token().0).unwrap_or(i64::MAX));
        if let Some(x) = extra {
            q = q.bind(x);
        }
        Ok(q.execute(&self.pool).await.map_err(db)?.rows_affected() == 1)
    }
}

impl LeaseStore for PostgresStore {
    fn claim_as<'a>(
        &'a self,
        key: &'a str,
        fingerprint: &'a Fingerprint,
        lease: Duration,
        ttl: Duration,
        attempt: u64,
    ) -> StoreFuture<'a, Claim> {
        StoreFuture::new(async move {
            for _ in 0..CLAIM_TRIES {
                if let Some(claim) = self.claim_once(key, fingerprint, lease, ttl, attempt).await? {
                    return Ok(claim);
                }
            }
            Err(StoreError::new("postgres: the record kept changing under the claim; try again"))
        })
    }

    fn complete<'a>(&'a self, hold: &'a Hold, response: Payload, ttl: Duration) -> StoreFuture<'a, bool> {
        StoreFuture::new(self.complete_on(&self.pool, hold, response, ttl))
    }

    fn release<'a>(&'a self, hold: &'a Hold) -> StoreFuture<'a, bool> {
        StoreFuture::new(self.held(&self.sql.release, hold, None))
    }

    fn renew<'a>(&'a self, hold: &'a Hold, lease: Duration) -> StoreFuture<'a, bool> {
        StoreFuture::new(self.held(&self.sql.renew, hold, Some(ms(lease))))
    }

    fn forget<'a>(&'a self, hold: &'a Hold) -> StoreFuture<'a, bool> {
        StoreFuture::new(self.held(&self.sql.forget, hold, None))
    }

    fn get<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Option<Record>> {
        StoreFuture::new(async move {
            let Some(row) = sqlx::query(&self.sql.get).bind(key).fetch_optional(&self.pool).await.map_err(db)? else {
                return Ok(None);
            };
            let done: bool = row.try_get("done").map_err(db)?;
            Ok(Some(if done {
                Record::Done { fingerprint: fingerprint_of(&row)?, response: response(&row)? }
            } else {
                Record::Held {
                    fingerprint: fingerprint_of(&row)?,
                    token: token(&row)?,
                    lease_remaining: lease_left(&row)?,
                }
            }))
        })
    }

    fn abandon<'a>(&'a self, key: &'a str, attempt: u64) -> StoreFuture<'a, bool> {
        StoreFuture::new(async move {
            let done =
                sqlx::query(&self.sql.abandon).bind(key).bind(attempt as i64).execute(&self.pool).await.map_err(db)?;
            Ok(done.rows_affected() == 1)
        })
    }
}
