//! PostgreSQL plumbing every PostgreSQL-backed store shares (feature `postgres`): pools, table prefixes, versioned
//! migrations and error mapping. The lease store (`lease::PostgresStore`) and the saga log use it.

use std::time::Duration;

use sqlx::Connection;
use sqlx::postgres::{PgPool, PgPoolOptions};

use crate::StoreError;

/// How long a pool made here waits for a free connection before an operation fails with a [`StoreError`]
/// (HTTP 503): 2 s. A payment request should not hang on an exhausted pool; the caller retries.
pub const DEFAULT_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(2);

/// A store error for a database error.
#[must_use]
pub fn db(e: sqlx::Error) -> StoreError {
    StoreError::new(format!("postgres: {e}"))
}

/// The pool options of the stores' `connect`/`open`: at most 20 connections, [`DEFAULT_ACQUIRE_TIMEOUT`], and no
/// ping before each use (a dead connection fails its operation, a 503, instead of every operation paying a round
/// trip: measured at up to a fifth of the throughput at 50 callers).
#[must_use]
pub fn pool_options() -> PgPoolOptions {
    PgPoolOptions::new().max_connections(20).acquire_timeout(DEFAULT_ACQUIRE_TIMEOUT).test_before_acquire(false)
}

/// Connects a pool to `url` ([`pool_options`]) and checks that the server answers.
///
/// # Errors
/// [`StoreError`] when the URL is invalid or the server does not answer.
pub async fn connect(url: &str) -> Result<PgPool, StoreError> {
    pool_options().connect(url).await.map_err(db)
}

/// A pool that connects on first use, so a service can start while PostgreSQL is down.
///
/// # Errors
/// [`StoreError`] when the URL cannot be parsed.
pub fn open(url: &str) -> Result<PgPool, StoreError> {
    pool_options().connect_lazy(url).map_err(db)
}

/// Checks a table prefix: a letter or `_`, then lowercase letters, digits and `_`, at most 40 characters,
/// optionally after a schema name (at most 63) and a dot (`payments.palisade_`). Prefixes are spliced into SQL,
/// so nothing else is allowed.
///
/// # Errors
/// [`StoreError`] naming the prefix.
pub fn check_prefix(prefix: &str) -> Result<(), StoreError> {
    let ident = |s: &str, max: usize| {
        !s.is_empty()
            && s.len() <= max
            && s.bytes().next().is_some_and(|b| b.is_ascii_lowercase() || b == b'_')
            && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    };
    let ok = match prefix.split_once('.') {
        Some((schema, name)) => ident(schema, 63) && ident(name, 40),
        None => ident(prefix, 40),
    };
    if ok {
        Ok(())
    } else {
        Err(StoreError::new(format!(
            "postgres: table prefix {prefix:?} is not a lowercase SQL name (letters, digits, _; optionally schema.)"
        )))
    }
}

/// Applies `steps` (version, SQL) in order, each once per prefix, recorded in `<prefix><component>_migrations`,
/// under an advisory lock (instances starting together do not race), creating the prefix's schema if it names
/// one. In a step, `{p}` is the prefix and `{n}` its part after the schema (index names take no schema).
///
/// # Errors
/// [`StoreError`] when the database refuses (no `CREATE` privilege, unreachable).
pub async fn migrate(pool: &PgPool, prefix: &str, component: &str, steps: &[(i32, &str)]) -> Result<(), StoreError> {
    let p = prefix;
    let mut conn = pool.acquire().await.map_err(db)?;
    let mut tx = conn.begin().await.map_err(db)?;
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext($1))")
        .bind(format!("{p}{component}"))
        .execute(&mut *tx)
        .await
        .map_err(db)?;
    if let Some((schema, _)) = p.split_once('.') {
        sqlx::raw_sql(&format!("CREATE SCHEMA IF NOT EXISTS {schema}")).execute(&mut *tx).await.map_err(db)?;
    }
    let table = format!("{p}{component}_migrations");
    sqlx::raw_sql(&format!(
        "CREATE TABLE IF NOT EXISTS {table} (version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
    ))
    .execute(&mut *tx)
    .await
    .map_err(db)?;
    let name = p.split_once('.').map_or(p, |(_, name)| name);
    for (version, step) in steps {
        let done: Option<i32> = sqlx::query_scalar(&format!("SELECT version FROM {table} WHERE version = $1"))
            .bind(version)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db)?;
        if done.is_some() {
            continue;
        }
        sqlx::raw_sql(&step.replace("{p}", p).replace("{n}", name)).execute(&mut *tx).await.map_err(db)?;
        sqlx::query(&format!("INSERT INTO {table} (version) VALUES ($1)"))
            .bind(version)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
    }
    tx.commit().await.map_err(db)
}
