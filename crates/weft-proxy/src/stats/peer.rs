//! Who is at either end of a request, as Istio's metrics label it, and
//! Istio's HTTP metadata exchange: each sidecar sends its own workload's
//! metadata in `x-envoy-peer-metadata` (a base64 `google.protobuf.Struct`
//! with Istio's node metadata keys) and `x-envoy-peer-metadata-id`, the
//! client on the request and the server on the response, and takes the
//! other side's off before the app sees it. Being Istio's own encoding,
//! Envoy sidecars and Weft's understand each other.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::sync::Arc;

use base64::Engine;
use envoy_types::pb::google::protobuf::{value::Kind, Struct, Value};
use http::{HeaderMap, HeaderName, HeaderValue};
use prost::Message;

pub(crate) const METADATA: HeaderName = HeaderName::from_static("x-envoy-peer-metadata");
pub(crate) const METADATA_ID: HeaderName = HeaderName::from_static("x-envoy-peer-metadata-id");

const UNKNOWN: &str = "unknown";

/// One workload's labels for the metrics (`source_*` or `destination_*`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Peer {
    pub workload: String,
    pub namespace: String,
    pub app: String,
    pub version: String,
    pub canonical_service: String,
    pub canonical_revision: String,
    pub cluster: String,
    pub service_account: String,
}

impl Default for Peer {
    /// A peer nothing is known of: every label `unknown`, as Istio writes.
    fn default() -> Peer {
        Peer {
            workload: UNKNOWN.into(),
            namespace: UNKNOWN.into(),
            app: UNKNOWN.into(),
            version: UNKNOWN.into(),
            canonical_service: UNKNOWN.into(),
            canonical_revision: UNKNOWN.into(),
            cluster: UNKNOWN.into(),
            service_account: UNKNOWN.into(),
        }
    }
}

impl Peer {
    /// A peer from an endpoint's `istio.workload` metadata (`name;
    /// namespace;canonical service;canonical revision;cluster`). App and
    /// version are not in it; Istio takes the canonical ones.
    pub fn of_endpoint(text: &str) -> Option<Peer> {
        let mut parts = text.split(';');
        let mut next = || {
            parts
                .next()
                .filter(|s| !s.is_empty())
                .unwrap_or(UNKNOWN)
                .to_string()
        };
        let (workload, namespace, service, revision, cluster) =
            (next(), next(), next(), next(), next());
        (workload != UNKNOWN).then(|| Peer {
            workload,
            namespace,
            app: service.clone(),
            version: revision.clone(),
            canonical_service: service,
            canonical_revision: revision,
            cluster,
            service_account: UNKNOWN.into(),
        })
    }
}

/// Istio's node metadata (the keys pilot-agent writes: `NAME`,
/// `NAMESPACE`, `WORKLOAD_NAME`, `LABELS`, `CLUSTER_ID`,
/// `SERVICE_ACCOUNT`, …), as the proxy was started with it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NodeMetadata(pub serde_json::Map<String, serde_json::Value>);

impl NodeMetadata {
    fn text(&self, key: &str) -> Option<&str> {
        self.0
            .get(key)
            .and_then(|v| v.as_str())
            .filter(|s| !s.is_empty())
    }

    fn labels(&self) -> BTreeMap<String, String> {
        let Some(serde_json::Value::Object(m)) = self.0.get("LABELS") else {
            return BTreeMap::new();
        };
        m.iter()
            .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
            .collect()
    }

    /// Envoy's service cluster as Istio's agent sets it: `<app>.<namespace>`,
    /// else the workload's name, else `istio-proxy` (the Zipkin service).
    pub fn service_cluster(&self) -> String {
        let labels = self.labels();
        let name = labels
            .get("app")
            .map(String::as_str)
            .or(self.text("WORKLOAD_NAME"))
            .unwrap_or("istio-proxy");
        format!("{name}.{}", self.text("NAMESPACE").unwrap_or("default"))
    }

    /// The pod's first address (`INSTANCE_IPS`).
    pub fn instance_ip(&self) -> Option<std::net::IpAddr> {
        self.text("INSTANCE_IPS")?
            .split(',')
            .next()?
            .trim()
            .parse()
            .ok()
    }

