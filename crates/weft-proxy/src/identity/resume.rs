//! TLS session resumption between mesh peers. A resumed handshake skips
//! the peer certificate's check, so a session may only be resumed while a
//! full handshake would still decide the same: sessions belong to the
//! workload certificate and trust bundle in use when they were made (a
//! renewal or a root rotation starts every peer afresh) and to one
//! `WINDOW_SECS` window — no older than a pooled connection that was
//! simply kept open. Caches are made at the first handshake, so an idle
//! sidecar holds none.

use std::sync::{Arc, Mutex};

use rustls::client::{ClientSessionMemoryCache, ClientSessionStore, Tls12ClientSessionValue};
use rustls::pki_types::ServerName;
use rustls::server::{ServerSessionMemoryCache, StoresServerSessions};
use rustls::NamedGroup;

use super::Identity;

/// How long, at most, a session stays resumable.
const WINDOW_SECS: u64 = 600;
/// Sessions a mesh server keeps (each holds its client's certificate).
const SERVER_SESSIONS: usize = 256;
/// Tickets a mesh client keeps, over all the servers of one cluster.
const CLIENT_TICKETS: usize = 64;

/// A certificate's generation and a window's number.
type Scope = (u64, u64);

/// A cache of `T` that lives for one certificate and one window.
#[derive(Debug)]
struct Scoped<T> {
    identity: Arc<Identity>,
    make: fn() -> Arc<T>,
    /// The cache and the scope it belongs to.
    current: Mutex<Option<(Scope, Arc<T>)>>,
}

impl<T> Scoped<T> {
    fn new(identity: Arc<Identity>, make: fn() -> Arc<T>) -> Scoped<T> {
        Scoped {
            identity,
            make,
            current: Mutex::new(None),
        }
    }

    /// The cache in force; none without a certificate.
    fn get(&self) -> Option<Arc<T>> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        self.get_at(now)
    }

    fn get_at(&self, now_secs: u64) -> Option<Arc<T>> {
        let scope = (self.identity.current()?.generation, now_secs / WINDOW_SECS);
        let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        match &*current {
            Some((s, cache)) if *s == scope => Some(cache.clone()),
            _ => {
                let cache = (self.make)();
                *current = Some((scope, cache.clone()));
                Some(cache)
            }
        }
    }
}

/// A mesh server's sessions (`ServerConfig::session_storage`).
#[derive(Debug)]
pub(crate) struct ServerSessions(Scoped<ServerSessionMemoryCache>);

impl ServerSessions {
    pub fn new(identity: Arc<Identity>) -> ServerSessions {
        ServerSessions(Scoped::new(identity, || {
            ServerSessionMemoryCache::new(SERVER_SESSIONS)
        }))
    }
}

impl StoresServerSessions for ServerSessions {
    fn put(&self, key: Vec<u8>, value: Vec<u8>) -> bool {
        self.0.get().is_some_and(|c| c.put(key, value))
    }

    fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.0.get()?.get(key)
    }

    fn take(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.0.get()?.take(key)
    }

    fn can_cache(&self) -> bool {
        true
    }
}

/// A mesh client's sessions, one store per cluster config: the cluster's
/// expected identities were checked when each was made.
#[derive(Debug)]
pub(crate) struct ClientSessions(Scoped<ClientSessionMemoryCache>);

impl ClientSessions {
    pub fn new(identity: Arc<Identity>) -> ClientSessions {
        ClientSessions(Scoped::new(identity, || {
            Arc::new(ClientSessionMemoryCache::new(CLIENT_TICKETS))
        }))
    }
}

impl ClientSessionStore for ClientSessions {
    fn set_kx_hint(&self, server_name: ServerName<'static>, group: NamedGroup) {
        if let Some(c) = self.0.get() {
            c.set_kx_hint(server_name, group);
        }
    }

    fn kx_hint(&self, server_name: &ServerName<'_>) -> Option<NamedGroup> {
        self.0.get()?.kx_hint(server_name)
    }

    fn set_tls12_session(&self, server_name: ServerName<'static>, value: Tls12ClientSessionValue) {
        if let Some(c) = self.0.get() {
            c.set_tls12_session(server_name, value);
        }
    }

    fn tls12_session(&self, server_name: &ServerName<'_>) -> Option<Tls12ClientSessionValue> {
        self.0.get()?.tls12_session(server_name)
    }

    fn remove_tls12_session(&self, server_name: &ServerName<'static>) {
        if let Some(c) = self.0.get() {
            c.remove_tls12_session(server_name);
        }
    }

    fn insert_tls13_ticket(
        &self,
        server_name: ServerName<'static>,
        value: rustls::client::Tls13ClientSessionValue,
    ) {
        if let Some(c) = self.0.get() {
            c.insert_tls13_ticket(server_name, value);
        }
    }

    fn take_tls13_ticket(
        &self,
        server_name: &ServerName<'static>,
    ) -> Option<rustls::client::Tls13ClientSessionValue> {
        self.0.get()?.take_tls13_ticket(server_name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity_with_cert() -> Arc<Identity> {
        let identity = Arc::new(Identity::default());
        let (chain, key, roots) = super::super::tests::issued();
        identity.install(&chain, &key, &roots).unwrap();
        identity
    }

    #[test]
    fn a_cache_lives_for_one_certificate_and_one_window() {
        let identity = identity_with_cert();
        let scoped = Scoped::new(identity.clone(), || Arc::new(()));
        let first = scoped.get_at(1000).unwrap();
        assert!(Arc::ptr_eq(&first, &scoped.get_at(1000 + 1).unwrap()));
        let next_window = scoped.get_at(1000 + WINDOW_SECS).unwrap();
        assert!(!Arc::ptr_eq(&first, &next_window), "a new window");
        let (chain, key, roots) = super::super::tests::issued();
        identity.install(&chain, &key, &roots).unwrap();
        let renewed = scoped.get_at(1000 + WINDOW_SECS).unwrap();
        assert!(!Arc::ptr_eq(&next_window, &renewed), "a new certificate");
    }

    #[test]
    fn no_certificate_no_sessions() {
        let scoped = Scoped::new(Arc::new(Identity::default()), || Arc::new(()));
        assert!(scoped.get().is_none());
        let server = ServerSessions::new(Arc::new(Identity::default()));
        assert!(!server.put(vec![1], vec![2]));
    }
}
