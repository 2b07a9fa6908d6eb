//! A downstream request's body, whichever server read its head: hyper's
//! (HTTP/2, upgrades, streamed uploads) or the lean HTTP/1.1 server, which
//! reads a small declared body whole before the request is handled.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};

pub(crate) enum ReqBody {
    Hyper(Incoming),
    /// The whole body, taken by the first poll.
    Whole(Option<Bytes>),
}

impl ReqBody {
    pub fn whole(data: Bytes) -> ReqBody {
        ReqBody::Whole((!data.is_empty()).then_some(data))
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
            ReqBody::Whole(data) => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ReqBody::Hyper(body) => body.is_end_stream(),
            ReqBody::Whole(data) => data.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ReqBody::Hyper(body) => body.size_hint(),
            ReqBody::Whole(data) => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
        }
    }
}
