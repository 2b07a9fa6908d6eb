//! The timers of limits that restart with every request: the
//! connection's idle timeout, and the stream idle timeout while a request
//! waits for its response.

use std::time::Duration;

use crate::error::ProxyError;

/// A limit on idle time as one timer for the connection, re-armed only
/// when it fires before the limit has passed since the idling began: a
/// timer set and cancelled for every request cost 2.5% of a request's
/// instructions (callgrind), this one 1%.
pub(super) struct IdleTimer {
    limit: Option<Duration>,
    sleep: std::pin::Pin<Box<tokio::time::Sleep>>,
}

impl IdleTimer {
    pub(super) fn new(limit: Option<Duration>) -> IdleTimer {
        let first = tokio::time::Instant::now() + limit.unwrap_or(Duration::ZERO);
        IdleTimer {
            limit,
            sleep: Box::pin(tokio::time::sleep_until(first)),
        }
    }

    /// Resolves once what has idled since `since` has done so for the
    /// limit; never without one.
    pub(super) async fn expired(&mut self, since: tokio::time::Instant) {
        let Some(limit) = self.limit else {
            return std::future::pending().await;
        };
        let due = since + limit;
        loop {
            self.sleep.as_mut().await;
            if tokio::time::Instant::now() >= due {
                return;
            }
            self.sleep.as_mut().reset(due);
        }
    }
}

/// Resolves at `due`; never without one.
pub(super) async fn until(due: Option<tokio::time::Instant>) {
    match due {
        Some(due) => tokio::time::sleep_until(due).await,
        None => std::future::pending().await,
    }
}

/// `work` within the stream idle timeout `limit` — on the connection's
/// timer where it has one, else on a timer of its own — or
/// `ProxyError::StreamIdle`.
pub(super) async fn within<T, F>(
    limit: Duration,
    timer: Option<&mut IdleTimer>,
    work: F,
) -> Result<T, ProxyError>
where
    F: std::future::Future<Output = Result<T, ProxyError>>,
{
    match timer {
        Some(timer) => {
            let since = tokio::time::Instant::now();
            tokio::select! {
                biased;
                done = work => done,
                () = timer.expired(since) => Err(ProxyError::StreamIdle),
            }
        }
        None => tokio::time::timeout(limit, work)
            .await
            .unwrap_or(Err(ProxyError::StreamIdle)),
    }
}

/// A streamed upload's progress: when data last came, and whether it has
/// all come. The stream idle timeout counts from the later of that and
/// the response's own data, as Envoy's timer restarts on either side.
pub(crate) struct Upload {
    born: tokio::time::Instant,
    /// Milliseconds after `born` when data last came.
    last: std::sync::atomic::AtomicU64,
    done: std::sync::atomic::AtomicBool,
}

impl Upload {
    pub(super) fn new() -> std::sync::Arc<Upload> {
        std::sync::Arc::new(Upload {
            born: tokio::time::Instant::now(),
            last: 0.into(),
            done: false.into(),
        })
    }

    pub(super) fn moved(&self) {
        let ms = self.born.elapsed().as_millis() as u64;
        self.last
            .fetch_max(ms, std::sync::atomic::Ordering::Relaxed);
    }

    pub(super) fn ended(&self) {
        self.moved();
        self.done.store(true, std::sync::atomic::Ordering::Relaxed);
    }

    fn last(&self) -> tokio::time::Instant {
        self.born + Duration::from_millis(self.last.load(std::sync::atomic::Ordering::Relaxed))
    }

    fn done(&self) -> bool {
        self.done.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// `work` — a request whose upload was still coming when it was handled —
/// until `limit` passes with no data from the client since: then 408
/// while the upload is unfinished, 504 once it has ended and the response
/// is what is waited for (Envoy's `maybeRequestTimeoutCode`).
pub(super) async fn while_uploading<T, F>(
    limit: Duration,
    upload: &Upload,
    work: F,
) -> Result<T, ProxyError>
where
    F: std::future::Future<Output = Result<T, ProxyError>>,
{
    let mut work = std::pin::pin!(work);
    loop {
        tokio::select! {
            biased;
            done = &mut work => return done,
            () = tokio::time::sleep_until(upload.last() + limit) => {
                if upload.last() + limit <= tokio::time::Instant::now() {
                    return Err(match upload.done() {
                        true => ProxyError::StreamIdle,
                        false => ProxyError::UploadIdle,
                    });
                }
            }
        }
    }
}

/// Why a response body ended early: no data came for the stream idle
/// timeout (Envoy resets the stream; the access log's flag is SI).
#[derive(Debug)]
pub(crate) struct StreamIdle;

impl std::fmt::Display for StreamIdle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("stream idle timeout")
    }
}

