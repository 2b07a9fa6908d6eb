//! Envoy's substitution format strings (`%START_TIME%`, `%REQ(X?Y):N%`, …)
//! compiled once per config and rendered per log line, as text or as JSON.
//!
//! Compiling resolves every command operator up front, so an operator Weft
//! does not know is a config error (Envoy NACKs those too), and rendering
//! is a walk over a flat list with no string matching on the request path.

use std::io::Write;
use std::time::SystemTime;

use http::HeaderName;
use weft_xds::clock::Civil;

use super::Entry;

/// One compiled format: a line of text, or a JSON object per line.
#[derive(Debug, Clone)]
pub(crate) enum Format {
    Text(Vec<Piece>),
    Json(Vec<(String, JsonValue)>),
}

#[derive(Debug, Clone)]
pub(crate) enum JsonValue {
    Pieces(Vec<Piece>),
    Object(Vec<(String, JsonValue)>),
    /// A number, boolean or null given literally.
    Literal(String),
}

#[derive(Debug, Clone)]
pub(crate) enum Piece {
    Lit(String),
    Op { op: Op, max: Option<usize> },
}

/// A request or response header an operator reads: the pseudo-headers and
/// the request id from the entry, any other from what was captured.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Hdr {
    Method,
    Path,
    Authority,
    RequestId,
    /// Index into the entry's captured request (or response) headers.
    Captured(usize),
}

#[derive(Debug, Clone)]
pub(crate) enum Op {
    StartTime(Option<String>),
    Req {
        main: Hdr,
        alt: Option<Hdr>,
        strip_query: bool,
    },
    Resp {
        main: Hdr,
        alt: Option<Hdr>,
    },
    Protocol,
    ResponseCode,
    ResponseFlags,
    ResponseCodeDetails,
    ConnectionTerminationDetails,
    UpstreamTransportFailureReason,
    BytesReceived,
    BytesSent,
    Duration,
    UpstreamHost,
    UpstreamCluster,
    UpstreamLocalAddress,
    DownstreamLocal {
        port: bool,
    },
    DownstreamRemote {
        port: bool,
    },
    DownstreamDirect {
        port: bool,
    },
    RequestedServerName,
    RouteName,
    DownstreamPeerUriSan,
    Hostname,
    Environment(String),
    /// `%DYNAMIC_METADATA(envoy.common:access_log_hint)%`: RBAC's AUDIT mark.
    AccessLogHint,
}

/// The header names a set of formats reads beyond the entry's own fields,
/// shared so the request path captures each once.
#[derive(Debug, Clone, Default)]
pub(crate) struct Wanted {
    pub request: Vec<HeaderName>,
    pub response: Vec<HeaderName>,
}

impl Wanted {
    pub(super) fn index(list: &mut Vec<HeaderName>, name: HeaderName) -> usize {
        match list.iter().position(|n| *n == name) {
            Some(i) => i,
            None => {
                list.push(name);
                list.len() - 1
            }
        }
    }
}

/// A value before it is written: missing (`-` in text, `null` in JSON),
/// a number (a JSON number), or text.
enum Value<'a> {
    Missing,
    Num(u64),
    Str(std::borrow::Cow<'a, str>),
    /// An address, written straight into the line (no string first).
    Addr(std::net::SocketAddr),
    Ip(std::net::IpAddr),
}

pub(crate) fn parse_text(text: &str, wanted: &mut Wanted) -> Result<Vec<Piece>, String> {
    use weft_config::log_format::{tokens, Token};
    let tokens = tokens(text).map_err(|e| format!("access log format {e}"))?;
    tokens
        .into_iter()
        .map(|t| match t {
            Token::Lit(l) => Ok(Piece::Lit(l)),
            Token::Command(c) => command(&c, wanted),
        })
        .collect()
}

fn command(c: &weft_config::log_format::Command, wanted: &mut Wanted) -> Result<Piece, String> {
    use weft_config::log_format::{check_time, unsupported, ACCESS_LOG_HINT};
    let op = match (c.name, c.arg) {
        ("START_TIME", a) => {
            let f = a.filter(|a| !a.is_empty());
            if let Some(f) = f {
                check_time(f)?;
            }
            Op::StartTime(f.map(str::to_string))
        }
        ("REQ", Some(a)) => {
            let (main, alt) = headers(a, &mut wanted.request, true)?;
            Op::Req {
                main,
                alt,
                strip_query: false,
            }
        }
        ("REQ_WITHOUT_QUERY", Some(a)) => {
            let (main, alt) = headers(a, &mut wanted.request, true)?;
            Op::Req {
                main,
                alt,
                strip_query: true,
            }
        }
        ("RESP", Some(a)) => {
            let (main, alt) = headers(a, &mut wanted.response, false)?;
            Op::Resp { main, alt }
        }
        ("DYNAMIC_METADATA", Some(ACCESS_LOG_HINT)) => Op::AccessLogHint,
        ("ENVIRONMENT", Some(a)) => Op::Environment(a.to_string()),
        (name, None) => simple(name).ok_or_else(|| unsupported(c.text))?,
        _ => return Err(unsupported(c.text)),
    };
    Ok(Piece::Op { op, max: c.max })
}

