//! Where log lines go, buffered and written once a second (or when 64 KiB
//! gather), as Envoy's file access log is: a write(2) per request would
//! cost more than the rest of the request path.
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

const FLUSH_AT: usize = 64 * 1024;

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
            Sink::Stdout => {
                let full = SHARD.with(|shard| {
                    let mut buf = lock(shard);
                    line(&mut buf);
                    (buf.len() >= FLUSH_AT).then(|| std::mem::take(&mut *buf))
                });
                if let Some(bytes) = full {
                    let _ = std::io::stdout().lock().write_all(&bytes);
                }
            }
            Sink::Stderr => {
                let mut buf = Vec::new();
                line(&mut buf);
                let _ = std::io::stderr().lock().write_all(&buf);
            }
            Sink::File(f) => {
                let full = {
                    let mut buf = lock(&f.buf);
                    line(&mut buf);
                    (buf.len() >= FLUSH_AT).then(|| std::mem::take(&mut *buf))
                };
                if let Some(bytes) = full {
                    f.append(&bytes);
                }
            }
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

/// Flushes once a second, for as long as the proxy runs.
pub(crate) async fn flush_every_second() {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        flush();
    }
}
