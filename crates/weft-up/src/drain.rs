//! The proxies' termination drain (`weft-proxy --drain-duration`), as
//! istio-agent takes Istio's `terminationDrainDuration`: the pod's
//! `proxy.istio.io/config` annotation first, then the mesh config's
//! `defaultConfig` (the `istio` ConfigMap in the config directory when the
//! mesh comes up: like istio-agent, a proxy reads it when its pod starts).
//! Without either, 2 s on a local mesh (Istio's default is 5 s; `weft
//! down` waits for every drain). `weft down` gives each process its drain
//! and a second more before SIGKILL.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use weft_registry::WorkloadSpec;

/// A local mesh's drain when nothing sets one.
pub const DEFAULT: Duration = Duration::from_secs(2);
/// What `down` waits beyond a process's drain: its last log lines.
pub const AFTER: Duration = Duration::from_secs(1);
const ANNOTATION: &str = "proxy.istio.io/config";
const FIELD: &str = "terminationDrainDuration";

/// Each proxy's drain, read when the mesh comes up.
#[derive(Debug, Clone, Default)]
pub struct Drains {
    /// The mesh config's, else `DEFAULT`: the ingress gateway's, and a
    /// pod's that sets none.
    pub mesh: Duration,
    pods: BTreeMap<String, Duration>,
}

impl Drains {
    /// The drains of `pods`, with the mesh config in `config_dir`; a value
    /// that is not a duration fails `weft up` before anything starts.
    pub fn read<'a>(
        config_dir: &Path,
        pods: impl IntoIterator<Item = &'a WorkloadSpec>,
    ) -> anyhow::Result<Drains> {
        let mesh = mesh_default(config_dir)?;
        let mut out = Drains {
            mesh: mesh.unwrap_or(DEFAULT),
            pods: BTreeMap::new(),
        };
        for pod in pods {
            out.pods.insert(pod.name.clone(), of_pod(pod, mesh)?);
        }
        Ok(out)
    }

    /// The drain of pod `name`'s proxy.
    pub fn of(&self, name: &str) -> Duration {
        self.pods.get(name).copied().unwrap_or(self.mesh)
    }
}

/// What `down` waits for a proxy that drains for `drain`.
pub fn grace_ms(drain: Duration) -> u64 {
    u64::try_from((drain + AFTER).as_millis()).unwrap_or(u64::MAX)
}

/// The drain of `pod`'s proxy; `mesh_default` is the mesh config's
/// `defaultConfig.terminationDrainDuration`, when set.
fn of_pod(pod: &WorkloadSpec, mesh_default: Option<Duration>) -> anyhow::Result<Duration> {
    let Some(text) = pod.annotations.get(ANNOTATION) else {
        return Ok(mesh_default.unwrap_or(DEFAULT));
    };
    let config: serde_yaml_ng::Value = serde_yaml_ng::from_str(text)
        .with_context(|| format!("pod {}: {ANNOTATION}: not YAML or JSON", pod.name))?;
    match config.get(FIELD) {
        None => Ok(mesh_default.unwrap_or(DEFAULT)),
        Some(v) => duration(v).with_context(|| {
            format!(
                "pod {}: {ANNOTATION}: {FIELD}: {v:?} is not a duration (5s, 1m30s)",
                pod.name
            )
        }),
    }
}

/// The mesh config's `defaultConfig.terminationDrainDuration`, from the
/// `istio` ConfigMap among the config directory's files.
fn mesh_default(config_dir: &Path) -> anyhow::Result<Option<Duration>> {
    let loaded = weft_config::load_dir(config_dir, &["mesh.yaml"])?;
    let mesh = weft_config::MeshConfig::of(&loaded.resources);
    let Some(v) = mesh.other.get("defaultConfig").and_then(|d| d.get(FIELD)) else {
        return Ok(None);
    };
    duration(v)
        .map(Some)
        .with_context(|| format!("mesh config defaultConfig.{FIELD}: {v:?} is not a duration"))
}

fn duration(v: &serde_yaml_ng::Value) -> Option<Duration> {
    weft_config::networking::common::parse_duration(v.as_str()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(annotation: Option<&str>) -> WorkloadSpec {
        let mut spec: WorkloadSpec =
            serde_yaml_ng::from_str("name: app\ncommand: [sleep, infinity]\n").unwrap();
        if let Some(a) = annotation {
            spec.annotations.insert(ANNOTATION.into(), a.into());
        }
        spec
    }

    fn config_dir(mesh: Option<&str>) -> tempdir::Dir {
        let dir = tempdir::Dir::new();
        if let Some(m) = mesh {
            let doc = format!("apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: istio, namespace: istio-system}}\ndata:\n  mesh: |-\n    {m}\n");
            std::fs::write(dir.0.join("istio.yaml"), doc).unwrap();
        }
        dir
    }

    mod tempdir {
        pub struct Dir(pub std::path::PathBuf);
        impl Dir {
            pub fn new() -> Dir {
                static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
                let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let dir =
                    std::env::temp_dir().join(format!("weft-drain-{}-{n}", std::process::id()));
                std::fs::create_dir_all(&dir).unwrap();
                Dir(dir)
            }
        }
        impl Drop for Dir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
    }

    /// The pod's annotation, then the mesh config, then the local default;
    /// `down` waits a second more.
    #[test]
    fn the_pod_then_the_mesh_then_the_default() {
        let plain = config_dir(None);
        let annotated = pod(Some(
            "terminationDrainDuration: 7s\nholdApplicationUntilProxyStarts: true",
        ));
        let json = pod(Some(r#"{"terminationDrainDuration": "1m"}"#));
        let drains = Drains::read(&plain.0, [&annotated]).unwrap();
        assert_eq!(drains.of("app"), Duration::from_secs(7));
        assert_eq!(drains.mesh, DEFAULT);
        assert_eq!(grace_ms(drains.of("app")), 8000);
        let meshed = config_dir(Some("defaultConfig: {terminationDrainDuration: 30s}"));
        let drains = Drains::read(&meshed.0, [&pod(None)]).unwrap();
        assert_eq!(drains.of("app"), Duration::from_secs(30));
        assert_eq!(drains.of("ingress"), Duration::from_secs(30));
        let drains = Drains::read(&meshed.0, [&json]).unwrap();
        assert_eq!(drains.of("app"), Duration::from_secs(60));
    }

    #[test]
    fn a_value_that_is_not_a_duration_fails_up() {
        let plain = config_dir(None);
        let e = Drains::read(&plain.0, [&pod(Some("terminationDrainDuration: soon"))])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("pod app: proxy.istio.io/config: terminationDrainDuration"),
            "{e}"
        );
    }
}
