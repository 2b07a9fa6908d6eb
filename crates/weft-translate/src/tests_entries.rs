//! ServiceEntries through translation: clusters by resolution, listeners
//! for entries with and without addresses, routes to external hosts.

use envoy_types::pb::envoy::config::cluster::v3::cluster::{ClusterDiscoveryType, DiscoveryType};
use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::endpoint::v3::lb_endpoint;
use envoy_types::pb::envoy::config::route::v3::route;

use crate::tests::translated_with;
use crate::tls_routes::tests::chains;
use crate::ProxyResources;

const ENTRIES: &str = "
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: httpbin-ext}
spec:
  hosts: [httpbin.org]
  ports: [{number: 80, name: http, protocol: HTTP}]
  resolution: DNS
  location: MESH_EXTERNAL
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: example}
spec:
  hosts: [www.example.com]
  ports: [{number: 443, name: https, protocol: HTTPS}]
  resolution: DNS_ROUND_ROBIN
  location: MESH_EXTERNAL
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: wikipedia}
spec:
  hosts: ['*.wikipedia.org']
  ports: [{number: 443, name: tls, protocol: TLS}]
  resolution: NONE
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: db}
spec:
  hosts: [db.internal]
  addresses: [198.19.0.99]
  ports: [{number: 5432, name: tcp-db, protocol: TCP}]
  location: MESH_INTERNAL
  resolution: STATIC
  endpoints: [{address: 198.18.0.50}, {address: 198.18.0.51, ports: {tcp-db: 6432}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: httpbin-ext}
spec:
  hosts: [httpbin.org]
  http:
  - timeout: 3s
    route:
    - destination: {host: httpbin.org}
      weight: 100
";

fn cluster<'a>(out: &'a ProxyResources, name: &str) -> &'a Cluster {
    out.clusters
        .iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no cluster {name}"))
}

fn discovery(c: &Cluster) -> DiscoveryType {
    match &c.cluster_discovery_type {
        Some(ClusterDiscoveryType::Type(t)) => DiscoveryType::try_from(*t).unwrap(),
        other => panic!("{other:?}"),
    }
}

/// The (address, port) of each inline endpoint of a cluster.
fn inline_hosts(c: &Cluster) -> Vec<(String, u32)> {
    use envoy_types::pb::envoy::config::core::v3::{address, socket_address};
    let cla = c.load_assignment.as_ref().expect("inline endpoints");
    cla.endpoints
        .iter()
        .flat_map(|l| &l.lb_endpoints)
        .filter_map(|e| match &e.host_identifier {
            Some(lb_endpoint::HostIdentifier::Endpoint(e)) => {
                match e.address.as_ref()?.address.as_ref()? {
                    address::Address::SocketAddress(sa) => match sa.port_specifier {
                        Some(socket_address::PortSpecifier::PortValue(p)) => {
                            Some((sa.address.clone(), p))
                        }
                        _ => None,
                    },
                    _ => None,
                }
            }
            _ => None,
        })
        .collect()
}

#[test]
fn clusters_follow_each_entrys_resolution() {
    let out = translated_with(ENTRIES, 0);
    assert!(out.problems.is_empty(), "{:?}", out.problems);
    let httpbin = cluster(&out, "outbound|80||httpbin.org");
    assert_eq!(discovery(httpbin), DiscoveryType::StrictDns);
    assert_eq!(inline_hosts(httpbin), [("httpbin.org".to_string(), 80)]);
    let example = cluster(&out, "outbound|443||www.example.com");
    assert_eq!(discovery(example), DiscoveryType::LogicalDns);
    let wiki = cluster(&out, "outbound|443||*.wikipedia.org");
    assert_eq!(discovery(wiki), DiscoveryType::OriginalDst);
    assert_eq!(
        discovery(cluster(&out, "outbound|5432||db.internal")),
        DiscoveryType::Eds
    );
    let db = out
        .endpoints
        .iter()
        .find(|e| e.cluster_name == "outbound|5432||db.internal")
        .expect("static endpoints over EDS");
    let hosts: Vec<String> = db
        .endpoints
        .iter()
        .flat_map(|l| &l.lb_endpoints)
        .map(|e| format!("{:?}", e.host_identifier))
        .collect();
    assert_eq!(hosts.len(), 2);
    assert!(hosts[1].contains("6432"), "{hosts:?}");
    assert!(
        !out.endpoints
            .iter()
            .any(|e| e.cluster_name.contains("httpbin.org")),
        "DNS clusters carry their own endpoints"
    );
}

#[test]
fn listeners_and_routes_for_external_hosts() {
    let out = translated_with(ENTRIES, 0);
    // HTTP: the port's route table has the host, with its VirtualService.
    let table = out
        .routes
        .iter()
        .find(|r| r.name == "80")
        .expect("route 80");
    let vhost = table
        .virtual_hosts
        .iter()
        .find(|v| v.name == "httpbin.org:80")
        .expect("a virtual host for the entry");
    assert_eq!(vhost.domains, ["httpbin.org:80", "httpbin.org"]);
    let Some(route::Action::Route(action)) = &vhost.routes[0].action else {
        panic!("{:?}", vhost.routes[0])
    };
    assert_eq!(action.timeout.unwrap().seconds, 3);
    // TLS without addresses: one listener on every address, by SNI.
    let tls = chains(&out, "0.0.0.0_443");
    assert_eq!(
        tls,
        [
            (
                vec!["www.example.com".to_string()],
                "tls".to_string(),
                vec!["outbound|443||www.example.com".to_string()]
            ),
            (
                vec!["*.wikipedia.org".to_string()],
                "tls".to_string(),
                vec!["outbound|443||*.wikipedia.org".to_string()]
            ),
            (
                vec![],
                String::new(),
                vec!["PassthroughCluster".to_string()]
            ),
        ]
    );
    // TCP with an address: a listener on it.
    assert_eq!(
        chains(&out, "198.19.0.99_5432")[0].2,
        ["outbound|5432||db.internal"]
    );
}