fn simple(name: &str) -> Option<Op> {
    Some(match name {
        "PROTOCOL" => Op::Protocol,
        "RESPONSE_CODE" => Op::ResponseCode,
        "RESPONSE_FLAGS" => Op::ResponseFlags,
        "RESPONSE_CODE_DETAILS" => Op::ResponseCodeDetails,
        "CONNECTION_TERMINATION_DETAILS" => Op::ConnectionTerminationDetails,
        "UPSTREAM_TRANSPORT_FAILURE_REASON" => Op::UpstreamTransportFailureReason,
        "BYTES_RECEIVED" => Op::BytesReceived,
        "BYTES_SENT" => Op::BytesSent,
        "DURATION" => Op::Duration,
        "UPSTREAM_HOST" => Op::UpstreamHost,
        "UPSTREAM_CLUSTER" | "UPSTREAM_CLUSTER_RAW" => Op::UpstreamCluster,
        "UPSTREAM_LOCAL_ADDRESS" => Op::UpstreamLocalAddress,
        "DOWNSTREAM_LOCAL_ADDRESS" => Op::DownstreamLocal { port: true },
        "DOWNSTREAM_LOCAL_ADDRESS_WITHOUT_PORT" => Op::DownstreamLocal { port: false },
        "DOWNSTREAM_DIRECT_REMOTE_ADDRESS" => Op::DownstreamDirect { port: true },
        "DOWNSTREAM_DIRECT_REMOTE_ADDRESS_WITHOUT_PORT" => Op::DownstreamDirect { port: false },
        "DOWNSTREAM_REMOTE_ADDRESS" => Op::DownstreamRemote { port: true },
        "DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT" => Op::DownstreamRemote { port: false },
        "REQUESTED_SERVER_NAME" => Op::RequestedServerName,
        "ROUTE_NAME" => Op::RouteName,
        "DOWNSTREAM_PEER_URI_SAN" => Op::DownstreamPeerUriSan,
        "HOSTNAME" => Op::Hostname,
        _ => return None,
    })
}

/// `X?Y`: header X, else Y.
fn headers(
    arg: &str,
    list: &mut Vec<HeaderName>,
    request: bool,
) -> Result<(Hdr, Option<Hdr>), String> {
    let mut parts = arg.splitn(2, '?');
    let main = header(parts.next().unwrap_or(""), list, request)?;
    let alt = parts.next().map(|a| header(a, list, request)).transpose()?;
    Ok((main, alt))
}

fn header(name: &str, list: &mut Vec<HeaderName>, request: bool) -> Result<Hdr, String> {
    let lower = name.to_ascii_lowercase();
    Ok(match lower.as_str() {
        ":method" if request => Hdr::Method,
        ":path" if request => Hdr::Path,
        ":authority" | "host" if request => Hdr::Authority,
        "x-request-id" if request => Hdr::RequestId,
        _ => {
            let h = HeaderName::try_from(lower.as_str())
                .map_err(|_| format!("access log header {name:?} is not a header name"))?;
            Hdr::Captured(Wanted::index(list, h))
        }
    })
}

fn strftime(out: &mut Vec<u8>, f: &str, at: SystemTime) {
    let c = Civil::of(at);
    let mut chars = f.chars().peekable();
    while let Some(ch) = chars.next() {
        if ch != '%' {
            let mut b = [0; 4];
            out.extend_from_slice(ch.encode_utf8(&mut b).as_bytes());
            continue;
        }
        let mut digits = String::new();
        while let Some(d) = chars.next_if(|d| d.is_ascii_digit() || *d == 'E') {
            if d != 'E' {
                digits.push(d);
            }
        }
        let frac = |out: &mut Vec<u8>, n: usize| {
            let s = format!("{:09}", c.nanos);
            out.extend_from_slice(&s.as_bytes()[..n.min(9)]);
        };
        let _ = match chars.next() {
            Some('Y') => write!(out, "{:04}", c.year),
            Some('m') => write!(out, "{:02}", c.month),
            Some('d') => write!(out, "{:02}", c.day),
            Some('H') => write!(out, "{:02}", c.hour),
            Some('M') => write!(out, "{:02}", c.minute),
            Some('S') => {
                let r = write!(out, "{:02}", c.second);
                if let Ok(n) = digits.parse::<usize>() {
                    out.push(b'.');
                    frac(out, n);
                }
                r
            }
            Some('f') => {
                frac(out, digits.parse().unwrap_or(9));
                Ok(())
            }
            Some('s') => write!(out, "{}", c.epoch),
            Some('z') => write!(out, "+0000"),
            Some('Z') => write!(out, "UTC"),
            Some('F') => write!(out, "{:04}-{:02}-{:02}", c.year, c.month, c.day),
            Some('T') => write!(out, "{:02}:{:02}:{:02}", c.hour, c.minute, c.second),
            _ => write!(out, "%"),
        };
    }
}

