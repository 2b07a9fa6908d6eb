//! Opaque TCP: pick an endpoint, connect, copy both ways.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use tokio::net::{TcpSocket, TcpStream};

use crate::access_log::{self, Entry};
use crate::compile::{ClusterCfg, Compiled};
use crate::http::Connection;
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
        flags: "-",
        cluster: cluster_name.into(),
        downstream: Some(conn.peer),
        listener: conn.listener.clone(),
        ..Default::default()
    };
    match connect(&conn, cluster_name, &snapshot, &down).await {
        Err(flag) => entry.flags = flag,
        Ok((mut up, addr)) => {
            entry.upstream = Some(addr);
            if let Err(e) = tokio::io::copy_bidirectional(&mut down, &mut up).await {
                tracing::debug!(error = %e, "tcp proxy ended with an error");
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
) -> Result<(TcpStream, SocketAddr), &'static str> {
    let cluster = snapshot.clusters.get(cluster_name).ok_or("NC")?;
    let addr = cluster.pick(conn.destination).ok_or("UH")?;
    // A connection made straight to the capture port would otherwise be
    // passed through to itself, forever.
    if down.local_addr().is_ok_and(|l| l == addr) {
        return Err("UF");
    }
    let stream = tokio::time::timeout(cluster.connect_timeout, dial(cluster, addr))
        .await
        .map_err(|_| "UF")?
        .map_err(|e| {
            tracing::debug!(%addr, error = %e, "upstream connect failed");
            "UF"
        })?;
    let _ = stream.set_nodelay(true);
    Ok((stream, addr))
}

async fn dial(cluster: &ClusterCfg, addr: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    if let Some(source) = cluster.bind_source {
        socket.bind(SocketAddr::new(source, 0))?;
    }
    socket.connect(addr).await
}
