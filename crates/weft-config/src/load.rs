//! Turning text (multi-document YAML, JSON, `List` kinds) into resources,
//! remembering the file and line of every document so that each message can
//! point at it.

use std::path::Path;

use serde::de::DeserializeOwned;
use serde::Deserialize;

use crate::error::{ConfigError, Problem, Severity};
use crate::extensions::{TrafficExtension, WasmPlugin};
use crate::gateway_api::{
    GatewayClass, GrpcRoute, HttpRoute, KubeGateway, ReferenceGrant, TcpRoute, TlsRoute,
};
use crate::kube::{self, Ingress, IngressClass};
use crate::meta::{ObjectMeta, Origin};
use crate::networking::{
    DestinationRule, EnvoyFilter, Gateway, ProxyConfig, ServiceEntry, Sidecar, VirtualService,
    WorkloadEntry, WorkloadGroup,
};
use crate::resource::{Kind, Resource, Spec};
use crate::security::{AuthorizationPolicy, PeerAuthentication, RequestAuthentication};
use crate::telemetry::Telemetry;
use crate::validate;

/// What a load produced: the resources that passed, and every problem found.
/// A document with an error is not in `resources`; warnings do not reject.
#[derive(Debug, Default)]
pub struct Loaded {
    pub resources: Vec<Resource>,
    pub problems: Vec<Problem>,
}

impl Loaded {
    pub fn errors(&self) -> impl Iterator<Item = &Problem> {
        self.problems
            .iter()
            .filter(|p| p.severity == Severity::Error)
    }

    pub fn has_errors(&self) -> bool {
        self.errors().next().is_some()
    }

    fn extend(&mut self, other: Loaded) {
        self.resources.extend(other.resources);
        self.problems.extend(other.problems);
    }
}

/// Loads every `*.yaml`, `*.yml` and `*.json` file directly in `dir`, sorted
/// by name so that loads are repeatable. `skip` names files that are not
/// Istio config (the mesh description).
pub fn load_dir(dir: &Path, skip: &[&str]) -> Result<Loaded, ConfigError> {
    let mut out = Loaded::default();
    for path in config_files(dir, skip)? {
        let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::Io {
            path: path.display().to_string(),
            source,
        })?;
        out.extend(load_str(&text, &path.display().to_string()));
    }
    Ok(out)
}

/// The config files of a directory, sorted.
pub fn config_files(dir: &Path, skip: &[&str]) -> Result<Vec<std::path::PathBuf>, ConfigError> {
    let io = |source| ConfigError::Io {
        path: dir.display().to_string(),
        source,
    };
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let path = entry.map_err(io)?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let is_config = [".yaml", ".yml", ".json"].iter().any(|e| name.ends_with(e));
        if path.is_file() && is_config && !name.starts_with('.') && !skip.contains(&name) {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// Loads one text of any number of documents.
pub fn load_str(text: &str, file: &str) -> Loaded {
    load_str_in(text, file, None)
}

/// As `load_str`, with the documents placed in `namespace` (kubectl's
/// `apply -n`): one that names no namespace gets it, one that names
/// another is an error, as kubectl refuses it.
pub fn load_str_in(text: &str, file: &str, namespace: Option<&str>) -> Loaded {
    let mut out = Loaded::default();
    for doc in split_documents(text) {
        let origin = Origin::new(file, doc.first_line);
        out.extend(load_document(doc.text, doc.line_offset, origin, namespace));
    }
    out
}

struct Document<'a> {
    text: &'a str,
    /// Lines before the document's first line, to turn document-relative
    /// parser positions into file positions.
    line_offset: usize,
    /// The line of the first key, for messages about the whole document.
    first_line: usize,
}

/// Splits on `---` lines. Done by hand, not by the YAML parser, because each
/// document must be parsed (and may fail) on its own.
fn split_documents(text: &str) -> Vec<Document<'_>> {
    let mut docs = Vec::new();
    let mut start = 0usize;
    let mut start_line = 0usize;
    let mut pos = 0usize;
    for (i, line) in text.split_inclusive('\n').enumerate() {
        let trimmed = line.trim_end();
        let is_separator = trimmed == "---" || trimmed.starts_with("--- ");
        let is_end = trimmed == "...";
        if is_separator || is_end {
            push_document(&mut docs, text, start, pos, start_line);
            start = pos + line.len();
            start_line = i + 1;
        }
        pos += line.len();
    }
    push_document(&mut docs, text, start, text.len(), start_line);
    docs
}

