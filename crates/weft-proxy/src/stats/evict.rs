//! Stats eviction, as Istio offers it (`sidecar.istio.io/statsEvictionInterval`,
//! Envoy's `stats_eviction_interval`): every interval, each series not
//! updated since the last sweep is removed, so the label sets of services,
//! peers and response codes that are gone stop being exported forever. A
//! series used again starts over from zero (Prometheus reads that as a
//! counter reset).
//!
//! Each series has a "used" flag, set by the request that updates it and
//! cleared by the sweep. The per-thread handles of `series.rs` share the
//! flag of their label set; an eviction bumps `Stats::epoch`, which makes
//! every thread drop its handles before it next records.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// The used flags of one kind of series.
pub(super) struct Used<K> {
    flags: Mutex<HashMap<K, Arc<AtomicBool>>>,
}

impl<K> Default for Used<K> {
    fn default() -> Self {
        Used {
            flags: Mutex::new(HashMap::new()),
        }
    }
}

impl<K: Hash + Eq + Clone> Used<K> {
    /// The flag of `key` (created set).
    pub fn flag(&self, key: &K) -> Arc<AtomicBool> {
        let mut flags = self.flags.lock().unwrap_or_else(|p| p.into_inner());
        let flag = flags
            .entry(key.clone())
            .or_insert_with(|| Arc::new(AtomicBool::new(true)));
        flag.store(true, Ordering::Relaxed);
        flag.clone()
    }

    /// Shares one flag among keys (a label set's four HTTP metrics).
    pub fn share(&self, key: &K, flag: &Arc<AtomicBool>) {
        let mut flags = self.flags.lock().unwrap_or_else(|p| p.into_inner());
        flags.insert(key.clone(), flag.clone());
    }

    /// Marks `key` used.
    pub fn mark(&self, key: &K) {
        self.flag(key);
    }

    /// The keys not used since the last sweep, forgotten; the others'
    /// flags cleared for the next interval.
    pub fn sweep(&self) -> Vec<K> {
        let mut flags = self.flags.lock().unwrap_or_else(|p| p.into_inner());
        // A shared flag is read (and cleared) once, for all its keys.
        let mut read: HashMap<*const AtomicBool, bool> = HashMap::new();
        let idle: Vec<K> = flags
            .iter()
            .filter(|(_, f)| {
                !*read
                    .entry(Arc::as_ptr(f))
                    .or_insert_with(|| f.swap(false, Ordering::Relaxed))
            })
            .map(|(k, _)| k.clone())
            .collect();
        for k in &idle {
            flags.remove(k);
        }
        idle
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_unused_for_a_whole_interval_is_swept() {
        let used = Used::<&str>::default();
        used.mark(&"a");
        let shared = used.flag(&"b");
        used.share(&"c", &shared);
        assert!(used.sweep().is_empty(), "all used in the first interval");
        used.mark(&"a");
        let mut idle = used.sweep();
        idle.sort();
        assert_eq!(idle, ["b", "c"]);
        assert_eq!(used.sweep(), ["a"]);
        assert!(used.sweep().is_empty());
    }
}
