//! Network plumbing through iproute2 and iptables-restore.

use std::io::Write;
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};

use anyhow::{bail, Context};

/// Runs a command, failing with its stderr.
pub fn run(program: &str, args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("running {program} (is it installed?)"))?;
    if !out.status.success() {
        bail!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

pub fn ip(args: &[&str]) -> anyhow::Result<()> {
    run("ip", args)
}

/// The bridge's own MAC: fixed, locally administered, from its address.
/// A bridge without one takes the lowest MAC of its ports, so a pod
/// plugged in later can change it, and pods that resolved the old one
/// send their packets to the control plane into the void until their ARP
/// entry expires (a proxy's ACKs stalled for about a minute).
pub fn bridge_mac(gateway: Ipv4Addr) -> String {
    let [a, b, c, d] = gateway.octets();
    format!("02:57:{a:02x}:{b:02x}:{c:02x}:{d:02x}")
}

pub fn create_bridge(name: &str, gateway: Ipv4Addr) -> anyhow::Result<()> {
    let mac = bridge_mac(gateway);
    ip(&["link", "add", name, "address", &mac, "type", "bridge"])?;
    ip(&["addr", "add", &format!("{gateway}/24"), "dev", name])?;
    ip(&["link", "set", name, "up"])
}

/// A pod: namespace, veth into the bridge, address, loopback, default route.
pub fn create_pod(
    netns: &str,
    host_veth: &str,
    bridge: &str,
    ip_addr: Ipv4Addr,
    gateway: Ipv4Addr,
) -> anyhow::Result<()> {
    ip(&["netns", "add", netns])?;
    let peer = format!("{host_veth}p").replacen("wv", "wp", 1);
    ip(&[
        "link", "add", host_veth, "type", "veth", "peer", "name", &peer,
    ])?;
    ip(&["link", "set", &peer, "netns", netns])?;
    ip(&["link", "set", host_veth, "master", bridge, "up"])?;
    let exec = |args: &[&str]| {
        let mut full = vec!["netns", "exec", netns, "ip"];
        full.extend_from_slice(args);
        ip(&full)
    };
    exec(&["link", "set", &peer, "name", "eth0"])?;
    exec(&["addr", "add", &format!("{ip_addr}/24"), "dev", "eth0"])?;
    exec(&["link", "set", "eth0", "up"])?;
    exec(&["link", "set", "lo", "up"])?;
    exec(&["route", "add", "default", "via", &gateway.to_string()])
}

pub fn install_capture(netns: &str) -> anyhow::Result<()> {
    iptables_restore(netns, &crate::capture::rules())
}

/// Loads `rules` (iptables-restore's format) inside `netns`.
pub fn iptables_restore(netns: &str, rules: &str) -> anyhow::Result<()> {
    let mut child = Command::new("ip")
        .args(["netns", "exec", netns, "iptables-restore"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("running iptables-restore (apt-get install iptables)")?;
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(rules.as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "iptables-restore in {netns}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Namespaces whose names start with `prefix`.
pub fn namespaces_with_prefix(prefix: &str) -> Vec<String> {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
        return Vec::new();
    };
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(prefix))
        .map(str::to_string)
        .collect()
}

pub fn namespace_pids(netns: &str) -> Vec<i32> {
    let Ok(out) = Command::new("ip").args(["netns", "pids", netns]).output() else {
        return Vec::new();
    };
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

pub fn link_exists(name: &str) -> bool {
    Command::new("ip")
        .args(["link", "show", name])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Host-side veths of mesh `mesh` (`wv<i>-<mesh>`).
pub fn mesh_veths(mesh: &str) -> Vec<String> {
    let Ok(out) = Command::new("ip")
        .args(["-o", "link", "show", "type", "veth"])
        .output()
    else {
        return Vec::new();
    };
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap_or(n).to_string())
        .filter(|n| n.starts_with("wv") && n.rsplit_once('-').is_some_and(|(_, m)| m == mesh))
        .collect()
}

/// Deletes a link; one that is already gone (a veth goes with its namespace,
/// asynchronously) counts as deleted.
pub fn delete_link(name: &str) -> anyhow::Result<()> {
    match ip(&["link", "del", name]) {
        Err(e) if link_exists(name) => Err(e),
        _ => Ok(()),
    }
}