fn push_document<'a>(
    docs: &mut Vec<Document<'a>>,
    text: &'a str,
    start: usize,
    end: usize,
    line_offset: usize,
) {
    let body = &text[start..end];
    let first = body.lines().position(|l| {
        let t = l.trim();
        !t.is_empty() && !t.starts_with('#')
    });
    if let Some(first) = first {
        docs.push(Document {
            text: body,
            line_offset,
            first_line: line_offset + first + 1,
        });
    }
}

/// The fields every Kubernetes object has; the spec is read separately once
/// the kind is known.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Head {
    #[serde(default)]
    api_version: Option<String>,
    #[serde(default)]
    kind: Option<String>,
    #[serde(default)]
    items: Vec<serde_json::Value>,
}

/// apiVersion and kind from top-level block-style lines, without a full
/// parse: the common case reads each document once instead of twice. Any
/// other shape (JSON, flow style, a List) takes the full parse.
fn quick_head(text: &str) -> Option<Head> {
    let value = |line: &str, key: &str| -> Option<String> {
        let v = line.strip_prefix(key)?.strip_prefix(':')?;
        let v = v.split(" #").next()?.trim().trim_matches(['"', '\'']);
        (!v.is_empty()).then(|| v.to_string())
    };
    let (mut api_version, mut kind) = (None, None);
    for line in text.lines() {
        api_version = api_version.or_else(|| value(line, "apiVersion"));
        kind = kind.or_else(|| value(line, "kind"));
    }
    match kind.as_deref() {
        Some("List") | None => None,
        Some(_) => Some(Head {
            api_version,
            kind,
            items: Vec::new(),
        }),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Envelope<S> {
    api_version: String,
    kind: String,
    #[serde(default)]
    metadata: ObjectMeta,
    spec: S,
    #[serde(default)]
    #[allow(dead_code)]
    status: Option<serde_json::Value>,
}

fn load_document(
    text: &str,
    line_offset: usize,
    origin: Origin,
    namespace: Option<&str>,
) -> Loaded {
    let mut out = Loaded::default();
    let head = match quick_head(text) {
        Some(head) => Ok(head),
        None => serde_yaml_ng::from_str::<Head>(text),
    };
    let head: Head = match head {
        Ok(h) => h,
        Err(e) => {
            out.problems
                .push(yaml_problem(&e, line_offset, &origin, None));
            return out;
        }
    };
    if head.kind.as_deref() == Some("List") {
        for item in head.items {
            // Items of a List have no positions of their own: point at the List.
            let text = serde_json::to_string(&item).unwrap_or_default();
            out.extend(load_document(&text, 0, origin.clone(), namespace));
        }
        return out;
    }
    let (Some(api_version), Some(kind_name)) = (head.api_version, head.kind) else {
        out.problems.push(Problem {
            severity: Severity::Error,
            origin,
            resource: None,
            field: None,
            message: "document has no apiVersion and kind; every resource needs both".into(),
        });
        return out;
    };
    // Two kinds share a name (Istio's and the Gateway API's Gateway): the
    // API group decides.
    let group = api_version.split_once('/').map_or("", |(g, _)| g);
    let named: Vec<Kind> = Kind::ALL
        .into_iter()
        .filter(|k| k.name() == kind_name)
        .collect();
    let Some(kind) = named
        .iter()
        .find(|k| k.group_versions().0 == group)
        .or(named.first())
        .copied()
    else {
        out.problems.push(error_at(
            &origin,
            None,
            "kind",
            format!("unknown kind {kind_name:?}; Weft reads Istio's kinds (VirtualService, DestinationRule, Gateway, …) and the Gateway API's"),
        ));
        return out;
    };
    let (group, versions) = kind.group_versions();
    let version_ok = versions.iter().any(|v| kind.api_version(v) == api_version);
    let _ = group;
    if !version_ok {
        let served: Vec<String> = versions.iter().map(|v| kind.api_version(v)).collect();
        out.problems.push(error_at(
            &origin,
            None,
            "apiVersion",
            format!(
                "{kind} is not served as {api_version:?}; use one of {}",
                served.join(", ")
            ),
        ));
        return out;
    }
    // Each kind's spec type has the kind's name.
    // Kubernetes kinds keep their fields at the top level (`flat`).
    macro_rules! typed_spec {
        ($($k:ident),* ; $($f:ident),*) => {
            match kind {
                $(Kind::$k => typed::<$k>(text).map(|(m, s)| (m, Spec::$k(Box::new(s)))),)*
                $(Kind::$f => flat::<kube::$f>(text).map(|(m, s)| (m, Spec::$f(Box::new(s)))),)*
            }
        };
    }
    let parsed = typed_spec!(
        VirtualService,
        DestinationRule,
        Gateway,
        ServiceEntry,
        Sidecar,
        WorkloadEntry,
        WorkloadGroup,
        EnvoyFilter,
        ProxyConfig,
        PeerAuthentication,
        RequestAuthentication,
        AuthorizationPolicy,
        Telemetry,
        WasmPlugin,
        TrafficExtension,
        GatewayClass,
        KubeGateway,
        HttpRoute,
        GrpcRoute,
        TcpRoute,
        TlsRoute,
        ReferenceGrant,
        Ingress,
        IngressClass;
        Namespace,
        Service,
        Pod,
        Deployment,
        ServiceAccount,
        EndpointSlice,
        Secret,
        ConfigMap
    );
    let (mut meta, spec) = match parsed {
        Ok(v) => v,
        Err(e) => {
            let resource = Some(format!("{kind}"));
            out.problems
                .push(yaml_problem(&e, line_offset, &origin, resource));
            return out;
        }
    };
    if let Some(wanted) = namespace.filter(|_| kind.namespaced()) {
        match meta.namespace.as_deref() {
            None => meta.namespace = Some(wanted.to_string()),
            Some(own) if own != wanted => {
                let mut problems = vec![error_at(
                    &origin,
                    Some(format!("{kind} {own}/{}", meta.name)),
                    "metadata.namespace",
                    format!("the namespace from the provided object {own:?} does not match the namespace {wanted:?}: pass --namespace={own}"),
                )];
                place(&mut problems, text, line_offset);
                out.problems.extend(problems);
                return out;
            }
            Some(_) => {}
        }
    }
    let resource = Resource {
        api_version,
        kind,
        meta,
        spec,
        origin,
    };
    let mut problems = validate::validate(&resource);
    place(&mut problems, text, line_offset);
    let rejected = problems.iter().any(|p| p.severity == Severity::Error);
    out.problems.extend(problems);
    if !rejected {
        out.resources.push(resource);
    }
    out
}

/// Moves each problem that names a field to that field's own line and column.
fn place(problems: &mut [Problem], text: &str, line_offset: usize) {
    if problems.iter().all(|p| p.field.is_none()) {
        return;
    }
    let positions = crate::positions::Positions::of(text);
    for p in problems.iter_mut() {
        if let Some((line, col)) = p.field.as_deref().and_then(|f| positions.find(f)) {
            p.origin = p.origin.at(line + line_offset, col);
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct FlatEnvelope<B> {
    #[serde(default)]
    metadata: ObjectMeta,
    #[serde(flatten)]
    body: B,
}

fn flat<B: DeserializeOwned>(text: &str) -> Result<(ObjectMeta, B), serde_yaml_ng::Error> {
    let env: FlatEnvelope<B> = serde_yaml_ng::from_str(text)?;
    Ok((env.metadata, env.body))
}

fn typed<S: DeserializeOwned>(text: &str) -> Result<(ObjectMeta, S), serde_yaml_ng::Error> {
    let env: Envelope<S> = serde_yaml_ng::from_str(text)?;
    let _ = (&env.api_version, &env.kind);
    Ok((env.metadata, env.spec))
}

fn error_at(origin: &Origin, resource: Option<String>, field: &str, message: String) -> Problem {
    Problem {
        severity: Severity::Error,
        origin: origin.clone(),
        resource,
        field: Some(field.to_string()),
        message,
    }
}

/// A parser or schema error, moved from document-relative to file position.
/// serde_yaml_ng prefixes the field path (`spec.http[0]: …`) and appends the
/// position (`… at line 3 column 5`); both are split out into their own parts.
fn yaml_problem(
    e: &serde_yaml_ng::Error,
    line_offset: usize,
    origin: &Origin,
    resource: Option<String>,
) -> Problem {
    let at = match e.location() {
        Some(loc) => origin.at(loc.line() + line_offset, loc.column()),
        None => origin.clone(),
    };
    let mut text = e.to_string();
    if let Some(i) = text.rfind(" at line ") {
        text.truncate(i);
    }
    // In flow style a ':' before ',', ']' or '}' ends a plain scalar (YAML
    // 1.2; Go's parser is laxer): say how to write such a value.
    if text.contains("found unexpected ':'") {
        text.push_str("; quote values that contain ':' in [ ] or { } (for example \"2001:db8::\")");
    }
    let (field, message) = match text.split_once(": ") {
        Some((path, rest)) if !path.contains(' ') => (Some(path.to_string()), rest.to_string()),
        _ => (None, text),
    };
    Problem {
        severity: Severity::Error,
        origin: at,
        resource,
        field,
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TWO: &str = "\
# routes
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {host: reviews, subset: v1}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: bad
spec:
  hosts: [ratings]
  http:
  - route:
    - destination: {host: ratings}
      weigth: 10
";

    #[test]
    fn multi_document_with_positions() {
        let loaded = load_str(TWO, "routes.yaml");
        assert_eq!(loaded.resources.len(), 1);
        assert_eq!(loaded.resources[0].origin.line, 2);
        assert_eq!(loaded.resources[0].namespace(), "default");
        let err = loaded.errors().next().expect("an error for the typo");
        assert_eq!(err.origin.file, "routes.yaml");
        assert_eq!(err.origin.line, 21, "{err}");
        assert!(err.message.contains("weigth"), "{err}");
        assert_eq!(err.field.as_deref(), Some("spec.http[0].route[0]"), "{err}");
    }

    /// `apply -n`: documents without a namespace get it; one naming
    /// another is refused at its namespace line, as kubectl refuses it.
    #[test]
    fn documents_placed_in_a_namespace() {
        let l = load_str_in(TWO, "routes.yaml", Some("istio-system"));
        assert_eq!(l.resources[0].namespace(), "istio-system");
        let other = "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata:\n  name: gw\n  namespace: prod\nspec: {selector: {istio: ingressgateway}, servers: []}\n---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: same, namespace: istio-system}\nspec: {host: reviews}\n";
        let l = load_str_in(other, "gw.yaml", Some("istio-system"));
        let err = l.errors().next().expect("the other namespace is an error");
        assert_eq!(err.origin.line, 5, "{err}");
        assert!(
            err.to_string()
                .contains(r#"the namespace from the provided object "prod" does not match the namespace "istio-system""#),
            "{err}"
        );
        assert_eq!(
            l.resources.len(),
            1,
            "the same namespace is fine: {:?}",
            l.problems
        );
        let ns = load_str_in(
            "apiVersion: v1\nkind: Namespace\nmetadata: {name: foo}\n",
            "ns.yaml",
            Some("bar"),
        );
        assert!(ns.problems.is_empty() && ns.resources[0].meta.namespace.is_none());
    }

    #[test]
    fn unknown_kind_and_version_are_rejected() {
        let l = load_str(
            "apiVersion: v1\nkind: Frobnicator\nmetadata: {name: a}\n",
            "f.yaml",
        );
        assert!(l.errors().next().unwrap().message.contains("unknown kind"));
        let l = load_str(
            "apiVersion: networking.istio.io/v2\nkind: Gateway\nmetadata: {name: a}\nspec: {}\n",
            "f.yaml",
        );
        assert!(l.errors().next().unwrap().message.contains("not served"));
    }

    #[test]
    fn list_kind_and_json() {
        let text = r#"{"apiVersion":"v1","kind":"List","items":[
          {"apiVersion":"networking.istio.io/v1beta1","kind":"DestinationRule",
           "metadata":{"name":"r","namespace":"prod"},"spec":{"host":"r","subsets":[{"name":"v1","labels":{"version":"v1"}}]}}]}"#;
        let l = load_str(text, "list.json");
        assert!(!l.has_errors(), "{:?}", l.problems);
        assert_eq!(l.resources[0].key().to_string(), "DestinationRule prod/r");
    }

    #[test]
    fn gateway_api_kinds_by_group() {
        let text = "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: g}\nspec:\n  gatewayClassName: istio\n  listeners:\n  - {name: http, port: 80, protocol: HTTP}\n---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: r}\nspec:\n  parentRefs: [{name: g}]\n  rules:\n  - matches: [{path: {type: PathPrefix, value: /api}}]\n    backendRefs: [{name: reviews, port: 9080}]\n---\napiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: g}\nspec:\n  servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: ['*']}]\n";
        let l = load_str(text, "gw.yaml");
        assert!(!l.has_errors(), "{:?}", l.problems);
        let kinds: Vec<Kind> = l.resources.iter().map(|r| r.kind).collect();
        assert_eq!(kinds, [Kind::KubeGateway, Kind::HttpRoute, Kind::Gateway]);
        assert_ne!(
            l.resources[0].key(),
            l.resources[2].key(),
            "same name, different kinds"
        );
        let bad = text
            .replace("port: 9080", "weight: 1")
            .replace("value: /api", "value: api");
        let l = load_str(&bad, "gw.yaml");
        let errors: Vec<String> = l.errors().map(|e| e.to_string()).collect();
        assert!(
            errors
                .iter()
                .any(|e| e.contains("backendRefs[0].port: Required value")),
            "{errors:?}"
        );
        assert!(
            errors
                .iter()
                .any(|e| e.contains("path.value: must be an absolute path")),
            "{errors:?}"
        );
        assert!(errors[0].contains("HTTPRoute default/r"), "{errors:?}");
        let mismatched = text.replace(
            "backendRefs: [{name: reviews, port: 9080}]",
            "filters: [{type: URLRewrite, requestRedirect: {statusCode: 301}}]\n    backendRefs: [{name: reviews, port: 9080}]",
        );
        let l = load_str(&mismatched, "gw.yaml");
        let errors: Vec<String> = l.errors().map(|e| e.to_string()).collect();
        assert!(
            errors
                .iter()
                .any(|e| e.contains("filters[0]: a URLRewrite filter sets exactly")),
            "{errors:?}"
        );
    }

    #[test]
    fn syntax_error_has_file_line() {
        let l = load_str("a: b\n---\nkind: [\n", "broken.yaml");
        assert_eq!(l.errors().count(), 2);
        let e = l.errors().last().unwrap();
        assert_eq!(e.origin.file, "broken.yaml");
        assert!(e.origin.line >= 3, "{e}");
    }
}
