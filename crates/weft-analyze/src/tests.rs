//! One positive and one negative case per message code.

use std::collections::BTreeMap;

use weft_registry::{ContainerPort, ProxyKind, Registry, Service, ServicePort, Workload};

use super::*;

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn workload(
    name: &str,
    ns: &str,
    l: &[(&str, &str)],
    sa: &str,
    port: u16,
    proxy: ProxyKind,
) -> Workload {
    Workload {
        name: name.into(),
        namespace: ns.into(),
        labels: labels(l),
        service_account: sa.into(),
        ip: "198.18.0.2".parse().unwrap(),
        ports: vec![ContainerPort {
            container_port: port,
            name: "http".into(),
            protocol: None,
        }],
        proxy,
        locality: None,
        entry: None,
        owner: None,
        admin: None,
    }
}

fn service(name: &str, ns: &str, port_name: &str, port: u16, selector: &[(&str, &str)]) -> Service {
    Service {
        name: name.into(),
        namespace: ns.into(),
        vip: None,
        ports: vec![ServicePort {
            name: port_name.into(),
            port,
            target_port: None,
            app_protocol: None,
            protocol: None,
        }],
        selector: labels(selector),
        entry: None,
    }
}

fn registry() -> Registry {
    Registry {
        services: vec![
            service("reviews", "default", "http", 9080, &[("app", "reviews")]),
            service(
                "istio-ingressgateway",
                "istio-system",
                "http2",
                80,
                &[("istio", "ingressgateway")],
            ),
        ],
        workloads: vec![
            workload(
                "reviews-v1",
                "default",
                &[("app", "reviews"), ("version", "v1")],
                "bookinfo-reviews",
                9080,
                ProxyKind::Sidecar,
            ),
            workload(
                "reviews-v2",
                "default",
                &[("app", "reviews"), ("version", "v2")],
                "bookinfo-reviews",
                9080,
                ProxyKind::Sidecar,
            ),
            workload(
                "ingress",
                "istio-system",
                &[("istio", "ingressgateway")],
                "ingress",
                8080,
                ProxyKind::Gateway,
            ),
        ],
    }
}

const DR: &str = "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: reviews}\nspec:\n  host: reviews\n  subsets:\n  - {name: v1, labels: {version: v1}}\n  - {name: v2, labels: {version: v2}}\n";
const GW: &str = "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: gw}\nspec:\n  selector: {istio: ingressgateway}\n  servers:\n  - port: {number: 8080, name: http, protocol: HTTP}\n    hosts: ['*']\n";

fn codes_with(registry: &Registry, yaml: &str) -> Vec<&'static str> {
    let loaded = weft_config::load_str(yaml, "t.yaml");
    assert!(!loaded.has_errors(), "{:?}", loaded.problems);
    let input = Input {
        config: &loaded.resources,
        registry,
    };
    analyze(&input).iter().map(|m| m.code).collect()
}

fn codes(yaml: &str) -> Vec<&'static str> {
    codes_with(&registry(), yaml)
}

fn vs(spec: &str) -> String {
    format!("apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: reviews}}\nspec:\n{spec}")
}

#[test]
fn clean_config_has_no_messages() {
    let yaml = format!("{DR}---\n{GW}---\n{}", vs("  hosts: [reviews]\n  http:\n  - route:\n    - destination: {host: reviews, subset: v1}\n"));
    assert!(codes(&yaml).is_empty(), "{:?}", codes(&yaml));
}

#[test]
fn ist0101_missing_host_subset_gateway() {
    assert!(codes(&vs(
        "  hosts: [reviews]\n  http:\n  - route:\n    - destination: {host: revews}\n"
    ))
    .contains(&"IST0101"));
    let no_subset = format!("{DR}---\n{}", vs("  hosts: [reviews]\n  http:\n  - route:\n    - destination: {host: reviews, subset: v9}\n"));
    assert!(codes(&no_subset).contains(&"IST0101"));
    let no_gateway = vs("  hosts: ['*']\n  gateways: [nope]\n  http:\n  - route:\n    - destination: {host: reviews}\n");
    assert!(codes(&no_gateway).contains(&"IST0101"));
    let ok = format!("{GW}---\n{}", vs("  hosts: ['*']\n  gateways: [gw]\n  http:\n  - route:\n    - destination: {host: reviews}\n"));
    assert!(!codes(&ok).contains(&"IST0101"), "{:?}", codes(&ok));
}

