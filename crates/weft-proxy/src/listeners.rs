//! Bound listeners and their accept loops. Each accepted connection is
//! dispatched on the config snapshot current at accept time.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};

use crate::compile::ChainAction;
use crate::workers::Workers;
use crate::Shared;

/// Sockets bound for an update, not yet serving.
pub(crate) struct Bound {
    sockets: Vec<(String, SocketAddr, SocketAddr, Vec<std::net::TcpListener>)>,
    wanted: std::collections::BTreeSet<String>,
}

/// Which listeners are bound, and where; the sockets themselves live on the
/// workers, one per worker per listener.
pub(crate) struct Listeners {
    shared: Arc<Shared>,
    workers: Workers,
    running: HashMap<String, SocketAddr>,
}

impl Listeners {
    pub fn new(shared: Arc<Shared>, workers: Workers) -> Self {
        Listeners {
            shared,
            workers,
            running: HashMap::new(),
        }
    }

    /// Binds every socket a new config needs, one per worker, and hands
    /// none out yet: a port that cannot be bound rejects the update with
    /// nothing changed.
    pub fn bind(&self, wanted: &BTreeMap<String, SocketAddr>) -> Result<Bound, String> {
        let mut sockets = Vec::new();
        for (name, addr) in wanted {
            if self.running.get(name) == Some(addr) {
                continue;
            }
            let bind_addr = self.bind_address(*addr);
            let per_worker = (0..self.workers.count())
                .map(|_| bind(bind_addr))
                .collect::<std::io::Result<Vec<_>>>()
                .map_err(|e| format!("listener {name:?}: cannot bind {bind_addr}: {e}"))?;
            sockets.push((name.clone(), *addr, bind_addr, per_worker));
        }
        Ok(Bound {
            sockets,
            wanted: wanted.keys().cloned().collect(),
        })
    }

    /// Hands the new sockets to the workers and stops the listeners the
    /// config no longer names. Called once the snapshot that names the new
    /// listeners is stored, so no accepted connection finds its listener
    /// missing. Stopping closes the listening sockets only; accepted
    /// connections go on.
    pub fn commit(&mut self, bound: Bound) {
        for (name, addr, bind_addr, sockets) in bound.sockets {
            tracing::info!(listener = %name, address = %bind_addr, "listening");
            self.workers.listen(&name, sockets);
            self.running.insert(name, addr);
        }
        let workers = &self.workers;
        self.running.retain(|name, _| {
            let keep = bound.wanted.contains(name);
            if !keep {
                tracing::info!(listener = %name, "listener removed");
                workers.close(name);
            }
            keep
        });
    }

    fn bind_address(&self, addr: SocketAddr) -> SocketAddr {
        match self.shared.options.bind_ip {
            Some(ip) if addr.ip().is_unspecified() => SocketAddr::new(ip, addr.port()),
            _ => addr,
        }
    }
}

/// One worker's socket: `SO_REUSEPORT` lets every worker bind the same
/// address and the kernel spread connections over them.
fn bind(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        None,
    )?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    Ok(socket.into())
}

