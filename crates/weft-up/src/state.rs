//! The record of what one mesh created, written before each thing is
//! created so that cleanup never misses anything.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProcRecord {
    pub pid: i32,
    pub role: String,
    /// Start time (clock ticks since boot, /proc/PID/stat field 22): a PID
    /// is only ours while its start time is unchanged, so a reused PID is
    /// never signalled.
    pub start_time: u64,
    /// How long `down` waits after SIGTERM before SIGKILL, when not its
    /// default (a proxy's drain and a second).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grace_ms: Option<u64>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct MeshState {
    pub name: String,
    pub bridge: String,
    pub netns: Vec<String>,
    pub processes: Vec<ProcRecord>,
    pub api: Option<SocketAddr>,
    pub ingress: Option<SocketAddr>,
    pub config_dir: Option<PathBuf>,
}

impl MeshState {
    pub fn file(dir: &Path) -> PathBuf {
        dir.join("state.json")
    }

    pub fn load(dir: &Path) -> Option<MeshState> {
        let text = std::fs::read_to_string(Self::file(dir)).ok()?;
        serde_json::from_str(&text).ok()
    }

    pub fn save(&self, dir: &Path) -> anyhow::Result<()> {
        let tmp = dir.join("state.json.tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(self)?)?;
        std::fs::rename(tmp, Self::file(dir))?;
        Ok(())
    }
}
