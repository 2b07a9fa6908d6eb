//! Istio's configuration API as Weft reads it: typed resources, a YAML loader
//! that remembers where every document came from, and validation whose
//! messages name the file, line, resource and field.
//!
//! This crate knows nothing of Envoy, xDS, sockets or the registry: it turns
//! text into validated values and nothing else.

pub mod cel;
pub mod error;
pub mod extensions;
pub mod gateway_api;
pub mod kube;
pub mod load;
pub mod log_format;
pub mod mesh_config;
pub mod meta;
pub mod networking;
mod positions;
pub mod resource;
pub mod security;
pub mod selectors;
pub mod telemetry;
mod validate;

pub use error::{ConfigError, Problem, Severity};
pub use load::{load_dir, load_str, load_str_in, Loaded};
pub use mesh_config::MeshConfig;
pub use meta::{ObjectMeta, Origin};
pub use resource::{Key, Kind, Resource, Spec};
