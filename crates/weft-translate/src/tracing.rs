//! Tracing, configured as istiod configures it: every route gets a span
//! name (`decorator.operation`: `<service FQDN>:<port>/*`), and every
//! connection manager the Zipkin tracer when a provider applies. The
//! provider comes from the Telemetry API (`tracing[].providers`, most
//! specific level last, per mode: CLIENT for outbound and gateways, SERVER
//! for inbound; `randomSamplingPercentage`, `customTags`,
//! `disableSpanReporting`) or `defaultProviders.tracing`, else from the
//! legacy mesh config (`defaultConfig.tracing.zipkin.address`, which
//! istiod's bootstrap turns into a `zipkin` tracer). Sampling defaults to
//! `defaultConfig.tracing.sampling`, else Istio's 1%.

use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::config::route::v3::{
    route, route_action, Decorator, RouteConfiguration,
};
use envoy_types::pb::envoy::config::trace::v3::{
    tracing::http::ConfigType, tracing::Http, ZipkinConfig,
};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::http_connection_manager::{
    RouteSpecifier, Tracing,
};
use envoy_types::pb::envoy::r#type::tracing::v3::{custom_tag, CustomTag};
use envoy_types::pb::envoy::r#type::v3::Percent;
use envoy_types::util::pack_any;
use weft_config::mesh_config::{port_number, MeshConfig};
use weft_config::telemetry::Tracing as TelemetryTracing;
use weft_registry::Workload;

use crate::ProxyResources;

/// istiod's default sampling (`PILOT_TRACE_SAMPLING`).
const DEFAULT_SAMPLING: f64 = 1.0;

pub(crate) fn apply(inputs: &crate::Inputs, proxy: &Workload, out: &mut ProxyResources) {
    decorate(inputs, proxy, out);
    let mesh = inputs.mesh();
    let mut problems = Vec::new();
    let mut side = |mode| {
        let spec = spec(inputs, proxy, &mesh, mode)?;
        tracer(&spec, &mesh, proxy, out, &mut problems)
    };
    let (client, server) = (side("CLIENT"), side("SERVER"));
    out.problems.extend(problems);
    for l in &mut out.listeners {
        let t = if l.name == crate::sidecar::VIRTUAL_INBOUND {
            &server
        } else {
            &client
        };
        if let Some(t) = t {
            set_on_listener(l, t);
        }
    }
}

/// What one side's tracing came to.
#[derive(Debug, Default, Clone)]
struct Spec {
    provider: Option<String>,
    disabled: bool,
    sampling: Option<f64>,
    tags: Vec<CustomTag>,
    istio_tags: bool,
    /// The legacy path: a collector address from the mesh config.
    address: Option<String>,
}

fn spec(inputs: &crate::Inputs, proxy: &Workload, mesh: &MeshConfig, mode: &str) -> Option<Spec> {
    let levels: Vec<_> = crate::telemetry::levels(inputs.config, proxy)
        .into_iter()
        .filter(|t| !t.tracing.is_empty())
        .collect();
    let defaults = default_providers(mesh);
    let legacy = mesh
        .other
        .get("defaultConfig")
        .and_then(|d| d.get("tracing"));
    let sampling = legacy
        .and_then(|t| t.get("sampling"))
        .and_then(|s| s.as_f64())
        .filter(|s| *s > 0.0)
        .map(|s| s.min(100.0));
    if levels.is_empty() && defaults.is_empty() {
        if mesh.other.get("enableTracing").and_then(|v| v.as_bool()) == Some(false) {
            return None;
        }
        let address = legacy
            .and_then(|t| t.get("zipkin"))
            .and_then(|z| z.get("address"))
            .and_then(|a| a.as_str())?;
        return Some(Spec {
            sampling,
            address: Some(address.to_string()),
            istio_tags: true,
            ..Default::default()
        });
    }
    let mut spec = Spec {
        provider: defaults.first().cloned(),
        sampling,
        istio_tags: true,
        ..Default::default()
    };
    for level in levels {
        for t in level.tracing.iter().filter(|t| mode_matches(t, mode)) {
            apply_level(&mut spec, t);
        }
    }
    Some(spec)
}

