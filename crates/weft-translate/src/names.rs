//! The DNS proxy's name table of one sidecar (Istio's NDS): every name the
//! proxy's pod may use for a service it knows, with the service's
//! addresses. Platform services answer by every alias a pod of the proxy's
//! namespace may use; a ServiceEntry host by itself, when the entry gives
//! `addresses` (one without them is left to the pod's own resolver, as
//! istiod leaves it without auto-allocation). Wildcard hosts are never
//! answered.

use std::collections::BTreeMap;
use std::net::IpAddr;

use weft_registry::Workload;

use crate::Inputs;

pub(crate) fn table(inputs: &Inputs, proxy: &Workload) -> BTreeMap<String, Vec<IpAddr>> {
    let mut names: BTreeMap<String, Vec<IpAddr>> = BTreeMap::new();
    for service in &inputs.registry.services {
        let Some(vip) = service.vip else { continue };
        for name in service.aliases(&proxy.namespace) {
            if name.contains('*') {
                continue;
            }
            let ips = names.entry(name.to_ascii_lowercase()).or_default();
            if !ips.contains(&vip) {
                ips.push(vip);
            }
        }
    }
    names
}
