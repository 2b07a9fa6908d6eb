//! The proxy's last failed requests (5xx, no response, or a response
//! flag), for the built-in dashboard (`/recent_failures` on the admin
//! port): what failed, why (flags and details), and the route, cluster and
//! upstream that served it. Kept only on the failure path: a success costs
//! nothing here.

use std::collections::VecDeque;
use std::sync::Mutex;

use serde_json::{json, Value};

use crate::access_log::Entry;
use crate::error::Flags;

const KEEP: usize = 50;

#[derive(Debug, Default)]
pub(crate) struct Recent(Mutex<VecDeque<Value>>);

impl Recent {
    /// Notes `e` if it failed.
    pub fn note(&self, e: &Entry) {
        let failed = e.status == 0 || e.status >= 500 || e.flags != Flags::default();
        if !failed || !e.is_http() {
            return;
        }
        let at = e.start.unwrap_or_else(std::time::SystemTime::now);
        let or_dash = |s: &str| {
            if s.is_empty() {
                "-".to_string()
            } else {
                s.to_string()
            }
        };
        let item = json!({
            "time": weft_xds::clock::Rfc3339::millis(at).to_string(),
            "request": format!("{} {}{}", e.method(), e.authority, e.path()),
            "status": e.status,
            "flags": e.flags.to_string(),
            "details": e.details().unwrap_or("-"),
            "route": or_dash(&e.route),
            "cluster": or_dash(&e.cluster),
            "upstream": e.upstream.map_or("-".to_string(), |a| a.to_string()),
            "request_id": e.request_id,
        });
        let mut ring = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if ring.len() == KEEP {
            ring.pop_front();
        }
        ring.push_back(item);
    }

    /// Newest first.
    pub fn list(&self) -> Vec<Value> {
        let ring = self.0.lock().unwrap_or_else(|p| p.into_inner());
        ring.iter().rev().cloned().collect()
    }
}
