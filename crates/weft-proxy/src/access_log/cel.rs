//! Access-log filters in CEL (Istio's Telemetry
//! `accessLogging.filter.expression`, which istiod hands to Envoy's CEL
//! filter). `weft_config::cel` parses them — the same parser validation
//! runs at apply, so what is refused there is refused here — and this
//! module binds their request headers to the entry's captures and
//! evaluates them. Anything outside the subset is refused at compile
//! time, so a filter never silently logs everything or nothing.

use weft_config::cel::{self, Attr, Cmp, StrMethod, Val};

use super::Entry;

/// A compiled filter: request headers are capture slots.
pub(crate) type Expr = cel::Expr<usize>;

pub(crate) fn parse(text: &str, wanted: &mut super::format::Wanted) -> Result<Expr, String> {
    let parsed = cel::parse(text).map_err(|e| format!("filter {text:?}: {e}"))?;
    parsed.map_headers(&mut |name: String| {
        let h = http::HeaderName::try_from(name.as_str())
            .map_err(|_| format!("filter: {name:?} is not a header name"))?;
        Ok(super::format::Wanted::index(&mut wanted.request, h))
    })
}

/// Whether the entry passes; an error (a type mismatch, a missing
/// attribute compared by order) is false, as Envoy's CEL filter does.
pub(crate) fn matches(x: &Expr, e: &Entry) -> bool {
    eval(x, e) == Val::Bool(true)
}

fn eval(x: &Expr, e: &Entry) -> Val {
    match x {
        cel::Expr::Or(a, b) => Val::Bool(matches(a, e) || matches(b, e)),
        cel::Expr::And(a, b) => Val::Bool(matches(a, e) && matches(b, e)),
        cel::Expr::Not(a) => match eval(a, e) {
            Val::Bool(b) => Val::Bool(!b),
            _ => Val::Null,
        },
        cel::Expr::Cmp(c, a, b) => compare(*c, eval(a, e), eval(b, e)),
        cel::Expr::Method(m, s, arg) => match (eval(s, e), eval(arg, e)) {
            (Val::Str(s), Val::Str(a)) => Val::Bool(match m {
                StrMethod::StartsWith => s.starts_with(&a),
                StrMethod::EndsWith => s.ends_with(&a),
                StrMethod::Contains => s.contains(&a),
            }),
            _ => Val::Null,
        },
        cel::Expr::Attr(a) => value(a, e),
        cel::Expr::Lit(v) => v.clone(),
    }
}
fn compare(c: Cmp, a: Val, b: Val) -> Val {
    use std::cmp::Ordering::*;
    // A missing attribute is an error in CEL, whatever the comparison.
    if a == Val::Null || b == Val::Null {
        return Val::Null;
    }
    let order = match (&a, &b) {
        (Val::Int(x), Val::Int(y)) => x.cmp(y),
        (Val::Str(x), Val::Str(y)) => x.cmp(y),
        (Val::Bool(x), Val::Bool(y)) => x.cmp(y),
        // Unequal types: equal never, ordered never.
        _ => {
            return match c {
                Cmp::Eq => Val::Bool(false),
                Cmp::Ne => Val::Bool(true),
                _ => Val::Null,
            }
        }
    };
    Val::Bool(match c {
        Cmp::Eq => order == Equal,
        Cmp::Ne => order != Equal,
        Cmp::Lt => order == Less,
        Cmp::Le => order != Greater,
        Cmp::Gt => order == Greater,
        Cmp::Ge => order != Less,
    })
}

/// An attribute's value in the entry.
fn value(a: &Attr<usize>, e: &Entry) -> Val {
    // A TCP connection has no request attributes.
    let http = e.is_http();
    let s = |v: &str| {
        if http {
            Val::Str(v.to_string())
        } else {
            Val::Null
        }
    };
    let opt = |v: Option<String>| v.map_or(Val::Null, Val::Str);
    match a {
        Attr::ResponseCode => Val::Int(i64::from(e.status)),
        Attr::ResponseCodeDetails => opt(e.details().map(str::to_string)),
        Attr::Method => s(e.method()),
        Attr::Path => s(e.path()),
        Attr::UrlPath => s(e.url_path()),
        Attr::Host => s(&e.authority),
        Attr::Protocol => s(e.protocol),
        Attr::RequestId => s(&e.request_id),
        Attr::RequestHeader(i) => opt(e
            .request_headers
            .get(*i)
            .and_then(|v| v.as_ref()?.to_str().ok())
            .map(str::to_string)),
        Attr::Duration => Val::Int(e.duration.as_millis() as i64),
        Attr::SourceAddress => opt(e.downstream.map(|a| a.ip().to_string())),
        Attr::SourcePort => e
            .downstream
            .map_or(Val::Null, |a| Val::Int(a.port().into())),
        Attr::DestinationAddress => opt(e.downstream_local.map(|a| a.ip().to_string())),
        Attr::DestinationPort => e
            .downstream_local
            .map_or(Val::Null, |a| Val::Int(a.port().into())),
        Attr::UpstreamAddress => opt(e.upstream.map(|a| a.ip().to_string())),
        Attr::Mtls => Val::Bool(e.peer_principal.is_some()),
        Attr::RequestedServerName => opt(e.server_name.clone()),
        Attr::ClusterName => Val::Str(e.cluster.to_string()),
        Attr::RouteName => Val::Str(e.route.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(status: u16, path: &str) -> Entry {
        Entry {
            status,
            method: Some(http::Method::GET),
            path: Some(path.parse().unwrap()),
            protocol: "HTTP/1.1",
            ..Default::default()
        }
    }

    fn check(expr: &str, e: &Entry) -> bool {
        matches(&parse(expr, &mut Default::default()).unwrap(), e)
    }

    #[test]
    fn istios_examples_filter() {
        assert!(check("response.code >= 400", &entry(503, "/")));
        assert!(!check("response.code >= 400", &entry(200, "/")));
        assert!(check(
            "response.code >= 500 || request.url_path.startsWith('/api')",
            &entry(200, "/api/v1?x=1")
        ));
        assert!(!check(
            "!(request.path == '/healthz')",
            &entry(200, "/healthz")
        ));
        assert!(check(
            "request.method == \"GET\" && response.code == 200u",
            &entry(200, "/")
        ));
        // A missing header compared by order is an error: not logged.
        assert!(!check("request.headers['x-a'] > 'b'", &entry(200, "/")));
        assert!(!check("request.headers['x-a'] != 'b'", &entry(200, "/")));
        let deep = format!("{}response.code == 200", "!".repeat(10_000));
        assert!(parse(&deep, &mut Default::default()).is_err());
    }

    #[test]
    fn unsupported_expressions_are_refused() {
        for bad in [
            "response.flags > 1",
            "response.size > 1",
            "request.code",
            "a ==",
            "size(request.path) > 1",
        ] {
            assert!(parse(bad, &mut Default::default()).is_err(), "{bad}");
        }
    }
}