impl Op {
    fn value<'e>(&self, e: &'e Entry) -> Value<'e> {
        use std::borrow::Cow::{Borrowed, Owned};
        let opt = |s: Option<&'e str>| {
            s.filter(|s| !s.is_empty())
                .map_or(Value::Missing, |s| Value::Str(Borrowed(s)))
        };
        let addr = |a: Option<std::net::SocketAddr>, port: bool| match a {
            None => Value::Missing,
            Some(a) if port => Value::Addr(a),
            Some(a) => Value::Ip(a.ip()),
        };
        let http = e.is_http();
        match self {
            Op::StartTime(_) => Value::Missing, // written by `render`
            Op::Req {
                main,
                alt,
                strip_query,
            } => {
                let v = request_header(e, *main).or_else(|| alt.and_then(|a| request_header(e, a)));
                match v {
                    Some(v) if *strip_query => opt(Some(v.split('?').next().unwrap_or(v))),
                    v => opt(v),
                }
            }
            Op::Resp { main, alt } => {
                opt(response_header(e, *main).or_else(|| alt.and_then(|a| response_header(e, a))))
            }
            Op::Protocol => opt(http.then_some(e.protocol)),
            Op::ResponseCode => Value::Num(u64::from(e.status)),
            Op::ResponseFlags => Value::Str(Owned(e.flags.to_string())),
            Op::ResponseCodeDetails => opt(http.then(|| e.details()).flatten()),
            Op::ConnectionTerminationDetails => {
                opt((!http).then_some(e.detail.as_deref()).flatten())
            }
            Op::UpstreamTransportFailureReason => opt(e.transport_failure.as_deref()),
            Op::BytesReceived => Value::Num(e.bytes_received()),
            Op::BytesSent => Value::Num(e.bytes_sent),
            Op::Duration => Value::Num(e.duration.as_millis() as u64),
            Op::UpstreamHost => addr(e.upstream, true),
            Op::UpstreamCluster => opt(Some(&e.cluster)),
            Op::UpstreamLocalAddress => addr(e.upstream_local, true),
            Op::DownstreamLocal { port } => addr(e.downstream_local, *port),
            Op::DownstreamRemote { port } => addr(e.downstream, *port),
            Op::DownstreamDirect { port } => addr(e.downstream_direct.or(e.downstream), *port),
            Op::RequestedServerName => opt(e.server_name.as_deref()),
            Op::RouteName => opt(Some(&e.route)),
            Op::DownstreamPeerUriSan => opt(e.peer_principal.as_deref()),
            Op::Hostname => opt(Some(super::hostname())),
            Op::Environment(var) => {
                std::env::var(var).map_or(Value::Missing, |v| Value::Str(Owned(v)))
            }
            Op::AccessLogHint => match e.audit {
                Some(_) => Value::Str(Borrowed("true")),
                None => Value::Missing,
            },
        }
    }
}

fn request_header(e: &Entry, h: Hdr) -> Option<&str> {
    match h {
        Hdr::Method => Some(e.method()),
        Hdr::Path => Some(e.path()),
        Hdr::Authority => Some(e.authority.as_str()).filter(|a| *a != "-"),
        Hdr::RequestId => Some(e.request_id.as_str()),
        Hdr::Captured(i) => e.request_headers.get(i)?.as_ref()?.to_str().ok(),
    }
}

fn response_header(e: &Entry, h: Hdr) -> Option<&str> {
    match h {
        Hdr::Captured(i) => e.response_headers.get(i)?.as_ref()?.to_str().ok(),
        _ => None,
    }
}

/// Writes `s` cut to `max` characters.
fn push_str(out: &mut Vec<u8>, s: &str, max: Option<usize>) {
    let s = match max {
        Some(n) => s.char_indices().nth(n).map_or(s, |(i, _)| &s[..i]),
        None => s,
    };
    out.extend_from_slice(s.as_bytes());
}

