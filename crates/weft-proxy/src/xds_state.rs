//! The proxy's side of xDS: keeps the last accepted resources of each type,
//! validates an update by compiling it, rebuilds the snapshot and swaps it.
//! An update that does not compile is rejected whole and changes nothing.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::Secret;
use envoy_types::pb::google::protobuf::Any;
use weft_xds::types;

use crate::compile::{
    compile_cluster, compile_endpoints, compile_listener, compile_route_table, compile_secret,
    unpack, Compiled, Endpoints,
};
use crate::listeners::Listeners;
use crate::workers::Workers;
use crate::Shared;

pub(crate) struct XdsState {
    shared: Arc<Shared>,
    listeners: Vec<Listener>,
    routes: Vec<RouteConfiguration>,
    clusters: Vec<Cluster>,
    endpoints: HashMap<String, Endpoints>,
    secrets: Vec<Secret>,
    versions: HashMap<&'static str, String>,
    bound: Listeners,
    /// The answers for the DNS clusters' names, and where to say which
    /// names are wanted (the lookup thread; none until started).
    dns: crate::dns::Answers,
    dns_wanted: Option<(
        std::sync::mpsc::Sender<crate::dns::Wanted>,
        crate::dns::Wanted,
    )>,
}

impl XdsState {
    pub fn new(shared: Arc<Shared>, workers: Workers) -> Self {
        XdsState {
            bound: Listeners::new(shared.clone(), workers),
            shared,
            listeners: Vec::new(),
            routes: Vec::new(),
            clusters: Vec::new(),
            endpoints: HashMap::new(),
            secrets: Vec::new(),
            versions: HashMap::new(),
            dns: crate::dns::Answers::new(),
            dns_wanted: None,
        }
    }

    /// The state behind a lock, with its DNS lookup thread started.
    pub fn shared(shared: Arc<Shared>, workers: Workers) -> std::io::Result<Arc<Mutex<XdsState>>> {
        let state = Arc::new(Mutex::new(XdsState::new(shared, workers)));
        let tx = crate::dns::start(Arc::downgrade(&state))?;
        let none = crate::dns::wanted(&[]);
        state.lock().expect("xDS state lock").dns_wanted = Some((tx, none));
        Ok(state)
    }

    /// Tells the lookup thread the names the current clusters need, when
    /// they changed.
    fn announce_names(&mut self) {
        let Some((tx, last)) = &mut self.dns_wanted else {
            return;
        };
        let now = crate::dns::wanted(&self.clusters);
        if now != *last {
            *last = now.clone();
            let _ = tx.send(now);
        }
    }

    /// Compiles everything once into a snapshot; every resource that does
    /// not compile is named in the error.
    fn rebuild(&self) -> Result<Compiled, String> {
        let mut c = Compiled {
            versions: self.versions.clone(),
            ..Default::default()
        };
        let mut errors = Vec::new();
        let mut note =
            |kind: &str, name: &str, e: String| errors.push(format!("{kind} {name:?}: {e}"));
        for s in &self.secrets {
            match compile_secret(s) {
                Ok(cfg) => drop(c.secrets.insert(s.name.clone(), Arc::new(cfg))),
                Err(e) => note("Secret", &s.name, e),
            }
        }
        let sds_fingerprint = crate::compile::secrets_fingerprint(&c.secrets);
        for l in &self.listeners {
            let secrets = crate::compile::Secrets {
                sds: &c.secrets,
                workload: &self.shared.identity,
                fingerprint: 0,
            };
            match compile_listener(l, &secrets) {
                Ok(cfg) => c.listeners.push(Arc::new(cfg)),
                Err(e) => note("Listener", &l.name, e),
            }
        }
        for r in &self.routes {
            match compile_route_table(r) {
                Ok(t) => drop(c.routes.insert(r.name.clone(), Arc::new(t))),
                Err(e) => note("RouteConfiguration", &r.name, e),
            }
        }
        for cl in &self.clusters {
            let resolved;
            let eds = if crate::dns::is_dns(cl) {
                resolved = crate::dns::endpoints(cl, &self.dns).ok();
                resolved.as_ref()
            } else {
                self.endpoints.get(&cl.name)
            };
            let secrets = crate::compile::Secrets {
                sds: &c.secrets,
                workload: &self.shared.identity,
                fingerprint: sds_fingerprint,
            };
            match compile_cluster(cl, eds, &secrets) {
                Ok(cfg) => drop(c.clusters.insert(cl.name.clone(), Arc::new(cfg))),
                Err(e) => note("Cluster", &cl.name, e),
            }
        }
        if errors.is_empty() {
            Ok(c)
        } else {
            Err(errors.join("; "))
        }
    }
}

/// Decodes every resource of one response; undecodable ones are named.
fn decode_all<M: prost::Message + prost::Name + Default>(
    resources: &[Any],
) -> Result<Vec<M>, String> {
    let mut out = Vec::new();
    let mut errors = Vec::new();
    for any in resources {
        match unpack::<M>(any) {
            Ok(m) => out.push(m),
            Err(e) => errors.push(e),
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors.join("; "))
    }
}

