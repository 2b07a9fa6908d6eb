//! Istio's CRD schema (../shared/conformance/istio/crds/crd-all.gen.yaml) is
//! the authority on kinds, versions and fields. For every CRD and every
//! version it serves, Weft must know the kind, and must accept every field
//! the schema defines, at every depth: a document setting that one field
//! (to a placeholder of its type) may fail validation, but never as an
//! unknown field.

use std::path::PathBuf;

use serde_json::{json, Map, Value};

fn crds() -> Vec<Value> {
    let file = PathBuf::from(
        std::env::var("CARGO_MANIFEST_DIR").expect("cargo test sets CARGO_MANIFEST_DIR"),
    )
    .join("../../../shared/conformance/istio/crds/crd-all.gen.yaml");
    let text = std::fs::read_to_string(&file).unwrap_or_else(|e| {
        panic!(
            "Istio's CRD schema is missing at {} ({e}): the tests read it from shared/ beside the clone",
            file.display()
        )
    });
    let mut out = Vec::new();
    for doc in serde_yaml_ng::Deserializer::from_str(&text) {
        let value: Value = serde::Deserialize::deserialize(doc).expect("CRD YAML");
        if value["kind"] == "CustomResourceDefinition" {
            out.push(value);
        }
    }
    assert!(out.len() >= 14, "only {} CRDs read", out.len());
    out
}

#[derive(Clone, Debug)]
enum Seg {
    Key(String),
    Item,
}

/// Every field path under `schema`, with the schema of the field.
fn field_paths<'a>(schema: &'a Value, prefix: &[Seg], out: &mut Vec<(Vec<Seg>, &'a Value)>) {
    if schema["x-kubernetes-preserve-unknown-fields"] == true {
        return;
    }
    if let Some(props) = schema["properties"].as_object() {
        for (name, sub) in props {
            let mut path = prefix.to_vec();
            path.push(Seg::Key(name.clone()));
            out.push((path.clone(), sub));
            field_paths(sub, &path, out);
        }
    }
    if schema["additionalProperties"].is_object() {
        let mut path = prefix.to_vec();
        path.push(Seg::Key("k".into()));
        field_paths(&schema["additionalProperties"], &path, out);
    }
    if schema["items"].is_object() {
        let mut path = prefix.to_vec();
        path.push(Seg::Item);
        field_paths(&schema["items"], &path, out);
    }
}

fn placeholder(schema: &Value) -> Value {
    match schema["type"].as_str() {
        Some("string") => json!("x"),
        Some("integer") | Some("number") => json!(1),
        Some("boolean") => json!(true),
        Some("array") => json!([]),
        _ if schema["x-kubernetes-int-or-string"] == true => json!(1),
        _ => json!({}),
    }
}

/// `{"a": [{"b": VALUE}]}` for the path a[].b.
fn nest(path: &[Seg], leaf: Value) -> Value {
    match path.split_first() {
        None => leaf,
        Some((Seg::Key(k), rest)) => {
            let mut m = Map::new();
            m.insert(k.clone(), nest(rest, leaf));
            Value::Object(m)
        }
        Some((Seg::Item, rest)) => json!([nest(rest, leaf)]),
    }
}

fn path_text(path: &[Seg]) -> String {
    path.iter()
        .map(|s| match s {
            Seg::Key(k) => format!(".{k}"),
            Seg::Item => "[]".into(),
        })
        .collect()
}

#[test]
fn every_served_kind_and_field_of_istios_crds_is_known() {
    let crds = crds();
    let mut failures = Vec::new();
    let mut checked = 0;
    for crd in &crds {
        let group = crd["spec"]["group"].as_str().unwrap();
        let kind = crd["spec"]["names"]["kind"].as_str().unwrap();
        for version in crd["spec"]["versions"].as_array().unwrap() {
            if version["served"] != true {
                continue;
            }
            let api_version = format!("{group}/{}", version["name"].as_str().unwrap());
            let spec_schema = &version["schema"]["openAPIV3Schema"]["properties"]["spec"];
            let mut paths = Vec::new();
            field_paths(spec_schema, &[], &mut paths);
            paths.insert(0, (Vec::new(), spec_schema));
            for (path, schema) in paths {
                let doc = json!({
                    "apiVersion": api_version,
                    "kind": kind,
                    "metadata": {"name": "a", "namespace": "default"},
                    "spec": nest(&path, placeholder(schema)),
                });
                let loaded = weft_config::load_str(&doc.to_string(), "crd");
                checked += 1;
                for p in loaded.errors() {
                    let m = &p.message;
                    if m.contains("unknown field")
                        || m.contains("unknown kind")
                        || m.contains("not served")
                    {
                        failures.push(format!(
                            "{api_version} {kind} spec{}: {m}",
                            path_text(&path)
                        ));
                    }
                }
            }
        }
    }
    assert!(checked > 1000, "only {checked} field paths checked");
    assert!(
        failures.is_empty(),
        "{} of {checked} field paths of Istio's CRDs are not known to Weft:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
