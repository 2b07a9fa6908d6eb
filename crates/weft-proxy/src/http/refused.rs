//! The connection manager's own answers to a client's mistakes, given
//! before any route is looked at — a head refused, a head or body that
//! stalls — and their access-log lines, as Envoy writes them
//! (`"- - HTTP/1.1" 400 DPE http1.codec_error`). A head that never became
//! a request logs no method or path and records no metrics (Envoy's
//! filters, Istio's stats among them, start with a whole head); a request
//! whose body stalls is a request, logged and counted as every other.

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::Full;

use super::{begin, Connection, ReqBody};
use crate::access_log::{Entry, Record};
use crate::error::Flags;
use crate::Shared;

use super::Chain;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Refusal {
    /// Content-Length beside Transfer-Encoding.
    Framing,
    /// A head the HTTP/1 codec could not read.
    Codec,
    /// Headers past `max_request_headers_kb`.
    HeadersTooLarge,
    /// The head was not whole within `request_headers_timeout`.
    HeaderTimeout,
    /// The client sent nothing for `stream_idle_timeout` mid-request.
    StreamIdle,
}

impl Refusal {
    /// The lean server's answer, as Envoy words it.
    pub(super) fn answer(self) -> &'static [u8] {
        match self {
            Refusal::Framing | Refusal::Codec => b"HTTP/1.1 400 Bad Request\r\ncontent-length: 11\r\ncontent-type: text/plain\r\nconnection: close\r\n\r\nBad Request",
            Refusal::HeadersTooLarge => b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 31\r\ncontent-type: text/plain\r\nconnection: close\r\n\r\nRequest Header Fields Too Large",
            Refusal::HeaderTimeout => b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 22\r\ncontent-type: text/plain\r\nconnection: close\r\n\r\nrequest header timeout",
            Refusal::StreamIdle => b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 14\r\ncontent-type: text/plain\r\nconnection: close\r\n\r\nstream timeout",
        }
    }

    /// The body's length in `answer`.
    pub(super) fn body_len(self) -> u64 {
        let answer = self.answer();
        let head = answer.windows(4).position(|w| w == b"\r\n\r\n");
        head.map_or(0, |at| (answer.len() - at - 4) as u64)
    }

    fn status(self) -> StatusCode {
        match self {
            Refusal::Framing | Refusal::Codec => StatusCode::BAD_REQUEST,
            Refusal::HeadersTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Refusal::HeaderTimeout | Refusal::StreamIdle => StatusCode::REQUEST_TIMEOUT,
        }
    }

    /// Envoy's response flag (its request header timeout sets none).
    fn flags(self) -> Flags {
        match self {
            Refusal::Framing | Refusal::Codec | Refusal::HeadersTooLarge => {
                Flags::DOWNSTREAM_PROTOCOL_ERROR
            }
            Refusal::HeaderTimeout => Flags::default(),
            Refusal::StreamIdle => Flags::STREAM_IDLE_TIMEOUT,
        }
    }

    /// Envoy's `%RESPONSE_CODE_DETAILS%`.
    fn details(self) -> &'static str {
        match self {
            Refusal::Framing => "http1.content_length_and_chunked_not_allowed",
            Refusal::Codec => "http1.codec_error",
            Refusal::HeadersTooLarge => "http1.headers_too_large",
            Refusal::HeaderTimeout => "request_header_timeout",
            Refusal::StreamIdle => "stream_idle_timeout",
        }
    }
}

/// Logs `refusal`, answered with `sent` body bytes: for `req`, the
/// request it ended; without one, for a head that never became a request.
pub(super) fn log(
    refusal: Refusal,
    sent: u64,
    req: Option<Request<()>>,
    conn: &Connection,
    chain: &Chain,
    shared: &Shared,
) {
    let mut record = match req {
        Some(req) => {
            let mut req = req.map(|()| ReqBody::Whole(Full::new(Bytes::new())));
            let head_bytes = super::header_bytes(req.headers());
            begin(&mut req, head_bytes, conn, chain, shared).0
        }
        None => {
            let entry = Entry {
                start: Some(std::time::SystemTime::now()),
                protocol: "HTTP/1.1",
                downstream: Some(conn.peer),
                downstream_local: Some(conn.destination),
                server_name: conn.tls.as_ref().and_then(|t| t.server_name.clone()),
                peer_principal: conn.tls.as_ref().and_then(|t| t.peer_principal.clone()),
                ..Default::default()
            };
            Record::new(entry, None, chain.logs.clone(), shared.recent.clone())
        }
    };
    record.finish(&HeaderMap::new(), refusal.status());
    record.entry.flags.insert(refusal.flags());
    record.entry.code_details = refusal.details();
    record.entry.bytes_sent = sent;
}

/// The refusal hyper answered itself when it ended a connection with
/// `error` (its 400 and 431 have no body); None for every other end.
pub(super) fn by_hyper(error: &(dyn std::error::Error + 'static)) -> Option<Refusal> {
    let error = error.downcast_ref::<hyper::Error>()?;
    if error.is_parse_too_large() {
        Some(Refusal::HeadersTooLarge)
    } else if error.is_parse() {
        Some(Refusal::Codec)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_declare_their_bodies() {
        for r in [
            Refusal::Framing,
            Refusal::Codec,
            Refusal::HeadersTooLarge,
            Refusal::HeaderTimeout,
            Refusal::StreamIdle,
        ] {
            let text = std::str::from_utf8(r.answer()).unwrap();
            let declared = format!("content-length: {}\r\n", r.body_len());
            assert!(text.contains(&declared), "{text}");
            assert!(text.starts_with(&format!("HTTP/1.1 {}", r.status().as_u16())));
        }
    }
}
