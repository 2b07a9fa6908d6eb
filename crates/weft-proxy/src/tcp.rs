//! Opaque TCP: pick an endpoint, connect, copy both ways until both sides
//! are done or neither has sent a byte for the idle timeout.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::upstream::UpStream;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::access_log::{Entry, Logs};
use crate::compile::Compiled;
use crate::error::ProxyError;
use crate::http::Connection;
use crate::stats::record::{Observed, Recorder};
use crate::upstream;
use crate::upstream::balancer::hash_of;
use crate::upstream::outlier::Result5xx;

/// A TCP connection's access log line, before anything happened on it
/// (the network filters may mark it).
pub(crate) fn connection_entry(conn: &Connection) -> Entry {
    Entry {
        start: Some(std::time::SystemTime::now()),
        downstream: Some(conn.peer),
        downstream_local: Some(conn.destination),
        server_name: conn.tls.as_ref().and_then(|t| t.server_name.clone()),
        peer_principal: conn.tls.as_ref().and_then(|t| t.peer_principal.clone()),
        ..Default::default()
    }
}

/// What a TCP chain does with one connection.
pub(crate) struct Tcp<'a> {
    pub cluster: &'a str,
    pub idle: Option<Duration>,
    pub snapshot: Arc<Compiled>,
    /// Istio's TCP metrics, on a chain that records them.
    pub recorder: Option<Recorder>,
    /// The TCP proxy's access logs.
    pub logs: Option<Arc<Logs>>,
}

pub(crate) async fn proxy<S>(mut down: S, conn: Connection, tcp: Tcp<'_>, entry: Entry)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let start = Instant::now();
    let cluster = tcp.snapshot.clusters.get(tcp.cluster);
    let mut entry = Entry {
        cluster: tcp.cluster.into(),
        observed: tcp.recorder.as_ref().map(|_| Observed {
            service: cluster.and_then(|c| c.service_for("")),
            destination_port: conn.destination.port(),
            ..Default::default()
        }),
        ..entry
    };
    let moved = Moved::default();
    match connect(&conn, tcp.cluster, &tcp.snapshot).await {
        Err(e) => {
            entry.flags.insert(e.flag());
            entry.transport_failure = e.transport_failure();
            opened(&tcp, &entry);
        }
        Ok((mut up, addr)) => {
            entry.upstream = Some(addr);
            let hop = up.info();
            entry.upstream_local = hop.local;
            if let (Some(seen), Some(c)) = (&mut entry.observed, cluster) {
                seen.upstream_mtls = c.mesh_mtls(addr);
                seen.upstream_principal = hop.principal;
                seen.endpoint = c.endpoints.workloads.get(&addr).cloned();
            }
            opened(&tcp, &entry);
            let copied = copy_until_idle(&mut down, &mut up, tcp.idle, &moved);
            match reporting(copied, &tcp, &entry, &moved).await {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                    entry.detail = Some("idle_timeout".into());
                }
                Err(e) => tracing::debug!(error = %e, "tcp proxy ended with an error"),
            }
            if let Some(cluster) = cluster {
                cluster.breaker.connection_closed();
            }
        }
    }
    entry.duration = start.elapsed();
    // Istio's (and Envoy's) "sent" is what went back to the client;
    // "received", what the client sent.
    (entry.tcp_received, entry.bytes_sent) = moved.totals();
    if let (Some(r), Some(seen)) = (&tcp.recorder, &entry.observed) {
        r.tcp_moved(&entry, seen, moved.unreported(), true);
    }
    if let Some(logs) = &tcp.logs {
        logs.write(&entry);
    }
}

/// Counts the connection as opened in Istio's metrics.
fn opened(tcp: &Tcp<'_>, entry: &Entry) {
    if let (Some(r), Some(seen)) = (&tcp.recorder, &entry.observed) {
        r.tcp_opened(entry, seen);
    }
}

/// Bytes moved each way: towards the upstream (what the client sent,
/// Istio's "received") and back (Istio's "sent"); and how much of each
/// the metrics have counted.
#[derive(Default)]
struct Moved {
    up: AtomicU64,
    down: AtomicU64,
    reported: std::sync::Mutex<(u64, u64)>,
}

impl Moved {
    fn totals(&self) -> (u64, u64) {
        (
            self.up.load(Ordering::Relaxed),
            self.down.load(Ordering::Relaxed),
        )
    }

    /// Istio's (sent, received) since the last call, now counted.
    fn unreported(&self) -> (u64, u64) {
        let (up, down) = self.totals();
        let mut r = self.reported.lock().unwrap_or_else(|p| p.into_inner());
        let delta = (down - r.0, up - r.1);
        *r = (down, up);
        delta
    }
}

/// Runs `copy` while, every reporting interval of the chain's stats, the
/// bytes moved so far are counted, as Istio's stats filter reports open
/// connections (so a long-lived one is not invisible until it closes).
async fn reporting<F: std::future::Future>(
    copy: F,
    tcp: &Tcp<'_>,
    entry: &Entry,
    moved: &Moved,
) -> F::Output {
    let (Some(r), Some(seen)) = (&tcp.recorder, &entry.observed) else {
        return copy.await;
    };
    let every = r.cfg.tcp_reporting;
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    tokio::pin!(copy);
    loop {
        tokio::select! {
            out = &mut copy => return out,
            _ = ticks.tick() => r.tcp_moved(entry, seen, moved.unreported(), false),
        }
    }
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
    moved: &Moved,
) -> std::io::Result<()> {
    let start = Instant::now();
    // Milliseconds since `start` of the last byte moved either way.
    let last = AtomicU64::new(0);
    let (mut down_r, mut down_w) = tokio::io::split(down);
    let (mut up_r, mut up_w) = tokio::io::split(up);
    let both = async {
        tokio::try_join!(
            copy_half(&mut down_r, &mut up_w, &last, start, &moved.up),
            copy_half(&mut up_r, &mut down_w, &last, start, &moved.down),
        )
    };
    let quiet = async {
        let Some(idle) = idle else {
            return std::future::pending().await;
        };
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

/// One direction: read, note the time, write, count; at end of stream,
/// shut the other side's write half.
async fn copy_half(
    from: &mut (impl AsyncRead + Unpin),
    to: &mut (impl AsyncWrite + Unpin),
    last: &AtomicU64,
    start: Instant,
    count: &AtomicU64,
) -> std::io::Result<()> {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = from.read(&mut buf).await?;
        last.store(start.elapsed().as_millis() as u64, Ordering::Relaxed);
        if n == 0 {
            return to.shutdown().await;
        }
        to.write_all(&buf[..n]).await?;
        count.fetch_add(n as u64, Ordering::Relaxed);
    }
}
