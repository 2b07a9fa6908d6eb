//! The config store: validated resources from files and from the API.
//!
//! Files are reloaded one at a time. A file whose documents all pass replaces
//! what it held; a file with a bad document keeps, for every resource the
//! bad text may have meant, the last good version. One typo never empties a
//! route table.

use std::collections::BTreeMap;
use std::sync::Arc;

use weft_config::{Key, Loaded, Problem, Resource};

#[derive(Debug, Default)]
pub struct Store {
    files: BTreeMap<String, FileEntry>,
    /// Resources applied through the API; they win over files on a key clash.
    applied: BTreeMap<Key, Resource>,
    /// What the installation put there (the `istio` ConfigMap of the
    /// profile's mesh config); a file or an apply of the same key
    /// replaces it, as applying over an installed object does.
    installed: Vec<Resource>,
    revision: u64,
    merged: Arc<Vec<Resource>>,
}

#[derive(Debug, Default)]
struct FileEntry {
    resources: Vec<Resource>,
    problems: Vec<Problem>,
}

impl Store {
    /// Replaces one file's contribution; returns true when the config changed.
    pub fn load_file(&mut self, file: &str, loaded: Loaded) -> bool {
        let entry = self.files.entry(file.to_string()).or_default();
        let mut next = loaded.resources;
        if loaded
            .problems
            .iter()
            .any(|p| p.severity == weft_config::Severity::Error)
        {
            let kept: Vec<Resource> = entry
                .resources
                .iter()
                .filter(|old| !next.iter().any(|n| n.key() == old.key()))
                .cloned()
                .collect();
            next.extend(kept);
        }
        let changed = entry.resources != next;
        entry.resources = next;
        entry.problems = loaded.problems;
        changed && self.rebuild()
    }

    pub fn remove_file(&mut self, file: &str) -> bool {
        self.files.remove(file).is_some() && self.rebuild()
    }

    pub fn files(&self) -> impl Iterator<Item = &String> {
        self.files.keys()
    }

    pub fn apply(&mut self, resources: Vec<Resource>) -> bool {
        let mut changed = false;
        for r in resources {
            let key = r.key();
            if self.applied.get(&key) != Some(&r) {
                self.applied.insert(key, r);
                changed = true;
            }
        }
        changed && self.rebuild()
    }

    /// Removes an applied resource. Resources that come from files are
    /// edited in their file: deleting them here would be undone on reload.
    pub fn delete(&mut self, key: &Key) -> Result<(), String> {
        if self.applied.remove(key).is_some() {
            self.rebuild();
            return Ok(());
        }
        match self
            .files
            .iter()
            .find(|(_, f)| f.resources.iter().any(|r| &r.key() == key))
        {
            Some((file, _)) => Err(format!(
                "{key} is defined in {file}; edit or remove that file"
            )),
            None => Err(format!("{key} not found")),
        }
    }

    pub fn problems(&self) -> Vec<Problem> {
        self.files
            .values()
            .flat_map(|f| f.problems.clone())
            .collect()
    }

    pub fn resources(&self) -> Arc<Vec<Resource>> {
        self.merged.clone()
    }

    /// The config as it would be if `incoming` were applied: what an apply
    /// (or a dry run) is analyzed against, without touching the store.
    pub fn preview(&self, incoming: &[Resource]) -> Vec<Resource> {
        let replaced: std::collections::HashSet<Key> = incoming.iter().map(|r| r.key()).collect();
        self.merged
            .iter()
            .filter(|r| !replaced.contains(&r.key()))
            .chain(incoming)
            .cloned()
            .collect()
    }

    /// Sets what the installation provides (see `installed`).
    pub fn install(&mut self, resources: Vec<Resource>) -> bool {
        self.installed = resources;
        self.rebuild()
    }

    pub fn revision(&self) -> u64 {
        self.revision
    }

    fn rebuild(&mut self) -> bool {
        let mut by_key: BTreeMap<Key, Resource> = BTreeMap::new();
        for r in &self.installed {
            by_key.insert(r.key(), r.clone());
        }
        for f in self.files.values() {
            for r in &f.resources {
                by_key.insert(r.key(), r.clone());
            }
        }
        for (k, r) in &self.applied {
            by_key.insert(k.clone(), r.clone());
        }
        self.revision += 1;
        let before: BTreeMap<Key, &Resource> = self.merged.iter().map(|r| (r.key(), r)).collect();
        for (key, r) in &mut by_key {
            stamp(r, before.get(key).copied(), self.revision);
        }
        self.merged = Arc::new(by_key.into_values().collect());
        true
    }
}