#[test]
fn ist0101_authorization_policy_namespaces_and_principals() {
    let ap = |source: &str| {
        format!("apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {{name: a}}\nspec:\n  rules:\n  - from:\n    - source: {source}\n")
    };
    assert!(codes(&ap("{namespaces: [nowhere]}")).contains(&"IST0101"));
    assert!(codes(&ap("{principals: [cluster.local/ns/default/sa/ghost]}")).contains(&"IST0101"));
    assert!(!codes(&ap(
        "{principals: [cluster.local/ns/default/sa/bookinfo-reviews], namespaces: []}"
    ))
    .contains(&"IST0101"));
    assert!(!codes(&ap("{namespaces: [istio-system]}")).contains(&"IST0101"));
}

#[test]
fn ist0104_gateway_port_not_on_workload() {
    assert!(codes(&GW.replace("8080", "9999")).contains(&"IST0104"));
    assert!(!codes(GW).contains(&"IST0104"));
    assert!(
        !codes(&GW.replace("8080", "80")).contains(&"IST0104"),
        "a port of the gateway's service is fine"
    );
}

#[test]
fn ist0108_unknown_annotation() {
    let with = |a: &str| {
        DR.replace(
            "metadata: {name: reviews}",
            &format!("metadata: {{name: reviews, annotations: {{{a}: 'x'}}}}"),
        )
    };
    assert!(codes(&with("sidecar.istio.io/injekt")).contains(&"IST0108"));
    assert!(!codes(&with("sidecar.istio.io/inject")).contains(&"IST0108"));
    assert!(!codes(&with("example.com/anything")).contains(&"IST0108"));
    assert!(codes(&with("alpha.istio.io/identity")).contains(&"IST0135"));
    assert!(!codes(&with("sidecar.istio.io/inject")).contains(&"IST0135"));
}

#[test]
fn analyze_suppress_annotation_silences_codes() {
    let dr = DR.replace("version: v2", "version: v4");
    assert!(codes(&dr).contains(&"IST0173"));
    let quiet = dr.replace(
        "metadata: {name: reviews}",
        "metadata: {name: reviews, annotations: {galley.istio.io/analyze-suppress: 'IST0173'}}",
    );
    assert!(!codes(&quiet).contains(&"IST0173"), "{:?}", codes(&quiet));
}

#[test]
fn ist0109_conflicting_mesh_virtual_services() {
    let route = "  hosts: [reviews]\n  http:\n  - route:\n    - destination: {host: reviews}\n";
    let two = format!(
        "{}---\n{}",
        vs(route),
        vs(route).replace("name: reviews}", "name: reviews-2}")
    );
    assert_eq!(codes(&two).iter().filter(|c| **c == "IST0109").count(), 2);
    let gateway_bound = format!(
        "{GW}---\n{}---\n{}",
        vs(route),
        vs(&format!("  gateways: [gw]\n{route}")).replace("name: reviews}", "name: reviews-2}")
    );
    assert!(!codes(&gateway_bound).contains(&"IST0109"));
}

#[test]
fn ist0110_ist0111_sidecars() {
    let sc = |name: &str, sel: &str| {
        format!("apiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {{name: {name}}}\nspec:\n{sel}  egress:\n  - hosts: ['./*']\n")
    };
    let two_default = format!("{}---\n{}", sc("a", ""), sc("b", ""));
    assert!(codes(&two_default).contains(&"IST0111"));
    let sel = "  workloadSelector: {labels: {app: reviews}}\n";
    let two_same = format!("{}---\n{}", sc("a", sel), sc("b", sel));
    assert!(codes(&two_same).contains(&"IST0110"));
    let fine = format!("{}---\n{}", sc("a", ""), sc("b", sel));
    let c = codes(&fine);
    assert!(!c.contains(&"IST0110") && !c.contains(&"IST0111"), "{c:?}");
}

#[test]
fn ist0113_mtls_conflict() {
    let pa = |mode: &str| {
        format!("apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {{name: p}}\nspec:\n  mtls: {{mode: {mode}}}\n")
    };
    let dr = |mode: &str| {
        DR.replace(
            "  host: reviews\n",
            &format!("  host: reviews\n  trafficPolicy:\n    tls: {{mode: {mode}}}\n"),
        )
    };
    assert!(codes(&format!("{}---\n{}", pa("STRICT"), dr("DISABLE"))).contains(&"IST0113"));
    assert!(codes(&format!("{}---\n{}", pa("DISABLE"), dr("ISTIO_MUTUAL"))).contains(&"IST0113"));
    assert!(!codes(&format!("{}---\n{}", pa("STRICT"), dr("ISTIO_MUTUAL"))).contains(&"IST0113"));
}

