//! Opaque TCP: pick an endpoint, connect, copy both ways.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use tokio::net::TcpStream;

use crate::access_log::{self, Entry};
use crate::compile::Compiled;
use crate::error::ProxyError;
use crate::http::Connection;
use crate::upstream;
use crate::upstream::balancer::hash_of;
use crate::upstream::outlier::Result5xx;
use crate::Shared;

pub(crate) async fn proxy(
    mut down: TcpStream,
    conn: Connection,
    cluster_name: &str,
    snapshot: Arc<Compiled>,
    _shared: Arc<Shared>,
) {
    let start = Instant::now();
    let mut entry = Entry {
        start: Some(std::time::SystemTime::now()),
        cluster: cluster_name.into(),
        downstream: Some(conn.peer),
        listener: conn.listener.clone(),
        ..Default::default()
    };
    match connect(&conn, cluster_name, &snapshot, &down).await {
        Err(e) => {
            entry.flags.insert(e.flag());
            entry.detail = e.detail();
        }
        Ok((mut up, addr)) => {
            entry.upstream = Some(addr);
            if let Err(e) = tokio::io::copy_bidirectional(&mut down, &mut up).await {
                tracing::debug!(error = %e, "tcp proxy ended with an error");
            }
            if let Some(cluster) = snapshot.clusters.get(cluster_name) {
                cluster.breaker.connection_closed();
            }
        }
    }
    entry.duration = start.elapsed();
    access_log::write(&entry);
}

async fn connect(
    conn: &Connection,
    cluster_name: &str,
    snapshot: &Compiled,
    down: &TcpStream,
) -> Result<(TcpStream, SocketAddr), ProxyError> {
    let cluster = snapshot
        .clusters
        .get(cluster_name)
        .ok_or(ProxyError::NoCluster)?;
    let addr = cluster
        .pick(conn.destination, Some(hash_of(conn.peer.ip())))
        .ok_or(ProxyError::NoHealthyUpstream)?;
    // The cluster's connection limit holds for opaque TCP too (UO); the
    // slot is given back when the proxied connection ends.
    if !cluster.breaker.open_connection(false) {
        return Err(ProxyError::Overflow);
    }
    let result = dial(cluster, addr, down).await;
    if result.is_err() {
        cluster.breaker.connection_closed();
    }
    result.map(|stream| (stream, addr))
}

async fn dial(
    cluster: &crate::compile::ClusterCfg,
    addr: SocketAddr,
    down: &TcpStream,
) -> Result<TcpStream, ProxyError> {
    // A connection made straight to the capture port would otherwise be
    // passed through to itself, forever.
    if down.local_addr().is_ok_and(|l| l == addr) {
        return Err(ProxyError::ConnectFailure(std::io::Error::other(
            "the destination is this listener itself",
        )));
    }
    match upstream::connect(&cluster.peer(addr)).await {
        Ok(stream) => {
            cluster.report(addr, Result5xx::Success);
            Ok(stream)
        }
        Err(e) => {
            cluster.report(addr, Result5xx::LocalFailure);
            Err(ProxyError::ConnectFailure(e))
        }
    }
}