/// Kubernetes' bookkeeping: `resourceVersion` is the store revision at which
/// the resource last changed at all; `generation` counts changes of its spec;
/// `creationTimestamp` is when it was first stored. Whatever the document
/// itself said of these is overwritten, as the API server does.
fn stamp(r: &mut Resource, before: Option<&Resource>, revision: u64) {
    r.meta.creation_timestamp = match before.and_then(|b| b.meta.creation_timestamp.clone()) {
        Some(kept) => Some(kept),
        None => Some(weft_xds::clock::Rfc3339::seconds(std::time::SystemTime::now()).to_string()),
    };
    let (generation, version) = match before {
        None => (1, revision.to_string()),
        Some(old) => {
            let generation = old.meta.generation.unwrap_or(1) + i64::from(old.spec != r.spec);
            let mut same_meta = r.meta.clone();
            same_meta.resource_version = old.meta.resource_version.clone();
            same_meta.generation = old.meta.generation;
            let unchanged = old.spec == r.spec && old.meta == same_meta;
            let version = match (&old.meta.resource_version, unchanged) {
                (Some(v), true) => v.clone(),
                _ => revision.to_string(),
            };
            (generation, version)
        }
    };
    r.meta.generation = Some(generation);
    r.meta.resource_version = Some(version);
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: r}\nspec:\n  host: r\n  subsets: [{name: v1, labels: {version: v1}}]\n---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: d}\nspec: {host: d}\n";
    const ONE_BAD: &str = "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: r}\nspec:\n  host: r\n  subsets: [{labels: {version: v1}}]\n---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: d}\nspec: {host: d2}\n";

    #[test]
    fn a_bad_document_keeps_the_last_good_version() {
        let mut s = Store::default();
        s.load_file("f.yaml", weft_config::load_str(GOOD, "f.yaml"));
        assert_eq!(s.resources().len(), 2);
        s.load_file("f.yaml", weft_config::load_str(ONE_BAD, "f.yaml"));
        let rs = s.resources();
        assert_eq!(rs.len(), 2, "the broken rule keeps its last good version");
        let d = rs.iter().find(|r| r.meta.name == "d").unwrap();
        assert_eq!(
            d.as_destination_rule().unwrap().host,
            "d2",
            "the good document is updated"
        );
        let r = rs.iter().find(|r| r.meta.name == "r").unwrap();
        assert_eq!(r.as_destination_rule().unwrap().subsets[0].name, "v1");
        assert!(!s.problems().is_empty());
    }

    #[test]
    fn resource_version_and_generation_follow_changes() {
        let meta = |s: &Store, name: &str| {
            let rs = s.resources();
            let r = rs.iter().find(|r| r.meta.name == name).unwrap();
            (
                r.meta.resource_version.clone().unwrap(),
                r.meta.generation.unwrap(),
            )
        };
        let mut s = Store::default();
        s.load_file("f.yaml", weft_config::load_str(GOOD, "f.yaml"));
        let (v1, g1) = meta(&s, "r");
        assert_eq!(g1, 1);
        // Another resource changes: r keeps its version and generation.
        s.load_file(
            "f.yaml",
            weft_config::load_str(&GOOD.replace("{host: d}", "{host: d3}"), "f.yaml"),
        );
        assert_eq!(meta(&s, "r"), (v1.clone(), 1));
        assert_eq!(meta(&s, "d").1, 2, "d's spec changed");
        // A label is metadata: a new resourceVersion, the same generation.
        let labelled = GOOD.replace(
            "metadata: {name: r}",
            "metadata: {name: r, labels: {team: books}}",
        );
        s.load_file("f.yaml", weft_config::load_str(&labelled, "f.yaml"));
        let (v2, g2) = meta(&s, "r");
        assert_ne!(v2, v1);
        assert_eq!(g2, 1);
        // A version written in the document itself is not trusted.
        let pasted = labelled.replace(
            "labels: {team: books}",
            "labels: {team: books}, resourceVersion: '999', generation: 7",
        );
        s.load_file("f.yaml", weft_config::load_str(&pasted, "f.yaml"));
        assert_eq!(meta(&s, "r"), (v2, 1));
    }

    #[test]
    fn applied_wins_and_deletes() {
        let mut s = Store::default();
        s.load_file("f.yaml", weft_config::load_str(GOOD, "f.yaml"));
        let applied = weft_config::load_str("apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: x}\nspec: {host: x}\n", "-");
        s.apply(applied.resources);
        assert_eq!(s.resources().len(), 3);
        let key = s
            .resources()
            .iter()
            .find(|r| r.meta.name == "x")
            .unwrap()
            .key();
        s.delete(&key).unwrap();
        assert_eq!(s.resources().len(), 2);
        let file_key = s.resources()[0].key();
        assert!(s.delete(&file_key).unwrap_err().contains("f.yaml"));
    }

    #[test]
    fn creation_timestamp_is_set_once() {
        let created = |s: &Store| {
            let rs = s.resources();
            let r = rs.iter().find(|r| r.meta.name == "d").unwrap();
            r.meta.creation_timestamp.clone().unwrap()
        };
        let mut s = Store::default();
        s.load_file("f.yaml", weft_config::load_str(GOOD, "f.yaml"));
        let first = created(&s);
        assert!(first.ends_with('Z') && first.len() == 20, "{first}");
        std::thread::sleep(std::time::Duration::from_millis(1100));
        s.load_file("f.yaml", weft_config::load_str(ONE_BAD, "f.yaml"));
        assert_eq!(created(&s), first, "an update keeps the creation time");
    }
}
