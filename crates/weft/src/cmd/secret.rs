//! `weft create secret tls|generic`, as kubectl makes them: the Secret a
//! Gateway's `credentialName` names, stored in the running mesh (or, with
//! `--dry-run`, printed as YAML).

use std::collections::BTreeMap;
use std::process::ExitCode;

use anyhow::Context;
use weft_config::kube::Secret;

use super::config::Target;

#[derive(clap::Subcommand, Debug)]
pub enum SecretKind {
    /// A kubernetes.io/tls Secret from a PEM certificate and key.
    Tls {
        name: String,
        #[arg(long)]
        cert: String,
        #[arg(long)]
        key: String,
    },
    /// An Opaque Secret from files: `--from-file KEY=PATH` (or PATH, keyed
    /// by its file name), repeated.
    Generic {
        name: String,
        #[arg(long = "from-file", required = true)]
        from_file: Vec<String>,
    },
}

/// Where the Secret goes. Global, as kubectl's flags are: `create secret
/// -n istio-system generic …` (Istio's tasks write it so) and `create
/// secret generic … -n istio-system` both work.
#[derive(clap::Args, Debug)]
pub struct Destination {
    #[arg(short = 'n', long, default_value = "default", global = true)]
    namespace: String,
    /// Print the Secret instead of storing it.
    #[arg(long, global = true)]
    dry_run: bool,
    /// The mesh started by `weft up --name NAME`.
    #[arg(long, default_value = "weft", global = true)]
    mesh: String,
    /// Control plane API address (overrides --mesh).
    #[arg(long, global = true)]
    control_plane: Option<std::net::SocketAddr>,
}

pub async fn create(kind: &SecretKind, to: &Destination) -> anyhow::Result<ExitCode> {
    let (name, secret) = match kind {
        SecretKind::Tls { name, cert, key } => {
            let (c, k) = (read(cert)?, read(key)?);
            weft_translate::credentials::check_pair(&c, &k)
                .map_err(|e| anyhow::anyhow!("{cert} and {key}: {e}"))?;
            (name, Secret::tls(&c, &k))
        }
        SecretKind::Generic { name, from_file } => {
            let mut files = BTreeMap::new();
            for spec in from_file {
                let (key, path) = match spec.split_once('=') {
                    Some((k, p)) => (k.to_string(), p),
                    None => (file_name(spec), spec.as_str()),
                };
                files.insert(key, read(path)?);
            }
            (name, Secret::opaque(&files))
        }
    };
    let mut doc = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": to.namespace},
    });
    doc.as_object_mut().expect("object").extend(
        serde_json::to_value(&secret)?
            .as_object()
            .cloned()
            .unwrap_or_default(),
    );
    if to.dry_run {
        print!("{}", serde_yaml_ng::to_string(&doc)?);
        return Ok(ExitCode::SUCCESS);
    }
    let target = Target {
        mesh: to.mesh.clone(),
        control_plane: to.control_plane,
    };
    let api = target.api()?;
    let body = serde_json::to_vec(&doc)?;
    let (code, answer) = crate::api_client::call(
        api,
        "POST",
        "/api/v1/apply",
        &[("x-weft-file", "weft create secret")],
        &body,
    )
    .await?;
    if code != 200 {
        for p in answer["problems"].as_array().into_iter().flatten() {
            eprintln!("{}", p["text"].as_str().unwrap_or_default());
        }
        anyhow::bail!("secret/{name} not created");
    }
    println!("secret/{name} created");
    Ok(ExitCode::SUCCESS)
}

fn read(path: &str) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("cannot read {path}"))
}

fn file_name(path: &str) -> String {
    std::path::Path::new(path)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.to_string())
}
