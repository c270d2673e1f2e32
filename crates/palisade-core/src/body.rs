//! Bounded body collection: what every layer that must read a whole request body (to fingerprint it, to verify a
//! signature over it) does, once.

use bytes::Bytes;
use http::HeaderMap;
use http_body_util::{BodyExt, LengthLimitError, Limited};

use crate::BoxError;

/// Why a body could not be collected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BodyError {
    /// More than the limit was declared (`Content-Length`) or arrived.
    #[error("the body exceeds the {limit}-byte limit")]
    TooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// The body failed while it was read (the client went away mid-body, a read timeout).
    #[error("the body could not be read to the end: {0}")]
    Unreadable(String),
}

/// Collects a body of at most `limit` bytes. A `Content-Length` above the limit is refused before anything is
/// read; a body that grows past it is refused as soon as it does, without reading the rest.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use http_body_util::Full;
/// use palisade_core::body::{collect_limited, BodyError};
/// let headers = http::HeaderMap::new();
/// let ok = collect_limited(&headers, Full::new(bytes::Bytes::from_static(b"{}")), 16).await;
/// assert_eq!(ok.unwrap(), "{}");
/// let big = collect_limited(&headers, Full::new(bytes::Bytes::from(vec![b'x'; 17])), 16).await;
/// assert_eq!(big, Err(BodyError::TooLarge { limit: 16 }));
/// # }
/// ```
///
/// # Errors
/// [`BodyError::TooLarge`] or [`BodyError::Unreadable`].
pub async fn collect_limited<B>(headers: &HeaderMap, body: B, limit: usize) -> Result<Bytes, BodyError>
where
    B: http_body::Body,
    B::Error: Into<BoxError>,
{
    let declared = headers.get(http::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(BodyError::TooLarge { limit });
    }
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => Err(BodyError::TooLarge { limit }),
        Err(e) => Err(BodyError::Unreadable(e.to_string())),
    }
}
