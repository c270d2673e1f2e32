//! Completing an idempotency record inside the handler's own PostgreSQL transaction (feature `postgres`).
//!
//! The HTTP layer puts a [`TxCompletion`] in the request extensions of every request it executes. A handler
//! that writes business rows (an order, a ledger entry) completes the record in the same transaction, so "the
//! order is paid" and "this key's answer is stored" commit together or not at all:
//!
//! ```no_run
//! # use axum::extract::{Extension, State};
//! # use axum::http::{HeaderMap, StatusCode};
//! # use axum::response::{IntoResponse, Response};
//! # use bytes::Bytes;
//! # use palisade_idempotency::{PostgresStore, TxCompletion};
//! async fn charge(Extension(done): Extension<TxCompletion>, State(store): State<PostgresStore>) -> Result<Response, StatusCode> {
//!     let unavailable = |_| StatusCode::SERVICE_UNAVAILABLE;
//!     let mut tx = store.pool().begin().await.map_err(unavailable)?;
//!     sqlx::query("INSERT INTO orders (id) VALUES ($1)").bind("o1").execute(&mut *tx).await.map_err(unavailable)?;
//!     let (status, headers, body) = (StatusCode::CREATED, HeaderMap::new(), Bytes::from_static(b"{\"id\":\"o1\"}"));
//!     done.complete_in(&store, &mut tx, status, &headers, &body).await.map_err(|_| StatusCode::SERVICE_UNAVAILABLE)?;
//!     tx.commit().await.map_err(unavailable)?;
//!     Ok((status, headers, body).into_response())
//! }
//! ```
//!
//! After the handler, the layer sees that the record was completed in a transaction and does not complete it
//! again: if the transaction committed, the record is DONE with the handler's answer; if it rolled back (an
//! error, a crash, a dropped connection), the record is still held, and the layer releases the claim, so a retry
//! with the same key executes again — nothing was written.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, StatusCode};
use palisade_store::StoreError;
use palisade_store::lease::{Hold, Payload, PostgresStore};
use sqlx::PgConnection;

/// The right to complete this request's idempotency record inside the handler's own transaction; in the
/// request extensions of every request the HTTP layer executes. See the [module docs](self).
#[derive(Clone)]
pub struct TxCompletion {
    inner: Arc<Inner>,
}

struct Inner {
    hold: Hold,
    ttl: Duration,
    stored_headers: Arc<[HeaderName]>,
    used: AtomicBool,
}

impl std::fmt::Debug for TxCompletion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TxCompletion").field("token", &self.inner.hold.token()).finish_non_exhaustive()
    }
}

impl TxCompletion {
    pub(crate) fn new(hold: Hold, ttl: Duration, stored_headers: Arc<[HeaderName]>) -> Self {
        TxCompletion { inner: Arc::new(Inner { hold, ttl, stored_headers, used: AtomicBool::new(false) }) }
    }

    /// Stores `status`, the layer's stored headers of `headers`, and `body` as this request's answer, as one
    /// statement of the caller's transaction (`&mut tx`, or any `&mut PgConnection` inside it): the record is
    /// DONE once, and only if, the transaction commits. Answer the client with the same status, headers and body.
    /// Returns `false` when the claim was taken over meanwhile (its lease ended): then roll back, since another
    /// execution owns the key.
    ///
    /// `store` must be the store the layer runs on.
    ///
    /// # Errors
    /// [`StoreError`] when the statement fails; the transaction is then aborted: roll it back.
    pub async fn complete_in(
        &self,
        store: &PostgresStore,
        conn: &mut PgConnection,
        status: StatusCode,
        headers: &HeaderMap,
        body: &Bytes,
    ) -> Result<bool, StoreError> {
        self.inner.used.store(true, Ordering::SeqCst);
        let payload = crate::http::encode(status, headers, &self.inner.stored_headers, body);
        store.complete_in(conn, &self.inner.hold, Payload::Bytes(payload), self.inner.ttl).await
    }

    /// Whether the handler asked to complete the record in its transaction.
    pub(crate) fn used(&self) -> bool {
        self.inner.used.load(Ordering::SeqCst)
    }
}
