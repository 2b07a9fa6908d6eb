//! Mesh mTLS through translation: PeerAuthentication's modes on the
//! inbound chains, and auto mTLS on the clusters.

use envoy_types::pb::envoy::config::listener::v3::Listener;
use weft_registry::ProxyKind;

use crate::mtls::{inbound_mode, Mode};
use crate::tests::{registry, translated_with};
use crate::{translate, Inputs, ProxyResources};

fn pa(ns: &str, name: &str, body: &str) -> String {
    format!("---\napiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n{body}\n")
}

fn inbound(out: &ProxyResources) -> &Listener {
    out.listeners
        .iter()
        .find(|l| l.name == "virtualInbound")
        .unwrap()
}

/// (chain name, transport) of the inbound chains for port 9080.
fn chains_9080(out: &ProxyResources) -> Vec<(String, String)> {
    inbound(out)
        .filter_chains
        .iter()
        .filter(|c| c.name.starts_with("0.0.0.0_9080"))
        .map(|c| {
            let m = c.filter_chain_match.clone().unwrap_or_default();
            (c.name.clone(), m.transport_protocol)
        })
        .collect()
}

#[test]
fn modes_resolve_from_port_to_workload_to_namespace_to_mesh() {
    let config = pa("istio-system", "mesh", "  mtls: {mode: STRICT}")
        + &pa("default", "ns", "  mtls: {mode: UNSET}")
        + &pa(
            "default",
            "v1",
            "  selector: {matchLabels: {version: v1}}\n  mtls: {mode: PERMISSIVE}\n  portLevelMtls:\n    \"9080\": {mode: DISABLE}",
        );
    let loaded = weft_config::load_str(&config, "pa.yaml");
    assert!(!loaded.has_errors(), "{:?}", loaded.problems);
    let reg = registry();
    let (v1, v2) = (&reg.workloads[0], &reg.workloads[1]);
    assert_eq!(
        inbound_mode(&loaded.resources, v1, Some(9080)),
        Mode::Disable
    );
    assert_eq!(
        inbound_mode(&loaded.resources, v1, Some(8080)),
        Mode::Permissive
    );
    assert_eq!(inbound_mode(&loaded.resources, v1, None), Mode::Permissive);
    assert_eq!(
        inbound_mode(&loaded.resources, v2, Some(9080)),
        Mode::Strict,
        "the namespace is UNSET: the mesh's STRICT"
    );
    assert_eq!(
        inbound_mode(&[], v2, None),
        Mode::Permissive,
        "Istio's default"
    );
}

#[test]
fn inbound_chains_follow_the_mode() {
    let permissive = translated_with("", 0);
    assert_eq!(
        chains_9080(&permissive),
        [
            ("0.0.0.0_9080".to_string(), String::new()),
            ("0.0.0.0_9080_mtls".to_string(), "tls".to_string())
        ]
    );
    assert!(inbound(&permissive)
        .listener_filters
        .iter()
        .any(|f| f.name.contains("tls_inspector")));

    let strict = translated_with(&pa("default", "ns", "  mtls: {mode: STRICT}"), 0);
    assert_eq!(
        chains_9080(&strict),
        [
            ("0.0.0.0_9080_mtls".to_string(), "tls".to_string()),
            ("0.0.0.0_9080_plaintext".to_string(), String::new())
        ]
    );
    let denial = inbound(&strict)
        .filter_chains
        .iter()
        .find(|c| c.name == "0.0.0.0_9080_plaintext")
        .unwrap();
    assert_eq!(denial.filters[0].name, "envoy.filters.network.rbac");
    assert!(
        inbound(&strict)
            .filter_chains
            .iter()
            .all(|c| c.name != "InboundPassthroughCluster"),
        "no plaintext passthrough under STRICT"
    );

    let disabled = translated_with(&pa("default", "ns", "  mtls: {mode: DISABLE}"), 0);
    assert_eq!(
        chains_9080(&disabled),
        [("0.0.0.0_9080".to_string(), String::new())]
    );
    assert!(inbound(&disabled)
        .filter_chains
        .iter()
        .all(|c| c.transport_socket.is_none()));
}

