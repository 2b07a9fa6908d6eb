//! `weft proxy-status`: istioctl's table, from the control plane's view.

use std::process::ExitCode;

use crate::api_client::call;
use crate::cmd::config::Target;

pub fn proxy_status(target: &Target) -> anyhow::Result<ExitCode> {
    let (_, body) = call(target.api()?, "GET", "/debug/syncz", &[], b"")?;
    println!(
        "{:<70} {:<10} {:<10} {:<10} {:<10}",
        "NAME", "CDS", "LDS", "EDS", "RDS"
    );
    let mut nacks = Vec::new();
    for p in body.as_array().into_iter().flatten() {
        let id = p["node_id"].as_str().unwrap_or_default();
        let mut state = |t: &str| {
            let s = &p["types"][t];
            let sent = s["sent_version"].as_str().unwrap_or("");
            if let Some(reason) = s["nack"].as_str() {
                nacks.push(format!("{id} {t}: {reason}"));
            }
            if !p["connected"].as_bool().unwrap_or(false) {
                "DISCONNECTED"
            } else if sent.is_empty() {
                "NOT SENT"
            } else if s["acked_version"].as_str() == Some(sent) {
                "SYNCED"
            } else if s["nacked_version"].as_str() == Some(sent) {
                "NACKED"
            } else {
                "STALE"
            }
        };
        let row = [state("CDS"), state("LDS"), state("EDS"), state("RDS")];
        println!(
            "{id:<70} {:<10} {:<10} {:<10} {:<10}",
            row[0], row[1], row[2], row[3]
        );
    }
    for n in &nacks {
        println!("NACK {n}");
    }
    Ok(ExitCode::SUCCESS)
}
