//! extensions.istio.io: WasmPlugin and TrafficExtension, the two ways
//! Istio's API extends the proxy (Wasm modules, and Lua for the latter).
//! Both are validated and stored; the proxy does not run extensions yet.

use serde::{Deserialize, Serialize};

use crate::selectors::{check_targets, PolicyTargetReference, WorkloadSelector};
use crate::telemetry::MODES_WITH_UNDEFINED;
use crate::validate::{one_of, Report};

type Opaque = Option<serde_json::Value>;

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct WasmPlugin {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<WorkloadSelector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_ref: Option<PolicyTargetReference>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub target_refs: Vec<PolicyTargetReference>,
    pub url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_policy: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_secret: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plugin_config: Opaque,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plugin_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fail_strategy: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vm_config: Option<VmConfig>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub r#match: Vec<TrafficSelector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub r#type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verification_key: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmConfig {
    #[serde(default)]
    pub env: Vec<EnvVar>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct EnvVar {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub value_from: Option<String>,
    #[serde(default)]
    pub value: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrafficSelector {
    #[serde(default)]
    pub mode: Option<String>,
    #[serde(default)]
    pub ports: Vec<PortNumber>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortNumber {
    pub number: i64,
}

/// TrafficExtension: a Wasm module or inline Lua, placed by phase and
/// priority, for the workloads a selector or targetRefs name.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TrafficExtension {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<WorkloadSelector>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub target_refs: Vec<PolicyTargetReference>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<i32>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub r#match: Vec<TrafficSelector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wasm: Option<WasmModule>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lua: Option<LuaCode>,
}

/// A Wasm module as TrafficExtension's `wasm` describes it (the same fields
/// WasmPlugin carries at its top level).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct WasmModule {
    pub url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_policy: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_secret: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plugin_config: Opaque,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plugin_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fail_strategy: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vm_config: Option<VmConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub r#type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verification_key: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LuaCode {
    #[serde(default)]
    pub inline_code: String,
}

/// The Wasm fields both kinds share, borrowed, so one check serves both.
struct WasmFields<'a> {
    url: &'a str,
    sha256: Option<&'a str>,
    image_pull_policy: Option<&'a str>,
    image_pull_secret: Option<&'a str>,
    plugin_name: Option<&'a str>,
    fail_strategy: Option<&'a str>,
    plugin_type: Option<&'a str>,
    vm_config: Option<&'a VmConfig>,
}

impl WasmPlugin {
    fn fields(&self) -> WasmFields<'_> {
        WasmFields {
            url: &self.url,
            sha256: self.sha256.as_deref(),
            image_pull_policy: self.image_pull_policy.as_deref(),
            image_pull_secret: self.image_pull_secret.as_deref(),
            plugin_name: self.plugin_name.as_deref(),
            fail_strategy: self.fail_strategy.as_deref(),
            plugin_type: self.r#type.as_deref(),
            vm_config: self.vm_config.as_ref(),
        }
    }
}

impl WasmModule {
    fn fields(&self) -> WasmFields<'_> {
        WasmFields {
            url: &self.url,
            sha256: self.sha256.as_deref(),
            image_pull_policy: self.image_pull_policy.as_deref(),
            image_pull_secret: self.image_pull_secret.as_deref(),
            plugin_name: self.plugin_name.as_deref(),
            fail_strategy: self.fail_strategy.as_deref(),
            plugin_type: self.r#type.as_deref(),
            vm_config: self.vm_config.as_ref(),
        }
    }
}