#[test]
fn ist0118_port_naming() {
    let mut r = registry();
    r.services[0].ports[0].name = "web".into();
    assert!(codes_with(&r, DR).contains(&"IST0118"));
    r.services[0].ports[0].app_protocol = Some("http".into());
    assert!(!codes_with(&r, DR).contains(&"IST0118"));
}

#[test]
fn ist0127_policy_selects_nothing() {
    let pa = |app: &str| {
        format!("apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {{name: p}}\nspec:\n  selector: {{matchLabels: {{app: {app}}}}}\n  mtls: {{mode: STRICT}}\n")
    };
    assert!(codes(&pa("revues")).contains(&"IST0127"));
    assert!(!codes(&pa("reviews")).contains(&"IST0127"));
}

#[test]
fn ist0130_route_after_catch_all() {
    let after = vs("  hosts: [reviews]\n  http:\n  - route:\n    - destination: {host: reviews}\n  - match:\n    - uri: {prefix: /api}\n    route:\n    - destination: {host: reviews}\n");
    assert!(codes(&after).contains(&"IST0130"), "{:?}", codes(&after));
    let fine = vs("  hosts: [reviews]\n  http:\n  - match:\n    - uri: {prefix: /api}\n    route:\n    - destination: {host: reviews}\n  - route:\n    - destination: {host: reviews}\n");
    assert!(!codes(&fine).contains(&"IST0130"));
}

#[test]
fn ist0131_duplicate_match() {
    let dup = vs("  hosts: [reviews]\n  http:\n  - match:\n    - uri: {prefix: /api}\n    route:\n    - destination: {host: reviews}\n  - match:\n    - uri: {prefix: /api}\n    route:\n    - destination: {host: reviews}\n");
    assert!(codes(&dup).contains(&"IST0131"));
    let distinct = dup.replacen("/api", "/v2", 1);
    assert!(!codes(&distinct).contains(&"IST0131"));
}

#[test]
fn ist0112_destination_port_on_multi_port_service() {
    let mut r = registry();
    r.services[0].ports.push(ServicePort {
        name: "grpc".into(),
        port: 9090,
        target_port: None,
        app_protocol: None,
        protocol: None,
    });
    let route = |dest: &str| {
        vs(&format!(
            "  hosts: [reviews]\n  http:\n  - route:\n    - destination: {dest}\n"
        ))
    };
    assert!(codes_with(&r, &route("{host: reviews}")).contains(&"IST0112"));
    let with_port = route("{host: reviews, port: {number: 9090}}");
    assert!(
        codes_with(&r, &with_port).is_empty(),
        "{:?}",
        codes_with(&r, &with_port)
    );
    // One port needs no selector; a port the service lacks is IST0101.
    assert!(codes(&route("{host: reviews}")).is_empty());
    let wrong = route("{host: reviews, port: {number: 9999}}");
    assert_eq!(codes_with(&r, &wrong), ["IST0101"]);
}

#[test]
fn ist0145_conflicting_gateways() {
    let other = GW.replace("name: gw", "name: gw2");
    let both = format!("{GW}---\n{other}");
    assert_eq!(codes(&both), ["IST0145", "IST0145"]);
    let other_host = other.replace("hosts: ['*']", "hosts: [bookinfo.example]");
    assert!(codes(&format!("{GW}---\n{other_host}")).is_empty());
    let other_port = other.replace("number: 8080", "number: 9443");
    assert!(!codes(&format!("{GW}---\n{other_port}")).contains(&"IST0145"));
}

#[test]
fn ist0173_subset_selects_no_pods() {
    assert!(codes(&DR.replace("version: v2", "version: v4")).contains(&"IST0173"));
    assert!(!codes(DR).contains(&"IST0173"));
}

#[test]
fn gateway_selector_matching_nothing_is_ist0101() {
    assert!(codes(&GW.replace("istio: ingressgateway", "istio: egress")).contains(&"IST0101"));
}

