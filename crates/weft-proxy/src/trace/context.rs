//! The span context a request carries between proxies, as Envoy's Zipkin
//! tracer reads and writes it: B3 headers (`x-b3-traceid`, `x-b3-spanid`,
//! `x-b3-parentspanid`, `x-b3-sampled`, or the single `b3` header), and the
//! trace decision Envoy keeps in the `x-request-id` UUID's version digit.

use http::{HeaderMap, HeaderValue};

/// A trace id (128 bits, or 64 when the caller sent 16 hex digits).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TraceId {
    pub high: u64,
    pub low: u64,
    pub wide: bool,
}

impl TraceId {
    pub fn random() -> TraceId {
        TraceId {
            high: fastrand::u64(..),
            low: fastrand::u64(..),
            wide: true,
        }
    }

    fn parse(s: &str) -> Option<TraceId> {
        match s.len() {
            32 => Some(TraceId {
                high: u64::from_str_radix(&s[..16], 16).ok()?,
                low: u64::from_str_radix(&s[16..], 16).ok()?,
                wide: true,
            }),
            16 => Some(TraceId {
                high: 0,
                low: u64::from_str_radix(s, 16).ok()?,
                wide: false,
            }),
            _ => None,
        }
    }
}

impl std::fmt::Display for TraceId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.wide {
            write!(f, "{:016x}", self.high)?;
        }
        write!(f, "{:016x}", self.low)
    }
}

/// What the caller's headers said.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Incoming {
    pub trace: Option<TraceId>,
    pub span: Option<u64>,
    /// An explicit decision (`x-b3-sampled`, the single header's flag).
    pub sampled: Option<bool>,
}

fn hex64(s: &str) -> Option<u64> {
    (s.len() == 16).then(|| u64::from_str_radix(s, 16).ok())?
}

fn text<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name)?.to_str().ok().map(str::trim)
}

fn flag(s: &str) -> Option<bool> {
    match s {
        "1" | "true" | "d" => Some(true),
        "0" | "false" => Some(false),
        _ => None,
    }
}

/// The single `b3` header first, then the multi-header form. A malformed
/// context is no context (Envoy starts a new trace).
pub(crate) fn extract(h: &HeaderMap) -> Incoming {
    if let Some(b3) = text(h, "b3") {
        let parts: Vec<&str> = b3.split('-').collect();
        return match parts.as_slice() {
            [only] => Incoming {
                sampled: flag(only),
                ..Default::default()
            },
            [trace, span, rest @ ..] => match (TraceId::parse(trace), hex64(span)) {
                (Some(trace), Some(span)) => Incoming {
                    trace: Some(trace),
                    span: Some(span),
                    sampled: rest.first().and_then(|s| flag(s)),
                },
                _ => Incoming::default(),
            },
            [] => Incoming::default(),
        };
    }
    let sampled = text(h, "x-b3-sampled").and_then(flag);
    match (
        text(h, "x-b3-traceid").and_then(TraceId::parse),
        text(h, "x-b3-spanid").and_then(hex64),
    ) {
        (Some(trace), Some(span)) => Incoming {
            trace: Some(trace),
            span: Some(span),
            sampled,
        },
        _ => Incoming {
            sampled,
            ..Default::default()
        },
    }
}

/// W3C trace context: `traceparent` (`00-<trace>-<parent>-<flags>`),
/// with `tracestate` kept as it came. A malformed or all-zero
/// `traceparent` is no context.
pub(crate) fn extract_w3c(h: &HeaderMap) -> (Incoming, Option<String>) {
    let state = text(h, "tracestate").map(str::to_string);
    let Some(parent) = text(h, "traceparent") else {
        return (Incoming::default(), state);
    };
    let parts: Vec<&str> = parent.split('-').collect();
    let parsed = match parts.as_slice() {
        [version, trace, span, flags, ..] if version.len() == 2 && *version != "ff" => (
            TraceId::parse(trace).filter(|t| t.wide && (t.high, t.low) != (0, 0)),
            hex64(span).filter(|s| *s != 0),
            u8::from_str_radix(flags, 16).ok(),
        ),
        _ => (None, None, None),
    };
    match parsed {
        (Some(trace), Some(span), Some(flags)) => (
            Incoming {
                trace: Some(trace),
                span: Some(span),
                sampled: Some(flags & 1 == 1),
            },
            state,
        ),
        _ => (Incoming::default(), state),
    }
}

/// Writes this hop's `traceparent` (and the caller's `tracestate`).
pub(crate) fn inject_w3c(
    h: &mut HeaderMap,
    trace: TraceId,
    span: u64,
    sampled: bool,
    state: Option<&str>,
) {
    let wide = TraceId {
        wide: true,
        ..trace
    };
    let flags = if sampled { "01" } else { "00" };
    if let Ok(v) = HeaderValue::try_from(format!("00-{wide}-{span:016x}-{flags}")) {
        h.insert("traceparent", v);
    }
    if let Some(v) = state.and_then(|s| HeaderValue::try_from(s).ok()) {
        h.insert("tracestate", v);
    }
}

/// Writes this hop's context for the next one, replacing the caller's.
pub(crate) fn inject(
    h: &mut HeaderMap,
    trace: TraceId,
    span: u64,
    parent: Option<u64>,
    sampled: bool,
) {
    h.remove("b3");
    let set = |h: &mut HeaderMap, name: &'static str, v: String| {
        if let Ok(v) = HeaderValue::try_from(v) {
            h.insert(name, v);
        }
    };
    set(h, "x-b3-traceid", trace.to_string());
    set(h, "x-b3-spanid", format!("{span:016x}"));
    match parent {
        Some(p) => set(h, "x-b3-parentspanid", format!("{p:016x}")),
        None => {
            h.remove("x-b3-parentspanid");
        }
    }
    h.insert(
        "x-b3-sampled",
        HeaderValue::from_static(if sampled { "1" } else { "0" }),
    );
}

