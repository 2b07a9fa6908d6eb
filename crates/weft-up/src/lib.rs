//! The local mesh runtime (`weft up` / `weft down`): every workload in its
//! own network namespace with its own address on a bridge, its traffic
//! captured by the same iptables rules Istio's init container installs, a
//! sidecar beside the app, one control plane and one ingress gateway. A pod
//! annotated for Istio's `grpc-agent` template has no sidecar and no
//! capture: its gRPC library takes xDS straight from the control plane.
//!
//! Everything it creates is recorded in a state file before it is created,
//! so `weft down` can remove it all even after `weft up` was killed.

mod bootstrap;
mod capture;
mod drain;
mod kube_proxy;
mod net;
mod plan;
mod procs;
mod prometheus;
mod state;
mod tokens;
mod up;

pub use plan::{MeshAddresses, Plan};
pub use state::MeshState;
pub use up::{down, start, up, Addon, UpOptions};

/// Where each mesh keeps its state, logs and generated files.
pub fn state_dir(mesh: &str) -> std::path::PathBuf {
    std::path::Path::new("/run/weft").join(mesh)
}
