//! `weft proxy-config secret <pod>`: istioctl's view of a proxy's
//! certificates, read from the proxy's admin port (`/certs`): the
//! workload chain (`default`) and the trust bundle (`ROOTCA`), each
//! certificate's serial, validity and SPIFFE id.

use std::net::SocketAddr;
use std::process::ExitCode;

use anyhow::{bail, Context};

use crate::api_client::call;
use crate::cmd::config::Target;

#[derive(clap::Subcommand, Debug)]
pub enum ProxyConfig {
    /// The proxy's certificates (Istio's SDS `default` and `ROOTCA`).
    Secret(SecretArgs),
}

#[derive(clap::Args, Debug)]
pub struct SecretArgs {
    /// The pod: `name` or `name.namespace`.
    pub pod: String,
    /// `table` (istioctl's columns), or `json` (with the PEM text).
    #[arg(short, long, default_value = "table")]
    pub output: String,
    #[command(flatten)]
    pub target: Target,
}

pub async fn run(what: &ProxyConfig) -> anyhow::Result<ExitCode> {
    match what {
        ProxyConfig::Secret(args) => secret(args).await,
    }
}

async fn secret(args: &SecretArgs) -> anyhow::Result<ExitCode> {
    let admin = admin_of(&args.target, &args.pod).await?;
    let (code, certs) = call(admin, "GET", "/certs", &[], b"").await?;
    if code != 200 {
        bail!("the proxy's admin port {admin} answered {code}");
    }
    if args.output == "json" {
        println!("{}", serde_json::to_string_pretty(&certs)?);
        return Ok(ExitCode::SUCCESS);
    }
    let secrets = certs["certificates"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    if secrets.is_empty() {
        println!("{} has no certificate from the mesh CA (yet)", args.pod);
        return Ok(ExitCode::FAILURE);
    }
    println!(
        "{:<14} {:<11} {:<7} {:<11} {:<34} {:<21} {:<21} IDENTITY",
        "RESOURCE NAME", "TYPE", "STATUS", "VALID CERT", "SERIAL NUMBER", "NOT AFTER", "NOT BEFORE"
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    for s in &secrets {
        for c in s["certificates"].as_array().into_iter().flatten() {
            let (from, to) = (
                c["valid_from"].as_i64().unwrap_or(0),
                c["expiration_time"].as_i64().unwrap_or(0),
            );
            let ids: Vec<&str> = c["subject_alt_names"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|v| v.as_str())
                .collect();
            println!(
                "{:<14} {:<11} {:<7} {:<11} {:<34} {:<21} {:<21} {}",
                s["name"].as_str().unwrap_or(""),
                s["kind"].as_str().unwrap_or(""),
                "ACTIVE",
                (from <= now && now < to),
                c["serial_number"].as_str().unwrap_or(""),
                stamp(to),
                stamp(from),
                if ids.is_empty() {
                    c["subject"].as_str().unwrap_or("")
                } else {
                    ids[0]
                },
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn stamp(unix: i64) -> String {
    let at = std::time::UNIX_EPOCH + std::time::Duration::from_secs(unix.max(0) as u64);
    weft_xds::clock::Rfc3339::seconds(at).to_string()
}

/// The admin address of a pod's proxy, from the control plane's list of
/// connected proxies: the pod's address, port 15000 (the ingress gateway
/// on the host: the control plane's address).
async fn admin_of(target: &Target, pod: &str) -> anyhow::Result<SocketAddr> {
    let api = target.api()?;
    let (_, body) = call(api, "GET", "/debug/syncz", &[], b"").await?;
    let (name, ns) = pod.split_once('.').unwrap_or((pod, ""));
    for p in body.as_array().into_iter().flatten() {
        let id = p["node_id"].as_str().unwrap_or_default();
        // sidecar~IP~name.namespace~namespace.svc.cluster.local
        let parts: Vec<&str> = id.split('~').collect();
        let [_, ip, who, _] = parts.as_slice() else {
            continue;
        };
        let (n, s) = who.split_once('.').unwrap_or((who, ""));
        if n == name && (ns.is_empty() || s == ns) {
            let ip: std::net::IpAddr = ip.parse().context("a node id with a bad address")?;
            let ip = if ip.is_loopback() { api.ip() } else { ip };
            return Ok(SocketAddr::new(ip, 15000));
        }
    }
    bail!("no proxy named {pod:?} is connected to the control plane (see weft proxy-status)")
}
