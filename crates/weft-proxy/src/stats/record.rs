//! From a finished request's (or connection's) log entry to its labels
//! and samples; and the response body that counts what it carries, so a
//! request is recorded (and logged) when its response has ended, with its
//! size and gRPC status, as Envoy does.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::HeaderMap;
use hyper::body::{Body, Frame, SizeHint};

use super::config::{Expr, StatsCfg};
use super::labels::Parties;
use super::{
    unknown_peer, HttpLabels, HttpSample, Labelling, Peer, Reporter, ServiceMeta, Stats, TcpLabels,
};
use crate::access_log::Entry;

/// What the request path learns for the metrics, on a chain that records.
#[derive(Debug, Default)]
pub(crate) struct Observed {
    /// The other side's workload, from the metadata exchange.
    pub peer: Option<Arc<Peer>>,
    /// Client side: the upstream endpoint's workload, from its metadata
    /// (used when the exchange did not answer).
    pub endpoint: Option<Arc<Peer>>,
    /// The service of the cluster the request went to.
    pub service: Option<Arc<ServiceMeta>>,
    /// Client side: the upstream connection was mesh mTLS.
    pub upstream_mtls: bool,
    /// Client side: the SPIFFE id the upstream proved in its handshake.
    pub upstream_principal: Option<Arc<str>>,
    /// Client side: this proxy's exchange headers, for the upstream.
    pub exchange: Option<super::Own>,
    pub grpc: bool,
    pub grpc_status: Option<u32>,
    /// Request headers, as Istio counts them (`request` adds the body).
    pub request_bytes: u64,
    /// Response headers, body and trailers.
    pub response_bytes: u64,
    /// gRPC messages in the response body.
    pub response_messages: GrpcFramer,
    /// Request headers a Telemetry tag reads, as they arrived.
    pub headers: Vec<(String, String)>,
    /// The port the client dialled.
    pub destination_port: u16,
}

/// What a body carried: bytes, and gRPC messages for a gRPC request.
#[derive(Debug, Default)]
pub(crate) struct BodySeen {
    bytes: std::sync::atomic::AtomicU64,
    /// Some for a gRPC request: its messages are counted.
    messages: Option<std::sync::Mutex<GrpcFramer>>,
}

impl BodySeen {
    pub fn new(grpc: bool) -> BodySeen {
        BodySeen {
            bytes: Default::default(),
            messages: grpc.then(Default::default),
        }
    }

    pub fn data(&self, chunk: &[u8]) {
        use std::sync::atomic::Ordering;
        self.bytes.fetch_add(chunk.len() as u64, Ordering::Relaxed);
        if let Some(m) = &self.messages {
            m.lock().unwrap_or_else(|p| p.into_inner()).feed(chunk);
        }
    }

    /// Bytes, and gRPC messages.
    pub fn totals(&self) -> (u64, u64) {
        use std::sync::atomic::Ordering;
        let messages = self
            .messages
            .as_ref()
            .map_or(0, |m| m.lock().unwrap_or_else(|p| p.into_inner()).messages);
        (self.bytes.load(Ordering::Relaxed), messages)
    }
}

/// Counts gRPC's length-prefixed messages (a flag byte, a 4-byte length,
/// the message) in a byte stream cut anywhere.
#[derive(Debug, Default)]
pub(crate) struct GrpcFramer {
    pub messages: u64,
    /// Bytes of the current message still to pass.
    skip: u64,
    prefix: [u8; 5],
    have: usize,
}

impl GrpcFramer {
    pub fn feed(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            if self.skip > 0 {
                let n = self.skip.min(data.len() as u64);
                self.skip -= n;
                data = &data[n as usize..];
                continue;
            }
            self.prefix[self.have] = data[0];
            self.have += 1;
            data = &data[1..];
            if self.have == self.prefix.len() {
                let len = u32::from_be_bytes([
                    self.prefix[1],
                    self.prefix[2],
                    self.prefix[3],
                    self.prefix[4],
                ]);
                self.skip = u64::from(len);
                self.have = 0;
                self.messages += 1;
            }
        }
    }
}

