//! `PostgresLog`: sagas in a table, their events in another, one statement per operation, timed by the server.
//!
//! - `<prefix>sagas`: one row per saga (`id` in byte order, `COLLATE "C"`, so listings come out as from the
//!   memory log), with its state, owner, fencing token, the end of the owner's lease (`lease_until`, server
//!   time) and `seq`, the number of its events. Indexed on `(state, lease_until)` for `orphans` (listed by id,
//!   from an id on).
//! - `<prefix>saga_events`: `(saga_id, seq)` → the event (`json`) and when it was written.
//! - **append** is one statement: `WITH s AS (UPDATE sagas SET state, seq = seq + 1 … WHERE id = $1 AND
//!   token = $2 RETURNING seq) INSERT INTO saga_events SELECT …, s.seq, … FROM s`. One row inserted: appended;
//!   none: fenced. The row lock of the UPDATE orders appends against a concurrent take-over, which changes the
//!   token (READ COMMITTED re-checks the `WHERE` after waiting).
//! - **create** is `INSERT … ON CONFLICT (id) DO NOTHING RETURNING token`; **renew** and **take_over** are one
//!   `UPDATE … WHERE <condition> [RETURNING token]`; **get** is one `SELECT` with the events aggregated in a
//!   sub-select (one snapshot).
//! - Fencing tokens come from a sequence and never go down for a saga (`GREATEST(nextval, token + 1)`).
//! - Time is `statement_timestamp()`, so instances with skewed clocks agree.

use std::sync::Arc;
use std::time::Duration;

use sqlx::Row;
use sqlx::postgres::{PgPool, PgRow};

use super::{ContextJson, SagaLog, StoreError, StoreFuture};
use crate::model::{Event, Name, SagaRecord, SagaState, SagaSummary};

/// Default table prefix: `palisade_`, so the log's objects are `palisade_sagas`, `palisade_saga_events`,
/// `palisade_saga_tokens` and `palisade_saga_migrations`.
pub const DEFAULT_POSTGRES_PREFIX: &str = "palisade_";

/// The schema, in order. Each step runs once per prefix (recorded in `<prefix>saga_migrations`), under an
/// advisory lock. `{p}` is the prefix, `{n}` its part after the schema (index names take no schema).
const MIGRATIONS: &[(i32, &str)] = &[
    (
        1,
        "CREATE SEQUENCE IF NOT EXISTS {p}saga_tokens;
     CREATE TABLE IF NOT EXISTS {p}sagas (
         id          text COLLATE \"C\" PRIMARY KEY,
         name        text NOT NULL,
         context     jsonb NOT NULL,
         state       text NOT NULL,
         owner       text,
         token       bigint NOT NULL,
         seq         bigint NOT NULL DEFAULT 0,
         lease_until timestamptz NOT NULL,
         created_at  timestamptz NOT NULL,
         updated_at  timestamptz NOT NULL
     );
     CREATE INDEX IF NOT EXISTS {n}sagas_state_lease ON {p}sagas (state, lease_until);
     CREATE TABLE IF NOT EXISTS {p}saga_events (
         saga_id text COLLATE \"C\" NOT NULL REFERENCES {p}sagas (id) ON DELETE CASCADE,
         seq     bigint NOT NULL,
         event   jsonb NOT NULL,
         at      timestamptz NOT NULL,
         PRIMARY KEY (saga_id, seq)
     );",
    ),
    // `json`, not `jsonb`: `jsonb` refuses a string holding NUL (`\u0000`, which PostgreSQL's text cannot hold),
    // where the memory and Redis logs keep it; the saga then ran its step again on every resume and never ended.
    // The log only stores and returns the JSON, so `json` (the text as written) loses nothing.
    (
        2,
        "ALTER TABLE {p}sagas ALTER COLUMN context TYPE json USING context::json;
     ALTER TABLE {p}saga_events ALTER COLUMN event TYPE json USING event::json;",
    ),
];

