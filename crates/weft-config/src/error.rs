//! Problems found while loading or validating config. Each one carries enough
//! context for a person to find and fix it without reading Weft's source.

use std::fmt;

use crate::meta::Origin;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Accepted, but something the user wrote is not honoured (yet) or looks wrong.
    Warning,
    /// Rejected: the document is not stored.
    Error,
}

/// One message about one document: where, what resource, which field, why.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Problem {
    pub severity: Severity,
    pub origin: Origin,
    /// `Kind namespace/name`, when the document got far enough to have one.
    pub resource: Option<String>,
    /// `spec.http[0].route[1].weight`, when the problem is in one field.
    pub field: Option<String>,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let level = match self.severity {
            Severity::Warning => "warning",
            Severity::Error => "error",
        };
        write!(f, "{}: {level}", self.origin)?;
        if let Some(r) = &self.resource {
            write!(f, ": {r}")?;
        }
        if let Some(field) = &self.field {
            write!(f, ": {field}")?;
        }
        write!(f, ": {}", self.message)
    }
}

/// Errors that stop a whole load (not one document): unreadable files.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}
