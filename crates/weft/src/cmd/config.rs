//! apply / validate / get / delete.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context};

use crate::api_client::call;

#[derive(clap::Args, Debug, Clone)]
pub struct Target {
    /// The mesh started by `weft up --name NAME`.
    #[arg(long, default_value = "weft")]
    pub mesh: String,
    /// Control plane API address (overrides --mesh).
    #[arg(long)]
    pub control_plane: Option<SocketAddr>,
}

impl Target {
    pub fn api(&self) -> anyhow::Result<SocketAddr> {
        if let Some(a) = self.control_plane {
            return Ok(a);
        }
        let dir = weft_up::state_dir(&self.mesh);
        weft_up::MeshState::load(&dir)
            .and_then(|s| s.api)
            .with_context(|| {
                format!(
                    "mesh {:?} is not running (no {}); start it with `weft up`",
                    self.mesh,
                    dir.display()
                )
            })
    }
}

#[derive(clap::Args, Debug)]
pub struct FileArgs {
    /// A file, a directory (its .yaml/.yml/.json files), or - for stdin.
    #[arg(short = 'f', long = "filename", required = true)]
    pub files: Vec<String>,
    #[command(flatten)]
    pub target: Target,
}

#[derive(clap::Args, Debug)]
pub struct ApplyArgs {
    #[command(flatten)]
    pub input: FileArgs,
    /// Have the control plane validate everything and store nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// The namespace of documents that name none (one naming another is
    /// refused), as `kubectl apply -n`.
    #[arg(short = 'n', long)]
    pub namespace: Option<String>,
}

#[derive(clap::Args, Debug)]
pub struct GetArgs {
    /// Kind: virtualservice (vs), destinationrule (dr), gateway (gw), …
    pub kind: String,
    pub name: Option<String>,
    #[arg(short = 'n', long)]
    pub namespace: Option<String>,
    #[arg(short = 'o', long, default_value = "yaml")]
    pub output: String,
    /// Read these files offline (as the store would hold them) instead of
    /// asking a running control plane.
    #[arg(short = 'f', long = "filename")]
    pub files: Vec<String>,
    #[command(flatten)]
    pub target: Target,
}

#[derive(clap::Args, Debug)]
pub struct DeleteArgs {
    pub kind: Option<String>,
    pub name: Option<String>,
    #[arg(short = 'n', long, default_value = "default")]
    pub namespace: String,
    #[arg(short = 'f', long = "filename")]
    pub files: Vec<String>,
    #[command(flatten)]
    pub target: Target,
}

/// (source name, text) for every input named by -f.
fn read_inputs(files: &[String]) -> anyhow::Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    for f in files {
        if f == "-" {
            let mut text = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)?;
            out.push(("-".to_string(), text));
            continue;
        }
        let path = PathBuf::from(f);
        let paths = if path.is_dir() {
            weft_config::load::config_files(&path, &["mesh.yaml"])?
        } else {
            vec![path]
        };
        for p in paths {
            let text =
                std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?;
            out.push((p.display().to_string(), text));
        }
    }
    Ok(out)
}

