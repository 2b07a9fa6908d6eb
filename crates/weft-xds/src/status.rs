//! What each connected proxy was sent and what it answered: the data behind
//! the control plane's debug endpoint and `weft proxy-status`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use serde::Serialize;

#[derive(Debug, Clone, Default, Serialize)]
pub struct TypeStatus {
    /// Version of the last response sent.
    pub sent_version: String,
    pub sent_nonce: String,
    pub resources: usize,
    /// Encoded size of the resources in the last response sent.
    pub bytes: usize,
    /// Names of the resources in the last response sent.
    pub names: Vec<String>,
    /// Version the proxy last ACKed (empty until the first ACK).
    pub acked_version: String,
    /// The reason the proxy gave when it last rejected this type, cleared by
    /// a later ACK of a newer version.
    pub nack: Option<String>,
    pub nacked_version: Option<String>,
    /// NOT SENT, SYNCED, NACKED or STALE, kept current by the board so
    /// every reader (proxy-status, weft up) reads one verdict.
    pub state: &'static str,
}

impl TypeStatus {
    /// SYNCED when the last version sent was ACKed, as istioctl says it.
    fn verdict(&self) -> &'static str {
        if self.sent_version.is_empty() {
            "NOT SENT"
        } else if self.acked_version == self.sent_version {
            "SYNCED"
        } else if self.nacked_version.as_deref() == Some(self.sent_version.as_str()) {
            "NACKED"
        } else {
            "STALE"
        }
    }
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct ProxyStatus {
    pub node_id: String,
    pub connected: bool,
    /// Open streams with this node id (a pod may run several gRPC
    /// processes, all with its id); connected while any is open.
    #[serde(skip)]
    pub streams: u32,
    /// The node metadata's `GENERATOR` (`grpc` for a proxyless client).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub generator: Option<String>,
    /// Keyed by short type name (CDS, EDS, LDS, RDS).
    pub types: BTreeMap<String, TypeStatus>,
    /// Connected, with its listeners and clusters ACKed at the sent version.
    pub synced: bool,
}

impl ProxyStatus {
    fn refresh(&mut self) {
        for t in self.types.values_mut() {
            t.state = t.verdict();
        }
        self.synced = self.connected
            && ["CDS", "LDS"]
                .iter()
                .all(|t| self.types.get(*t).is_some_and(|s| s.state == "SYNCED"));
    }
}

/// Shared between stream tasks and the debug API. A plain mutex: it is
/// touched once per xDS message, never on a request path.
#[derive(Debug, Clone, Default)]
pub struct StatusBoard {
    inner: Arc<Mutex<BTreeMap<String, ProxyStatus>>>,
}

impl StatusBoard {
    pub fn update(&self, node_id: &str, f: impl FnOnce(&mut ProxyStatus)) {
        let mut map = self.inner.lock().expect("status board poisoned");
        let entry = map
            .entry(node_id.to_string())
            .or_insert_with(|| ProxyStatus {
                node_id: node_id.to_string(),
                ..Default::default()
            });
        f(entry);
        entry.refresh();
    }

    pub fn snapshot(&self) -> Vec<ProxyStatus> {
        self.inner
            .lock()
            .expect("status board poisoned")
            .values()
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_board_keeps_each_verdict_current() {
        let board = StatusBoard::default();
        board.update("p", |s| {
            s.connected = true;
            for t in ["CDS", "LDS"] {
                let ts = s.types.entry(t.into()).or_default();
                ts.sent_version = "1".into();
                ts.acked_version = "1".into();
            }
        });
        assert!(board.snapshot()[0].synced);
        board.update("p", |s| {
            let cds = s.types.get_mut("CDS").unwrap();
            cds.sent_version = "2".into();
            cds.nacked_version = Some("2".into());
        });
        let p = &board.snapshot()[0];
        assert_eq!(p.types["CDS"].state, "NACKED");
        assert!(!p.synced);
        board.update("p", |s| s.connected = false);
        assert!(!board.snapshot()[0].synced);
    }
}
