//! Envoy's circuit breakers for one cluster: limits on open connections,
//! requests waiting for a connection, active requests and concurrent
//! retries, counted across all worker threads (as Envoy's resource
//! manager counts them). Going over a limit is an overflow: the request is
//! answered 503 with flag UO, and an over-limit retry is not made.

use std::sync::atomic::{AtomicU32, Ordering};

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Limits {
    pub max_connections: u32,
    pub max_pending_requests: u32,
    pub max_requests: u32,
    pub max_retries: u32,
    /// Requests one connection serves before it is closed (None: no limit).
    pub max_requests_per_connection: Option<u32>,
}

impl Default for Limits {
    /// Envoy's defaults when a cluster sets no thresholds.
    fn default() -> Limits {
        Limits {
            max_connections: 1024,
            max_pending_requests: 1024,
            max_requests: 1024,
            max_retries: 3,
            max_requests_per_connection: None,
        }
    }
}

#[derive(Debug, Default, Serialize)]
pub struct Breaker {
    pub limits: Limits,
    #[serde(skip)]
    connections: AtomicU32,
    #[serde(skip)]
    pending: AtomicU32,
    #[serde(skip)]
    requests: AtomicU32,
    #[serde(skip)]
    retries: AtomicU32,
    /// Woken when a connection closes or goes back to a pool, so pending
    /// requests look again.
    #[serde(skip)]
    pub(crate) freed: tokio::sync::Notify,
}

/// A unit of a limited resource, given back when dropped.
pub(crate) struct Slot<'a> {
    counter: &'a AtomicU32,
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.counter.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Takes one unit of `counter` if it is below `max`.
fn take(counter: &AtomicU32, max: u32) -> Option<Slot<'_>> {
    counter
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
            (n < max).then_some(n + 1)
        })
        .ok()
        .map(|_| Slot { counter })
}

impl Breaker {
    pub fn new(limits: Limits) -> Breaker {
        Breaker {
            limits,
            ..Default::default()
        }
    }

    pub(crate) fn request(&self) -> Option<Slot<'_>> {
        take(&self.requests, self.limits.max_requests)
    }

    pub(crate) fn pending(&self) -> Option<Slot<'_>> {
        take(&self.pending, self.limits.max_pending_requests)
    }

    pub(crate) fn retry(&self) -> Option<Slot<'_>> {
        take(&self.retries, self.limits.max_retries)
    }

    /// Reserves a connection; the caller gives it back with
    /// `connection_closed` when the connection ends (it outlives the
    /// request, so it cannot be a borrowed slot).
    pub(crate) fn open_connection(&self, force: bool) -> bool {
        if force {
            self.connections.fetch_add(1, Ordering::AcqRel);
            return true;
        }
        let max = self.limits.max_connections;
        self.connections
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .is_ok()
    }

    pub(crate) fn connection_closed(&self) {
        self.connections.fetch_sub(1, Ordering::AcqRel);
        self.wake_pending();
    }

    /// Wakes requests waiting for a connection, if any: `Notify` takes a
    /// lock, which the common case (nobody waiting) never needs.
    pub(crate) fn wake_pending(&self) {
        if self.pending.load(Ordering::Acquire) > 0 {
            self.freed.notify_waiters();
        }
    }
}
