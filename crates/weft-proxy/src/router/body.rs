//! Request bodies that can be sent more than once, for retries and
//! mirrors, as Envoy buffers them: a body of declared length up to
//! `REPLAY_LIMIT` is read whole before the first try and replayed from
//! memory; an unsized one (a gRPC call over HTTP/2, a chunked upload)
//! streams to the first try while a copy is kept, so a retry replays the
//! copy and then reads on where the first try stopped — until the copy
//! outgrows the limit, after which the request is not retried. A body
//! declared over the limit streams once.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::HeaderMap;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Frame, SizeHint};

use crate::upstream::BoxError;

/// Envoy's default per-connection buffer limit is 1 MiB; Weft keeps at
/// most this much of a request for replay.
pub(crate) const REPLAY_LIMIT: u64 = 1 << 20;

/// What an upstream request carries.
pub(crate) enum UpBody {
    /// A copy from memory.
    Full(Full<Bytes>),
    /// The downstream body itself, once.
    Stream(Downstream),
    /// The downstream body through its kept copy.
    Tee(TeeReader),
}

pub(crate) enum Replay {
    Buffered(Bytes),
    Teed(Arc<Mutex<Tee>>),
    /// Taken by the first try.
    Stream(Option<Downstream>),
}

/// The downstream body not read yet, and the frames read so far.
pub(crate) struct Tee {
    rest: Option<Downstream>,
    frames: Vec<Frame<Bytes>>,
    size: u64,
    /// The copy outgrew the limit (or the body failed) and cannot be
    /// replayed.
    overflow: bool,
}

/// One try's view of a teed body: the kept frames from `next`, then the
/// downstream body itself.
pub(crate) struct TeeReader {
    tee: Arc<Mutex<Tee>>,
    next: usize,
}

impl Replay {
    pub async fn new(body: Downstream, headers: &HeaderMap) -> Result<Replay, hyper::Error> {
        if body.is_end_stream() {
            return Ok(Replay::Buffered(Bytes::new()));
        }
        let declared = headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        match declared {
            Some(n) if n <= REPLAY_LIMIT => Ok(Replay::Buffered(body.collect().await?.to_bytes())),
            Some(_) => Ok(Replay::Stream(Some(body))),
            None => Ok(Replay::Teed(Arc::new(Mutex::new(Tee {
                rest: Some(body),
                frames: Vec::new(),
                size: 0,
                overflow: false,
            })))),
        }
    }

    /// The body for the next try; None once a streamed body has been sent.
    pub fn next(&mut self) -> Option<UpBody> {
        match self {
            Replay::Buffered(b) => Some(UpBody::Full(Full::new(b.clone()))),
            Replay::Teed(tee) => {
                let overflow = tee.lock().is_ok_and(|t| t.overflow);
                (!overflow).then(|| {
                    UpBody::Tee(TeeReader {
                        tee: tee.clone(),
                        next: 0,
                    })
                })
            }
            Replay::Stream(s) => s.take().map(UpBody::Stream),
        }
    }

    /// Whether another try could be sent.
    pub fn replayable(&self) -> bool {
        match self {
            Replay::Buffered(_) => true,
            Replay::Teed(tee) => !tee.lock().is_ok_and(|t| t.overflow),
            Replay::Stream(s) => s.is_some(),
        }
    }
}

fn copy(frame: &Frame<Bytes>) -> Frame<Bytes> {
    match (frame.data_ref(), frame.trailers_ref()) {
        (Some(d), _) => Frame::data(d.clone()),
        (None, Some(t)) => Frame::trailers(t.clone()),
        (None, None) => Frame::data(Bytes::new()),
    }
}

impl Body for TeeReader {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let tee = self.tee.clone();
        let mut t = tee.lock().unwrap_or_else(|e| e.into_inner());
        if !t.overflow && self.next < t.frames.len() {
            let frame = copy(&t.frames[self.next]);
            self.next += 1;
            return Poll::Ready(Some(Ok(frame)));
        }
        let Some(rest) = t.rest.as_mut() else {
            return Poll::Ready(None);
        };
        match Pin::new(rest).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                let len = frame.data_ref().map_or(0, |d| d.len() as u64);
                t.size += len;
                if t.size > REPLAY_LIMIT {
                    t.overflow = true;
                    t.frames = Vec::new();
                } else if !t.overflow {
                    t.frames.push(copy(&frame));
                    self.next = t.frames.len();
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(None) => {
                t.rest = None;
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(e))) => {
                // The copy is incomplete for good: a retry would send a
                // truncated body as if whole.
                t.overflow = true;
                t.rest = None;
                Poll::Ready(Some(Err(e)))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

type Polled = Poll<Option<Result<Frame<Bytes>, hyper::Error>>>;

/// `poll` until it gives anything but an empty DATA chunk. An empty DATA
/// frame carries nothing, and HTTP/2 peers (h2 0.4.20 on, so hyper's and
/// tonic's servers and clients) close a connection that was sent more
/// than 100 that do not end their stream (`too_many_data_frames`). A
/// downstream HTTP/2 body that ends with an empty END_STREAM frame reads
/// as an empty chunk and then its end; forwarded, the chunk would get the
/// connection it goes on closed every hundredth request.
fn skip_empty_data(mut poll: impl FnMut() -> Polled) -> Polled {
    loop {
        match poll() {
            Poll::Ready(Some(Ok(frame))) if frame.data_ref().is_some_and(|d| d.is_empty()) => {}
            other => return other,
        }
    }
}

impl Body for UpBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let body = self.get_mut();
        skip_empty_data(|| match body {
            UpBody::Full(f) => Pin::new(f).poll_frame(cx).map_err(|never| match never {}),
            UpBody::Stream(s) => Pin::new(s).poll_frame(cx),
            UpBody::Tee(t) => Pin::new(t).poll_frame(cx),
        })
    }

    fn is_end_stream(&self) -> bool {
        match self {
            UpBody::Full(f) => f.is_end_stream(),
            UpBody::Stream(s) => s.is_end_stream(),
            UpBody::Tee(_) => false,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            UpBody::Full(f) => f.size_hint(),
            UpBody::Stream(s) => s.size_hint(),
            UpBody::Tee(_) => SizeHint::default(),
        }
    }
}

/// The downstream request body, read once, its bytes (and gRPC messages)
/// counted for the metrics on a chain that records them.
pub(crate) struct Downstream {
    pub body: crate::http::ReqBody,
    pub seen: Option<Arc<crate::stats::record::BodySeen>>,
}

impl Body for Downstream {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.body).poll_frame(cx);
        if let (Poll::Ready(Some(Ok(frame))), Some(seen)) = (&polled, &self.seen) {
            if let Some(data) = frame.data_ref() {
                seen.data(data);
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// An upstream's response body as it goes downstream, without empty DATA
/// frames (see `skip_empty_data`).
pub(crate) struct DownBody(pub crate::upstream::RespBody);

impl Body for DownBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        loop {
            match Pin::new(&mut self.0).poll_frame(cx) {
                Poll::Ready(Some(Ok(f))) if f.data_ref().is_some_and(|d| d.is_empty()) => {}
                other => return other,
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.0.size_hint()
    }
}
