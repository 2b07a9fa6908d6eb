//! `weft proxy-status`: istioctl's table, from the control plane's view.

use std::process::ExitCode;

use crate::api_client::call;
use crate::cmd::config::Target;

pub async fn proxy_status(target: &Target) -> anyhow::Result<ExitCode> {
    let (_, body) = call(target.api()?, "GET", "/debug/syncz", &[], b"").await?;
    let proxies: Vec<&serde_json::Value> = body.as_array().into_iter().flatten().collect();
    let width = proxies
        .iter()
        .map(|p| display_name(p["node_id"].as_str().unwrap_or_default()).len())
        .max()
        .unwrap_or(0)
        .max(4);
    println!(
        "{:<width$} {:<12} {:<12} {:<12} {:<12} {:<12} CONFIG",
        "NAME", "TYPE", "CDS", "LDS", "EDS", "RDS"
    );
    let mut nacks = Vec::new();
    for p in proxies {
        let id = p["node_id"].as_str().unwrap_or_default();
        let mut state = |t: &str| {
            let s = &p["types"][t];
            if let Some(reason) = s["nack"].as_str() {
                nacks.push(format!("{id} {t}: {reason}"));
            }
            if p["connected"].as_bool() != Some(true) {
                "DISCONNECTED"
            } else {
                s["state"].as_str().unwrap_or("NOT SENT")
            }
        };
        let row = [state("CDS"), state("LDS"), state("EDS"), state("RDS")];
        // Secrets have no column, as in istioctl; a rejected one is listed.
        state("SDS");
        let kind = if id.starts_with("router~") {
            "gateway"
        } else if p["generator"].as_str() == Some("grpc") {
            "proxyless"
        } else {
            "sidecar"
        };
        println!(
            "{:<width$} {kind:<12} {:<12} {:<12} {:<12} {:<12} {}",
            display_name(id),
            row[0],
            row[1],
            row[2],
            row[3],
            config_size(p)
        );
    }
    for n in &nacks {
        println!("NACK {n}");
    }
    Ok(ExitCode::SUCCESS)
}

/// How much config the proxy was last sent, over every xDS type:
/// `<resources> res <KiB> KiB` (what a Sidecar resource's scoping saves).
fn config_size(p: &serde_json::Value) -> String {
    let types = p["types"].as_object().into_iter().flat_map(|t| t.values());
    let (count, bytes) = types.fold((0, 0), |(c, b), t| {
        (
            c + t["resources"].as_u64().unwrap_or(0),
            b + t["bytes"].as_u64().unwrap_or(0),
        )
    });
    format!("{count} res {:.1} KiB", bytes as f64 / 1024.0)
}

/// `name.namespace`, as istioctl shows a proxy, from an Istio node id
/// (`sidecar~IP~name.namespace~namespace.svc.cluster.local`).
fn display_name(node_id: &str) -> &str {
    node_id.split('~').nth(2).unwrap_or(node_id)
}

/// `weft dashboard`: where the control plane serves the dashboard.
pub fn dashboard(target: &Target) -> anyhow::Result<ExitCode> {
    let url = format!("http://{}/dashboard", target.api()?);
    println!("{url}");
    if std::env::var_os("DISPLAY").is_some() || std::env::var_os("WAYLAND_DISPLAY").is_some() {
        let _ = std::process::Command::new("xdg-open").arg(&url).spawn();
    }
    Ok(ExitCode::SUCCESS)
}