impl std::error::Error for StreamIdle {}

/// A response body that fails with `StreamIdle` when its upstream sends
/// nothing for `limit`. Its timer is made and set only when the body
/// waits: a body that is all there (the common small one) never has one.
pub(super) struct IdleBody<B> {
    inner: B,
    limit: Duration,
    sleep: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
    /// Data came since the timer was last set.
    moved: bool,
    /// The request's upload, if it was streaming: its data counts too.
    upload: Option<std::sync::Arc<Upload>>,
}

impl<B> IdleBody<B> {
    pub(super) fn new(
        inner: B,
        limit: Duration,
        upload: Option<std::sync::Arc<Upload>>,
    ) -> IdleBody<B> {
        IdleBody {
            inner,
            limit,
            sleep: None,
            moved: true,
            upload,
        }
    }
}

impl<B> hyper::body::Body for IdleBody<B>
where
    B: hyper::body::Body<Data = bytes::Bytes, Error = crate::upstream::BoxError> + Unpin,
{
    type Data = bytes::Bytes;
    type Error = crate::upstream::BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<bytes::Bytes>, Self::Error>>> {
        use std::task::Poll;
        let this = &mut *self;
        if let Poll::Ready(frame) = std::pin::Pin::new(&mut this.inner).poll_frame(cx) {
            this.moved = true;
            return Poll::Ready(frame);
        }
        let due = tokio::time::Instant::now() + this.limit;
        let sleep = this
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(due)));
        if std::mem::take(&mut this.moved) {
            sleep.as_mut().reset(due);
        }
        while std::future::Future::poll(sleep.as_mut(), cx).is_ready() {
            // The client's upload may have moved since the timer was set.
            match this.upload.as_ref().map(|u| u.last() + this.limit) {
                Some(later) if later > sleep.deadline() => sleep.as_mut().reset(later),
                _ => return Poll::Ready(Some(Err(Box::new(StreamIdle)))),
            }
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

/// The requests in flight on a connection hyper serves, and when the last
/// one ended: what its idle timeout reads (HTTP/2 has no head to wait
/// for, so hyper's head timer never ends an idle one).
pub(super) struct Streams {
    open: std::sync::atomic::AtomicUsize,
    born: tokio::time::Instant,
    /// Milliseconds after `born` when a stream last ended.
    ended: std::sync::atomic::AtomicU64,
}

impl Streams {
    pub(super) fn new() -> std::sync::Arc<Streams> {
        std::sync::Arc::new(Streams {
            open: 0.into(),
            born: tokio::time::Instant::now(),
            ended: 0.into(),
        })
    }

    /// Counts a stream open until the guard is dropped (with the
    /// response's body).
    pub(super) fn open(self: &std::sync::Arc<Self>) -> StreamGuard {
        self.open.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        StreamGuard(self.clone())
    }

    /// Since when the connection has had no stream; None while it has one.
    pub(super) fn idle_since(&self) -> Option<tokio::time::Instant> {
        use std::sync::atomic::Ordering::Relaxed;
        (self.open.load(Relaxed) == 0)
            .then(|| self.born + Duration::from_millis(self.ended.load(Relaxed)))
    }
}

pub(super) struct StreamGuard(std::sync::Arc<Streams>);

impl Drop for StreamGuard {
    fn drop(&mut self) {
        use std::sync::atomic::Ordering::Relaxed;
        let ms = self.0.born.elapsed().as_millis() as u64;
        self.0.ended.fetch_max(ms, Relaxed);
        self.0.open.fetch_sub(1, Relaxed);
    }
}

/// A response body that holds its stream open on the connection's count.
pub(super) struct Counting<B> {
    inner: B,
    _open: StreamGuard,
}

impl<B> Counting<B> {
    pub(super) fn new(inner: B, open: StreamGuard) -> Counting<B> {
        Counting { inner, _open: open }
    }
}

impl<B: hyper::body::Body + Unpin> hyper::body::Body for Counting<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<B::Data>, B::Error>>> {
        std::pin::Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}
