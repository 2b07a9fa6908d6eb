//! A registry from Kubernetes objects (Services, Deployments, Pods), for
//! analysing manifests offline: labels, ports and service accounts matter
//! there, addresses do not, so workloads get the unspecified address.

use std::net::{IpAddr, Ipv4Addr};

use weft_config::kube::PodSpec;
use weft_config::{Resource, Spec};

use crate::mesh::{ContainerPort, ServicePort};
use crate::registry::{ProxyKind, Registry, Service, Workload};

impl Registry {
    pub fn from_kube(resources: &[Resource]) -> Registry {
        let mut registry = Registry::default();
        for r in resources {
            match &r.spec {
                Spec::Service(s) => registry.services.push(Service {
                    name: r.meta.name.clone(),
                    namespace: r.namespace().to_string(),
                    vip: s.spec.cluster_ip.as_deref().and_then(|ip| ip.parse().ok()),
                    ports: s.spec.ports.iter().map(service_port).collect(),
                    selector: s.spec.selector.clone(),
                    entry: None,
                }),
                Spec::Deployment(d) => {
                    let t = &d.spec.template;
                    registry.workloads.push(workload(
                        r,
                        t.metadata.labels.clone(),
                        &t.metadata.annotations,
                        &t.spec,
                    ));
                }
                Spec::Pod(p) => registry.workloads.push(workload(
                    r,
                    r.meta.labels.clone(),
                    &r.meta.annotations,
                    &p.spec,
                )),
                _ => {}
            }
        }
        registry
    }
}

fn service_port(p: &weft_config::kube::ServicePort) -> ServicePort {
    ServicePort {
        name: p.name.clone(),
        port: u16::try_from(p.port).unwrap_or(0),
        target_port: p.target_port.clone(),
        app_protocol: p.app_protocol.clone(),
        protocol: p.protocol.clone(),
    }
}

fn workload(
    r: &Resource,
    labels: std::collections::BTreeMap<String, String>,
    annotations: &std::collections::BTreeMap<String, String>,
    spec: &PodSpec,
) -> Workload {
    // Istio's gateways are workloads labelled istio=…gateway.
    let gateway = labels.get("istio").is_some_and(|v| v.ends_with("gateway"));
    // Istio's `istio-locality` pod label (region.zone.subzone) overrides
    // the node's topology labels, which manifests do not carry.
    let locality = labels.get("istio-locality").map(|l| l.replace('.', "/"));
    let proxy = if gateway {
        ProxyKind::Gateway
    } else {
        ProxyKind::of_pod(&labels, annotations)
    };
    Workload {
        name: r.meta.name.clone(),
        namespace: r.namespace().to_string(),
        labels,
        service_account: spec
            .service_account_name
            .clone()
            .unwrap_or_else(|| "default".into()),
        ip: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        ports: spec
            .containers
            .iter()
            .flat_map(|c| c.ports.iter())
            .map(|p| ContainerPort {
                container_port: u16::try_from(p.container_port).unwrap_or(0),
                name: p.name.clone(),
                protocol: p.protocol.clone(),
            })
            .collect(),
        proxy,
        locality,
        entry: None,
        owner: None,
        admin: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn services_and_deployments_become_a_registry() {
        let text = "apiVersion: v1\nkind: Service\nmetadata: {name: reviews, labels: {app: reviews}}\nspec:\n  ports: [{port: 9080, name: http}]\n  selector: {app: reviews}\n---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {name: reviews-v1}\nspec:\n  replicas: 1\n  selector: {matchLabels: {app: reviews, version: v1}}\n  template:\n    metadata: {labels: {app: reviews, version: v1}}\n    spec:\n      serviceAccountName: bookinfo-reviews\n      containers:\n      - name: reviews\n        image: docker.io/istio/examples-bookinfo-reviews-v1:1.20.2\n        imagePullPolicy: IfNotPresent\n        ports: [{containerPort: 9080}]\nstatus: {availableReplicas: 1}\n";
        let loaded = weft_config::load_str(text, "bookinfo.yaml");
        assert!(!loaded.has_errors(), "{:?}", loaded.problems);
        assert!(
            loaded.problems.is_empty(),
            "Kubernetes kinds carry no not-enforced warning: {:?}",
            loaded.problems
        );
        let r = Registry::from_kube(&loaded.resources);
        assert_eq!(r.services.len(), 1);
        assert_eq!(r.workloads[0].service_account, "bookinfo-reviews");
        let s = &r.services[0];
        assert_eq!(r.endpoints(s, &s.ports[0], &Default::default()).len(), 1);
        // Round trip keeps top-level fields.
        let doc = loaded.resources[1].to_document();
        assert_eq!(doc["spec"]["replicas"], 1, "{doc}");
    }
}
