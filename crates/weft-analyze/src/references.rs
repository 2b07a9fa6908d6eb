//! References to things that do not exist: hosts, subsets, gateways,
//! namespaces, service accounts, selectors that select nothing, and
//! gateway credentials that cannot serve.

use std::collections::{BTreeMap, BTreeSet};

use weft_config::networking::Destination;
use weft_config::{Kind, Resource, Spec};
use weft_translate::attach::Targets;

use crate::{
    Findings, Input, Level, DESTINATION_PORT_SELECTOR_REQUIRED, INEFFECTIVE_POLICY,
    INVALID_GATEWAY_CREDENTIAL, NO_MATCHING_WORKLOADS, REFERENCED_RESOURCE_NOT_FOUND,
    SUBSET_SELECTS_NO_PODS,
};

pub(crate) fn check(input: &Input, f: &mut Findings) {
    for vs in input.of_kind(Kind::VirtualService) {
        virtual_service(input, f, vs);
    }
    for dr in input.of_kind(Kind::DestinationRule) {
        subsets_select_pods(input, f, dr);
    }
    for gw in input.of_kind(Kind::Gateway) {
        let selector = &gw.as_gateway().expect("gateway").selector;
        if !selector.is_empty()
            && !input
                .registry
                .workloads
                .iter()
                .any(|w| selects(selector, &w.labels))
        {
            f.push(
                Level::Error,
                REFERENCED_RESOURCE_NOT_FOUND,
                gw,
                format!("Referenced selector not found: {:?}", labels_text(selector)),
                Some("no workload carries these labels; check the Gateway's selector against the gateway workload's labels"),
            );
        }
    }
    for r in input.config {
        policy_selects_workloads(input, f, r);
        targets_attach(input, f, r);
    }
    for gw in input.of_kind(Kind::Gateway) {
        gateway_credentials(input, f, gw);
    }
    for ap in input.of_kind(Kind::AuthorizationPolicy) {
        authorization_references(input, f, ap);
    }
}