/// A chain's recorder: the proxy's metrics, the chain's stats config
/// (reporter, Telemetry overrides), and the proxy's SPIFFE id when the
/// request began.
#[derive(Clone)]
pub(crate) struct Recorder {
    pub stats: Arc<Stats>,
    pub cfg: Arc<StatsCfg>,
    pub own_principal: Option<Arc<str>>,
}

/// The value of an added tag for one request.
fn value(e: &Entry, o: &Observed, expr: &Expr) -> String {
    let text = match expr {
        Expr::Literal(s) => s.as_str(),
        Expr::RequestHost => e.authority.as_str(),
        Expr::RequestMethod => e.method(),
        Expr::RequestPath => e.path(),
        Expr::RequestUrlPath => e.url_path(),
        Expr::RequestProtocol => e.protocol,
        Expr::RequestHeader(h) => o
            .headers
            .iter()
            .find(|(k, _)| k == h)
            .map_or("", |(_, v)| v.as_str()),
        Expr::ResponseCode => return e.status.to_string(),
        Expr::DestinationPort => return o.destination_port.to_string(),
    };
    if text.is_empty() {
        "unknown".into()
    } else {
        text.to_string()
    }
}

const UNKNOWN: &str = "unknown";

/// `unknown` as a label value, allocated once.
fn unknown() -> Arc<str> {
    static UNKNOWN_STR: std::sync::OnceLock<Arc<str>> = std::sync::OnceLock::new();
    UNKNOWN_STR.get_or_init(|| UNKNOWN.into()).clone()
}

impl Recorder {
    fn parties(&self, e: &Entry, o: &Observed) -> (Parties, &'static str) {
        let own = self.stats.own.peer.clone();
        // A client's endpoint metadata names its server; a server's
        // endpoint is its own app.
        let endpoint = (self.cfg.reporter == Reporter::Source)
            .then(|| o.endpoint.clone())
            .flatten();
        let other = o.peer.clone().or(endpoint).unwrap_or_else(unknown_peer);
        let own_principal: Arc<str> = self.own_principal.clone().unwrap_or_else(unknown);
        let service = o.service.clone().unwrap_or_else(|| {
            Arc::new(if self.cfg.host_fallback {
                ServiceMeta::from_authority(&e.authority)
            } else {
                ServiceMeta::from_authority("")
            })
        });
        match self.cfg.reporter {
            Reporter::Destination => {
                let mtls = e.peer_principal.is_some();
                // Under mTLS the certificate says the client's namespace,
                // whatever its metadata claims.
                let other = match e.peer_principal.as_deref().and_then(namespace_of) {
                    Some(ns) if ns != other.namespace => Arc::new(Peer {
                        namespace: ns.to_string(),
                        ..(*other).clone()
                    }),
                    _ => other,
                };
                let principal =
                    |p: Option<&str>| -> Arc<str> { p.map_or_else(unknown, Into::into) };
                let parties = Parties {
                    reporter: self.cfg.reporter,
                    source: other,
                    source_principal: principal(e.peer_principal.as_deref()),
                    destination: own,
                    destination_principal: if mtls { own_principal } else { unknown() },
                    service,
                };
                (parties, if mtls { "mutual_tls" } else { "none" })
            }
            Reporter::Source => {
                let (source_principal, destination_principal): (Arc<str>, Arc<str>) =
                    if o.upstream_mtls {
                        let theirs = o.upstream_principal.clone();
                        (own_principal, theirs.unwrap_or_else(unknown))
                    } else {
                        (unknown(), unknown())
                    };
                let parties = Parties {
                    reporter: self.cfg.reporter,
                    source: own,
                    source_principal,
                    destination: other,
                    destination_principal,
                    service,
                };
                // Istio's client side does not say.
                (parties, UNKNOWN)
            }
        }
    }