#[derive(Debug)]
struct Sql {
    prefix: String,
    create: String,
    append: String,
    renew: String,
    take_over: String,
    orphans: String,
    get: String,
    list: String,
}

fn quoted(states: &[SagaState]) -> String {
    states.iter().map(|s| format!("'{}'", s.as_str())).collect::<Vec<_>>().join(", ")
}

impl Sql {
    fn new(prefix: &str) -> Sql {
        let (t, e) = (format!("{prefix}sagas"), format!("{prefix}saga_events"));
        let now = "statement_timestamp()";
        let ms = "* interval '1 millisecond'";
        let live = format!("state IN ({})", quoted(&[SagaState::Running, SagaState::Compensating]));
        let left = format!("GREATEST(CEIL(EXTRACT(EPOCH FROM (lease_until - {now})) * 1000), 0)::bigint");
        Sql {
            prefix: prefix.to_owned(),
            create: format!(
                "INSERT INTO {t} (id, name, context, state, owner, token, seq, lease_until, created_at, updated_at)
                 VALUES ($1, $2, $3::json, $4, $5, nextval('{prefix}saga_tokens'), 0, {now} + $6 {ms}, {now}, {now})
                 ON CONFLICT (id) DO NOTHING
                 RETURNING token"
            ),
            append: format!(
                "WITH s AS (
                     UPDATE {t} SET state = $4, seq = seq + 1, updated_at = {now},
                         owner = CASE WHEN $5 THEN NULL ELSE owner END,
                         lease_until = CASE WHEN $5 THEN {now} ELSE lease_until END
                     WHERE id = $1 AND token = $2
                     RETURNING seq)
                 INSERT INTO {e} (saga_id, seq, event, at) SELECT $1, s.seq, $3::json, {now} FROM s"
            ),
            renew: format!(
                "UPDATE {t} SET lease_until = {now} + $3 {ms}, updated_at = {now} WHERE id = $1 AND token = $2 AND {live}"
            ),
            take_over: format!(
                "UPDATE {t} SET token = GREATEST(nextval('{prefix}saga_tokens'), token + 1), owner = $2,
                     lease_until = {now} + $3 {ms}, updated_at = {now}
                 WHERE id = $1 AND CASE WHEN $4::text IS NULL THEN {live} AND lease_until <= {now}
                                        ELSE state = $4::text END
                 RETURNING token"
            ),
            orphans: format!(
                "SELECT id FROM {t} WHERE {live} AND lease_until <= {now}
                     AND ($2::text IS NULL OR id > $2::text COLLATE \"C\")
                 ORDER BY id LIMIT $1"
            ),
            get: format!(
                "SELECT name, context::text AS context, state, owner, token, {left} AS lease_ms,
                        (SELECT COALESCE(json_agg(event ORDER BY seq), '[]')::text FROM {e} WHERE saga_id = $1)
                            AS events
                 FROM {t} WHERE id = $1"
            ),
            list: format!(
                "SELECT id, name, state, owner FROM {t} WHERE $1::text IS NULL OR state = $1::text ORDER BY id LIMIT $2"
            ),
        }
    }
}

/// A PostgreSQL-backed [`SagaLog`]: sagas survive restarts of the process and of the database, and every
/// instance sharing the database shares them. Every operation is one statement (one round trip), timed by the
/// server.
///
/// Runs on the caller's `sqlx::PgPool`; apply the schema once with [`migrate`](Self::migrate). When the
/// database cannot be reached, every operation returns a [`StoreError`] and the saga stays where its log says,
/// for recovery. Cheap to clone.
#[derive(Clone)]
pub struct PostgresLog {
    pool: PgPool,
    sql: Arc<Sql>,
}

impl std::fmt::Debug for PostgresLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresLog").field("prefix", &self.sql.prefix).finish_non_exhaustive()
    }
}

use palisade_store::postgres::db;

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX).max(1)
}

fn token(t: u64) -> i64 {
    // Tokens come from a sequence (positive i64); a u64 above that matches no row.
    i64::try_from(t).unwrap_or(-1)
}

