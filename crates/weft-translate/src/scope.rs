//! The Sidecar resource: what one sidecar is told about the mesh, as
//! istiod scopes it. The proxy's Sidecar is the oldest in its namespace
//! whose `workloadSelector` picks it, else its namespace's oldest without
//! one, else the root namespace's (`istio-system`) without one.
//!
//! Its `egress` hosts (`namespace/dnsName`: `.` the Sidecar's namespace —
//! the proxy's, for the root default —, `*` any, `~` none; a dnsName of
//! `*`, `*.suffix` or a full name) pick the services the proxy gets
//! outbound listeners, routes and clusters for (a ServiceEntry's host by
//! the entry's namespace), and the VirtualServices whose hosts they match
//! (in the VirtualService's namespace); the services those VirtualServices
//! route to come along, as istiod adds them. Everything else is unknown
//! to the proxy: its traffic takes the outbound traffic policy — the
//! Sidecar's `outboundTrafficPolicy`, when it sets one, replaces the
//! mesh's. Inbound is not scoped; its `ingress` listeners, when given,
//! replace the ports the proxy takes inbound traffic on: each its port,
//! protocol and `defaultEndpoint` (`127.0.0.1:PORT`, or `0.0.0.0:PORT` for
//! the pod's own address).
//!
//! Not yet: egress listeners per `port` (their hosts are taken as the
//! whole proxy's), `captureMode`/`bind`, ingress `tls`/`connectionPool`,
//! `egressProxy`.

use weft_config::mesh_config::ROOT_NAMESPACE;
use weft_config::networking::{Sidecar, VirtualService};
use weft_config::Resource;
use weft_registry::{Registry, Service, Workload};

use crate::Inputs;

/// What a Sidecar leaves a proxy: the services and config it may know.
pub(crate) struct Scoped<'a> {
    pub registry: Registry,
    pub config: Vec<Resource>,
    pub outbound_mode: Option<&'a str>,
}

impl Scoped<'_> {
    /// The inputs of this proxy's outbound translation.
    pub fn inputs(&self) -> Inputs<'_> {
        Inputs {
            config: &self.config,
            registry: &self.registry,
            outbound_mode: self.outbound_mode,
            jwks: &crate::NO_JWKS,
        }
    }
}

/// The Sidecar that applies to `proxy`, with its namespace.
pub(crate) fn sidecar_of<'a>(config: &'a [Resource], proxy: &Workload) -> Option<&'a Resource> {
    let mut all: Vec<(&Resource, &Sidecar)> = config
        .iter()
        .filter_map(|r| Some((r, r.as_sidecar()?)))
        .collect();
    all.sort_by(|a, b| a.0.creation_order().cmp(&b.0.creation_order()));
    let selects = |s: &Sidecar| {
        s.workload_selector.as_ref().is_some_and(|sel| {
            sel.labels
                .iter()
                .all(|(k, v)| proxy.labels.get(k) == Some(v))
        })
    };
    let own = |r: &Resource| r.namespace() == proxy.namespace;
    all.iter()
        .find(|(r, s)| own(r) && selects(s))
        .or_else(|| {
            all.iter()
                .find(|(r, s)| own(r) && s.workload_selector.is_none())
        })
        .or_else(|| {
            all.iter()
                .find(|(r, s)| r.namespace() == ROOT_NAMESPACE && s.workload_selector.is_none())
        })
        .map(|(r, _)| *r)
}

/// One `namespace/dnsName` of a Sidecar's egress hosts.
struct Import<'a> {
    /// None: any namespace.
    namespace: Option<&'a str>,
    host: &'a str,
}

impl Import<'_> {
    fn admits_namespace(&self, ns: &str) -> bool {
        self.namespace.is_none_or(|n| n == ns)
    }
}

/// Whether a dnsName of an import matches `host`, in either direction
/// (a wildcard on either side), as istiod matches them.
fn host_matches(import: &str, host: &str) -> bool {
    fn under(wild: &str, name: &str) -> bool {
        wild == "*"
            || wild
                .strip_prefix('*')
                .is_some_and(|suffix| name.ends_with(suffix) && name.len() > suffix.len())
    }
    import == host || under(import, host) || under(host, import)
}

fn imports<'a>(sidecar: &'a Sidecar, own_ns: &'a str) -> Vec<Import<'a>> {
    sidecar
        .egress
        .iter()
        .flat_map(|e| e.hosts.iter())
        .filter_map(|h| {
            let (ns, host) = h.split_once('/')?;
            let namespace = match ns {
                "*" => None,
                "." => Some(own_ns),
                // `~`: no namespace at all.
                other => Some(other),
            };
            Some(Import { namespace, host })
        })
        .filter(|i| i.namespace != Some("~"))
        .collect()
}

