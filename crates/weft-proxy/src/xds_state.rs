//! The proxy's side of xDS: keeps the last accepted resources of each type,
//! validates an update by compiling it, rebuilds the snapshot and swaps it.
//! An update that does not compile is rejected whole and changes nothing.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
use envoy_types::pb::google::protobuf::Any;
use weft_xds::types;

use crate::compile::{
    compile_cluster, compile_endpoints, compile_listener, compile_route_table, unpack, Compiled,
};
use crate::listeners::Listeners;
use crate::workers::Workers;
use crate::Shared;

pub(crate) struct XdsState {
    shared: Arc<Shared>,
    listeners: Vec<Listener>,
    routes: Vec<RouteConfiguration>,
    clusters: Vec<Cluster>,
    endpoints: HashMap<String, Vec<SocketAddr>>,
    versions: HashMap<&'static str, String>,
    bound: Listeners,
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
            versions: HashMap::new(),
        }
    }

    fn rebuild(&self) -> Result<Compiled, String> {
        let mut c = Compiled {
            versions: self.versions.clone(),
            ..Default::default()
        };
        for l in &self.listeners {
            c.listeners.push(Arc::new(compile_listener(l)?));
        }
        for r in &self.routes {
            c.routes
                .insert(r.name.clone(), Arc::new(compile_route_table(r)?));
        }
        for cl in &self.clusters {
            let eds = self.endpoints.get(&cl.name).map(Vec::as_slice);
            c.clusters
                .insert(cl.name.clone(), Arc::new(compile_cluster(cl, eds)?));
        }
        Ok(c)
    }
}

/// Decodes every resource, checks each compiles, and names the failures.
fn decode_all<M: prost::Message + prost::Name + Default>(
    resources: &[Any],
    name: impl Fn(&M) -> String,
    check: impl Fn(&M) -> Result<(), String>,
) -> Result<Vec<M>, String> {
    let mut out = Vec::new();
    let mut errors = Vec::new();
    for any in resources {
        match unpack::<M>(any) {
            Ok(m) => {
                if let Err(e) = check(&m) {
                    errors.push(format!("{} {:?}: {e}", M::NAME, name(&m)));
                }
                out.push(m);
            }
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
    fn apply(&mut self, type_url: &str, version: &str, resources: &[Any]) -> Result<(), String> {
        let mut next_listeners = None;
        match type_url {
            types::LISTENER => {
                let ls = decode_all::<Listener>(
                    resources,
                    |l| l.name.clone(),
                    |l| compile_listener(l).map(|_| ()),
                )?;
                next_listeners = Some(ls);
            }
            types::ROUTE => {
                self.routes = decode_all::<RouteConfiguration>(
                    resources,
                    |r| r.name.clone(),
                    |r| compile_route_table(r).map(|_| ()),
                )?;
            }
            types::CLUSTER => {
                self.clusters = decode_all::<Cluster>(
                    resources,
                    |c| c.name.clone(),
                    |c| compile_cluster(c, None).map(|_| ()),
                )?;
            }
            types::ENDPOINT => {
                let cla = decode_all::<ClusterLoadAssignment>(
                    resources,
                    |c| c.cluster_name.clone(),
                    |c| compile_endpoints(c).map(|_| ()),
                )?;
                let mut map = HashMap::new();
                for c in &cla {
                    map.insert(c.cluster_name.clone(), compile_endpoints(c)?);
                }
                self.endpoints = map;
            }
            other => return Err(format!("resource type {other} is not supported")),
        }
        if let Some(ls) = next_listeners {
            // Bind new listeners before accepting the update: a port that
            // cannot be bound is a rejected update, as in Envoy.
            let wanted: BTreeMap<String, SocketAddr> = ls
                .iter()
                .filter_map(|l| compile_listener(l).ok())
                .filter(|l| l.bind)
                .map(|l| (l.name.clone(), l.address))
                .collect();
            self.bound.reconcile(&wanted)?;
            self.listeners = ls;
        }
        self.versions.insert(short(type_url), version.to_string());
        let compiled = self.rebuild()?;
        self.shared.config.store(Arc::new(compiled));
        if ["CDS", "EDS", "LDS", "RDS"]
            .iter()
            .all(|t| self.versions.contains_key(t))
        {
            self.shared.ready.store(true, Ordering::Release);
        }
        Ok(())
    }
}

fn short(type_url: &str) -> &'static str {
    types::short_name(type_url)
}
