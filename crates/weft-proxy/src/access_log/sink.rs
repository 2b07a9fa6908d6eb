//! Where log lines go, buffered and written once a second (sooner when
//! 64 KiB gather) by a thread of their own (`weft-logs`), as Envoy's file
//! access log is flushed: a
//! write(2) per request would cost more than the rest of the request path,
//! and a worker never waits on a slow disk or pipe. A buffer that grows
//! past 4 MiB between flushes drops lines (counted) instead of growing.
//!
//! Standard output has one buffer per worker thread, so writers never
//! contend; lines from different threads may interleave out of order, as
//! with Envoy's per-worker buffers. A file has one buffer, shared by every
//! chain that names its path, so lines are never torn.

use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const MAX_BUFFERED: usize = 4 * 1024 * 1024;
static DROPPED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// A buffer this large wakes the flusher early (it still never blocks the
/// worker): under load lines go out as they gather, as Envoy's buffered
/// file writer does.
const WAKE_AT: usize = 64 * 1024;
static FLUSHER: std::sync::OnceLock<std::thread::Thread> = std::sync::OnceLock::new();

/// Appends a line unless the buffer is full.
fn append(buf: &mut Vec<u8>, line: impl FnOnce(&mut Vec<u8>)) {
    if buf.len() >= MAX_BUFFERED {
        DROPPED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        return;
    }
    let before = buf.len();
    line(buf);
    if before < WAKE_AT && buf.len() >= WAKE_AT {
        if let Some(t) = FLUSHER.get() {
            t.unpark();
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) enum Sink {
    Stdout,
    Stderr,
    File(Arc<FileSink>),
}

#[derive(Debug)]
pub(crate) struct FileSink {
    path: PathBuf,
    buf: Mutex<Vec<u8>>,
}

type Shard = Arc<Mutex<Vec<u8>>>;
static SHARDS: Mutex<Vec<Shard>> = Mutex::new(Vec::new());
static FILES: Mutex<Option<HashMap<PathBuf, Arc<FileSink>>>> = Mutex::new(None);

thread_local! {
    static SHARD: Shard = {
        let shard = Shard::default();
        lock(&SHARDS).push(shard.clone());
        shard
    };
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Sink {
    /// The sink for an Envoy file logger's path; a file is opened (created)
    /// now, so a path the proxy cannot write is a config error.
    pub fn path(path: &str) -> Result<Sink, String> {
        match path {
            "/dev/stdout" => return Ok(Sink::Stdout),
            "/dev/stderr" => return Ok(Sink::Stderr),
            "" => return Err("a file access log needs a path".into()),
            _ => {}
        }
        let path = PathBuf::from(path);
        let mut files = lock(&FILES);
        let files = files.get_or_insert_with(HashMap::new);
        if let Some(f) = files.get(&path) {
            return Ok(Sink::File(f.clone()));
        }
        open(&path).map_err(|e| format!("access log file {}: {e}", path.display()))?;
        let f = Arc::new(FileSink {
            path: path.clone(),
            buf: Mutex::default(),
        });
        files.insert(path, f.clone());
        Ok(Sink::File(f))
    }

    /// Appends what `line` writes to this sink's buffer.
    pub fn write(&self, line: impl FnOnce(&mut Vec<u8>)) {
        match self {
            Sink::Stdout => SHARD.with(|shard| append(&mut lock(shard), line)),
            Sink::Stderr => {
                let mut buf = Vec::new();
                line(&mut buf);
                let _ = std::io::stderr().lock().write_all(&buf);
            }
            Sink::File(f) => append(&mut lock(&f.buf), line),
        }
    }
}

fn open(path: &std::path::Path) -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
}

impl FileSink {
    /// Opened per flush (once a second at most), so a rotated or removed
    /// file is recreated as logrotate's `create` expects.
    fn append(&self, bytes: &[u8]) {
        if let Err(e) = open(&self.path).and_then(|mut f| f.write_all(bytes)) {
            tracing::warn!(path = %self.path.display(), error = %e, "access log write failed");
        }
    }
}

/// Writes out whatever every thread and file has buffered.
pub(crate) fn flush() {
    let shards = lock(&SHARDS).clone();
    let mut out = std::io::stdout().lock();
    for shard in shards {
        let bytes = std::mem::take(&mut *lock(&shard));
        let _ = out.write_all(&bytes);
    }
    let _ = out.flush();
    let files: Vec<Arc<FileSink>> = lock(&FILES)
        .as_ref()
        .map(|m| m.values().cloned().collect())
        .unwrap_or_default();
    for f in files {
        let bytes = std::mem::take(&mut *lock(&f.buf));
        if !bytes.is_empty() {
            f.append(&bytes);
        }
    }
}

/// Starts the thread that flushes once a second (once per process: the
/// buffers are the process's).
pub(crate) fn start_flusher() {
    static STARTED: std::sync::Once = std::sync::Once::new();
    STARTED.call_once(|| {
        let spawned = std::thread::Builder::new()
            .name("weft-logs".into())
            .spawn(|| loop {
                std::thread::park_timeout(Duration::from_secs(1));
                flush();
                let dropped = DROPPED.swap(0, std::sync::atomic::Ordering::Relaxed);
                if dropped > 0 {
                    tracing::warn!(
                        dropped,
                        "access log lines dropped: the log could not keep up"
                    );
                }
            });
        match spawned {
            Ok(handle) => {
                let _ = FLUSHER.set(handle.thread().clone());
            }
            Err(e) => tracing::error!(error = %e, "access log flusher cannot start"),
        }
    });
}