    /// The workload these metadata describe, labelled as Istio labels it.
    pub fn peer(&self) -> Peer {
        let labels = self.labels();
        let label = |k: &str| labels.get(k).map(String::as_str).filter(|s| !s.is_empty());
        let workload = self
            .text("WORKLOAD_NAME")
            .or(self.text("NAME"))
            .unwrap_or(UNKNOWN);
        Peer {
            workload: workload.into(),
            namespace: self.text("NAMESPACE").unwrap_or(UNKNOWN).into(),
            app: label("app").unwrap_or(UNKNOWN).into(),
            version: label("version").unwrap_or(UNKNOWN).into(),
            // Istio's canonical service and revision: the explicit label,
            // else Kubernetes' recommended one, else app/version, else the
            // workload's name and `latest`.
            canonical_service: label("service.istio.io/canonical-name")
                .or(label("app.kubernetes.io/name"))
                .or(label("app"))
                .unwrap_or(workload)
                .into(),
            canonical_revision: label("service.istio.io/canonical-revision")
                .or(label("app.kubernetes.io/version"))
                .or(label("version"))
                .unwrap_or("latest")
                .into(),
            cluster: self.text("CLUSTER_ID").unwrap_or(UNKNOWN).into(),
            service_account: self.text("SERVICE_ACCOUNT").unwrap_or(UNKNOWN).into(),
        }
    }

    /// As a protobuf `Struct` (the xDS node's metadata).
    pub fn to_struct(&self) -> Option<Struct> {
        let fields = self
            .0
            .iter()
            .map(|(k, v)| (k.clone(), json_to_value(v)))
            .collect();
        (!self.0.is_empty()).then_some(Struct { fields })
    }

    /// The exchange header's value: the metadata as a protobuf `Struct`,
    /// base64 (standard alphabet, padded), as Istio's filter encodes it.
    pub fn header_value(&self) -> Option<HeaderValue> {
        let bytes = self.to_struct()?.encode_to_vec();
        let text = base64::engine::general_purpose::STANDARD.encode(bytes);
        HeaderValue::from_str(&text).ok()
    }

    /// Metadata from an exchange header (None when it does not decode).
    pub fn from_header(value: &HeaderValue) -> Option<NodeMetadata> {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(value.as_bytes())
            .ok()?;
        let s = Struct::decode(bytes.as_slice()).ok()?;
        let map = s
            .fields
            .into_iter()
            .map(|(k, v)| (k, value_to_json(v)))
            .collect();
        Some(NodeMetadata(map))
    }
}

/// Takes the other side's exchange headers off `headers`: the peer they
/// describe, if they did.
pub(crate) fn take(headers: &mut HeaderMap) -> Option<Arc<Peer>> {
    // Only a mesh peer sends them: one pass over the names says so.
    if !headers.keys().any(|k| k == METADATA || k == METADATA_ID) {
        return None;
    }
    headers.remove(METADATA_ID);
    let value = headers.remove(METADATA)?;
    known(&value)
}

/// Peers decoded on this thread, by their header's bytes, up to
/// `KNOWN_LIMIT` (then forgotten all at once).
type Known = rustc_hash::FxHashMap<Box<[u8]>, Arc<Peer>>;

/// Distinct peers remembered per worker thread: a sidecar's callers or
/// callees are a handful of workloads.
const KNOWN_LIMIT: usize = 64;

thread_local! {
    static KNOWN: RefCell<Known> = RefCell::default();
}

/// The peer an exchange header describes. A peer sends the same bytes on
/// every request, and decoding them (base64, a protobuf `Struct`, its
/// labels, eight strings) is done once per thread, not per request. The
/// key is a copy: a `HeaderValue` would keep the request head it shares
/// alive.
fn known(value: &HeaderValue) -> Option<Arc<Peer>> {
    KNOWN.with(|known| {
        let mut known = known.borrow_mut();
        if let Some(peer) = known.get(value.as_bytes()) {
            return Some(peer.clone());
        }
        let peer = Arc::new(NodeMetadata::from_header(value)?.peer());
        if known.len() >= KNOWN_LIMIT {
            known.clear();
        }
        known.insert(value.as_bytes().into(), peer.clone());
        Some(peer)
    })
}

/// Takes any exchange headers off `headers`.
pub(crate) fn strip(headers: &mut HeaderMap) {
    crate::http::remove_all(headers, &[METADATA, METADATA_ID]);
}

/// This proxy's own exchange headers, added to `headers`.
pub(crate) fn put(headers: &mut HeaderMap, own: &Own) {
    if let Some(v) = &own.header {
        headers.insert(METADATA, v.clone());
        headers.insert(METADATA_ID, own.id.clone());
    }
}

/// This proxy's workload, ready to label and to send.
#[derive(Debug, Clone)]
pub struct Own {
    pub peer: Arc<Peer>,
    header: Option<HeaderValue>,
    id: HeaderValue,
}