/// Saga `id`'s state, in `row`.
fn state_of(id: &str, row: &PgRow) -> Result<SagaState, StoreError> {
    let s: String = row.try_get("state").map_err(db)?;
    SagaState::parse(&s).ok_or_else(|| super::unreadable("postgres", id, format_args!("unknown state {s:?}")))
}

/// Column `col` of saga `id`'s `row`, as JSON.
fn json<T: serde::de::DeserializeOwned>(id: &str, row: &PgRow, col: &str) -> Result<T, StoreError> {
    let s: String = row.try_get(col).map_err(db)?;
    serde_json::from_str(&s).map_err(|e| super::unreadable("postgres", id, format_args!("{col}: {e}")))
}

fn token_of(row: &PgRow) -> Result<u64, StoreError> {
    let t: i64 = row.try_get("token").map_err(db)?;
    Ok(u64::try_from(t).unwrap_or(0))
}

impl PostgresLog {
    /// A log on an existing pool, with [`DEFAULT_POSTGRES_PREFIX`].
    #[must_use]
    pub fn new(pool: PgPool) -> Self {
        PostgresLog { pool, sql: Arc::new(Sql::new(DEFAULT_POSTGRES_PREFIX)) }
    }

    /// Connects a pool to `url` (`palisade_store::postgres::pool_options`: 20 connections, a 2 s acquire timeout,
    /// no ping before each use) and checks that the server answers.
    ///
    /// # Errors
    /// [`StoreError`] when the URL is invalid or the server does not answer.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        Ok(PostgresLog::new(palisade_store::postgres::connect(url).await?))
    }

    /// A log whose pool connects on first use, so a service can start while PostgreSQL is down.
    ///
    /// # Errors
    /// [`StoreError`] when the URL cannot be parsed.
    pub fn open(url: &str) -> Result<Self, StoreError> {
        Ok(PostgresLog::new(palisade_store::postgres::open(url)?))
    }

    /// Sets the prefix of the log's table, sequence and index names (default [`DEFAULT_POSTGRES_PREFIX`]), as
    /// `palisade_store::postgres::check_prefix` allows (`payments.palisade_` puts them in schema `payments`,
    /// which `migrate` creates).
    ///
    /// # Errors
    /// [`StoreError`] for a prefix that is not such a name (it is spliced into SQL, so nothing else is allowed).
    pub fn with_prefix(mut self, prefix: &str) -> Result<Self, StoreError> {
        palisade_store::postgres::check_prefix(prefix)?;
        self.sql = Arc::new(Sql::new(prefix));
        Ok(self)
    }

    /// The pool.
    #[must_use]
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Applies the schema (sequence, tables, index) if it is not there yet. Safe to run from every instance at
    /// start-up: the steps run under an advisory lock and each runs once per prefix.
    ///
    /// # Errors
    /// [`StoreError`] when the database refuses (no `CREATE` privilege, unreachable).
    pub async fn migrate(&self) -> Result<(), StoreError> {
        palisade_store::postgres::migrate(&self.pool, &self.sql.prefix, "saga", MIGRATIONS).await
    }
}

