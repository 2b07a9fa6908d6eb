//! The data plane's threads: one worker per core, each a single-threaded
//! tokio runtime with its own copy of every listening socket.
//!
//! This is Envoy's and nginx's model. The kernel spreads new connections
//! over the workers' sockets (`SO_REUSEPORT`); a connection then lives on
//! one thread from accept to close, with that thread's upstream pool and
//! access-log buffer, and no work is handed between threads. The control
//! side (xDS, admin) runs on the main thread and only sends the workers
//! sockets to serve and names to stop serving.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::Shared;

enum Command {
    /// Serve this socket under this listener name (replacing a socket the
    /// worker already serves under the name).
    Listen {
        name: String,
        socket: std::net::TcpListener,
    },
    /// Stop accepting for this listener; accepted connections go on.
    Close { name: String },
}

pub(crate) struct Workers {
    senders: Vec<mpsc::UnboundedSender<Command>>,
}

impl Workers {
    /// Starts `count` worker threads (at least one).
    pub fn start(count: usize, shared: Arc<Shared>) -> std::io::Result<Workers> {
        let mut senders = Vec::new();
        for i in 0..count.max(1) {
            let (tx, rx) = mpsc::unbounded_channel();
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let shared = shared.clone();
            std::thread::Builder::new()
                .name(format!("weft-worker-{i}"))
                .spawn(move || runtime.block_on(serve(rx, shared)))?;
            senders.push(tx);
        }
        Ok(Workers { senders })
    }

    pub fn count(&self) -> usize {
        self.senders.len()
    }

    /// Hands each worker its own socket for listener `name`; `sockets` has
    /// one per worker.
    pub fn listen(&self, name: &str, sockets: Vec<std::net::TcpListener>) {
        debug_assert_eq!(sockets.len(), self.senders.len());
        for (tx, socket) in self.senders.iter().zip(sockets) {
            let _ = tx.send(Command::Listen {
                name: name.to_string(),
                socket,
            });
        }
    }

    pub fn close(&self, name: &str) {
        for tx in &self.senders {
            let _ = tx.send(Command::Close {
                name: name.to_string(),
            });
        }
    }
}

/// A worker's life: follow commands, while the runtime runs the accept
/// loops and connections they start.
async fn serve(mut commands: mpsc::UnboundedReceiver<Command>, shared: Arc<Shared>) {
    let mut accepting: HashMap<String, JoinHandle<()>> = HashMap::new();
    tokio::spawn(crate::drain::wake_watchers(shared.drain.clone()));
    while let Some(command) = commands.recv().await {
        match command {
            Command::Listen { name, socket } => match tokio::net::TcpListener::from_std(socket) {
                Ok(listener) => {
                    let task = tokio::spawn(crate::listeners::accept_loop(
                        listener,
                        name.clone(),
                        shared.clone(),
                    ));
                    if let Some(old) = accepting.insert(name, task) {
                        old.abort();
                    }
                }
                Err(e) => tracing::error!(listener = %name, error = %e, "cannot serve socket"),
            },
            Command::Close { name } => {
                if let Some(task) = accepting.remove(&name) {
                    task.abort();
                }
            }
        }
    }
}