fn mode_matches(t: &TelemetryTracing, mode: &str) -> bool {
    match t.matches.as_ref().and_then(|m| m.mode.as_deref()) {
        None | Some("CLIENT_AND_SERVER") => true,
        Some(m) => m == mode,
    }
}

fn apply_level(spec: &mut Spec, t: &TelemetryTracing) {
    if let Some(p) = t.providers.first() {
        spec.provider = Some(p.name.clone());
    }
    if let Some(d) = t.disable_span_reporting {
        spec.disabled = d;
    }
    if let Some(p) = t.random_sampling_percentage {
        spec.sampling = Some(p);
    }
    if let Some(i) = t.enable_istio_tags {
        spec.istio_tags = i;
    }
    if !t.custom_tags.is_empty() {
        spec.tags = t
            .custom_tags
            .iter()
            .filter_map(|(k, v)| custom(k, v))
            .collect();
    }
}

fn custom(name: &str, t: &weft_config::telemetry::CustomTag) -> Option<CustomTag> {
    let kind = if let Some(l) = &t.literal {
        custom_tag::Type::Literal(custom_tag::Literal {
            value: l.value.clone(),
        })
    } else if let Some(e) = &t.environment {
        custom_tag::Type::Environment(custom_tag::Environment {
            name: e.name.clone(),
            default_value: e.default_value.clone().unwrap_or_default(),
        })
    } else {
        let h = t.header.as_ref()?;
        custom_tag::Type::RequestHeader(custom_tag::Header {
            name: h.name.clone(),
            default_value: h.default_value.clone().unwrap_or_default(),
        })
    };
    Some(CustomTag {
        tag: name.to_string(),
        r#type: Some(kind),
    })
}

fn default_providers(mesh: &MeshConfig) -> Vec<String> {
    crate::telemetry::mesh_defaults(mesh, "tracing").unwrap_or_default()
}

/// Where a tracer sends spans, and how.
enum Wire {
    Zipkin,
    /// OTLP over HTTP to this path, or over gRPC (none).
    Otlp(Option<String>),
}

/// The connection manager's `tracing` for a spec, if it names a Zipkin or
/// OpenTelemetry (HTTP) collector this proxy has a cluster for.
fn tracer(
    spec: &Spec,
    mesh: &MeshConfig,
    proxy: &Workload,
    out: &ProxyResources,
    problems: &mut Vec<String>,
) -> Option<Tracing> {
    if spec.disabled {
        return None;
    }
    let (host, port, max_tag, wire) = match (&spec.address, &spec.provider) {
        (Some(address), _) => {
            let (host, port) = address.rsplit_once(':')?;
            let port: u16 = port.parse().ok()?;
            // The address as given, else as a short Kubernetes name.
            let exact = out
                .clusters
                .iter()
                .any(|c| c.name == format!("outbound|{port}||{host}"));
            let host = if exact {
                host.to_string()
            } else {
                qualify(host)
            };
            (host, port, None, Wire::Zipkin)
        }
        (None, Some(name)) => provider(mesh, name, problems)?,
        (None, None) => return None,
    };
    let cluster = format!("outbound|{port}||{host}");
    if !out.clusters.iter().any(|c| c.name == cluster) {
        problems.push(format!("the trace collector {host}:{port} is not a service this proxy reaches ({cluster}); not traced"));
        return None;
    }
    let mut tags = if spec.istio_tags {
        istio_tags(mesh, proxy)
    } else {
        Vec::new()
    };
    tags.extend(spec.tags.iter().cloned());
    let provider = match wire {
        Wire::Zipkin => Http {
            name: "envoy.tracers.zipkin".into(),
            config_type: Some(ConfigType::TypedConfig(pack_any(ZipkinConfig {
                collector_cluster: cluster,
                collector_endpoint: "/api/v2/spans".into(),
                collector_endpoint_version: 1, // HTTP_JSON
                collector_hostname: host,
                trace_id_128bit: true,
                shared_span_context: Some(envoy_types::pb::google::protobuf::BoolValue {
                    value: false,
                }),
                ..Default::default()
            }))),
        },
        Wire::Otlp(path) => Http {
            name: "envoy.tracers.opentelemetry".into(),
            config_type: Some(ConfigType::TypedConfig(pack_any(otel(
                &host,
                path.as_deref(),
                cluster,
                proxy,
            )))),
        },
    };
    Some(Tracing {
        client_sampling: Some(Percent { value: 100.0 }),
        random_sampling: Some(Percent {
            value: spec.sampling.unwrap_or(DEFAULT_SAMPLING),
        }),
        overall_sampling: Some(Percent { value: 100.0 }),
        max_path_tag_length: max_tag
            .map(|value| envoy_types::pb::google::protobuf::UInt32Value { value }),
        custom_tags: tags,
        provider: Some(provider),
        // A gateway is its own hop: a SERVER span for the request and a
        // CLIENT span for each upstream one, as istiod asks of routers.
        spawn_upstream_span: (proxy.proxy == weft_registry::ProxyKind::Gateway)
            .then_some(envoy_types::pb::google::protobuf::BoolValue { value: true }),
        ..Default::default()
    })
}

