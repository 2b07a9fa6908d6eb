//! Polls the config directory and the registry file. Polling (every 300 ms,
//! comparing contents) debounces bursts of writes for free and needs no
//! platform file-notification API.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use crate::{Options, State};

const MESH_FILE: &str = "mesh.yaml";

#[derive(Default)]
struct Seen {
    files: HashMap<String, String>,
    registry: String,
}

pub(crate) fn load_once(state: &State, options: &Options) -> anyhow::Result<()> {
    let mut seen = Seen::default();
    if !scan(state, options, &mut seen) {
        tracing::debug!("initial scan found nothing to load");
    }
    let text = std::fs::read_to_string(&options.registry_file)
        .map_err(|e| anyhow::anyhow!("registry {}: {e}", options.registry_file.display()))?;
    let registry = weft_registry::Registry::from_json(&text)
        .map_err(|e| anyhow::anyhow!("registry {}: {e}", options.registry_file.display()))?;
    *state.registry.write().expect("registry lock") = Arc::new(registry);
    Ok(())
}

pub(crate) async fn run(state: Arc<State>, options: Options) {
    let mut seen = Seen::default();
    // The first pass starts from nothing seen, so it re-reads what
    // load_once read and pushes once (a proxy that connected meanwhile
    // gets the same config again, unchanged, and no response is sent).
    loop {
        if scan(&state, &options, &mut seen) {
            state.push();
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// One pass over the directory and registry; true when anything changed.
fn scan(state: &State, options: &Options, seen: &mut Seen) -> bool {
    let mut changed = false;
    if let Some(dir) = &options.config_dir {
        match weft_config::load::config_files(dir, &[MESH_FILE]) {
            Ok(paths) => {
                let mut present = Vec::new();
                for path in paths {
                    let name = path.display().to_string();
                    present.push(name.clone());
                    let Ok(text) = std::fs::read_to_string(&path) else {
                        continue;
                    };
                    if seen.files.get(&name) == Some(&text) {
                        continue;
                    }
                    let loaded = weft_config::load_str(&text, &name);
                    for p in &loaded.problems {
                        tracing::warn!("{p}");
                    }
                    seen.files.insert(name.clone(), text);
                    changed |= state
                        .store
                        .write()
                        .expect("store lock")
                        .load_file(&name, loaded);
                }
                let mut store = state.store.write().expect("store lock");
                let gone: Vec<String> = store
                    .files()
                    .filter(|f| !present.contains(f))
                    .cloned()
                    .collect();
                for f in gone {
                    tracing::info!(file = %f, "config file removed");
                    seen.files.remove(&f);
                    changed |= store.remove_file(&f);
                }
            }
            Err(e) => tracing::warn!("{e}"),
        }
    }
    if let Ok(text) = std::fs::read_to_string(&options.registry_file) {
        if text != seen.registry {
            match weft_registry::Registry::from_json(&text) {
                Ok(r) => {
                    *state.registry.write().expect("registry lock") = Arc::new(r);
                    seen.registry = text;
                    changed = true;
                }
                Err(e) => tracing::warn!(file = %options.registry_file.display(), "registry: {e}"),
            }
        }
    }
    changed
}