pub(crate) fn check_wasm_plugin(r: &mut Report, w: &WasmPlugin) {
    check_targets(
        r,
        w.selector.as_ref(),
        w.target_ref.as_ref(),
        &w.target_refs,
    );
    check_wasm(r, "spec", &w.fields());
    one_of(
        r,
        "spec.phase",
        w.phase.as_deref(),
        &["UNSPECIFIED_PHASE", "AUTHN", "AUTHZ", "STATS"],
    );
    check_match(r, &w.r#match);
}

pub(crate) fn check_traffic_extension(r: &mut Report, t: &TrafficExtension) {
    check_targets(r, t.selector.as_ref(), None, &t.target_refs);
    match (&t.wasm, &t.lua) {
        (Some(w), None) => check_wasm(r, "spec.wasm", &w.fields()),
        (None, Some(lua)) => {
            let len = lua.inline_code.len();
            if !(1..=65536).contains(&len) {
                r.error(
                    "spec.lua.inlineCode",
                    format!("inline Lua code must be 1 to 65536 bytes long, not {len}"),
                );
            }
        }
        _ => r.error("spec", "exactly one of wasm or lua must be set"),
    }
    one_of(
        r,
        "spec.phase",
        t.phase.as_deref(),
        &["UNSPECIFIED", "AUTHN", "AUTHZ", "STATS"],
    );
    check_match(r, &t.r#match);
}

fn check_match(r: &mut Report, selectors: &[TrafficSelector]) {
    for (i, m) in selectors.iter().enumerate() {
        one_of(
            r,
            &format!("spec.match[{i}].mode"),
            m.mode.as_deref(),
            MODES_WITH_UNDEFINED,
        );
        for (j, p) in m.ports.iter().enumerate() {
            crate::selectors::port_in_range(
                r,
                &format!("spec.match[{i}].ports[{j}].number"),
                p.number,
            );
        }
    }
}

fn check_wasm(r: &mut Report, at: &str, w: &WasmFields) {
    if w.url.is_empty() {
        r.error(
            format!("{at}.url"),
            format!("{at}.url in body should be at least 1 chars long"),
        );
    } else if !url_scheme_ok(w.url) {
        r.error(
            format!("{at}.url"),
            format!(
                "url must have schema one of [http, https, file, oci]: {:?}",
                w.url
            ),
        );
    }
    if let Some(sha) = w.sha256 {
        let hex = sha
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if !(sha.is_empty() || sha.len() == 64 && hex) {
            r.error(
                format!("{at}.sha256"),
                format!("{at}.sha256 in body should match (^$|^[a-f0-9]{{64}}$)"),
            );
        }
    }
    for (field, value) in [
        ("imagePullSecret", w.image_pull_secret),
        ("pluginName", w.plugin_name),
    ] {
        if value == Some("") {
            r.error(
                format!("{at}.{field}"),
                format!("{at}.{field} in body should be at least 1 chars long"),
            );
        }
    }
    check_vm_env(r, at, w.vm_config);
    one_of(
        r,
        &format!("{at}.failStrategy"),
        w.fail_strategy,
        &["FAIL_CLOSE", "FAIL_OPEN", "FAIL_RELOAD"],
    );
    one_of(
        r,
        &format!("{at}.imagePullPolicy"),
        w.image_pull_policy,
        &["UNSPECIFIED_POLICY", "IfNotPresent", "Always"],
    );
    one_of(
        r,
        &format!("{at}.type"),
        w.plugin_type,
        &["UNSPECIFIED_PLUGIN_TYPE", "HTTP", "NETWORK"],
    );
}

fn check_vm_env(r: &mut Report, at: &str, vm: Option<&VmConfig>) {
    let mut names = std::collections::BTreeSet::new();
    for (i, env) in vm.iter().flat_map(|v| v.env.iter()).enumerate() {
        let at = format!("{at}.vmConfig.env[{i}]");
        if env.name.is_empty() {
            r.error(
                format!("{at}.name"),
                "vmConfig.env[].name in body should be at least 1 chars long",
            );
        } else if !names.insert(env.name.as_str()) {
            r.error(
                format!("{at}.name"),
                format!("Duplicate value: {:?}", env.name),
            );
        }
        if env.value_from.as_deref() == Some("HOST") && env.value.is_some() {
            r.error(
                format!("{at}.value"),
                "value may only be set when valueFrom is INLINE",
            );
        }
        one_of(
            r,
            &format!("{at}.valueFrom"),
            env.value_from.as_deref(),
            &["INLINE", "HOST"],
        );
    }
}

/// Istio accepts http, https, oci and file URLs, or a bare registry
/// reference (which it reads as oci).
fn url_scheme_ok(url: &str) -> bool {
    match url.split_once("://") {
        Some((scheme, rest)) => {
            ["http", "https", "oci", "file"].contains(&scheme.to_ascii_lowercase().as_str())
                && !rest.is_empty()
        }
        None => {
            url.chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphanumeric())
                && url
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-._~/:@".contains(c))
        }
    }
}