impl weft_xds::Applier for XdsState {
    /// One xDS response: the new resources replace that type's, the whole
    /// config is compiled once, new listener sockets are bound, the
    /// snapshot is stored, and only then do the new sockets start
    /// accepting. Any failure leaves everything as it was.
    fn apply(&mut self, type_url: &str, version: &str, resources: &[Any]) -> Result<(), String> {
        let mut next = XdsCandidate {
            listeners: None,
            routes: None,
            clusters: None,
            endpoints: None,
            secrets: None,
        };
        match type_url {
            types::LISTENER => next.listeners = Some(decode_all::<Listener>(resources)?),
            types::ROUTE => next.routes = Some(decode_all::<RouteConfiguration>(resources)?),
            types::CLUSTER => next.clusters = Some(decode_all::<Cluster>(resources)?),
            types::SECRET => next.secrets = Some(decode_all::<Secret>(resources)?),
            types::ENDPOINT => {
                let mut map = HashMap::new();
                for cla in decode_all::<ClusterLoadAssignment>(resources)? {
                    let eps = compile_endpoints(&cla).map_err(|e| {
                        format!("ClusterLoadAssignment {:?}: {e}", cla.cluster_name)
                    })?;
                    map.insert(cla.cluster_name.clone(), eps);
                }
                next.endpoints = Some(map);
            }
            types::NAME_TABLE => {
                let tables = decode_all::<weft_xds::nds::NameTable>(resources)?;
                let names = crate::dns_proxy::Names::from_tables(&tables)?;
                self.shared.names.store(Arc::new(names));
                self.versions.insert(short(type_url), version.to_string());
                return Ok(());
            }
            other => return Err(format!("resource type {other} is not supported")),
        }
        let old = next.swap_into(self);
        let old_versions = self.versions.clone();
        self.versions.insert(short(type_url), version.to_string());
        if let Err(e) = self.install() {
            // Put back what this update replaced.
            old.swap_into(self);
            self.versions = old_versions;
            return Err(e);
        }
        self.announce_names();
        Ok(())
    }
}

impl crate::dns::Install for XdsState {
    fn install_answers(&mut self, answers: crate::dns::Answers) -> Result<(), String> {
        let old = std::mem::replace(&mut self.dns, answers);
        self.install().inspect_err(|_| self.dns = old)
    }
}

impl XdsState {
    /// Compiles the current resources, binds new listener sockets, stores
    /// the snapshot, and only then lets the new sockets accept. On failure
    /// nothing changed.
    fn install(&mut self) -> Result<(), String> {
        let generation = self.shared.config.load().generation + 1;
        let outcome = self.rebuild().and_then(|mut compiled| {
            compiled.generation = generation;
            let wanted: BTreeMap<String, SocketAddr> = compiled
                .listeners
                .iter()
                .filter(|l| l.bind)
                .map(|l| (l.name.clone(), l.address))
                .collect();
            Ok((compiled, self.bound.bind(&wanted)?))
        });
        let (compiled, sockets) = outcome?;
        self.shared.config.store(Arc::new(compiled));
        self.bound.commit(sockets);
        if ["CDS", "EDS", "LDS", "RDS"]
            .iter()
            .all(|t| self.versions.contains_key(t))
        {
            self.shared.ready.store(true, Ordering::Release);
            self.shared.stats.envoy.set_live();
        }
        Ok(())
    }
}

/// The resources of one type an update brings, swapped with the state's.
struct XdsCandidate {
    listeners: Option<Vec<Listener>>,
    routes: Option<Vec<RouteConfiguration>>,
    clusters: Option<Vec<Cluster>>,
    endpoints: Option<HashMap<String, Endpoints>>,
    secrets: Option<Vec<Secret>>,
}

impl XdsCandidate {
    /// Puts the new resources in `state` and returns what they replaced.
    fn swap_into(self, state: &mut XdsState) -> XdsCandidate {
        fn swap<T>(new: Option<T>, slot: &mut T) -> Option<T> {
            new.map(|n| std::mem::replace(slot, n))
        }
        XdsCandidate {
            listeners: swap(self.listeners, &mut state.listeners),
            routes: swap(self.routes, &mut state.routes),
            clusters: swap(self.clusters, &mut state.clusters),
            endpoints: swap(self.endpoints, &mut state.endpoints),
            secrets: swap(self.secrets, &mut state.secrets),
        }
    }
}

fn short(type_url: &str) -> &'static str {
    types::short_name(type_url)
}

/// The xDS client's handle on the shared state.
pub(crate) struct Locked(pub Arc<Mutex<XdsState>>);

impl weft_xds::Applier for Locked {
    fn apply(&mut self, type_url: &str, version: &str, resources: &[Any]) -> Result<(), String> {
        let mut state = self.0.lock().expect("xDS state lock");
        let outcome = weft_xds::Applier::apply(&mut *state, type_url, version, resources);
        state.count(type_url, outcome.is_ok());
        outcome
    }

    fn session(&mut self, event: weft_xds::SessionEvent) {
        let state = self.0.lock().expect("xDS state lock");
        state.shared.stats.envoy.xds_session(event);
    }
}

impl XdsState {
    /// Envoy's update counters (CDS and LDS, the ones Istio keeps) and
    /// the gauges of what is in use.
    fn count(&self, type_url: &str, applied: bool) {
        let envoy = &self.shared.stats.envoy;
        match type_url {
            types::CLUSTER => envoy.cds.record(applied),
            types::LISTENER => envoy.lds.record(applied),
            _ => {}
        }
        envoy.active_clusters.set(self.clusters.len() as i64);
        envoy.active_listeners.set(self.listeners.len() as i64);
    }
}
