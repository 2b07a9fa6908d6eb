//! A downstream request's body, whichever server read its head: hyper's
//! (HTTP/2, upgrades, streamed uploads) or the lean HTTP/1.1 server, which
//! reads a small declared body whole before the request is handled.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::{Body, Frame, Incoming, SizeHint};

pub(crate) enum ReqBody {
    Hyper(Incoming),
    Whole(Full<Bytes>),
}

impl ReqBody {
    /// Whether the client has sent the whole request (hyper's body: when
    /// it has no more to come; the lean server reads the body first).
    pub(crate) fn is_complete(&self) -> bool {
        match self {
            ReqBody::Hyper(body) => body.is_end_stream(),
            ReqBody::Whole(_) => true,
        }
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
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ReqBody::Hyper(body) => body.is_end_stream(),
            ReqBody::Whole(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ReqBody::Hyper(body) => body.size_hint(),
            ReqBody::Whole(body) => body.size_hint(),
        }
    }
}