/// The scope of `proxy`, or None when no Sidecar applies (everything).
pub(crate) fn of<'a>(inputs: &'a Inputs, proxy: &Workload) -> Option<Scoped<'a>> {
    let resource = sidecar_of(inputs.config, proxy)?;
    let sidecar = resource.as_sidecar().expect("a sidecar");
    // The root namespace's default applies as if written in the proxy's.
    let own_ns = if resource.namespace() == proxy.namespace {
        resource.namespace()
    } else {
        proxy.namespace.as_str()
    };
    let outbound_mode = sidecar
        .outbound_traffic_policy
        .as_ref()
        .and_then(|p| p.mode.as_deref());
    if sidecar.egress.is_empty() {
        return Some(Scoped {
            registry: inputs.registry.clone(),
            config: inputs.config.to_vec(),
            outbound_mode,
        });
    }
    let imports = imports(sidecar, own_ns);
    let imported = |ns: &str, host: &str| {
        imports
            .iter()
            .any(|i| i.admits_namespace(ns) && host_matches(i.host, host))
    };
    let registry = inputs.registry;
    let mut keep: Vec<bool> = registry
        .services
        .iter()
        .map(|s| imported(&s.namespace, &s.fqdn()))
        .collect();
    let mut config = Vec::new();
    for r in inputs.config {
        let Some(vs) = r.as_virtual_service() else {
            config.push(r.clone());
            continue;
        };
        if !for_sidecars(vs) {
            config.push(r.clone());
            continue;
        }
        let ns = r.namespace();
        if !vs
            .hosts
            .iter()
            .any(|h| imported(ns, &registry.qualify(h, ns)))
        {
            continue;
        }
        for d in vs.destinations() {
            if let Some(i) = position(registry, &d.host, ns) {
                keep[i] = true;
            }
        }
        config.push(r.clone());
    }
    let mut scoped = registry.clone();
    let mut flags = keep.into_iter();
    scoped.services.retain(|_| flags.next().unwrap_or(false));
    Some(Scoped {
        registry: scoped,
        config,
        outbound_mode,
    })
}

fn for_sidecars(vs: &VirtualService) -> bool {
    vs.gateways.is_empty() || vs.gateways.iter().any(|g| g == "mesh")
}

fn position(registry: &Registry, host: &str, ns: &str) -> Option<usize> {
    let found: &Service = registry.service(host, ns)?;
    registry
        .services
        .iter()
        .position(|s| std::ptr::eq(s, found))
}

/// One inbound port of a Sidecar's `ingress`: (port, protocol, endpoint).
pub(crate) type IngressPort = (u16, weft_registry::Protocol, (String, u16));

/// The inbound ports the proxy's Sidecar lists, or None when it lists
/// none (the app's ports then). An entry that cannot be served (a Unix
/// socket endpoint) is left out, and said so in `problems`.
pub(crate) fn ingress(
    inputs: &Inputs,
    proxy: &Workload,
    problems: &mut Vec<String>,
) -> Option<Vec<IngressPort>> {
    let sidecar = sidecar_of(inputs.config, proxy)?.as_sidecar()?;
    if sidecar.ingress.is_empty() {
        return None;
    }
    let mut out = Vec::new();
    for (i, l) in sidecar.ingress.iter().enumerate() {
        let Some(port) = l.port.as_ref() else {
            continue;
        };
        let Ok(number) = u16::try_from(port.number) else {
            continue;
        };
        let protocol = weft_registry::Protocol::of(&weft_registry::ServicePort {
            name: port.name.clone().unwrap_or_default(),
            port: number,
            app_protocol: port.protocol.as_ref().map(|p| p.to_ascii_lowercase()),
            ..Default::default()
        });
        match endpoint(l.default_endpoint.as_deref(), proxy, number) {
            Ok(target) => out.push((number, protocol, target)),
            Err(e) => problems.push(format!("Sidecar ingress[{i}]: {e}; left out")),
        }
    }
    Some(out)
}

/// Where an ingress port's traffic goes: `defaultEndpoint` as Istio reads
/// it (`127.0.0.1:P`, `[::1]:P`, or `0.0.0.0:P` for the pod's address);
/// none means the port itself on loopback, where Weft's inbound goes.
fn endpoint(default: Option<&str>, proxy: &Workload, port: u16) -> Result<(String, u16), String> {
    let Some(text) = default.filter(|d| !d.is_empty()) else {
        return Ok(("127.0.0.1".into(), port));
    };
    if text.starts_with("unix://") {
        return Err(format!(
            "defaultEndpoint {text:?}: Unix sockets are not supported yet"
        ));
    }
    let addr: std::net::SocketAddr = text
        .parse()
        .map_err(|_| format!("defaultEndpoint {text:?} is not IP:PORT"))?;
    let ip = if addr.ip().is_unspecified() {
        proxy.ip
    } else {
        addr.ip()
    };
    Ok((ip.to_string(), addr.port()))
}
