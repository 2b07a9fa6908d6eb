//! Header mutations (`request_headers_to_add/remove`, `response_headers_…`)
//! with names and values parsed once, applied as Envoy applies them:
//! removals first, then additions in order.

use envoy_types::pb::envoy::config::core::v3::{
    header_value_option::HeaderAppendAction, HeaderValueOption,
};
use http::header::{HeaderMap, HeaderName, HeaderValue};
use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Append {
    /// Add a value beside any already there (Istio's `add`).
    AppendOrAdd,
    AddIfAbsent,
    /// Replace whatever is there (Istio's `set`).
    OverwriteOrAdd,
    OverwriteIfExists,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct HeaderOps {
    #[serde(serialize_with = "names")]
    pub remove: Vec<HeaderName>,
    #[serde(serialize_with = "pairs")]
    pub add: Vec<(HeaderName, HeaderValue, Append)>,
}

impl HeaderOps {
    pub fn is_empty(&self) -> bool {
        self.remove.is_empty() && self.add.is_empty()
    }

    pub fn apply(&self, headers: &mut HeaderMap) {
        for name in &self.remove {
            headers.remove(name);
        }
        for (name, value, append) in &self.add {
            match append {
                Append::AppendOrAdd => {
                    headers.append(name.clone(), value.clone());
                }
                Append::OverwriteOrAdd => {
                    headers.insert(name.clone(), value.clone());
                }
                Append::AddIfAbsent => {
                    if !headers.contains_key(name) {
                        headers.insert(name.clone(), value.clone());
                    }
                }
                Append::OverwriteIfExists => {
                    if headers.contains_key(name) {
                        headers.insert(name.clone(), value.clone());
                    }
                }
            }
        }
    }

    /// These mutations followed by `later`'s (a route's own, then its
    /// virtual host's, as Envoy orders them).
    pub fn then(mut self, later: &HeaderOps) -> HeaderOps {
        self.remove.extend(later.remove.iter().cloned());
        self.add.extend(later.add.iter().cloned());
        self
    }
}

pub(crate) fn compile_header_ops(
    add: &[HeaderValueOption],
    remove: &[String],
) -> Result<HeaderOps, String> {
    let remove = remove
        .iter()
        .map(|n| header_name(n))
        .collect::<Result<_, _>>()?;
    let add = add.iter().map(compile_add).collect::<Result<_, _>>()?;
    Ok(HeaderOps { remove, add })
}

// `append` is deprecated in Envoy's API but still honoured by Envoy.
#[allow(deprecated)]
fn compile_add(o: &HeaderValueOption) -> Result<(HeaderName, HeaderValue, Append), String> {
    let h = o
        .header
        .as_ref()
        .ok_or("header_value_option without a header")?;
    let name = header_name(&h.key)?;
    let raw = if h.raw_value.is_empty() {
        h.value.as_bytes()
    } else {
        h.raw_value.as_slice()
    };
    let value = HeaderValue::from_bytes(raw)
        .map_err(|_| format!("header {:?}: value is not a valid header value", h.key))?;
    // The deprecated `append` flag, when set, wins over append_action.
    let append = match o.append.as_ref().map(|b| b.value) {
        Some(true) => Append::AppendOrAdd,
        Some(false) => Append::OverwriteOrAdd,
        None => match HeaderAppendAction::try_from(o.append_action) {
            Ok(HeaderAppendAction::AppendIfExistsOrAdd) => Append::AppendOrAdd,
            Ok(HeaderAppendAction::AddIfAbsent) => Append::AddIfAbsent,
            Ok(HeaderAppendAction::OverwriteIfExistsOrAdd) => Append::OverwriteOrAdd,
            Ok(HeaderAppendAction::OverwriteIfExists) => Append::OverwriteIfExists,
            Err(_) => return Err(format!("unknown append_action {}", o.append_action)),
        },
    };
    Ok((name, value, append))
}

fn header_name(n: &str) -> Result<HeaderName, String> {
    if n.starts_with(':') || n.eq_ignore_ascii_case("host") {
        return Err(format!(
            "header {n:?}: pseudo-headers and host cannot be mutated"
        ));
    }
    HeaderName::from_bytes(n.as_bytes()).map_err(|_| format!("{n:?} is not a valid header name"))
}

fn names<S: serde::Serializer>(v: &[HeaderName], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(v.iter().map(HeaderName::as_str))
}

fn pairs<S: serde::Serializer>(
    v: &[(HeaderName, HeaderValue, Append)],
    s: S,
) -> Result<S::Ok, S::Error> {
    s.collect_seq(
        v.iter()
            .map(|(n, v, a)| (n.as_str(), String::from_utf8_lossy(v.as_bytes()), a)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::config::core::v3::HeaderValue as Hv;

    fn opt(key: &str, value: &str, action: HeaderAppendAction) -> HeaderValueOption {
        HeaderValueOption {
            header: Some(Hv {
                key: key.into(),
                value: value.into(),
                ..Default::default()
            }),
            append_action: action as i32,
            ..Default::default()
        }
    }

    #[test]
    fn removals_then_additions_in_order() {
        let ops = compile_header_ops(
            &[
                opt("x-set", "new", HeaderAppendAction::OverwriteIfExistsOrAdd),
                opt("x-add", "two", HeaderAppendAction::AppendIfExistsOrAdd),
                opt("x-absent", "kept", HeaderAppendAction::AddIfAbsent),
                opt("x-gone", "back", HeaderAppendAction::OverwriteIfExists),
            ],
            &["x-gone".into()],
        )
        .unwrap();
        let mut h = HeaderMap::new();
        h.insert("x-set", HeaderValue::from_static("old"));
        h.insert("x-add", HeaderValue::from_static("one"));
        h.insert("x-absent", HeaderValue::from_static("there"));
        h.insert("x-gone", HeaderValue::from_static("bye"));
        ops.apply(&mut h);
        assert_eq!(h["x-set"], "new");
        let adds: Vec<_> = h.get_all("x-add").iter().collect();
        assert_eq!(adds, ["one", "two"]);
        assert_eq!(h["x-absent"], "there");
        assert!(
            !h.contains_key("x-gone"),
            "removed, and not re-added by OverwriteIfExists"
        );
    }

    #[test]
    fn host_and_pseudo_headers_are_refused() {
        assert!(compile_header_ops(&[], &[":path".into()]).is_err());
        assert!(
            compile_header_ops(&[opt("Host", "x", HeaderAppendAction::AddIfAbsent)], &[]).is_err()
        );
    }
}