/// A mesh extension provider's collector: host, port, tag length, wire.
fn provider(
    mesh: &MeshConfig,
    name: &str,
    problems: &mut Vec<String>,
) -> Option<(String, u16, Option<u32>, Wire)> {
    let p = mesh.extension_provider(name);
    let bare = |service: &str| service.rsplit('/').next().unwrap_or(service).to_string();
    if let Some(z) = p.and_then(|p| p.zipkin.as_ref()) {
        return Some((
            bare(&z.service),
            port_number(&z.port)?,
            z.max_tag_length,
            Wire::Zipkin,
        ));
    }
    if let Some(o) = p.and_then(|p| p.opentelemetry.as_ref()) {
        let path = o.http.as_ref().map(|http| {
            let path = http.path.clone().unwrap_or_else(|| "/v1/traces".into());
            if path.starts_with('/') {
                path
            } else {
                format!("/{path}")
            }
        });
        return Some((
            bare(&o.service),
            port_number(&o.port)?,
            o.max_tag_length,
            Wire::Otlp(path),
        ));
    }
    problems.push(format!(
        "tracing provider {name:?} is not a zipkin or opentelemetry extension provider of the mesh config; not traced"
    ));
    None
}

/// istiod's `otelConfig`: over HTTP, the URI without a scheme; over
/// gRPC, an Envoy gRPC service on the cluster with the host as authority.
fn otel(
    host: &str,
    path: Option<&str>,
    cluster: String,
    proxy: &Workload,
) -> envoy_types::pb::envoy::config::trace::v3::OpenTelemetryConfig {
    use envoy_types::pb::envoy::config::core::v3::{
        grpc_service, http_uri::HttpUpstreamType, GrpcService, HttpService, HttpUri,
    };
    let timeout = Some(envoy_types::pb::google::protobuf::Duration {
        seconds: 5,
        nanos: 0,
    });
    let (http_service, grpc_service) = match path {
        Some(path) => (
            Some(HttpService {
                http_uri: Some(HttpUri {
                    uri: format!("{host}{path}"),
                    http_upstream_type: Some(HttpUpstreamType::Cluster(cluster)),
                    timeout,
                }),
                ..Default::default()
            }),
            None,
        ),
        None => (
            None,
            Some(GrpcService {
                target_specifier: Some(grpc_service::TargetSpecifier::EnvoyGrpc(
                    grpc_service::EnvoyGrpc {
                        cluster_name: cluster,
                        authority: host.to_string(),
                        ..Default::default()
                    },
                )),
                timeout,
                ..Default::default()
            }),
        ),
    };
    envoy_types::pb::envoy::config::trace::v3::OpenTelemetryConfig {
        http_service,
        grpc_service,
        service_name: format!(
            "{}.{}",
            proxy
                .labels
                .get("app")
                .map_or(proxy.name.as_str(), String::as_str),
            proxy.namespace
        ),
        ..Default::default()
    }
}

/// `zipkin.istio-system` → `zipkin.istio-system.svc.cluster.local`.
fn qualify(host: &str) -> String {
    match host.split('.').count() {
        2 => format!("{host}.svc.cluster.local"),
        3 => format!("{host}.cluster.local"),
        _ => host.to_string(),
    }
}

