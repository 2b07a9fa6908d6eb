//! Route match conditions: path, headers (pseudo-headers included) and query
//! parameters, compiled from Envoy's matchers and evaluated per request.
//!
//! Semantics follow Envoy's: a missing header fails every matcher except an
//! inverted presence check, unless the matcher treats a missing header as
//! empty; `case_sensitive: false` applies to prefix and exact paths.

use envoy_types::pb::envoy::config::route::v3::{
    header_matcher, query_parameter_matcher, route_match, HeaderMatcher, QueryParameterMatcher,
    RouteMatch,
};
use envoy_types::pb::envoy::r#type::matcher::v3::{string_matcher, StringMatcher};
use http::HeaderName;
use regex::Regex;
use serde::Serialize;

/// What route matching reads of one request.
pub struct RequestView<'a> {
    pub method: &'a str,
    pub authority: &'a str,
    pub scheme: &'a str,
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub headers: &'a http::HeaderMap,
}

#[derive(Debug, Serialize)]
pub enum PathMatch {
    Prefix(String),
    Exact(String),
    /// `case_sensitive: false`: the pattern is stored lower-cased.
    PrefixIgnoreCase(String),
    ExactIgnoreCase(String),
    Regex(#[serde(with = "regex_text")] Regex),
    /// Envoy's `path_separated_prefix`: the path is the prefix, or the
    /// prefix and a `/` (whole segments: `/status` matches `/status/200`,
    /// not `/statuses`); the flag is `case_sensitive`.
    Segments(String, bool),
}

#[derive(Debug, Serialize)]
pub struct HeaderMatch {
    pub name: HeaderKey,
    pub value: ValueMatch,
    pub invert: bool,
    pub missing_as_empty: bool,
}

/// A header, or one of the pseudo-headers Envoy lets routes match on.
#[derive(Debug, Serialize)]
pub enum HeaderKey {
    Method,
    Authority,
    Scheme,
    Path,
    Named(#[serde(with = "header_name_text")] HeaderName),
}

#[derive(Debug, Serialize)]
pub struct QueryMatch {
    pub name: String,
    pub value: ValueMatch,
}

#[derive(Debug, Clone, Serialize)]
pub enum ValueMatch {
    Exact(String),
    Prefix(String),
    Regex(#[serde(with = "regex_text")] Regex),
    Present,
}

mod header_name_text {
    pub fn serialize<S: serde::Serializer>(n: &http::HeaderName, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(n.as_str())
    }
}

pub(super) mod regex_text {
    pub fn serialize<S: serde::Serializer>(r: &regex::Regex, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(r.as_str())
    }
}

impl PathMatch {
    pub fn matches(&self, path: &str) -> bool {
        match self {
            PathMatch::Prefix(p) => path.starts_with(p.as_str()),
            PathMatch::Exact(p) => path == p,
            PathMatch::PrefixIgnoreCase(p) => path
                .get(..p.len())
                .is_some_and(|head| head.eq_ignore_ascii_case(p)),
            PathMatch::ExactIgnoreCase(p) => path.eq_ignore_ascii_case(p),
            PathMatch::Regex(r) => r.is_match(path),
            PathMatch::Segments(p, case_sensitive) => {
                let Some(head) = path.get(..p.len()) else {
                    return false;
                };
                let same = if *case_sensitive {
                    head == p
                } else {
                    head.eq_ignore_ascii_case(p)
                };
                same && matches!(path.as_bytes().get(p.len()), None | Some(b'/'))
            }
        }
    }
}

impl ValueMatch {
    pub(crate) fn matches(&self, value: &str) -> bool {
        match self {
            ValueMatch::Present => true,
            ValueMatch::Exact(e) => value == e,
            ValueMatch::Prefix(p) => value.starts_with(p.as_str()),
            ValueMatch::Regex(r) => r.is_match(value),
        }
    }
}

impl HeaderMatch {
    pub fn matches(&self, req: &RequestView) -> bool {
        let value = match &self.name {
            HeaderKey::Method => Some(req.method),
            HeaderKey::Authority => Some(req.authority),
            HeaderKey::Scheme => Some(req.scheme),
            HeaderKey::Path => Some(req.path),
            HeaderKey::Named(n) => req.headers.get(n).and_then(|v| v.to_str().ok()),
        };
        match value {
            None if !self.missing_as_empty => {
                matches!(self.value, ValueMatch::Present) && self.invert
            }
            value => self.value.matches(value.unwrap_or("")) != self.invert,
        }
    }
}

impl QueryMatch {
    /// The first parameter of that name decides, as in Envoy.
    pub fn matches(&self, query: Option<&str>) -> bool {
        let value = query.unwrap_or("").split('&').find_map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            (name == self.name).then_some(value)
        });
        value.is_some_and(|v| self.value.matches(v))
    }
}

pub(super) fn compile_path(m: &RouteMatch) -> Result<PathMatch, String> {
    let case_sensitive = m.case_sensitive.as_ref().is_none_or(|b| b.value);
    Ok(match (&m.path_specifier, case_sensitive) {
        (Some(route_match::PathSpecifier::Prefix(p)), true) => PathMatch::Prefix(p.clone()),
        (Some(route_match::PathSpecifier::Path(p)), true) => PathMatch::Exact(p.clone()),
        (Some(route_match::PathSpecifier::Prefix(p)), false) => {
            PathMatch::PrefixIgnoreCase(p.to_ascii_lowercase())
        }
        (Some(route_match::PathSpecifier::Path(p)), false) => {
            PathMatch::ExactIgnoreCase(p.to_ascii_lowercase())
        }
        (Some(route_match::PathSpecifier::SafeRegex(r)), _) => {
            PathMatch::Regex(full_regex(&r.regex)?)
        }
        (Some(route_match::PathSpecifier::PathSeparatedPrefix(p)), sensitive) => {
            if p.ends_with('/') || p.contains(['?', '#']) {
                return Err(format!(
                    "path_separated_prefix {p:?} must not end in / or hold ? or #"
                ));
            }
            let p = if sensitive {
                p.clone()
            } else {
                p.to_ascii_lowercase()
            };
            PathMatch::Segments(p, sensitive)
        }
        _ => {
            return Err(
                "path match must be prefix, path, path_separated_prefix or safe_regex".into(),
            )
        }
    })
}

pub(crate) fn compile_header(h: &HeaderMatcher) -> Result<HeaderMatch, String> {
    let value = match &h.header_match_specifier {
        Some(header_matcher::HeaderMatchSpecifier::StringMatch(sm)) => string_match(sm)?,
        Some(header_matcher::HeaderMatchSpecifier::PresentMatch(true)) => ValueMatch::Present,
        _ => {
            return Err(format!(
                "header {:?}: only string_match and present_match are supported",
                h.name
            ))
        }
    };
    let name = match h.name.as_str() {
        ":method" => HeaderKey::Method,
        ":authority" | "host" => HeaderKey::Authority,
        ":scheme" => HeaderKey::Scheme,
        ":path" => HeaderKey::Path,
        other => HeaderKey::Named(
            HeaderName::from_bytes(other.as_bytes())
                .map_err(|_| format!("header {other:?}: not a valid header name"))?,
        ),
    };
    Ok(HeaderMatch {
        name,
        value,
        invert: h.invert_match,
        missing_as_empty: h.treat_missing_header_as_empty,
    })
}

pub(super) fn compile_query(q: &QueryParameterMatcher) -> Result<QueryMatch, String> {
    use query_parameter_matcher::QueryParameterMatchSpecifier as S;
    let value = match &q.query_parameter_match_specifier {
        Some(S::StringMatch(sm)) => string_match(sm)?,
        Some(S::PresentMatch(true)) => ValueMatch::Present,
        _ => {
            return Err(format!(
                "query parameter {:?}: only string_match and present_match are supported",
                q.name
            ))
        }
    };
    Ok(QueryMatch {
        name: q.name.clone(),
        value,
    })
}

/// Exact and prefix matches stay plain; suffix, contains and any match
/// that ignores case become a regex (`(?i)` for the latter), so the
/// request path compares strings or runs one regex, nothing else.
pub(crate) fn string_match(sm: &StringMatcher) -> Result<ValueMatch, String> {
    use string_matcher::MatchPattern as P;
    let fold = if sm.ignore_case { "(?i)" } else { "" };
    let escaped = |v: &str| regex::escape(v);
    Ok(match &sm.match_pattern {
        Some(P::Exact(v)) if !sm.ignore_case => ValueMatch::Exact(v.clone()),
        Some(P::Prefix(v)) if !sm.ignore_case => ValueMatch::Prefix(v.clone()),
        Some(P::Exact(v)) => ValueMatch::Regex(full_regex(&format!("{fold}{}", escaped(v)))?),
        Some(P::Prefix(v)) => ValueMatch::Regex(full_regex(&format!("{fold}{}.*", escaped(v)))?),
        Some(P::Suffix(v)) => ValueMatch::Regex(full_regex(&format!("{fold}.*{}", escaped(v)))?),
        Some(P::Contains(v)) => {
            ValueMatch::Regex(full_regex(&format!("{fold}.*{}.*", escaped(v)))?)
        }
        Some(P::SafeRegex(r)) => ValueMatch::Regex(full_regex(&format!("{fold}{}", r.regex))?),
        _ => return Err("a string match needs a pattern".into()),
    })
}

/// Envoy's safe_regex must match the whole value.
pub(super) fn full_regex(r: &str) -> Result<Regex, String> {
    Regex::new(&format!("^(?:{r})$")).map_err(|e| format!("regex {r:?}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view<'a>(path: &'a str, query: Option<&'a str>, h: &'a http::HeaderMap) -> RequestView<'a> {
        RequestView {
            method: "GET",
            authority: "reviews:9080",
            scheme: "http",
            path,
            query,
            headers: h,
        }
    }

    fn header(
        name: HeaderKey,
        value: ValueMatch,
        invert: bool,
        missing_as_empty: bool,
    ) -> HeaderMatch {
        HeaderMatch {
            name,
            value,
            invert,
            missing_as_empty,
        }
    }

    /// Envoy's `path_separated_prefix`, as istiod writes an Ingress's
    /// `Prefix` path: whole segments only.
    #[test]
    fn path_separated_prefixes_match_whole_segments() {
        let compiled = |p: &str, case_sensitive: bool| {
            compile_path(&RouteMatch {
                path_specifier: Some(route_match::PathSpecifier::PathSeparatedPrefix(p.into())),
                case_sensitive: Some(envoy_types::pb::google::protobuf::BoolValue {
                    value: case_sensitive,
                }),
                ..Default::default()
            })
        };
        let status = compiled("/status", true).unwrap();
        for (path, want) in [
            ("/status", true),
            ("/status/", true),
            ("/status/200", true),
            ("/statuses", false),
            ("/stat", false),
            ("/Status/200", false),
            ("/", false),
        ] {
            assert_eq!(status.matches(path), want, "{path}");
        }
        assert!(compiled("/Status", false).unwrap().matches("/STATUS/418"));
        assert!(compiled("/status/", true).is_err(), "no trailing slash");
    }

    #[test]
    fn pseudo_headers_read_the_request_line() {
        let h = http::HeaderMap::new();
        let r = view("/", None, &h);
        let method = header(
            HeaderKey::Method,
            ValueMatch::Exact("GET".into()),
            false,
            false,
        );
        assert!(method.matches(&r));
        let post = header(
            HeaderKey::Method,
            ValueMatch::Exact("POST".into()),
            false,
            false,
        );
        assert!(!post.matches(&r));
        let authority = header(
            HeaderKey::Authority,
            ValueMatch::Prefix("reviews".into()),
            false,
            false,
        );
        assert!(authority.matches(&r));
    }

    #[test]
    fn missing_headers_follow_envoy() {
        let h = http::HeaderMap::new();
        let r = view("/", None, &h);
        let name = || HeaderKey::Named(HeaderName::from_static("x-canary"));
        assert!(!header(name(), ValueMatch::Exact("1".into()), false, false).matches(&r));
        assert!(!header(name(), ValueMatch::Exact("1".into()), true, false).matches(&r));
        assert!(header(name(), ValueMatch::Present, true, false).matches(&r));
        // withoutHeaders, as Istio sends it: absent counts as not matching.
        assert!(header(name(), ValueMatch::Exact("1".into()), true, true).matches(&r));
        let mut h = http::HeaderMap::new();
        h.insert("x-canary", "1".parse().unwrap());
        let r = view("/", None, &h);
        assert!(!header(name(), ValueMatch::Exact("1".into()), true, true).matches(&r));
        assert!(header(name(), ValueMatch::Exact("1".into()), false, false).matches(&r));
    }

    #[test]
    fn query_parameters_and_case() {
        let q = QueryMatch {
            name: "version".into(),
            value: ValueMatch::Exact("2".into()),
        };
        assert!(q.matches(Some("a=1&version=2")));
        assert!(
            !q.matches(Some("version=3&version=2")),
            "the first one decides"
        );
        assert!(!q.matches(None));
        let present = QueryMatch {
            name: "debug".into(),
            value: ValueMatch::Present,
        };
        assert!(present.matches(Some("debug")));
        let p = PathMatch::PrefixIgnoreCase("/api".into());
        assert!(p.matches("/API/v1") && !p.matches("/ap"));
        assert!(PathMatch::ExactIgnoreCase("/login".into()).matches("/LOGIN"));
        let regex = PathMatch::Regex(full_regex("/api/v[0-9]+").unwrap());
        assert!(regex.matches("/api/v1") && !regex.matches("/api/v1/x"));
    }
}