#[test]
fn clients_use_mtls_to_pods_with_a_sidecar_and_name_their_accounts() {
    let mut reg = registry();
    let mut legacy = reg.workloads[0].clone();
    legacy.name = "reviews-legacy".into();
    legacy.ip = "198.18.0.9".parse().unwrap();
    legacy.proxy = ProxyKind::NoSidecar;
    reg.workloads.push(legacy);
    reg.workloads[1].service_account = "bookinfo-reviews".into();
    let out = translate(&Inputs::new(&[], &reg), &reg.workloads[0]);
    let name = "outbound|9080||reviews.default.svc.cluster.local";
    let c = out.clusters.iter().find(|c| c.name == name).unwrap();
    assert_eq!(c.transport_socket_matches.len(), 2);
    assert_eq!(c.transport_socket_matches[0].name, "tlsMode-istio");
    let socket = c.transport_socket_matches[0]
        .transport_socket
        .clone()
        .unwrap();
    let Some(envoy_types::pb::envoy::config::core::v3::transport_socket::ConfigType::TypedConfig(
        any,
    )) = socket.config_type
    else {
        panic!()
    };
    let ctx: envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::UpstreamTlsContext =
        prost::Message::decode(any.value.as_slice()).unwrap();
    assert_eq!(
        ctx.sni,
        "outbound_.9080_._.reviews.default.svc.cluster.local"
    );
    let text = format!("{ctx:?}");
    for sa in ["sa/default", "sa/bookinfo-reviews"] {
        assert!(
            text.contains(&format!("spiffe://cluster.local/ns/default/{sa}")),
            "{text}"
        );
    }
    let cla = out
        .endpoints
        .iter()
        .find(|e| e.cluster_name == name)
        .unwrap();
    let tagged: Vec<bool> = cla
        .endpoints
        .iter()
        .flat_map(|l| &l.lb_endpoints)
        .map(|e| {
            e.metadata.as_ref().is_some_and(|m| {
                m.filter_metadata
                    .contains_key("envoy.transport_socket_match")
            })
        })
        .collect();
    assert_eq!(tagged.iter().filter(|t| **t).count(), 2, "{tagged:?}");
    assert_eq!(tagged.len(), 3);

    // A namespace that DISABLEs mTLS, or a DestinationRule's own tls,
    // turns auto mTLS off.
    for config in [
        pa("default", "ns", "  mtls: {mode: DISABLE}"),
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: r}\nspec:\n  host: reviews\n  trafficPolicy:\n    tls: {mode: DISABLE}\n".to_string(),
    ] {
        let out = translated_with(&config, 0);
        let c = out.clusters.iter().find(|c| c.name == name).unwrap();
        assert!(c.transport_socket_matches.is_empty() && c.transport_socket.is_none(), "{config}");
    }
}

#[test]
fn a_strict_port_the_app_does_not_declare_is_never_plaintext() {
    let config = pa(
        "default",
        "v1",
        "  selector: {matchLabels: {version: v1}}\n  mtls: {mode: PERMISSIVE}\n  portLevelMtls:\n    \"9999\": {mode: STRICT}",
    );
    let out = translated_with(&config, 0);
    let on_9999: Vec<(String, String)> = inbound(&out)
        .filter_chains
        .iter()
        .filter(|c| {
            c.filter_chain_match
                .as_ref()
                .and_then(|m| m.destination_port)
                .is_some_and(|p| p.value == 9999)
        })
        .map(|c| {
            (
                c.name.clone(),
                c.filter_chain_match.clone().unwrap().transport_protocol,
            )
        })
        .collect();
    assert_eq!(
        on_9999,
        [
            (
                "InboundPassthroughCluster_9999_mtls".to_string(),
                "tls".to_string()
            ),
            ("0.0.0.0_9999_plaintext".to_string(), String::new())
        ]
    );
}
