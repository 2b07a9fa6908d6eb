//! Starting the mesh's processes and ending them, by PID, only if the PID
//! still belongs to the process we started.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::state::ProcRecord;

pub struct Launch<'a> {
    pub role: String,
    pub argv: Vec<String>,
    pub netns: Option<&'a str>,
    /// Run as this uid/gid (the proxy's 1337), via setpriv.
    pub uid: Option<u32>,
    pub env: Vec<(String, String)>,
    pub log: &'a Path,
}

/// Starts a process in its own process group (so a terminal's Ctrl-C reaches
/// only `weft up`, which then stops everything in order).
pub fn spawn(l: Launch) -> anyhow::Result<ProcRecord> {
    let mut argv: Vec<String> = Vec::new();
    if let Some(ns) = l.netns {
        argv.extend(["ip", "netns", "exec", ns].map(String::from));
    }
    if let Some(uid) = l.uid {
        argv.extend([
            "setpriv".into(),
            format!("--reuid={uid}"),
            format!("--regid={uid}"),
            "--clear-groups".into(),
            "--".into(),
        ]);
    }
    argv.extend(l.argv);
    let log =
        std::fs::File::create(l.log).with_context(|| format!("creating {}", l.log.display()))?;
    let child = {
        use std::os::unix::process::CommandExt;
        Command::new(&argv[0])
            .args(&argv[1..])
            .envs(l.env)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .process_group(0)
            .spawn()
            .with_context(|| format!("starting {}", argv.join(" ")))?
    };
    let pid = child.id() as i32;
    // The child is reaped by whoever outlives it; we track it by PID.
    std::mem::forget(child);
    Ok(ProcRecord {
        pid,
        role: l.role,
        start_time: start_time(pid).unwrap_or(0),
        grace_ms: None,
    })
}

pub fn start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name; start time is field 22.
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

pub fn is_ours(p: &ProcRecord) -> bool {
    start_time(p.pid).is_some_and(|t| t == p.start_time)
}

/// SIGTERM to each process still ours; each still running after its own
/// grace (`grace_ms`, else `grace`) gets SIGKILL.
pub fn stop_all(procs: &[ProcRecord], grace: Duration) {
    let alive: Vec<&ProcRecord> = procs.iter().filter(|p| is_ours(p)).collect();
    for p in &alive {
        let _ = kill(Pid::from_raw(p.pid), Signal::SIGTERM);
    }
    let start = Instant::now();
    let deadline = |p: &ProcRecord| start + p.grace_ms.map_or(grace, Duration::from_millis);
    let mut waiting = alive;
    while !waiting.is_empty() {
        reap();
        let now = Instant::now();
        waiting.retain(|p| {
            let run = running(p);
            if run && now >= deadline(p) {
                let _ = kill(Pid::from_raw(p.pid), Signal::SIGKILL);
                return false;
            }
            run
        });
        std::thread::sleep(Duration::from_millis(50));
    }
    // A process killed just now is reaped once it is gone.
    std::thread::sleep(Duration::from_millis(50));
    reap();
}

/// A process that exited but was not reaped yet is a zombie: not running.
pub fn running(p: &ProcRecord) -> bool {
    is_ours(p)
        && std::fs::read_to_string(format!("/proc/{}/stat", p.pid))
            .ok()
            .and_then(|s| s.rfind(')').map(|i| s[i + 2..].starts_with('Z')))
            == Some(false)
}

/// Reaps any of our exited children so they do not linger as zombies.
pub fn reap() {
    use nix::sys::wait::{waitpid, WaitPidFlag};
    while let Ok(status) = waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
        if status == nix::sys::wait::WaitStatus::StillAlive {
            break;
        }
    }
}

/// Kills every process inside a namespace (they can only be the mesh's) and
/// waits for them to go: a namespace with a live process outlives `ip netns
/// del`, and keeps its veth with it.
pub fn kill_namespace(netns: &str) {
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let pids = crate::net::namespace_pids(netns);
        if pids.is_empty() || Instant::now() > deadline {
            return;
        }
        for pid in pids {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        reap();
        std::thread::sleep(Duration::from_millis(20));
    }
}