/// As istiod: a VirtualService host that no service on a port claims (a
/// host outside the registry, a service without that port) gets a virtual
/// host in the port's route table, with the routes that fit the port.
#[test]
fn virtual_service_hosts_without_a_service_on_the_port() {
    let config = format!(
        "{ENTRIES}---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: outside}}
spec:
  hosts: [api.example.com, reviews]
  http:
  - match: [{{port: 80}}]
    route:
    - destination: {{host: reviews, port: {{number: 9080}}}}
  - match: [{{port: 443}}]
    route:
    - destination: {{host: httpbin.org}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: website}}
spec:
  hosts: [api.example.com]
  http:
  - route:
    - destination: {{host: httpbin.org}}
"
    );
    let out = translated_with(&config, 0);
    let table = |port: &str| out.routes.iter().find(|r| r.name == port).unwrap();
    let names = |port: &str| -> Vec<&str> {
        let vhosts = &table(port).virtual_hosts;
        vhosts.iter().map(|v| v.name.as_str()).collect()
    };
    assert_eq!(
        names("80"),
        [
            "httpbin.org:80",
            "api.example.com:80",
            "reviews.default.svc.cluster.local:80",
            "allow_any"
        ],
        "the older VirtualService keeps api.example.com"
    );
    let api = &table("80").virtual_hosts[1];
    assert_eq!(api.domains, ["api.example.com:80", "api.example.com"]);
    assert_eq!(api.routes.len(), 1, "only the route for port 80");
    let Some(route::Action::Route(action)) = &api.routes[0].action else {
        panic!("{:?}", api.routes[0])
    };
    assert_eq!(
        action.cluster_specifier,
        Some(
            envoy_types::pb::envoy::config::route::v3::route_action::ClusterSpecifier::Cluster(
                "outbound|9080||reviews.default.svc.cluster.local".into()
            )
        )
    );
    // On reviews' own port, reviews is its service's virtual host; the
    // VirtualServices whose routes fit any port have their hosts there
    // (httpbin.org is a service on port 80 only).
    assert_eq!(
        names("9080"),
        [
            "reviews.default.svc.cluster.local:9080",
            "httpbin.org:9080",
            "api.example.com:9080",
            "allow_any"
        ]
    );
}

#[test]
fn entries_are_scoped_by_export_to() {
    let private = ENTRIES.replace(
        "metadata: {name: httpbin-ext}\nspec:\n",
        "metadata: {name: httpbin-ext, namespace: other}\nspec:\n  exportTo: ['.']\n",
    );
    let out = translated_with(&private, 0);
    assert!(!out.clusters.iter().any(|c| c.name.contains("httpbin.org")));
}

#[test]
fn destination_rule_tls_originates_from_the_cluster() {
    use envoy_types::pb::envoy::config::core::v3::data_source::Specifier;
    use envoy_types::pb::envoy::config::core::v3::transport_socket::ConfigType;
    use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
        common_tls_context::ValidationContextType, UpstreamTlsContext,
    };
    let config = format!(
        "{ENTRIES}---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: httpbin-ext}}\nspec:\n  host: httpbin.org\n  trafficPolicy:\n    portLevelSettings:\n    - port: {{number: 80}}\n      tls: {{mode: SIMPLE}}\n---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: db}}\nspec:\n  host: db.internal\n  trafficPolicy:\n    tls: {{mode: ISTIO_MUTUAL}}\n"
    );
    let out = translated_with(&config, 0);
    let c = cluster(&out, "outbound|80||httpbin.org");
    let Some(ConfigType::TypedConfig(any)) = &c.transport_socket.as_ref().unwrap().config_type
    else {
        panic!()
    };
    let ctx: UpstreamTlsContext = prost::Message::decode(any.value.as_slice()).unwrap();
    assert_eq!(ctx.sni, "httpbin.org");
    let Some(ValidationContextType::ValidationContext(v)) =
        ctx.common_tls_context.unwrap().validation_context_type
    else {
        panic!()
    };
    assert_eq!(
        v.trusted_ca.unwrap().specifier,
        Some(Specifier::Filename(
            "/etc/ssl/certs/ca-certificates.crt".into()
        )),
        "the system's CAs by default, as istiod writes them"
    );
    // A credential Weft cannot use: no endpoints rather than plaintext.
    let credential = config.replace(
        "tls: {mode: SIMPLE}",
        "tls: {mode: SIMPLE, credentialName: ext-cred}",
    );
    assert_ne!(credential, config);
    let closed = translated_with(&credential, 0);
    let c = cluster(&closed, "outbound|80||httpbin.org");
    assert!(c.transport_socket.is_none() && c.load_assignment.is_none());
    assert_eq!(discovery(c), DiscoveryType::Static);
    assert!(closed.problems.iter().any(|p| p.contains("credentialName")));
    // ISTIO_MUTUAL: the mesh's own mTLS, with istiod's SNI.
    let mesh = cluster(&out, "outbound|5432||db.internal");
    let Some(ConfigType::TypedConfig(any)) = &mesh.transport_socket.as_ref().unwrap().config_type
    else {
        panic!()
    };
    let ctx: UpstreamTlsContext = prost::Message::decode(any.value.as_slice()).unwrap();
    assert_eq!(ctx.sni, "outbound_.5432_._.db.internal");
    let common = ctx.common_tls_context.unwrap();
    assert_eq!(common.tls_certificate_sds_secret_configs[0].name, "default");
}
