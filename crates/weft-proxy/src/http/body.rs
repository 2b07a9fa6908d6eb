//! A downstream request's body, whichever server read its head: hyper's
//! (HTTP/2, upgrades, streamed uploads) or the lean HTTP/1.1 server, which
//! reads a small declared body whole before the request is handled.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::{Body, Frame, Incoming, SizeHint};

pub(crate) enum ReqBody {
    Hyper(Incoming),
    Whole(Full<Bytes>),
    /// hyper's body still coming in, its progress kept for the stream
    /// idle timeout.
    Watched(Incoming, Arc<super::idle::Upload>),
}

impl ReqBody {
    /// Keeps a streamed body's progress (see `Watched`); None for a body
    /// already whole.
    pub(crate) fn watch(&mut self) -> Option<Arc<super::idle::Upload>> {
        if !matches!(self, ReqBody::Hyper(body) if !body.is_end_stream()) {
            return None;
        }
        let ReqBody::Hyper(body) = std::mem::replace(self, ReqBody::Whole(Full::default())) else {
            return None;
        };
        let upload = super::idle::Upload::new();
        *self = ReqBody::Watched(body, upload.clone());
        Some(upload)
    }
}

impl Body for ReqBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            ReqBody::Hyper(body) => Pin::new(body).poll_frame(cx),
            ReqBody::Whole(body) => Pin::new(body)
                .poll_frame(cx)
                .map_err(|never| match never {}),
            ReqBody::Watched(body, upload) => {
                let polled = Pin::new(&mut *body).poll_frame(cx);
                match &polled {
                    Poll::Ready(Some(Ok(_))) if body.is_end_stream() => upload.ended(),
                    Poll::Ready(Some(Ok(_))) => upload.moved(),
                    Poll::Ready(_) => upload.ended(),
                    Poll::Pending => {}
                }
                polled
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ReqBody::Hyper(body) | ReqBody::Watched(body, _) => body.is_end_stream(),
            ReqBody::Whole(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ReqBody::Hyper(body) | ReqBody::Watched(body, _) => body.size_hint(),
            ReqBody::Whole(body) => body.size_hint(),
        }
    }
}
