//! Request bodies that can be sent more than once, for retries (and,
//! later, mirrors). A body with a declared length up to `REPLAY_LIMIT` is
//! read whole before the first try and replayed from memory; a longer or
//! unsized one streams through once, and is then not retried, as Envoy
//! stops retrying a request whose body outgrew its buffer.

use bytes::Bytes;
use http::HeaderMap;
use http_body_util::{BodyExt, Either, Full};
use hyper::body::{Body as _, Incoming};

/// What the upstream connection is given: the downstream body itself, or
/// a copy from memory.
pub(crate) type UpBody = Either<Incoming, Full<Bytes>>;

/// Envoy's default per-connection buffer limit is 1 MiB; Weft buffers at
/// most this much per request for replay.
pub(crate) const REPLAY_LIMIT: u64 = 1 << 20;

pub(crate) enum Replay {
    Buffered(Bytes),
    /// Taken by the first try.
    Stream(Option<Incoming>),
}

impl Replay {
    pub async fn new(body: Incoming, headers: &HeaderMap) -> Result<Replay, hyper::Error> {
        if body.is_end_stream() {
            return Ok(Replay::Buffered(Bytes::new()));
        }
        let declared = headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        match declared {
            Some(n) if n <= REPLAY_LIMIT => Ok(Replay::Buffered(body.collect().await?.to_bytes())),
            _ => Ok(Replay::Stream(Some(body))),
        }
    }

    /// The body for the next try; None once a streamed body has been sent.
    pub fn next(&mut self) -> Option<UpBody> {
        match self {
            Replay::Buffered(b) => Some(Either::Right(Full::new(b.clone()))),
            Replay::Stream(s) => s.take().map(Either::Left),
        }
    }

    /// Whether another try could be sent.
    pub fn replayable(&self) -> bool {
        match self {
            Replay::Buffered(_) => true,
            Replay::Stream(s) => s.is_some(),
        }
    }
}
