//! Kubernetes object metadata and the origin (file:line) of each document.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// Where a document came from: a file (or `-` for stdin, `api` for the
/// control plane's API) and the 1-based line its first key stands on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Origin {
    pub file: String,
    pub line: usize,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub column: usize,
}

fn is_zero(v: &usize) -> bool {
    *v == 0
}

impl Origin {
    pub fn new(file: impl Into<String>, line: usize) -> Self {
        Origin {
            file: file.into(),
            line,
            column: 0,
        }
    }

    pub fn at(&self, line: usize, column: usize) -> Self {
        Origin {
            file: self.file.clone(),
            line,
            column,
        }
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.column > 0 {
            write!(f, "{}:{}:{}", self.file, self.line, self.column)
        } else {
            write!(f, "{}:{}", self.file, self.line)
        }
    }
}

/// The part of Kubernetes' ObjectMeta that config resources use. Unknown
/// metadata keys (managedFields, uid, …) are accepted and kept, as the API
/// server fills them in and users paste them back.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectMeta {
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<i64>,
    /// RFC 3339, set by the store when the resource is first stored;
    /// Istio orders VirtualServices by it (oldest first).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creation_timestamp: Option<String>,
    #[serde(flatten)]
    pub other: BTreeMap<String, serde_json::Value>,
}

impl ObjectMeta {
    /// The namespace, `default` when the document names none (as kubectl does).
    pub fn namespace(&self) -> &str {
        self.namespace.as_deref().unwrap_or("default")
    }
}