impl Own {
    pub fn new(metadata: &NodeMetadata, node_id: &str) -> Own {
        Own {
            peer: Arc::new(metadata.peer()),
            header: metadata.header_value(),
            id: HeaderValue::from_str(node_id).unwrap_or(HeaderValue::from_static("unknown")),
        }
    }
}

fn json_to_value(v: &serde_json::Value) -> Value {
    let kind = match v {
        serde_json::Value::Null => Kind::NullValue(0),
        serde_json::Value::Bool(b) => Kind::BoolValue(*b),
        serde_json::Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or_default()),
        serde_json::Value::String(s) => Kind::StringValue(s.clone()),
        serde_json::Value::Array(a) => {
            Kind::ListValue(envoy_types::pb::google::protobuf::ListValue {
                values: a.iter().map(json_to_value).collect(),
            })
        }
        serde_json::Value::Object(m) => Kind::StructValue(Struct {
            fields: m
                .iter()
                .map(|(k, v)| (k.clone(), json_to_value(v)))
                .collect(),
        }),
    };
    Value { kind: Some(kind) }
}

fn value_to_json(v: Value) -> serde_json::Value {
    match v.kind {
        None | Some(Kind::NullValue(_)) => serde_json::Value::Null,
        Some(Kind::BoolValue(b)) => b.into(),
        Some(Kind::NumberValue(n)) => n.into(),
        Some(Kind::StringValue(s)) => s.into(),
        Some(Kind::ListValue(l)) => l.values.into_iter().map(value_to_json).collect(),
        Some(Kind::StructValue(s)) => s
            .fields
            .into_iter()
            .map(|(k, v)| (k, value_to_json(v)))
            .collect::<serde_json::Map<_, _>>()
            .into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reviews() -> NodeMetadata {
        let v = serde_json::json!({
            "NAME": "reviews-v2-0", "NAMESPACE": "default", "WORKLOAD_NAME": "reviews-v2",
            "CLUSTER_ID": "Kubernetes", "SERVICE_ACCOUNT": "bookinfo-reviews",
            "LABELS": {"app": "reviews", "version": "v2"},
        });
        NodeMetadata(v.as_object().unwrap().clone())
    }

    #[test]
    fn a_peer_is_decoded_once_per_thread() {
        let value = reviews().header_value().expect("encodes");
        let mut headers = HeaderMap::new();
        headers.insert(METADATA, value.clone());
        let first = take(&mut headers).expect("a peer");
        assert_eq!(first.workload, "reviews-v2");
        assert!(!headers.contains_key(METADATA), "taken off");
        headers.insert(METADATA, value);
        let again = take(&mut headers).expect("a peer");
        assert!(
            Arc::ptr_eq(&first, &again),
            "the same peer, not decoded again"
        );
        headers.insert(METADATA, HeaderValue::from_static("not base64!"));
        assert!(take(&mut headers).is_none(), "garbage describes no one");
    }

    #[test]
    fn labels_follow_istios_canonical_rules() {
        let p = reviews().peer();
        assert_eq!(p.workload, "reviews-v2");
        assert_eq!((p.app.as_str(), p.version.as_str()), ("reviews", "v2"));
        assert_eq!(p.canonical_service, "reviews");
        assert_eq!(p.canonical_revision, "v2");
        let bare = NodeMetadata(
            serde_json::json!({"NAME": "gw", "NAMESPACE": "istio-system"})
                .as_object()
                .unwrap()
                .clone(),
        );
        let p = bare.peer();
        assert_eq!(
            (p.canonical_service.as_str(), p.canonical_revision.as_str()),
            ("gw", "latest")
        );
        assert_eq!(p.app, "unknown");
        assert_eq!(Peer::default().workload, "unknown");
    }

    #[test]
    fn the_exchange_header_round_trips_and_is_taken_off() {
        let own = Own::new(
            &reviews(),
            "sidecar~198.18.0.3~reviews-v2-0.default~default.svc.cluster.local",
        );
        let mut headers = HeaderMap::new();
        put(&mut headers, &own);
        assert!(headers.contains_key(METADATA_ID));
        let peer = take(&mut headers).expect("decodes");
        assert_eq!(*peer, *own.peer);
        assert!(headers.is_empty(), "{headers:?}");
        headers.insert(METADATA, HeaderValue::from_static("not base64!"));
        assert!(take(&mut headers).is_none());
        assert!(headers.is_empty());
    }
}
