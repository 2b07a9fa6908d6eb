//! The four metrics one standard HTTP label set feeds, found once per
//! worker thread: a request then hashes its labels once, with a fast
//! hasher, and takes no lock but the histograms' own, where going through
//! `prometheus-client`'s families would hash them (with SipHash) and take
//! each family's lock four times. The handles share their values with the
//! families (a counter or histogram is an `Arc` inside), so the
//! exposition sees every update.

use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::Histogram;

use super::labels::Key;
use super::{HttpLabels, Stats};

/// One label set's handles.
#[derive(Clone)]
pub(super) struct HttpSeries {
    pub requests: Counter,
    pub duration: Histogram,
    pub request_bytes: Histogram,
    pub response_bytes: Histogram,
    /// Set by each use, when stats are evicted (`evict.rs`).
    used: Option<Arc<AtomicBool>>,
}

type Table = rustc_hash::FxHashMap<HttpLabels, HttpSeries>;

thread_local! {
    /// Per proxy (`Stats::id`), its label sets' handles, as of an
    /// eviction epoch.
    static SERIES: RefCell<rustc_hash::FxHashMap<u64, (u64, Table)>> = RefCell::default();
}

impl Stats {
    /// Runs `f` with the handles of `labels`, creating them the first
    /// time this thread sees the set.
    pub(super) fn with_series(&self, labels: &HttpLabels, f: impl FnOnce(&HttpSeries)) {
        SERIES.with(|all| {
            let mut all = all.borrow_mut();
            let (epoch, table) = all.entry(self.id).or_default();
            let now = self.epoch.load(Ordering::Acquire);
            if *epoch != now {
                // Some series were evicted: these handles may be detached.
                table.clear();
                *epoch = now;
            }
            if let Some(series) = table.get(labels) {
                if let Some(used) = &series.used {
                    used.store(true, Ordering::Relaxed);
                }
                return f(series);
            }
            let key = Key::Std(labels.clone());
            let series = HttpSeries {
                requests: self.requests.get_or_create(&key).clone(),
                duration: self.duration.get_or_create(&key).clone(),
                request_bytes: self.request_bytes.get_or_create(&key).clone(),
                response_bytes: self.response_bytes.get_or_create(&key).clone(),
                used: self.evicting().then(|| self.http_used_flag(&key)),
            };
            f(&series);
            table.insert(labels.clone(), series);
        })
    }
}