pub fn validate(args: &FileArgs) -> anyhow::Result<ExitCode> {
    let mut errors = 0;
    for (name, text) in read_inputs(&args.files)? {
        let loaded = weft_config::load_str(&text, &name);
        for p in &loaded.problems {
            eprintln!("{p}");
        }
        errors += loaded.errors().count();
        for r in &loaded.resources {
            println!("{} is valid", r.key());
        }
    }
    Ok(if errors > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

pub async fn apply(args: &ApplyArgs) -> anyhow::Result<ExitCode> {
    let api = args.input.target.api()?;
    let (endpoint, done) = if args.dry_run {
        ("/api/v1/validate", "valid (dry run: not stored)")
    } else {
        ("/api/v1/apply", "applied")
    };
    let mut failed = false;
    for (name, text) in read_inputs(&args.input.files)? {
        let mut headers = vec![("x-weft-file", name.as_str())];
        if let Some(ns) = &args.namespace {
            headers.push(("x-weft-namespace", ns.as_str()));
        }
        let (code, body) = call(api, "POST", endpoint, &headers, text.as_bytes()).await?;
        for p in body["problems"].as_array().into_iter().flatten() {
            eprintln!("{}", p["text"].as_str().unwrap_or_default());
        }
        if code != 200 {
            failed = true;
            eprintln!("{name}: not applied (nothing in it was stored)");
            continue;
        }
        for k in body["applied"].as_array().into_iter().flatten() {
            println!("{} {done}", k.as_str().unwrap_or_default());
        }
        for m in body["analysis"].as_array().into_iter().flatten() {
            eprintln!("{}", m.as_str().unwrap_or_default());
        }
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

pub async fn get(args: &GetArgs) -> anyhow::Result<ExitCode> {
    let (items, ok) = if args.files.is_empty() {
        (get_from_control_plane(args).await?, true)
    } else {
        get_from_files(args)?
    };
    match args.output.as_str() {
        "json" => println!("{}", serde_json::to_string_pretty(&items)?),
        "yaml" => {
            for item in items {
                print!("---\n{}", serde_yaml_ng::to_string(&item)?);
            }
        }
        other => bail!("output format {other:?}: use yaml or json"),
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

async fn get_from_control_plane(args: &GetArgs) -> anyhow::Result<Vec<serde_json::Value>> {
    let api = args.target.api()?;
    let mut path = format!("/api/v1/resources?kind={}", args.kind);
    if let Some(n) = &args.name {
        path.push_str(&format!("&name={n}"));
    }
    if let Some(ns) = &args.namespace {
        path.push_str(&format!("&namespace={ns}"));
    }
    let (code, body) = call(api, "GET", &path, &[], b"").await?;
    if code != 200 {
        bail!("{}", body["error"].as_str().unwrap_or("request failed"));
    }
    Ok(body["items"].as_array().cloned().unwrap_or_default())
}

/// The matching resources of the files, as the store would hold them
/// (namespace filled in, defaults applied); false when a document failed.
fn get_from_files(args: &GetArgs) -> anyhow::Result<(Vec<serde_json::Value>, bool)> {
    let kind = weft_config::Kind::parse(&args.kind)
        .with_context(|| format!("unknown kind {:?}", args.kind))?;
    let mut items = Vec::new();
    let mut ok = true;
    for (name, text) in read_inputs(&args.files)? {
        let loaded = weft_config::load_str(&text, &name);
        for p in &loaded.problems {
            eprintln!("{p}");
        }
        ok &= !loaded.has_errors();
        items.extend(
            loaded
                .resources
                .iter()
                .filter(|r| r.kind == kind)
                .filter(|r| args.name.as_ref().is_none_or(|n| &r.meta.name == n))
                .filter(|r| args.namespace.as_ref().is_none_or(|ns| r.namespace() == ns))
                .map(|r| r.to_document()),
        );
    }
    Ok((items, ok))
}

pub async fn delete(args: &DeleteArgs) -> anyhow::Result<ExitCode> {
    let api = args.target.api()?;
    let mut keys = Vec::new();
    if let (Some(kind), Some(name)) = (&args.kind, &args.name) {
        keys.push((kind.clone(), args.namespace.clone(), name.clone()));
    }
    for (name, text) in read_inputs(&args.files)? {
        let loaded = weft_config::load_str(&text, &name);
        for r in loaded.resources {
            keys.push((
                r.kind.name().to_string(),
                r.namespace().to_string(),
                r.meta.name.clone(),
            ));
        }
    }
    if keys.is_empty() {
        bail!("name what to delete: KIND NAME, or -f FILE");
    }
    let mut failed = false;
    for (kind, ns, name) in keys {
        let (code, body) = call(
            api,
            "DELETE",
            &format!("/api/v1/resources?kind={kind}&namespace={ns}&name={name}"),
            &[],
            b"",
        )
        .await?;
        if code == 200 {
            println!("{} deleted", body["deleted"].as_str().unwrap_or_default());
        } else {
            failed = true;
            eprintln!(
                "error: {}",
                body["error"].as_str().unwrap_or("delete failed")
            );
        }
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
