//! The Sidecar resource through translation: which Sidecar a proxy gets,
//! what its egress hosts leave it, and its outbound traffic policy.

use crate::tests::translated_with;
use crate::ProxyResources;

/// Two external hosts beside the registry's `reviews`, and a
/// VirtualService for one that routes to `reviews`.
const MESH: &str = "
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: ext}
spec:
  hosts: [httpbin.org, api.example.com]
  ports: [{number: 80, name: http, protocol: HTTP}]
  resolution: DNS
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: api}
spec:
  hosts: [api.example.com]
  http:
  - route:
    - destination: {host: reviews}
";

fn sidecar(meta: &str, spec: &str) -> String {
    format!("{MESH}---\napiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {meta}\nspec:\n{spec}")
}

fn clusters(out: &ProxyResources) -> Vec<&str> {
    let mut names: Vec<&str> = out
        .clusters
        .iter()
        .map(|c| c.name.as_str())
        .filter(|n| n.starts_with("outbound|") && !n.contains("|v"))
        .collect();
    names.sort();
    names
}

fn outside(out: &ProxyResources) -> String {
    let vo = out
        .listeners
        .iter()
        .find(|l| l.name == "virtualOutbound")
        .unwrap();
    vo.filter_chains[0].name.clone()
}

#[test]
fn without_a_sidecar_a_proxy_knows_everything() {
    let out = translated_with(MESH, 0);
    assert_eq!(
        clusters(&out),
        [
            "outbound|80||api.example.com",
            "outbound|80||httpbin.org",
            "outbound|9080||reviews.default.svc.cluster.local"
        ]
    );
}

#[test]
fn egress_hosts_scope_services_and_bring_routed_destinations() {
    let only = sidecar(
        "{name: default}",
        "  egress:\n  - hosts: [\"./httpbin.org\"]\n  outboundTrafficPolicy: {mode: REGISTRY_ONLY}\n",
    );
    let out = translated_with(&only, 0);
    assert_eq!(clusters(&out), ["outbound|80||httpbin.org"]);
    assert_eq!(outside(&out), "BlackHoleCluster", "the Sidecar's policy");
    let table = out.routes.iter().find(|r| r.name == "80").unwrap();
    assert!(!table
        .virtual_hosts
        .iter()
        .any(|v| v.name.contains("api.example.com")));
    assert!(
        out.listeners.iter().any(|l| l.name == "virtualInbound"),
        "inbound is not scoped"
    );

    // A VirtualService the hosts import brings the services it routes to.
    let api = sidecar(
        "{name: default}",
        "  egress:\n  - hosts: [\"*/api.example.com\"]\n",
    );
    let out = translated_with(&api, 0);
    assert_eq!(
        clusters(&out),
        [
            "outbound|80||api.example.com",
            "outbound|9080||reviews.default.svc.cluster.local"
        ]
    );
    assert_eq!(outside(&out), "PassthroughCluster", "the mesh's policy");
    let wild = sidecar("{name: default}", "  egress:\n  - hosts: [\"./*.org\"]\n");
    assert_eq!(
        clusters(&translated_with(&wild, 0)),
        ["outbound|80||httpbin.org"]
    );
    let elsewhere = sidecar("{name: default}", "  egress:\n  - hosts: [\"other/*\"]\n");
    assert!(clusters(&translated_with(&elsewhere, 0)).is_empty());
}

#[test]
fn the_selected_sidecar_then_the_namespace_then_the_root_default() {
    let config = format!(
        "{}---\napiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {{name: v2, namespace: default}}\nspec:\n  workloadSelector: {{labels: {{version: v2}}}}\n  egress:\n  - hosts: [\"./httpbin.org\"]\n",
        sidecar(
            "{name: default, namespace: istio-system}",
            "  egress:\n  - hosts: [\"./*\", \"istio-system/*\"]\n  outboundTrafficPolicy: {mode: REGISTRY_ONLY}\n"
        )
    );
    // reviews-v2 (proxy 1) has its own; reviews-v1 (proxy 0) the root
    // namespace's, where `.` means its own namespace.
    assert_eq!(
        clusters(&translated_with(&config, 1)),
        ["outbound|80||httpbin.org"]
    );
    let v1 = translated_with(&config, 0);
    assert_eq!(clusters(&v1).len(), 3);
    assert_eq!(outside(&v1), "BlackHoleCluster");
}

#[test]
fn ingress_listeners_replace_the_apps_ports() {
    let config = sidecar(
        "{name: default}",
        "  ingress:\n  - port: {number: 9999, protocol: HTTP, name: http}\n    defaultEndpoint: 127.0.0.1:9080\n  - port: {number: 7070, protocol: TCP, name: tcp}\n    defaultEndpoint: 0.0.0.0:7071\n  - port: {number: 6060, protocol: TCP, name: uds}\n    defaultEndpoint: unix:///var/run/app.sock\n",
    );
    let out = translated_with(&config, 0);
    let inbound = out
        .listeners
        .iter()
        .find(|l| l.name == "virtualInbound")
        .unwrap();
    let ports: Vec<u32> = inbound
        .filter_chains
        .iter()
        .filter_map(|c| c.filter_chain_match.as_ref()?.destination_port.as_ref())
        .map(|p| p.value)
        .collect();
    assert!(ports.contains(&9999) && ports.contains(&7070), "{ports:?}");
    assert!(!ports.contains(&9080), "the app's own port is not served");
    let endpoint = |name: &str| {
        let c = out.clusters.iter().find(|c| c.name == name).unwrap();
        (
            format!(
                "{:?}",
                c.load_assignment.as_ref().unwrap().endpoints[0].lb_endpoints[0]
            ),
            c.upstream_bind_config.is_some(),
        )
    };
    let (http, bound) = endpoint("inbound|9999||");
    assert!(
        http.contains("127.0.0.1") && http.contains("9080") && !bound,
        "{http}"
    );
    let (tcp, bound) = endpoint("inbound|7070||");
    assert!(
        tcp.contains("198.18.0.2") && tcp.contains("7071") && bound,
        "{tcp}"
    );
    assert!(
        out.problems.iter().any(|p| p.contains("Unix sockets")),
        "{:?}",
        out.problems
    );
}
