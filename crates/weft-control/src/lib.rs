//! The control plane daemon (the istiod role): a config store fed by a
//! watched directory and by the API, a registry, a push signal, the ADS
//! server, and an HTTP API for `weft apply/get/delete` and debugging.
//!
//! It owns no request path: its only job is to turn config into per-proxy
//! Envoy resources and keep proxies in sync with it.

mod api;
mod ca;
mod dashboard;
mod generator;
mod jwks;
mod store;
mod watch;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

pub use ca::CaOptions;
pub use store::Store;

#[derive(Debug, Clone)]
pub struct Options {
    /// Directory of Istio YAML, watched for changes.
    pub config_dir: Option<PathBuf>,
    /// Resolved registry (JSON), watched for changes.
    pub registry_file: PathBuf,
    pub xds_addr: SocketAddr,
    pub api_addr: SocketAddr,
    /// Be the mesh's CA (on the xDS port), with these files.
    pub ca: Option<CaOptions>,
    /// The installed mesh config (istiod's `--meshConfig` file): the
    /// `istio` ConfigMap until config of that name replaces it.
    pub mesh_config: Option<PathBuf>,
}

/// The `istio` ConfigMap holding the mesh config in `path`.
fn installed_mesh_config(path: &std::path::Path) -> anyhow::Result<Vec<weft_config::Resource>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("mesh config {}: {e}", path.display()))?;
    weft_config::MeshConfig::parse(&text)
        .map_err(|e| anyhow::anyhow!("mesh config {}: {e}", path.display()))?;
    // JSON is YAML: the text goes in as a string, whatever its indentation.
    let doc = serde_json::json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": weft_config::mesh_config::CONFIG_MAP,
            "namespace": weft_config::mesh_config::ROOT_NAMESPACE,
        },
        "data": { weft_config::mesh_config::MESH_KEY: text },
    })
    .to_string();
    let loaded = weft_config::load_str(&doc, &path.display().to_string());
    if let Some(e) = loaded.errors().next() {
        anyhow::bail!("mesh config {}: {e}", path.display());
    }
    Ok(loaded.resources)
}

/// Everything the generator and API read; replaced piecewise under a lock
/// that is held only to clone an `Arc` or to swap one in.
pub(crate) struct State {
    pub store: RwLock<Store>,
    pub registry: RwLock<Arc<weft_registry::Registry>>,
    pub pushes: tokio::sync::watch::Sender<u64>,
    pub board: weft_xds::StatusBoard,
    /// JWKS fetched for RequestAuthentication's `jwksUri`s.
    pub jwks: RwLock<weft_translate::jwt::Jwks>,
    /// The dashboard's last scrapes of the proxies.
    pub dashboard: dashboard::History,
}

impl State {
    /// Tells every proxy stream to recompute and send what changed.
    pub fn push(&self) {
        self.pushes.send_modify(|g| *g += 1);
    }
}

pub async fn run(options: Options) -> anyhow::Result<()> {
    let (pushes, rx) = tokio::sync::watch::channel(1u64);
    let state = Arc::new(State {
        store: RwLock::new(Store::default()),
        registry: RwLock::new(Arc::new(weft_registry::Registry::default())),
        pushes,
        board: weft_xds::StatusBoard::default(),
        jwks: RwLock::default(),
        dashboard: dashboard::History::default(),
    });
    if let Some(path) = &options.mesh_config {
        let installed = installed_mesh_config(path)?;
        state.store.write().expect("store lock").install(installed);
    }
    watch::load_once(&state, &options)?;
    tokio::spawn(watch::run(state.clone(), options.clone()));
    tokio::spawn(jwks::run(state.clone()));

    let api = tokio::net::TcpListener::bind(options.api_addr)
        .await
        .map_err(|e| anyhow::anyhow!("API address {}: {e}", options.api_addr))?;
    tokio::spawn(api::serve(api, state.clone()));

    let generator = Arc::new(generator::MeshGenerator::new(state.clone()));
    let ads = weft_xds::AdsServer::new(generator, rx, state.board.clone());
    tracing::info!(xds = %options.xds_addr, api = %options.api_addr, "control plane serving");
    if let Some(ca) = &options.ca {
        let config = state.store.read().expect("store lock").resources();
        let mesh = weft_translate::mtls::trust_domain(&config);
        if mesh != ca.trust_domain {
            tracing::error!(ca = %ca.trust_domain, mesh_config = %mesh, "the CA's trust domain (--trust-domain) is not the mesh config's trustDomain: peers will refuse each other's certificates");
        }
    }
    let ca = match &options.ca {
        Some(ca) => Some(weft_xds::ca::CertificateServer::new(Arc::new(
            ca::MeshCa::open(ca.clone())?,
        ))),
        None => None,
    };
    tonic::transport::Server::builder()
        .add_service(ads.into_service())
        .add_optional_service(ca)
        .serve(options.xds_addr)
        .await
        .map_err(|e| anyhow::anyhow!("xDS server on {}: {e}", options.xds_addr))
}