/// The `istio.*` tags istiod adds to every span.
fn istio_tags(mesh: &MeshConfig, proxy: &Workload) -> Vec<CustomTag> {
    let mesh_id = mesh
        .other
        .get("meshId")
        .and_then(|m| m.as_str())
        .map(str::to_string)
        .or(mesh.trust_domain.clone())
        .unwrap_or_else(|| "cluster.local".into());
    let literal = |tag: &str, value: &str| CustomTag {
        tag: tag.into(),
        r#type: Some(custom_tag::Type::Literal(custom_tag::Literal {
            value: value.into(),
        })),
    };
    vec![
        literal("istio.canonical_revision", proxy.canonical_revision()),
        literal("istio.canonical_service", proxy.canonical_service()),
        literal("istio.cluster_id", weft_registry::CLUSTER_ID),
        literal("istio.mesh_id", &mesh_id),
        literal("istio.namespace", &proxy.namespace),
    ]
}

fn set_on_listener(l: &mut Listener, t: &Tracing) {
    crate::envoy::edit_connection_managers(l, |h| h.tracing = Some(t.clone()));
}

/// Names every forwarding route's spans as istiod does for a service:
/// `<FQDN>:<port>/*` (inbound: the proxy's own service on that port).
fn decorate(inputs: &crate::Inputs, proxy: &Workload, out: &mut ProxyResources) {
    let operation = |cluster: &str| operation(inputs, proxy, cluster);
    for rc in &mut out.routes {
        decorate_table(rc, &operation);
    }
    for l in &mut out.listeners {
        crate::envoy::edit_connection_managers(l, |h| {
            if let Some(RouteSpecifier::RouteConfig(rc)) = &mut h.route_specifier {
                decorate_table(rc, &operation);
            }
        });
    }
}

fn decorate_table(rc: &mut RouteConfiguration, operation: &dyn Fn(&str) -> Option<String>) {
    for vh in &mut rc.virtual_hosts {
        for r in &mut vh.routes {
            if r.decorator.is_some() {
                continue;
            }
            let Some(route::Action::Route(a)) = &r.action else {
                continue;
            };
            let cluster = match &a.cluster_specifier {
                Some(route_action::ClusterSpecifier::Cluster(c)) => c.clone(),
                Some(route_action::ClusterSpecifier::WeightedClusters(w)) => {
                    match w.clusters.first() {
                        Some(c) => c.name.clone(),
                        None => continue,
                    }
                }
                _ => continue,
            };
            if let Some(op) = operation(&cluster) {
                r.decorator = Some(Decorator {
                    operation: op,
                    ..Default::default()
                });
            }
        }
    }
}

