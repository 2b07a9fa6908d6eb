//! `weft analyze`: files offline, or the running mesh's config.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context};
use weft_analyze::{Level, Message};
use weft_config::{Resource, Severity};
use weft_registry::Registry;

use crate::api_client::call;
use crate::cmd::config::Target;

#[derive(clap::Args, Debug)]
pub struct AnalyzeArgs {
    /// Files or directories to analyze offline; without -f, the running mesh.
    #[arg(short = 'f', long = "filename")]
    pub files: Vec<PathBuf>,
    /// Only messages about this namespace (default: `default`).
    #[arg(short = 'n', long)]
    pub namespace: Option<String>,
    #[arg(short = 'A', long)]
    pub all_namespaces: bool,
    #[arg(short = 'o', long, default_value = "human")]
    pub output: String,
    /// The lowest level that makes the exit code non-zero: error, warning or info.
    #[arg(long, default_value = "error")]
    pub failure_threshold: String,
    #[command(flatten)]
    pub target: Target,
}

/// istioctl's exit code when analysis finds issues at or above the threshold.
const FOUND_ISSUES: u8 = 79;

pub async fn analyze(args: &AnalyzeArgs) -> anyhow::Result<ExitCode> {
    let threshold = Level::parse(&args.failure_threshold)
        .context("--failure-threshold is error, warning or info")?;
    let (config, registry, mut messages) = if args.files.is_empty() {
        from_mesh(&args.target).await?
    } else {
        from_files(&args.files)?
    };
    let input = weft_analyze::Input {
        config: &config,
        registry: &registry,
    };
    messages.extend(weft_analyze::analyze(&input));
    let ns = args.namespace.clone().unwrap_or_else(|| "default".into());
    messages.retain(|m| args.all_namespaces || in_namespace(&m.resource, &ns));
    match args.output.as_str() {
        "human" => print_human(&messages),
        "json" => println!("{}", serde_json::to_string_pretty(&messages)?),
        "yaml" => print!("{}", serde_yaml_ng::to_string(&messages)?),
        other => bail!("output format {other:?}: use human, json or yaml"),
    }
    let failing = messages.iter().any(|m| m.level >= threshold);
    Ok(if failing {
        ExitCode::from(FOUND_ISSUES)
    } else {
        ExitCode::SUCCESS
    })
}

/// `Kind namespace/name` or `Service namespace/name`.
fn in_namespace(resource: &str, ns: &str) -> bool {
    resource
        .split_once(' ')
        .and_then(|(_, rest)| rest.split_once('/'))
        .is_none_or(|(n, _)| n == ns)
}

fn print_human(messages: &[Message]) {
    if messages.is_empty() {
        println!("✔ No validation issues found when analyzing.");
    }
    for m in messages {
        println!("{m}");
    }
}

/// Loads the files; schema problems become IST0106 messages. The registry
/// is the one `weft up` would build from a mesh.yaml among the inputs.
fn from_files(files: &[PathBuf]) -> anyhow::Result<(Vec<Resource>, Registry, Vec<Message>)> {
    let mut config = Inputs::default();
    let mut messages = Vec::new();
    let mut registry = None;
    for f in files {
        let paths = if f.is_dir() {
            if f.join("mesh.yaml").is_file() {
                registry = Some(registry_of(&f.join("mesh.yaml"))?);
            }
            weft_config::load::config_files(f, &["mesh.yaml"])?
        } else {
            vec![f.clone()]
        };
        for p in paths {
            let text =
                std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?;
            let loaded = weft_config::load_str(&text, &p.display().to_string());
            messages.extend(
                loaded
                    .problems
                    .iter()
                    .filter(|p| p.severity == Severity::Error)
                    .map(schema_message),
            );
            for r in loaded.resources {
                config.add(r);
            }
        }
    }
    let config = config.resources;
    // Without a mesh.yaml, Kubernetes manifests among the inputs (Services,
    // Deployments, Pods) describe the registry, as for istioctl analyze.
    let registry = registry.unwrap_or_else(|| {
        let from_kube = Registry::from_kube(&config);
        if from_kube.services.is_empty() {
            eprintln!("note: no mesh.yaml or Kubernetes Services among the inputs: hosts are checked against ServiceEntries only");
        }
        from_kube
    });
    Ok((config, registry, messages))
}

/// Inputs are read as `kubectl apply` would take them, in order: a later
/// resource with the same kind, namespace and name replaces the earlier one.
#[derive(Default)]
struct Inputs {
    resources: Vec<Resource>,
    index: std::collections::HashMap<weft_config::Key, usize>,
}

impl Inputs {
    fn add(&mut self, r: Resource) {
        match self.index.get(&r.key()) {
            Some(&i) => {
                let old = &mut self.resources[i];
                eprintln!(
                    "note: {} at {} replaces the one at {} (same kind, namespace and name)",
                    r.key(),
                    r.origin,
                    old.origin
                );
                *old = r;
            }
            None => {
                self.index.insert(r.key(), self.resources.len());
                self.resources.push(r);
            }
        }
    }
}

fn registry_of(mesh: &Path) -> anyhow::Result<Registry> {
    let text = std::fs::read_to_string(mesh)?;
    let spec = weft_registry::MeshSpec::from_yaml(&text)
        .map_err(|e| anyhow::anyhow!("{}: {e}", mesh.display()))?;
    Ok(weft_up::Plan::new("analyze", 0, 8080, &spec)?.registry)
}

fn schema_message(p: &weft_config::Problem) -> Message {
    Message {
        level: Level::Error,
        code: "IST0106",
        name: "SchemaValidationError",
        resource: p.resource.clone().unwrap_or_else(|| "-".into()),
        origin: Some(p.origin.clone()),
        text: match &p.field {
            Some(f) => format!("{f}: {}", p.message),
            None => p.message.clone(),
        },
        fix: None,
    }
}

/// The running mesh: its stored config and the registry `weft up` wrote.
async fn from_mesh(target: &Target) -> anyhow::Result<(Vec<Resource>, Registry, Vec<Message>)> {
    let (code, body) = call(target.api()?, "GET", "/api/v1/resources", &[], b"").await?;
    if code != 200 {
        bail!("control plane answered {code}: {body}");
    }
    let mut config = Vec::new();
    for item in body["items"].as_array().into_iter().flatten() {
        config.extend(weft_config::load_str(&item.to_string(), "api").resources);
    }
    let file = weft_up::state_dir(&target.mesh).join("registry.json");
    let text =
        std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
    let registry =
        Registry::from_json(&text).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
    Ok((config, registry, Vec::new()))
}
