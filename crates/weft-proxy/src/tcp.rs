//! Opaque TCP: pick an endpoint, connect, copy both ways until both sides
//! are done or neither has sent a byte for the idle timeout.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::upstream::UpStream;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::access_log::{self, Entry};
use crate::compile::Compiled;
use crate::error::ProxyError;
use crate::http::Connection;
use crate::upstream;
use crate::upstream::balancer::hash_of;
use crate::upstream::outlier::Result5xx;

/// A TCP connection's access log line, before anything happened on it
/// (the network filters may mark it).
pub(crate) fn connection_entry(conn: &Connection) -> Entry {
    Entry {
        start: Some(std::time::SystemTime::now()),
        downstream: Some(conn.peer),
        listener: conn.listener.clone(),
        server_name: conn.tls.as_ref().and_then(|t| t.server_name.clone()),
        peer_principal: conn.tls.as_ref().and_then(|t| t.peer_principal.clone()),
        ..Default::default()
    }
}

pub(crate) async fn proxy<S>(
    mut down: S,
    conn: Connection,
    cluster_name: &str,
    idle: Option<Duration>,
    snapshot: Arc<Compiled>,
    entry: Entry,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let start = Instant::now();
    let mut entry = Entry {
        cluster: cluster_name.into(),
        ..entry
    };
    match connect(&conn, cluster_name, &snapshot).await {
        Err(e) => {
            entry.flags.insert(e.flag());
            entry.detail = e.detail();
        }
        Ok((mut up, addr)) => {
            entry.upstream = Some(addr);
            match copy_until_idle(&mut down, &mut up, idle).await {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                    entry.detail = Some("idle_timeout".into());
                }
                Err(e) => tracing::debug!(error = %e, "tcp proxy ended with an error"),
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
) -> Result<(UpStream, SocketAddr), ProxyError> {
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
    let result = dial(cluster, addr, conn.local).await;
    if result.is_err() {
        cluster.breaker.connection_closed();
    }
    result.map(|stream| (stream, addr))
}

async fn dial(
    cluster: &crate::compile::ClusterCfg,
    addr: SocketAddr,
    local: SocketAddr,
) -> Result<UpStream, ProxyError> {
    // A connection made straight to the capture port would otherwise be
    // passed through to itself, forever.
    if local == addr {
        return Err(ProxyError::ConnectFailure(std::io::Error::other(
            "the destination is this listener itself",
        )));
    }
    match upstream::connect(&cluster.peer(addr, false), false).await {
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

/// Copies both ways until each side has closed its half; with an idle
/// timeout, a quiet spell that long ends both (error `TimedOut`).
async fn copy_until_idle<S: AsyncRead + AsyncWrite + Unpin>(
    down: &mut S,
    up: &mut UpStream,
    idle: Option<Duration>,
) -> std::io::Result<()> {
    let Some(idle) = idle else {
        return tokio::io::copy_bidirectional(down, up).await.map(drop);
    };
    let start = Instant::now();
    // Milliseconds since `start` of the last byte moved either way.
    let last = AtomicU64::new(0);
    let (mut down_r, mut down_w) = tokio::io::split(down);
    let (mut up_r, mut up_w) = tokio::io::split(up);
    let both = async {
        tokio::try_join!(
            copy_half(&mut down_r, &mut up_w, &last, start),
            copy_half(&mut up_r, &mut down_w, &last, start),
        )
    };
    let quiet = async {
        loop {
            let since = Duration::from_millis(last.load(Ordering::Relaxed));
            let deadline = start + since + idle;
            if Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep_until(deadline.into()).await;
        }
    };
    tokio::select! {
        r = both => r.map(drop),
        () = quiet => Err(std::io::ErrorKind::TimedOut.into()),
    }
}

/// One direction: read, note the time, write; at end of stream, shut the
/// other side's write half.
async fn copy_half(
    from: &mut (impl AsyncRead + Unpin),
    to: &mut (impl AsyncWrite + Unpin),
    last: &AtomicU64,
    start: Instant,
) -> std::io::Result<()> {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = from.read(&mut buf).await?;
        last.store(start.elapsed().as_millis() as u64, Ordering::Relaxed);
        if n == 0 {
            return to.shutdown().await;
        }
        to.write_all(&buf[..n]).await?;
    }
}
