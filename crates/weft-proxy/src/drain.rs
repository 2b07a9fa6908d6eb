//! Shutdown without cutting requests: Istio's proxy termination drain.
//!
//! On SIGTERM (a pod being deleted, a rolling update, `weft down`) the
//! proxy drains for at most its drain duration (Istio's
//! `terminationDrainDuration`, 5 s by default) before it exits, as
//! istio-agent drains Envoy: listeners go on accepting, since callers
//! learn of the pod's end only as fast as endpoints are pushed, but each
//! connection is asked to end — an HTTP/1.1 response carries
//! `connection: close` and its connection closes after it, an idle
//! HTTP/1.1 connection closes now, HTTP/2 gets GOAWAY — and requests in
//! flight finish. The proxy exits when its last connection has closed
//! (istio-agent's `EXIT_ON_ZERO_ACTIVE_CONNECTIONS`: nothing is left to
//! wait for) or when the duration is up, whichever comes first; opaque
//! TCP streams, which have no way to be asked, hold it until then.

use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use tokio::sync::Notify;

/// Istio's default `terminationDrainDuration`.
pub const DEFAULT_DURATION: Duration = Duration::from_secs(5);

#[derive(Default)]
pub(crate) struct Drain {
    draining: AtomicBool,
    started: Notify,
    /// Downstream connections open, of the listeners'.
    open: AtomicUsize,
    none_open: Notify,
}

impl Drain {
    /// Counts a downstream connection until the guard is dropped.
    pub fn connection(self: &Arc<Self>) -> Open {
        self.open.fetch_add(1, Ordering::Relaxed);
        Open(self.clone())
    }

    /// Whether the drain has begun: a response then closes its connection.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// Resolves once the drain has begun.
    pub async fn started(&self) {
        // Made before the check: `notify_waiters` wakes a `Notified`
        // from its creation, so a drain between the two is not missed.
        let started = self.started.notified();
        if self.is_draining() {
            return;
        }
        started.await
    }

    /// Begins the drain and waits until no connection is open, or for
    /// `limit`; returns how many were still open.
    pub async fn run(&self, limit: Duration) -> usize {
        self.draining.store(true, Ordering::SeqCst);
        self.started.notify_waiters();
        let none_open = async {
            loop {
                let closed = self.none_open.notified();
                if self.open.load(Ordering::SeqCst) == 0 {
                    return;
                }
                closed.await;
            }
        };
        let _ = tokio::time::timeout(limit, none_open).await;
        self.open.load(Ordering::SeqCst)
    }
}

/// A connection's watch for the drain between its requests, where it
/// waits for the next one. Waiting on `Drain::started` there cost ~250
/// instructions a request (registering with a `Notify` shared by every
/// worker, and leaving it, under its lock; callgrind); this registers the
/// connection's waker once, with its own worker (`wake_watchers`), and
/// after that checks a flag.
pub(crate) struct Watch<'a> {
    drain: &'a Drain,
    /// Its slot in this worker's `WATCHERS`, once registered.
    slot: Option<usize>,
}

thread_local! {
    /// This worker's watching connections' wakers (a slot each): a
    /// connection lives on one worker thread from accept to close.
    static WATCHERS: RefCell<Slots> = RefCell::default();
}

#[derive(Default)]
struct Slots {
    wakers: Vec<Option<Waker>>,
    free: Vec<usize>,
}

impl<'a> Watch<'a> {
    pub fn new(drain: &'a Drain) -> Watch<'a> {
        Watch { drain, slot: None }
    }

    /// Resolves once the drain has begun.
    pub async fn begun(&mut self) {
        std::future::poll_fn(|cx| self.poll(cx)).await
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if self.drain.is_draining() {
            return Poll::Ready(());
        }
        WATCHERS.with_borrow_mut(|slots| match self.slot {
            Some(at) => {
                // The connection's task is its waker for its life; kept
                // right should it ever be polled from elsewhere.
                let kept = &mut slots.wakers[at];
                if !kept.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                    *kept = Some(cx.waker().clone());
                }
            }
            None => {
                let waker = Some(cx.waker().clone());
                self.slot = Some(match slots.free.pop() {
                    Some(at) => {
                        slots.wakers[at] = waker;
                        at
                    }
                    None => {
                        slots.wakers.push(waker);
                        slots.wakers.len() - 1
                    }
                });
            }
        });
        Poll::Pending
    }
}

impl Drop for Watch<'_> {
    fn drop(&mut self) {
        if let Some(at) = self.slot {
            // Not at the thread's exit, when the slots may be gone.
            let _ = WATCHERS.try_with(|slots| {
                let mut slots = slots.borrow_mut();
                slots.wakers[at] = None;
                slots.free.push(at);
            });
        }
    }
}

/// Runs on each worker: wakes its watching connections as the drain
/// begins (each then finds the flag set). A connection that registers
/// later sees the flag first: it is set before `started` resolves.
pub(crate) async fn wake_watchers(drain: Arc<Drain>) {
    drain.started().await;
    let wakers: Vec<Waker> = WATCHERS
        .with_borrow_mut(|slots| slots.wakers.iter_mut().filter_map(Option::take).collect());
    for waker in wakers {
        waker.wake();
    }
}

/// One open downstream connection.
pub(crate) struct Open(Arc<Drain>);

impl Drop for Open {
    fn drop(&mut self) {
        // Both sides SeqCst: `run` stores `draining` then reads `open`,
        // this decrements `open` then reads `draining`; one sees the other.
        let last = self.0.open.fetch_sub(1, Ordering::SeqCst) == 1;
        if last && self.0.draining.load(Ordering::SeqCst) {
            self.0.none_open.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_drain_ends_when_the_last_connection_closes() {
        let drain = Arc::new(Drain::default());
        let (a, b) = (drain.connection(), drain.connection());
        let run = tokio::spawn({
            let drain = drain.clone();
            async move { drain.run(Duration::from_secs(30)).await }
        });
        drain.started().await;
        assert!(drain.is_draining());
        drop(a);
        tokio::task::yield_now().await;
        assert!(!run.is_finished(), "one connection is still open");
        drop(b);
        let left = tokio::time::timeout(Duration::from_secs(5), run).await;
        assert_eq!(left.expect("drain ended").unwrap(), 0);
    }

    #[tokio::test]
    async fn a_drain_gives_up_after_its_duration() {
        let drain = Arc::new(Drain::default());
        let _held = drain.connection();
        assert_eq!(drain.run(Duration::from_millis(50)).await, 1);
    }
}
