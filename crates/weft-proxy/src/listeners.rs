//! Bound listeners and their accept loops. Each accepted connection is
//! dispatched on the config snapshot current at accept time.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use crate::compile::ChainAction;
use crate::Shared;

pub(crate) struct Listeners {
    shared: Arc<Shared>,
    running: HashMap<String, (SocketAddr, JoinHandle<()>)>,
}

impl Listeners {
    pub fn new(shared: Arc<Shared>) -> Self {
        Listeners {
            shared,
            running: HashMap::new(),
        }
    }

    /// Starts listeners that are wanted and not running, stops the others.
    /// Stopping closes the listening socket only; accepted connections go on.
    pub fn reconcile(&mut self, wanted: &BTreeMap<String, SocketAddr>) -> Result<(), String> {
        let mut started = Vec::new();
        for (name, addr) in wanted {
            if self.running.get(name).is_some_and(|(a, _)| a == addr) {
                continue;
            }
            let bind_addr = self.bind_address(*addr);
            match bind(bind_addr) {
                Ok(listener) => {
                    tracing::info!(listener = %name, address = %bind_addr, "listening");
                    let task =
                        tokio::spawn(accept_loop(listener, name.clone(), self.shared.clone()));
                    started.push((name.clone(), (*addr, task)));
                }
                Err(e) => {
                    for (_, (_, task)) in started {
                        task.abort();
                    }
                    return Err(format!("listener {name:?}: cannot bind {bind_addr}: {e}"));
                }
            }
        }
        for (name, entry) in started {
            if let Some((_, old)) = self.running.insert(name, entry) {
                old.abort();
            }
        }
        self.running.retain(|name, (_, task)| {
            let keep = wanted.contains_key(name);
            if !keep {
                tracing::info!(listener = %name, "listener removed");
                task.abort();
            }
            keep
        });
        Ok(())
    }

    fn bind_address(&self, addr: SocketAddr) -> SocketAddr {
        match self.shared.options.bind_ip {
            Some(ip) if addr.ip().is_unspecified() => SocketAddr::new(ip, addr.port()),
            _ => addr,
        }
    }
}

fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        None,
    )?;
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    TcpListener::from_std(socket.into())
}

async fn accept_loop(listener: TcpListener, name: String, shared: Arc<Shared>) {
    loop {
        match listener.accept().await {
            Ok((sock, peer)) => {
                let _ = sock.set_nodelay(true);
                tokio::spawn(dispatch(sock, peer, name.clone(), shared.clone()));
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
    let Some(chain) = target.chain_for(dst.port()) else {
        tracing::debug!(listener = %target.name, %dst, "no filter chain matched; closing");
        return;
    };
    let conn = crate::http::Connection {
        peer,
        destination: dst,
        listener: target.name.clone(),
    };
    match chain.action.clone() {
        ChainAction::Http { routes, .. } => crate::http::serve(sock, conn, routes, shared).await,
        ChainAction::Tcp { cluster, .. } => {
            crate::tcp::proxy(sock, conn, &cluster, snapshot, shared).await
        }
    }
}