impl SagaLog for PostgresLog {
    fn create_shared<'a>(
        &'a self,
        id: &'a Name,
        name: &'a str,
        context: Arc<dyn ContextJson>,
        owner: &'a str,
        lease: Duration,
    ) -> StoreFuture<'a, Option<u64>> {
        let context = match context.to_json() {
            Ok(json) => json,
            Err(e) => return StoreFuture::ready(Err(StoreError::new(e.to_string()))),
        };
        StoreFuture::new(async move {
            let row = sqlx::query(&self.sql.create)
                .bind(id.as_str())
                .bind(name)
                .bind(context)
                .bind(SagaState::Running.as_str())
                .bind(owner)
                .bind(ms(lease))
                .fetch_optional(&self.pool)
                .await
                .map_err(db)?;
            row.as_ref().map(token_of).transpose()
        })
    }

    fn append_owned<'a>(&'a self, id: &'a str, token: u64, event: Event, state: SagaState) -> StoreFuture<'a, bool> {
        let event = match serde_json::to_string(&event) {
            Ok(event) => event,
            Err(e) => return StoreFuture::ready(Err(StoreError::new(e.to_string()))),
        };
        StoreFuture::new(async move {
            let done = sqlx::query(&self.sql.append)
                .bind(id)
                .bind(self::token(token))
                .bind(event)
                .bind(state.as_str())
                .bind(state.is_terminal())
                .execute(&self.pool)
                .await
                .map_err(db)?;
            Ok(done.rows_affected() == 1)
        })
    }

    fn renew<'a>(&'a self, id: &'a str, token: u64, lease: Duration) -> StoreFuture<'a, bool> {
        StoreFuture::new(async move {
            let done = sqlx::query(&self.sql.renew)
                .bind(id)
                .bind(self::token(token))
                .bind(ms(lease))
                .execute(&self.pool)
                .await
                .map_err(db)?;
            Ok(done.rows_affected() == 1)
        })
    }

    fn take_over<'a>(
        &'a self,
        id: &'a str,
        owner: &'a str,
        lease: Duration,
        state: Option<SagaState>,
    ) -> StoreFuture<'a, Option<u64>> {
        StoreFuture::new(async move {
            let row = sqlx::query(&self.sql.take_over)
                .bind(id)
                .bind(owner)
                .bind(ms(lease))
                .bind(state.map(SagaState::as_str))
                .fetch_optional(&self.pool)
                .await
                .map_err(db)?;
            row.as_ref().map(token_of).transpose()
        })
    }

    fn orphans<'a>(&'a self, limit: usize) -> StoreFuture<'a, Vec<String>> {
        self.orphans_after(None, limit)
    }

    fn orphans_after<'a>(&'a self, after: Option<&'a str>, limit: usize) -> StoreFuture<'a, Vec<String>> {
        StoreFuture::new(async move {
            let rows = sqlx::query(&self.sql.orphans)
                .bind(i64::try_from(limit).unwrap_or(i64::MAX))
                .bind(after)
                .fetch_all(&self.pool)
                .await
                .map_err(db)?;
            rows.iter().map(|r| r.try_get::<String, _>("id").map_err(db)).collect()
        })
    }

    fn get<'a>(&'a self, id: &'a str) -> StoreFuture<'a, Option<SagaRecord>> {
        StoreFuture::new(async move {
            let Some(row) = sqlx::query(&self.sql.get).bind(id).fetch_optional(&self.pool).await.map_err(db)? else {
                return Ok(None);
            };
            let left: i64 = row.try_get("lease_ms").map_err(db)?;
            Ok(Some(SagaRecord {
                id: id.to_owned(),
                name: row.try_get("name").map_err(db)?,
                context: json(id, &row, "context")?,
                state: state_of(id, &row)?,
                events: json(id, &row, "events")?,
                owner: row.try_get("owner").map_err(db)?,
                token: token_of(&row)?,
                lease_remaining: Duration::from_millis(u64::try_from(left).unwrap_or(0)),
            }))
        })
    }

    fn list<'a>(&'a self, state: Option<SagaState>, limit: usize) -> StoreFuture<'a, Vec<SagaSummary>> {
        StoreFuture::new(async move {
            let rows = sqlx::query(&self.sql.list)
                .bind(state.map(SagaState::as_str))
                .bind(i64::try_from(limit).unwrap_or(i64::MAX))
                .fetch_all(&self.pool)
                .await
                .map_err(db)?;
            rows.iter()
                .map(|r| {
                    let id: String = r.try_get("id").map_err(db)?;
                    Ok(SagaSummary {
                        name: r.try_get("name").map_err(db)?,
                        state: state_of(&id, r)?,
                        owner: r.try_get("owner").map_err(db)?,
                        id,
                    })
                })
                .collect()
        })
    }
}