    /// Records one finished request.
    pub fn http(&self, e: &Entry, o: &Observed) {
        let (parties, security) = self.parties(e, o);
        let labels = HttpLabels {
            parties,
            protocol: if o.grpc { "grpc" } else { "http" },
            response_code: e.status,
            grpc_status: o.grpc.then_some(o.grpc_status).flatten(),
            flags: e.flags,
            security,
        };
        let (body, request_messages) = e.request_body.as_ref().map_or((0, 0), |r| r.totals());
        let sample = HttpSample {
            duration: e.duration,
            request_bytes: o.request_bytes + body,
            response_bytes: o.response_bytes,
            grpc_messages: o
                .grpc
                .then_some((request_messages, o.response_messages.messages)),
        };
        let value = |x: &Expr| value(e, o, x);
        let how = Labelling {
            cfg: &self.cfg,
            value: &value,
        };
        self.stats.record_http(&labels, &sample, &how);
    }

    /// Records a TCP connection's opening.
    pub fn tcp_opened(&self, e: &Entry, o: &Observed) {
        let value = |x: &Expr| value(e, o, x);
        let how = Labelling {
            cfg: &self.cfg,
            value: &value,
        };
        self.stats.tcp_opened(&self.tcp_labels(e, o), &how);
    }

    /// Records the bytes (sent, received) a TCP connection moved since
    /// it was last recorded, and its end when `closed`.
    pub fn tcp_moved(&self, e: &Entry, o: &Observed, bytes: (u64, u64), closed: bool) {
        let value = |x: &Expr| value(e, o, x);
        let how = Labelling {
            cfg: &self.cfg,
            value: &value,
        };
        self.stats
            .tcp_moved(&self.tcp_labels(e, o), bytes, closed, &how);
    }

    /// The labels of a TCP connection as they stand.
    fn tcp_labels(&self, e: &Entry, o: &Observed) -> TcpLabels {
        let (parties, security) = self.parties(e, o);
        TcpLabels {
            parties,
            flags: e.flags,
            security,
        }
    }
}

/// The namespace of a SPIFFE id (`spiffe://td/ns/NS/sa/SA`).
fn namespace_of(principal: &str) -> Option<&str> {
    let rest = principal.strip_prefix("spiffe://")?;
    let mut parts = rest.split('/').skip(1);
    (parts.next()? == "ns").then_some(())?;
    parts.next()
}

/// The size of a header block as Envoy counts it (`name: value\r\n`).
pub(crate) fn header_bytes(headers: &HeaderMap) -> u64 {
    headers
        .iter()
        .map(|(k, v)| (k.as_str().len() + v.len() + 4) as u64)
        .sum()
}

/// gRPC's status in a header block (a trailers-only reply or trailers).
pub(crate) fn grpc_status(headers: &HeaderMap) -> Option<u32> {
    headers
        .get(crate::http::GRPC_STATUS)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// A response body that counts its bytes and reads gRPC's status from
/// its trailers into the request's record; the record is written when the
/// body ends or is dropped.
pub(crate) struct Counted<B> {
    inner: B,
    record: crate::access_log::Record,
}

impl<B> Counted<B> {
    pub fn new(inner: B, record: crate::access_log::Record) -> Counted<B> {
        Counted { inner, record }
    }
}

impl<B> Body for Counted<B>
where
    B: Body<Data = Bytes, Error = crate::upstream::BoxError> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Err(e))) = &polled {
            if e.is::<crate::http::StreamIdle>() {
                let flag = crate::error::Flags::STREAM_IDLE_TIMEOUT;
                self.record.entry.flags.insert(flag);
            }
        }
        if let Poll::Ready(Some(Ok(frame))) = &polled {
            let entry = &mut self.record.entry;
            entry.bytes_sent += frame.data_ref().map_or(0, |d| d.len() as u64);
            let Some(seen) = &mut entry.observed else {
                return polled;
            };
            if let Some(data) = frame.data_ref() {
                seen.response_bytes += data.len() as u64;
                if seen.grpc {
                    seen.response_messages.feed(data);
                }
            } else if let Some(trailers) = frame.trailers_ref() {
                seen.response_bytes += header_bytes(trailers);
                seen.grpc_status = grpc_status(trailers).or(seen.grpc_status);
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