fn operation(inputs: &crate::Inputs, proxy: &Workload, cluster: &str) -> Option<String> {
    let mut parts = cluster.split('|');
    match (parts.next()?, parts.next()?, parts.nth(1)) {
        ("outbound", port, Some(host)) if !host.is_empty() => Some(format!("{host}:{port}/*")),
        ("inbound", target, _) => {
            let target: u16 = target.parse().ok()?;
            inputs.registry.services_of(proxy).find_map(|s| {
                let p = s.ports.iter().find(|p| proxy.serves(p) == Some(target))?;
                Some(format!("{}:{}/*", s.fqdn(), p.port))
            })
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::config::listener::v3::filter;
    use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::HttpConnectionManager;

    const ZIPKIN: &str = "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: zipkin, namespace: istio-system}
spec:
  hosts: [zipkin.istio-system.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 9411, name: http, protocol: HTTP}]
  endpoints: [{address: 198.18.0.99}]
";

    fn mesh(body: &str) -> String {
        let indented: String = body.lines().map(|l| format!("    {l}\n")).collect();
        format!("apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: istio, namespace: istio-system}}\ndata:\n  mesh: |-\n{indented}")
    }

    /// The tracing of the first connection manager on `listener`
    /// (`outbound`: any listener but virtualInbound).
    fn tracing_of(out: &ProxyResources, listener: &str) -> Option<Tracing> {
        let inbound = crate::sidecar::VIRTUAL_INBOUND;
        let mut ls = out.listeners.iter().filter(|l| match listener {
            "outbound" => l.name != inbound,
            name => l.name == name,
        });
        ls.find_map(|l| {
            l.filter_chains.iter().find_map(|c| {
                let Some(filter::ConfigType::TypedConfig(any)) = &c.filters.last()?.config_type
                else {
                    return None;
                };
                any.type_url
                    .ends_with(".HttpConnectionManager")
                    .then(|| {
                        <HttpConnectionManager as prost::Message>::decode(any.value.as_slice()).ok()
                    })
                    .flatten()?
                    .tracing
            })
        })
    }

    fn collector(t: &Tracing) -> String {
        let Some(ConfigType::TypedConfig(any)) = &t.provider.as_ref().unwrap().config_type else {
            panic!()
        };
        let z: ZipkinConfig = prost::Message::decode(any.value.as_slice()).unwrap();
        z.collector_cluster
    }

    fn translated(extra: &str) -> ProxyResources {
        crate::tests::translated_with(
            &format!("{}\n---\n{ZIPKIN}---\n{extra}", crate::tests::CONFIG),
            0,
        )
    }

    #[test]
    fn routes_are_named_and_nothing_traces_without_a_provider() {
        let out = translated("");
        assert!(tracing_of(&out, "virtualInbound").is_none());
        let table = out.routes.iter().find(|r| r.name == "9080").unwrap();
        let ops: Vec<_> = table
            .virtual_hosts
            .iter()
            .flat_map(|v| &v.routes)
            .filter_map(|r| r.decorator.as_ref().map(|d| d.operation.clone()))
            .collect();
        assert!(
            ops.contains(&"reviews.default.svc.cluster.local:9080/*".to_string()),
            "{ops:?}"
        );
    }

    /// Istio's Zipkin task: an extension provider and a mesh-wide
    /// Telemetry at 100%.
    #[test]
    fn a_telemetry_provider_traces_both_sides() {
        let out = translated(&format!("{}---\napiVersion: telemetry.istio.io/v1\nkind: Telemetry\nmetadata: {{name: mesh-default, namespace: istio-system}}\nspec:\n  tracing:\n  - providers: [{{name: zipkin}}]\n    randomSamplingPercentage: 100\n    customTags:\n      team: {{literal: {{value: ratings}}}}\n", mesh("extensionProviders:\n- name: zipkin\n  zipkin:\n    service: zipkin.istio-system.svc.cluster.local\n    port: 9411")));
        let gateway = crate::tests::translated_with(
            &format!("{}\n---\n{ZIPKIN}---\napiVersion: telemetry.istio.io/v1\nkind: Telemetry\nmetadata: {{name: mesh-default, namespace: istio-system}}\nspec:\n  tracing:\n  - providers: [{{name: zipkin}}]\n---\n{}", crate::tests::CONFIG, mesh("extensionProviders:\n- name: zipkin\n  zipkin:\n    service: zipkin.istio-system.svc.cluster.local\n    port: 9411")),
            2,
        );
        let spawn = |t: Tracing| t.spawn_upstream_span.map(|b| b.value);
        assert_eq!(
            tracing_of(&gateway, "outbound").map(spawn),
            Some(Some(true)),
            "a gateway is a hop of its own: {:?}",
            gateway.problems
        );
        for side in ["virtualInbound", "outbound"] {
            let t = tracing_of(&out, side).unwrap_or_else(|| panic!("{side}: {:?}", out.problems));
            assert_eq!(
                t.spawn_upstream_span, None,
                "a sidecar is one hop with its app"
            );
            assert_eq!(
                collector(&t),
                "outbound|9411||zipkin.istio-system.svc.cluster.local"
            );
            assert_eq!(t.random_sampling.unwrap().value, 100.0);
            let tags: Vec<_> = t.custom_tags.iter().map(|c| c.tag.as_str()).collect();
            assert_eq!(
                tags,
                [
                    "istio.canonical_revision",
                    "istio.canonical_service",
                    "istio.cluster_id",
                    "istio.mesh_id",
                    "istio.namespace",
                    "team"
                ]
            );
        }
        // Disabled for the server side only.
        let out = translated(&format!("{}---\napiVersion: telemetry.istio.io/v1\nkind: Telemetry\nmetadata: {{name: t, namespace: istio-system}}\nspec:\n  tracing:\n  - providers: [{{name: zipkin}}]\n  - match: {{mode: SERVER}}\n    disableSpanReporting: true\n", mesh("extensionProviders:\n- name: zipkin\n  zipkin:\n    service: zipkin.istio-system.svc.cluster.local\n    port: 9411")));
        assert!(tracing_of(&out, "virtualInbound").is_none());
        assert_eq!(
            tracing_of(&out, "outbound")
                .unwrap()
                .random_sampling
                .unwrap()
                .value,
            1.0
        );
    }

    #[test]
    fn an_opentelemetry_provider_over_http() {
        let providers = "extensionProviders:\n- name: otel\n  opentelemetry:\n    service: zipkin.istio-system.svc.cluster.local\n    port: 9411\n    http:\n      path: /v1/traces\n- name: otel-grpc\n  opentelemetry:\n    service: zipkin.istio-system.svc.cluster.local\n    port: 9411";
        let telemetry = |name: &str| {
            format!("{}---\napiVersion: telemetry.istio.io/v1\nkind: Telemetry\nmetadata: {{name: t, namespace: istio-system}}\nspec:\n  tracing:\n  - providers: [{{name: {name}}}]\n", mesh(providers))
        };
        let out = translated(&telemetry("otel"));
        let t = tracing_of(&out, "outbound").unwrap();
        let provider = t.provider.unwrap();
        assert_eq!(provider.name, "envoy.tracers.opentelemetry");
        let Some(ConfigType::TypedConfig(any)) = provider.config_type else {
            panic!()
        };
        let o: envoy_types::pb::envoy::config::trace::v3::OpenTelemetryConfig =
            prost::Message::decode(any.value.as_slice()).unwrap();
        let uri = o.http_service.unwrap().http_uri.unwrap();
        assert_eq!(uri.uri, "zipkin.istio-system.svc.cluster.local/v1/traces");
        assert_eq!(o.service_name, "reviews.default");
        // Without `http`, OTLP over gRPC, as istiod writes it.
        let out = translated(&telemetry("otel-grpc"));
        assert!(out.problems.is_empty(), "{:?}", out.problems);
        let provider = tracing_of(&out, "outbound").unwrap().provider.unwrap();
        let Some(ConfigType::TypedConfig(any)) = provider.config_type else {
            panic!()
        };
        let o: envoy_types::pb::envoy::config::trace::v3::OpenTelemetryConfig =
            prost::Message::decode(any.value.as_slice()).unwrap();
        assert!(o.http_service.is_none());
        let Some(
            envoy_types::pb::envoy::config::core::v3::grpc_service::TargetSpecifier::EnvoyGrpc(g),
        ) = o.grpc_service.unwrap().target_specifier
        else {
            panic!()
        };
        assert_eq!(
            g.cluster_name,
            "outbound|9411||zipkin.istio-system.svc.cluster.local"
        );
        assert_eq!(g.authority, "zipkin.istio-system.svc.cluster.local");
    }

    #[test]
    fn the_legacy_zipkin_address_and_sampling() {
        let out = translated(&mesh("defaultConfig:\n  tracing:\n    sampling: 50\n    zipkin:\n      address: zipkin.istio-system:9411"));
        let t = tracing_of(&out, "outbound").unwrap();
        assert_eq!(
            collector(&t),
            "outbound|9411||zipkin.istio-system.svc.cluster.local"
        );
        assert_eq!(t.random_sampling.unwrap().value, 50.0);
        let off = translated(&mesh("enableTracing: false\ndefaultConfig:\n  tracing:\n    zipkin:\n      address: zipkin.istio-system:9411"));
        assert!(tracing_of(&off, "outbound").is_none());
        // A provider the proxy cannot reach is a problem, not a tracer.
        let out = translated(&mesh(
            "defaultConfig:\n  tracing:\n    zipkin:\n      address: jaeger.observability:9411",
        ));
        assert!(tracing_of(&out, "outbound").is_none());
        assert!(
            out.problems
                .iter()
                .any(|p| p.contains("jaeger.observability.svc.cluster.local:9411")),
            "{:?}",
            out.problems
        );
    }
}