#[test]
fn ist0101_gateway_credential_and_service_accounts() {
    let tls = GW.replace("  - port: {number: 8080, name: http, protocol: HTTP}\n", "  - port: {number: 8080, name: https, protocol: HTTPS}\n    tls: {mode: SIMPLE, credentialName: bookinfo-cert}\n");
    assert!(codes(&tls).contains(&"IST0101"), "{:?}", codes(&tls));
    let secret = "apiVersion: v1\nkind: Secret\nmetadata: {name: bookinfo-cert, namespace: istio-system}\ntype: kubernetes.io/tls\n";
    assert!(!codes(&format!("{tls}---\n{secret}")).contains(&"IST0101"));
    let ap = |sa: &str| {
        format!("apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {{name: a}}\nspec:\n  rules:\n  - from:\n    - source: {{serviceAccounts: [{sa}]}}\n")
    };
    assert!(codes(&ap("default/ghost")).contains(&"IST0101"));
    assert!(!codes(&ap("default/bookinfo-reviews")).contains(&"IST0101"));
}

/// IST0161: a credential Secret that exists but does not hold a usable
/// certificate and key (or, for MUTUAL, CAs), named as the gateway's log
/// names it.
#[test]
fn ist0161_invalid_gateway_credential() {
    let tls = GW.replace("  - port: {number: 8080, name: http, protocol: HTTP}\n", "  - port: {number: 8080, name: https, protocol: HTTPS}\n    tls: {mode: SIMPLE, credentialName: bookinfo-cert}\n");
    let secret = |data: &str| {
        format!("{tls}---\napiVersion: v1\nkind: Secret\nmetadata: {{name: bookinfo-cert, namespace: istio-system}}\ntype: kubernetes.io/tls\n{data}")
    };
    let empty = codes(&secret(""));
    assert_eq!(empty, ["IST0161"]);
    let garbage = secret("stringData: {tls.crt: not a certificate, tls.key: nor a key}\n");
    assert_eq!(codes(&garbage), ["IST0161"]);
    let registry = registry();
    let loaded = weft_config::load_str(&garbage, "t.yaml");
    let findings = crate::analyze(&crate::Input {
        config: &loaded.resources,
        registry: &registry,
    });
    let text = format!("{:?}", findings);
    assert!(
        text.contains("Gateway gw in namespace istio-system is invalid"),
        "{text}"
    );
}

#[test]
fn principals_without_a_trust_domain_are_warned_about() {
    let yaml = "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: a}\nspec:\n  rules:\n  - from:\n    - source: {principals: [ns/default/sa/curl, 'spiffe://cluster.local/ns/default/sa/curl', cluster.local/ns/default/sa/curl]}\n";
    let loaded = weft_config::load_str(yaml, "p.yaml");
    let warned: Vec<String> = loaded.problems.iter().map(|p| p.to_string()).collect();
    assert_eq!(warned.len(), 2, "{warned:?}");
    assert!(
        warned[0].contains("principals[0]") && warned[0].contains("no trust domain"),
        "{warned:?}"
    );
    assert!(
        warned[1].contains("principals[1]") && warned[1].contains("without spiffe://"),
        "{warned:?}"
    );
}

#[test]
fn ist0167_a_target_ref_no_gateway_api_gateway_takes() {
    let policy = |kind: &str, target: &str| {
        format!("apiVersion: security.istio.io/v1\nkind: {kind}\nmetadata: {{name: p}}\nspec:\n  {target}\n")
    };
    let gateway =
        "targetRefs: [{group: gateway.networking.k8s.io, kind: Gateway, name: bookinfo-gateway}]";
    assert!(codes(&policy("AuthorizationPolicy", gateway)).contains(&"IST0167"));
    assert!(codes(&policy(
        "RequestAuthentication",
        "targetRef: {group: gateway.networking.k8s.io, kind: Gateway, name: bookinfo-gateway}"
    ))
    .contains(&"IST0167"));
    let selector = "selector: {matchLabels: {app: reviews}}";
    assert!(!codes(&policy("AuthorizationPolicy", selector)).contains(&"IST0167"));
    // A workload that is the Gateway API gateway takes the policy.
    let mut registry = registry();
    let gw = &mut registry.workloads[0];
    gw.labels.insert(
        weft_translate::attach::GATEWAY_NAME_LABEL.into(),
        "bookinfo-gateway".into(),
    );
    let ns = gw.namespace.clone();
    let in_ns = policy("AuthorizationPolicy", gateway).replace(
        "metadata: {name: p}",
        &format!("metadata: {{name: p, namespace: {ns}}}"),
    );
    assert!(!codes_with(&registry, &in_ns).contains(&"IST0167"));
}