fn write_piece(out: &mut Vec<u8>, piece: &Piece, e: &Entry) {
    match piece {
        Piece::Lit(s) => out.extend_from_slice(s.as_bytes()),
        Piece::Op {
            op: Op::StartTime(f),
            ..
        } => start_time(out, f.as_deref(), e),
        Piece::Op { op, max } => match op.value(e) {
            Value::Missing => out.push(b'-'),
            Value::Num(n) => crate::text::push_u64(out, n),
            Value::Str(s) => push_str(out, &s, *max),
            Value::Addr(a) => crate::text::push_addr(out, a),
            Value::Ip(ip) => crate::text::push_ip(out, ip),
        },
    }
}

fn start_time(out: &mut Vec<u8>, f: Option<&str>, e: &Entry) {
    let at = e.start.unwrap_or_else(SystemTime::now);
    match f {
        None => crate::text::push_rfc3339_millis(out, at),
        Some(f) => strftime(out, f, at),
    }
}

impl Format {
    /// Appends one rendered line (with its newline, which Istio's formats
    /// carry and JSON lines get) to `out`.
    pub fn render(&self, out: &mut Vec<u8>, e: &Entry) {
        match self {
            Format::Text(pieces) => {
                for p in pieces {
                    write_piece(out, p, e);
                }
                if out.last() != Some(&b'\n') {
                    out.push(b'\n');
                }
            }
            Format::Json(fields) => {
                json_object(out, fields, e);
                out.push(b'\n');
            }
        }
    }
}

fn json_object(out: &mut Vec<u8>, fields: &[(String, JsonValue)], e: &Entry) {
    out.push(b'{');
    for (i, (key, value)) in fields.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        json_string(out, key);
        out.push(b':');
        match value {
            JsonValue::Object(inner) => json_object(out, inner, e),
            JsonValue::Literal(l) => out.extend_from_slice(l.as_bytes()),
            JsonValue::Pieces(pieces) => json_pieces(out, pieces, e),
        }
    }
    out.push(b'}');
}

/// One operator alone keeps its type (a number, or null when missing), as
/// Envoy's JSON formatter does; anything mixed is a string.
fn json_pieces(out: &mut Vec<u8>, pieces: &[Piece], e: &Entry) {
    if let [Piece::Op { op, max }] = pieces {
        if !matches!(op, Op::StartTime(_)) {
            match op.value(e) {
                Value::Missing => out.extend_from_slice(b"null"),
                Value::Num(n) => crate::text::push_u64(out, n),
                Value::Addr(a) => json_string(out, &a.to_string()),
                Value::Ip(ip) => json_string(out, &ip.to_string()),
                Value::Str(s) => {
                    let mut cut = Vec::new();
                    push_str(&mut cut, &s, *max);
                    json_string(out, &String::from_utf8_lossy(&cut));
                }
            }
            return;
        }
    }
    let mut text = Vec::new();
    for p in pieces {
        write_piece(&mut text, p, e);
    }
    json_string(out, &String::from_utf8_lossy(&text));
}

fn json_string(out: &mut Vec<u8>, s: &str) {
    let _ = serde_json::to_writer(&mut *out, s);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What validation accepts at apply is what the proxy writes.
    #[test]
    fn every_command_validation_knows_is_written() {
        for name in weft_config::log_format::SIMPLE {
            let mut w = Wanted::default();
            assert!(parse_text(&format!("%{name}%"), &mut w).is_ok(), "{name}");
        }
        for name in weft_config::log_format::PSEUDO {
            let mut w = Wanted::default();
            assert!(
                parse_text(&format!("%REQ(:{name})%"), &mut w).is_ok(),
                "{name}"
            );
        }
    }

    #[test]
    fn text_parses_operators_literals_and_escapes() {
        let mut w = Wanted::default();
        let p = parse_text("%% [%START_TIME(%s.%3f)%] %REQ(USER-AGENT):5% x", &mut w).unwrap();
        assert_eq!(p.len(), 5, "{p:?}");
        assert_eq!(w.request, vec![HeaderName::from_static("user-agent")]);
        assert!(parse_text("%NOPE%", &mut w).unwrap_err().contains("NOPE"));
        assert!(parse_text("%REQ(:PATH)", &mut w).is_err());
        assert!(parse_text("%START_TIME(%Q)%", &mut w).is_err());
    }

    #[test]
    fn start_time_formats() {
        let at = std::time::UNIX_EPOCH + std::time::Duration::from_millis(1_764_000_000_123);
        let mut out = Vec::new();
        strftime(&mut out, "%Y/%m/%d %H:%M:%E3S %s %6f", at);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "2025/11/24 16:00:00.123 1764000000 123000"
        );
    }
}