/// Why a request is traced, as Envoy marks it in the request id's version
/// digit (position 14 of the UUID): `9` sampled, `a` forced by the
/// service, `b` forced by the client, `4` not traced.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Reason {
    Sampled,
    ServiceForced,
    ClientForced,
    NotTraced,
}

impl Reason {
    fn mark(self) -> u8 {
        match self {
            Reason::Sampled => b'9',
            Reason::ServiceForced => b'a',
            Reason::ClientForced => b'b',
            Reason::NotTraced => b'4',
        }
    }

    pub fn traced(self) -> bool {
        self != Reason::NotTraced
    }
}

/// The decision a request id already carries (a hop before decided).
pub(crate) fn reason_in(request_id: &str) -> Option<Reason> {
    match request_id.as_bytes().get(14)? {
        b'9' => Some(Reason::Sampled),
        b'a' => Some(Reason::ServiceForced),
        b'b' => Some(Reason::ClientForced),
        _ => None,
    }
}

/// Envoy's sampling draw: the request id's first 8 hex digits mod 10000
/// against the percentage in hundredths, so every hop draws alike.
pub(crate) fn sampled_by_id(request_id: &str, percent: f64) -> bool {
    let n = request_id
        .get(..8)
        .and_then(|s| u64::from_str_radix(s, 16).ok())
        .unwrap_or_else(|| fastrand::u64(..));
    ((n % 10_000) as f64) < percent * 100.0
}

/// Marks `reason` in a UUID request id (anything else is left alone).
pub(crate) fn mark(request_id: &mut String, reason: Reason) {
    if request_id.len() == 36 && request_id.as_bytes()[8] == b'-' {
        let mark = reason.mark() as char;
        request_id.replace_range(14..15, mark.encode_utf8(&mut [0; 4]));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn b3_multi_and_single_headers() {
        let multi = extract(&headers(&[
            ("x-b3-traceid", "463ac35c9f6413ad48485a3953bb6124"),
            ("x-b3-spanid", "a2fb4a1d1a96d312"),
            ("x-b3-sampled", "1"),
        ]));
        assert_eq!(
            multi.trace.unwrap().to_string(),
            "463ac35c9f6413ad48485a3953bb6124"
        );
        assert_eq!(multi.span, Some(0xa2fb4a1d1a96d312));
        assert_eq!(multi.sampled, Some(true));
        let single = extract(&headers(&[(
            "b3",
            "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-0-05e3ac9a4f6e3b90",
        )]));
        assert_eq!(single.span, Some(0xe457b5a2e4d86bd1));
        assert_eq!(single.sampled, Some(false));
        assert_eq!(extract(&headers(&[("b3", "d")])).sampled, Some(true));
        let short = extract(&headers(&[
            ("x-b3-traceid", "48485a3953bb6124"),
            ("x-b3-spanid", "a2fb4a1d1a96d312"),
        ]));
        assert_eq!(short.trace.unwrap().to_string(), "48485a3953bb6124");
        assert_eq!(
            extract(&headers(&[("x-b3-traceid", "xyz"), ("x-b3-spanid", "1")])),
            Incoming::default()
        );
    }

    #[test]
    fn w3c_trace_context() {
        let (c, state) = extract_w3c(&headers(&[
            (
                "traceparent",
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            ),
            ("tracestate", "congo=t61rcWkgMzE"),
        ]));
        assert_eq!(
            c.trace.unwrap().to_string(),
            "0af7651916cd43dd8448eb211c80319c"
        );
        assert_eq!(c.span, Some(0xb7ad6b7169203331));
        assert_eq!(c.sampled, Some(true));
        assert_eq!(state.as_deref(), Some("congo=t61rcWkgMzE"));
        for bad in [
            "00-00000000000000000000000000000000-b7ad6b7169203331-01",
            "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "00-0af7651916cd43dd-b7ad6b7169203331-01",
        ] {
            assert_eq!(
                extract_w3c(&headers(&[("traceparent", bad)])).0,
                Incoming::default(),
                "{bad}"
            );
        }
        let mut h = HeaderMap::new();
        inject_w3c(&mut h, c.trace.unwrap(), 0x1234, false, state.as_deref());
        assert_eq!(
            h["traceparent"],
            "00-0af7651916cd43dd8448eb211c80319c-0000000000001234-00"
        );
        assert_eq!(h["tracestate"], "congo=t61rcWkgMzE");
    }

    #[test]
    fn request_ids_carry_the_decision() {
        let mut id = "7b8f3a4c-1d2e-4f60-8a9b-0c1d2e3f4a5b".to_string();
        assert_eq!(reason_in(&id), None);
        mark(&mut id, Reason::Sampled);
        assert_eq!(id, "7b8f3a4c-1d2e-9f60-8a9b-0c1d2e3f4a5b");
        assert_eq!(reason_in(&id), Some(Reason::Sampled));
        assert!(sampled_by_id(&id, 100.0));
        assert!(!sampled_by_id(&id, 0.0));
        // 0x7b8f3a4c % 10000 = 4140: in above 41.40%, out at it.
        assert!(sampled_by_id(&id, 41.41) && !sampled_by_id(&id, 41.40));
    }
}
