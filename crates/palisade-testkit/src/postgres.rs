//! A real PostgreSQL for one test, in a schema of its own, so tests run in parallel against one server.

use std::time::Duration;

use sqlx::postgres::{PgPool, PgPoolOptions};
use tokio::sync::OnceCell;

/// The default PostgreSQL URL (this machine's server, trust authentication).
pub const DEFAULT_POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// A PostgreSQL pool for one test, and the schema that is the test's own.
#[derive(Clone, Debug)]
pub struct PostgresTest {
    /// The URL that answered.
    pub url: String,
    /// A pool (at most 10 connections; waits up to 30 s for one, so parallel tests queue instead of failing).
    pub pool: PgPool,
    /// The test's own schema, `palisade_test_<name>_<random>`.
    pub schema: String,
}

impl PostgresTest {
    /// A table prefix inside the test's schema (`<schema>.palisade_`), for `PostgresStore::with_prefix`.
    #[must_use]
    pub fn prefix(&self) -> String {
        format!("{}.palisade_", self.schema)
    }
    /// Drops the test's schema and everything in it.
    pub async fn cleanup(&self) {
        let _ = sqlx::raw_sql(&format!("DROP SCHEMA IF EXISTS {} CASCADE", self.schema)).execute(&self.pool).await;
    }
}

static URL: OnceCell<Option<String>> = OnceCell::const_new();

async fn answers(url: &str) -> bool {
    let attempt = async {
        let pool = PgPoolOptions::new().max_connections(1).connect(url).await?;
        sqlx::query("SELECT 1").execute(&pool).await?;
        Ok::<_, sqlx::Error>(())
    };
    matches!(tokio::time::timeout(Duration::from_secs(3), attempt).await, Ok(Ok(())))
}

/// True when `PALISADE_REQUIRE_POSTGRES=1`: a missing PostgreSQL fails the test instead of skipping it.
#[must_use]
pub fn postgres_required() -> bool {
    std::env::var("PALISADE_REQUIRE_POSTGRES").is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true"))
}

/// A pool and a fresh schema for the test `name`, or `None` (after a loud SKIPPED message) when nothing answers
/// at `PALISADE_POSTGRES_URL` (default [`DEFAULT_POSTGRES_URL`]).
///
/// # Panics
/// When no PostgreSQL answers and `PALISADE_REQUIRE_POSTGRES=1`.
pub async fn postgres(name: &str) -> Option<PostgresTest> {
    let url = URL
        .get_or_init(|| async {
            let url = std::env::var("PALISADE_POSTGRES_URL").unwrap_or_else(|_| DEFAULT_POSTGRES_URL.to_owned());
            answers(&url).await.then_some(url)
        })
        .await
        .clone();
    let Some(url) = url else {
        if postgres_required() {
            panic!("PALISADE_REQUIRE_POSTGRES=1 but no PostgreSQL answers: test {name} cannot run");
        }
        eprintln!("\n!!!!! SKIPPED {name}: no PostgreSQL (set PALISADE_POSTGRES_URL) !!!!!\n");
        return None;
    };
    let pool =
        match PgPoolOptions::new().max_connections(10).acquire_timeout(Duration::from_secs(30)).connect(&url).await {
            Ok(p) => p,
            Err(e) => panic!("PostgreSQL at {url} answered but a pool failed: {e}"),
        };
    let clean: String =
        name.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '_' }).collect();
    let schema = format!("palisade_test_{clean}_{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    Some(PostgresTest { url, pool, schema })
}