pub(crate) async fn accept_loop(listener: TcpListener, name: String, shared: Arc<Shared>) {
    loop {
        match listener.accept().await {
            Ok((sock, peer)) => {
                let _ = sock.set_nodelay(true);
                let open = shared.drain.connection();
                let serving = dispatch(sock, peer, name.clone(), shared.clone());
                tokio::spawn(async move {
                    serving.await;
                    drop(open);
                });
            }
            Err(e) => {
                tracing::warn!(listener = %name, error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}

/// The address the client meant to reach: for a connection redirected by
/// iptables, SO_ORIGINAL_DST; otherwise the local address.
fn destination(sock: &TcpStream) -> SocketAddr {
    let local = sock
        .local_addr()
        .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
    socket2::SockRef::from(sock)
        .original_dst()
        .ok()
        .and_then(|a| a.as_socket())
        .unwrap_or(local)
}

/// Picks the listener and filter chain for a connection, as Envoy does with
/// `use_original_dst` and filter chain matching, then hands it on.
async fn dispatch(sock: TcpStream, peer: SocketAddr, listener: String, shared: Arc<Shared>) {
    let snapshot = shared.config.load_full();
    let Some(own) = snapshot.listener_named(&listener).cloned() else {
        return;
    };
    let dst = if own.use_original_dst || own.original_dst_filter {
        destination(&sock)
    } else {
        sock.local_addr().unwrap_or(own.address)
    };
    let target = if own.use_original_dst {
        snapshot.listener_for(dst).cloned().unwrap_or(own)
    } else {
        own
    };
    let seen = crate::sniff::inspect(&sock, target.inspect_tls, target.sniffs(dst.port())).await;
    let Some(chain) = target.chain_for(dst.port(), &seen) else {
        tracing::debug!(listener = %target.name, %dst, sni = ?seen.server_name, "no filter chain matched; closing");
        if let Some(logs) = &target.logs {
            logs.write(&no_chain(peer, dst, &seen));
        }
        return;
    };
    let conn = crate::http::Connection {
        peer,
        local: sock.local_addr().unwrap_or(dst),
        destination: dst,
        listener: target.name.clone(),
        tls: None,
        seen: seen.clone(),
    };
    let action = chain.action.clone();
    let Some(tls) = chain.tls.clone() else {
        return run(sock, conn, action, snapshot, shared).await;
    };
    let handshake = crate::tls::accept(sock, &tls, &seen, &target.name);
    let done = match chain.handshake_timeout {
        None => handshake.await,
        Some(limit) => match tokio::time::timeout(limit, handshake).await {
            Ok(done) => done,
            Err(_) => {
                tracing::debug!(listener = %target.name, sni = ?seen.server_name, "TLS handshake timed out; closing");
                return;
            }
        },
    };
    if let Some((stream, info)) = done {
        let conn = crate::http::Connection {
            tls: Some(info),
            ..conn
        };
        run(stream, conn, action, snapshot, shared).await
    }
}

/// Runs a chain's network filter on the (plaintext or decrypted) stream.
async fn run<S>(
    sock: S,
    conn: crate::http::Connection,
    action: ChainAction,
    snapshot: Arc<crate::Compiled>,
    shared: Arc<Shared>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    if let Some(chain) = crate::http::Chain::of(&action, snapshot.generation) {
        return crate::http::serve(sock, conn, chain, shared).await;
    }
    match action {
        // Served above.
        ChainAction::Http { .. } => {}
        ChainAction::Tcp {
            clusters,
            idle_timeout,
            rbac,
            stats,
            logs,
            ..
        } => {
            let subject = crate::filters::tcp_subject(&conn);
            let mut entry = crate::tcp::connection_entry(&conn);
            // AUDIT (RBAC LOG) marks the connection's log line.
            entry.audit = rbac.iter().find_map(|r| r.logs(&subject));
            if let Some(policy) = rbac.iter().find_map(|r| r.denies(&subject)) {
                tracing::debug!(listener = %conn.listener, policy, "RBAC: connection denied");
                entry.flags.insert(crate::error::Flags::RBAC_DENIED);
                let matched = if policy.is_empty() { "none" } else { &policy };
                entry.detail = Some(format!("rbac_access_denied_matched_policy[{matched}]"));
                if let Some(logs) = &logs {
                    logs.write(&entry);
                }
                return;
            }
            let (cluster, _) = clusters.pick(|total| fastrand::u32(..total));
            let recorder = stats.map(|cfg| crate::stats::record::Recorder {
                stats: shared.stats.clone(),
                cfg,
                own_principal: shared.identity.spiffe_id(),
            });
            let tcp = crate::tcp::Tcp {
                cluster,
                idle: idle_timeout,
                snapshot,
                recorder,
                logs,
            };
            crate::tcp::proxy(sock, conn, tcp, entry).await
        }
    }
}

/// The listener's log entry for a connection no filter chain took (Envoy's
/// `NR` on the listener, which istiod logs).
fn no_chain(
    peer: SocketAddr,
    dst: SocketAddr,
    seen: &crate::sniff::Detected,
) -> crate::access_log::Entry {
    let mut entry = crate::access_log::Entry {
        start: Some(std::time::SystemTime::now()),
        downstream: Some(peer),
        downstream_local: Some(dst),
        server_name: seen.server_name.clone(),
        ..Default::default()
    };
    entry.flags.insert(crate::error::Flags::NO_ROUTE);
    entry
}