fn selects(selector: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

fn labels_text(labels: &BTreeMap<String, String>) -> String {
    labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// A host is known when the registry has it or a ServiceEntry declares it.
fn host_known(input: &Input, host: &str, ns: &str) -> bool {
    if input.registry.service(host, ns).is_some() {
        return true;
    }
    input.of_kind(Kind::ServiceEntry).any(|r| match &r.spec {
        Spec::ServiceEntry(se) => se
            .hosts
            .iter()
            .any(|h| h == host || h.strip_prefix('*').is_some_and(|s| host.ends_with(s))),
        _ => false,
    })
}

fn subset_defined(input: &Input, d: &Destination, ns: &str, subset: &str) -> bool {
    let fqdn = input.registry.qualify(&d.host, ns);
    input.of_kind(Kind::DestinationRule).any(|r| {
        let dr = r.as_destination_rule().expect("destination rule");
        input.registry.qualify(&dr.host, r.namespace()) == fqdn
            && dr.subsets.iter().any(|s| s.name == subset)
    })
}

/// A destination on a multi-port service must say which port; a port it
/// names must exist on the service.
fn destination_port(input: &Input, f: &mut Findings, r: &Resource, d: &Destination) {
    let Some(service) = input.registry.service(&d.host, r.namespace()) else {
        return;
    };
    let ports: Vec<String> = service.ports.iter().map(|p| p.port.to_string()).collect();
    match &d.port {
        None if service.ports.len() > 1 => f.push(
            Level::Error,
            DESTINATION_PORT_SELECTOR_REQUIRED,
            r,
            format!(
                "This VirtualService routes to service {:?}, which exposes ports [{}]; the destination must say which one.",
                d.host,
                ports.join(", ")
            ),
            Some("add `port: {number: N}` to the destination"),
        ),
        Some(p) if u16::try_from(p.number).ok().and_then(|n| service.port(n)).is_none() => {
            f.push(
                Level::Error,
                REFERENCED_RESOURCE_NOT_FOUND,
                r,
                format!("Referenced host:port not found: \"{}:{}\"", d.host, p.number),
                Some(&format!("the service's ports are [{}]", ports.join(", "))),
            )
        }
        _ => {}
    }
}

fn virtual_service(input: &Input, f: &mut Findings, r: &Resource) {
    let vs = r.as_virtual_service().expect("virtual service");
    let ns = r.namespace();
    for d in vs.destinations() {
        destination_port(input, f, r, d);
        if !host_known(input, &d.host, ns) {
            f.push(
                Level::Error,
                REFERENCED_RESOURCE_NOT_FOUND,
                r,
                format!("Referenced host not found: {:?}", d.host),
                Some("name a service of the registry, or declare the host in a ServiceEntry"),
            );
        } else if let Some(subset) = d.subset.as_deref() {
            if !subset_defined(input, d, ns, subset) {
                f.push(
                    Level::Error,
                    REFERENCED_RESOURCE_NOT_FOUND,
                    r,
                    format!(
                        "Referenced host+subset in destinationrule not found: \"{}+{subset}\"",
                        d.host
                    ),
                    Some("define the subset in a DestinationRule for this host"),
                );
            }
        }
    }
    for g in vs.gateways.iter().filter(|g| g.as_str() != "mesh") {
        let (gns, name) = g.split_once('/').unwrap_or((ns, g));
        let found = input
            .of_kind(Kind::Gateway)
            .any(|gw| gw.namespace() == gns && gw.meta.name == name);
        if !found {
            f.push(
                Level::Error,
                REFERENCED_RESOURCE_NOT_FOUND,
                r,
                format!("Referenced gateway not found: {g:?}"),
                None,
            );
        }
    }
}

fn subsets_select_pods(input: &Input, f: &mut Findings, r: &Resource) {
    let dr = r.as_destination_rule().expect("destination rule");
    let Some(service) = input.registry.service(&dr.host, r.namespace()) else {
        return;
    };
    for subset in &dr.subsets {
        let any = service.ports.iter().any(|p| {
            !input
                .registry
                .endpoints(service, p, &subset.labels)
                .is_empty()
        });
        if !any {
            f.push(
                Level::Error,
                SUBSET_SELECTS_NO_PODS,
                r,
                format!("The Subset {} defined in the DestinationRule does not select any pods, which leads to 503 UH (no healthy upstream).", subset.name),
                Some("change the subset's labels, deploy the workloads it should select, or remove it"),
            );
        }
    }
}

/// The workload selector of a policy-like resource, if it has one.
fn selector_of(r: &Resource) -> Option<&BTreeMap<String, String>> {
    match &r.spec {
        Spec::AuthorizationPolicy(p) => p.selector.as_ref().map(|s| &s.match_labels),
        Spec::PeerAuthentication(p) => p.selector.as_ref().map(|s| &s.match_labels),
        Spec::RequestAuthentication(p) => p.selector.as_ref().map(|s| &s.match_labels),
        Spec::Telemetry(p) => p.selector.as_ref().map(|s| &s.match_labels),
        Spec::Sidecar(p) => p.workload_selector.as_ref().map(|s| &s.labels),
        _ => None,
    }
}

/// Istio's root namespace: a policy there applies to the whole mesh.
const ROOT_NAMESPACE: &str = "istio-system";

fn policy_selects_workloads(input: &Input, f: &mut Findings, r: &Resource) {
    let Some(selector) = selector_of(r).filter(|s| !s.is_empty()) else {
        return;
    };
    let ns = r.namespace();
    let any = input
        .registry
        .workloads
        .iter()
        .filter(|w| ns == ROOT_NAMESPACE || w.namespace == ns)
        .any(|w| selects(selector, &w.labels));
    if !any {
        f.push(
            Level::Warning,
            NO_MATCHING_WORKLOADS,
            r,
            format!(
                "No matching workloads for this resource with the following labels: {}",
                labels_text(selector)
            ),
            None,
        );
    }
}

/// A policy attached by `targetRef(s)` applies only to Gateway API
/// gateways (and waypoints, which Weft does not run): sidecars and Istio
/// gateways ignore it, as istiod does. Say so when nothing takes it.
fn targets_attach(input: &Input, f: &mut Findings, r: &Resource) {
    let ns = r.namespace();
    let targets = match &r.spec {
        Spec::AuthorizationPolicy(p) => Targets::authorization(ns, p),
        Spec::RequestAuthentication(p) => Targets::request_authentication(ns, p),
        Spec::Telemetry(p) => Targets::telemetry(ns, p),
        _ => return,
    };
    if targets.target_ref.is_none() && targets.target_refs.is_empty() {
        return;
    }
    if input.registry.workloads.iter().any(|w| targets.attach(w)) {
        return;
    }
    f.push(
        Level::Warning,
        INEFFECTIVE_POLICY,
        r,
        "The policy has no impact: its targetRef names no Gateway API gateway in this namespace, and sidecars and Istio gateways ignore policies with a targetRef".into(),
        Some("use spec.selector to pick sidecars or an Istio gateway, or target a workload labelled gateway.networking.k8s.io/gateway-name"),
    );
}

/// Namespaces and service accounts an AuthorizationPolicy names must exist.
fn authorization_references(input: &Input, f: &mut Findings, r: &Resource) {
    let Spec::AuthorizationPolicy(ap) = &r.spec else {
        return;
    };
    let namespaces: BTreeSet<&str> = input
        .registry
        .workloads
        .iter()
        .map(|w| w.namespace.as_str())
        .chain(input.registry.services.iter().map(|s| s.namespace.as_str()))
        .chain(input.config.iter().map(|c| c.namespace()))
        .collect();
    let accounts: BTreeSet<(&str, &str)> = input
        .registry
        .workloads
        .iter()
        .map(|w| (w.namespace.as_str(), w.service_account.as_str()))
        .collect();
    for source in ap
        .rules
        .iter()
        .flat_map(|rule| rule.from.iter().map(|f| &f.source))
    {
        for ns in source.namespaces.iter().chain(&source.not_namespaces) {
            if !ns.contains('*') && !namespaces.contains(ns.as_str()) {
                f.push(
                    Level::Error,
                    REFERENCED_RESOURCE_NOT_FOUND,
                    r,
                    format!("Referenced namespace not found: {ns:?}"),
                    None,
                );
            }
        }
        for sa in source
            .service_accounts
            .iter()
            .chain(&source.not_service_accounts)
        {
            let (ns, name) = sa.split_once('/').unwrap_or((r.namespace(), sa.as_str()));
            if !name.contains('*') && !accounts.contains(&(ns, name)) {
                f.push(
                    Level::Error,
                    REFERENCED_RESOURCE_NOT_FOUND,
                    r,
                    format!("Referenced service account not found: {sa:?}"),
                    None,
                );
            }
        }
        for p in source.principals.iter().chain(&source.not_principals) {
            let parsed = p
                .split_once("/ns/")
                .and_then(|(_, rest)| rest.split_once("/sa/"));
            if let Some((ns, sa)) = parsed.filter(|(ns, sa)| !ns.contains('*') && !sa.contains('*'))
            {
                if !accounts.contains(&(ns, sa)) {
                    f.push(Level::Error, REFERENCED_RESOURCE_NOT_FOUND, r, format!("Referenced service account not found: {p:?}"), Some("principals are trust-domain/ns/NAMESPACE/sa/SERVICE_ACCOUNT of a workload"));
                }
            }
        }
    }
}

/// A Gateway server's TLS credentialName names a Secret in the namespace of
/// the gateway workloads it selects.
fn gateway_credentials(input: &Input, f: &mut Findings, r: &Resource) {
    let gw = r.as_gateway().expect("gateway");
    let namespaces: BTreeSet<&str> = input
        .registry
        .workloads
        .iter()
        .filter(|w| !gw.selector.is_empty() && selects(&gw.selector, &w.labels))
        .map(|w| w.namespace.as_str())
        .collect();
    let secrets: BTreeSet<(&str, &str)> = input
        .of_kind(Kind::Secret)
        .map(|s| (s.namespace(), s.meta.name.as_str()))
        .collect();
    for server in &gw.servers {
        let Some(tls) = &server.tls else { continue };
        let names = tls.credential_name.iter().chain(&tls.credential_names);
        for name in names {
            let found: Vec<&str> = namespaces
                .iter()
                .copied()
                .filter(|ns| secrets.contains(&(*ns, name.as_str())))
                .collect();
            if !namespaces.is_empty() && found.is_empty() {
                f.push(
                    Level::Error,
                    REFERENCED_RESOURCE_NOT_FOUND,
                    r,
                    format!("Referenced credentialName not found: {name:?}"),
                    Some("create a TLS Secret of that name in the gateway workload's namespace"),
                );
            }
            let mutual = matches!(tls.mode.as_deref(), Some("MUTUAL" | "OPTIONAL_MUTUAL"));
            for ns in found {
                if let Err(why) = credential_usable(input, ns, name, mutual) {
                    f.push(
                        Level::Error,
                        INVALID_GATEWAY_CREDENTIAL,
                        r,
                        format!("The credential referenced by the Gateway {} in namespace {ns} is invalid, which can cause the traffic not to work as expected: {why}.", r.meta.name),
                        Some("put a PEM certificate chain and the key of its leaf in the Secret (tls.crt and tls.key), and for MUTUAL the client CAs (ca.crt)"),
                    );
                }
            }
        }
    }
}

/// The checks the control plane makes before it serves a credential.
fn credential_usable(input: &Input, ns: &str, name: &str, mutual: bool) -> Result<(), String> {
    use weft_translate::credentials;
    credentials::certificate(input.config, ns, name)?;
    if mutual {
        credentials::trusted_ca(input.config, ns, name)?;
    }
    Ok(())
}
