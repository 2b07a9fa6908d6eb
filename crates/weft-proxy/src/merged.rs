//! Istio's metrics merging: the agent's port (15020) answers
//! `/stats/prometheus` with the proxy's metrics and the app's own (where
//! the pod's `prometheus.io/port|path` said they are) in one scrape, so
//! Prometheus scrapes one target per pod, as Istio's injector arranges.
//!
//! The merged page is Prometheus' text format 0.0.4, which both sides'
//! families fit: the proxy's OpenMetrics is rewritten (no `# EOF` in the
//! middle, counters typed under their `_total` names, `unknown` as
//! `untyped`), and so is an app that answers in OpenMetrics. An app that
//! does not answer costs only its part: the proxy's metrics still come,
//! and `istio_agent_scrape_failures_total{type="application"}` counts it,
//! as Istio's agent does.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

use crate::Shared;

/// How long the app gets to answer (Istio's agent: the scrape's own
/// timeout; Prometheus' default is 10 s, and the page must beat it).
const APP_TIMEOUT: Duration = Duration::from_secs(5);

/// Where the app serves its metrics (`prometheus.io/port` and `path`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppMetrics {
    pub addr: SocketAddr,
    pub path: String,
}

impl std::str::FromStr for AppMetrics {
    type Err = String;

    /// `PORT` or `PORT/path` (default `/metrics`), on the pod's loopback.
    fn from_str(s: &str) -> Result<Self, String> {
        let (port, path) = match s.split_once('/') {
            Some((p, rest)) => (p, format!("/{rest}")),
            None => (s, "/metrics".to_string()),
        };
        let port: u16 = port
            .parse()
            .map_err(|_| format!("{s:?}: expected PORT or PORT/path"))?;
        Ok(AppMetrics {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            path,
        })
    }
}

type ByType = [(&'static str, &'static str); 1];

/// The agent's own counters, Istio's names.
struct Agent {
    registry: Registry,
    scrapes: Counter,
    failures: Family<ByType, Counter>,
}

impl Agent {
    fn new() -> Agent {
        let mut registry = Registry::default();
        let scrapes = Counter::default();
        let failures = Family::<ByType, Counter>::default();
        registry.register(
            "istio_agent_scrapes",
            "Scrapes of the merged metrics",
            scrapes.clone(),
        );
        registry.register(
            "istio_agent_scrape_failures",
            "Failed scrapes of a part of the merged metrics",
            failures.clone(),
        );
        Agent {
            registry,
            scrapes,
            failures,
        }
    }
}

/// Serves the merged page until the process ends.
pub(crate) async fn serve(listener: TcpListener, shared: Arc<Shared>, app: Option<AppMetrics>) {
    let agent = Arc::new(Agent::new());
    weft_xds::debug_http::serve(listener, "merged metrics", move |req| {
        let (shared, app, agent) = (shared.clone(), app.clone(), agent.clone());
        async move {
            match req.uri().path() {
                "/stats/prometheus" | "/metrics" => merged(&shared, app.as_ref(), &agent).await,
                _ => reply(StatusCode::NOT_FOUND, "not found\n".into()),
            }
        }
    })
    .await
}

async fn merged(shared: &Shared, app: Option<&AppMetrics>, agent: &Agent) -> Response<Full<Bytes>> {
    agent.scrapes.inc();
    let mut page = String::new();
    to_text_format(&crate::admin::prometheus_text(shared), &mut page);
    if let Some(app) = app {
        match tokio::time::timeout(APP_TIMEOUT, fetch(app)).await {
            Ok(Ok(text)) => to_text_format(&text, &mut page),
            outcome => {
                let error = match outcome {
                    Ok(Err(e)) => e,
                    _ => "timed out".into(),
                };
                tracing::warn!(addr = %app.addr, path = %app.path, %error, "scraping the app's metrics failed");
                agent
                    .failures
                    .get_or_create(&[("type", "application")])
                    .inc();
            }
        }
    }
    let mut own = String::new();
    let _ = prometheus_client::encoding::text::encode(&mut own, &agent.registry);
    to_text_format(&own, &mut page);
    let mut r = reply(StatusCode::OK, page);
    r.headers_mut().insert(
        "content-type",
        http::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    r
}

/// GETs the app's metrics page.
async fn fetch(app: &AppMetrics) -> Result<String, String> {
    let req = Request::get(&app.path)
        .header("host", app.addr.to_string())
        .header("accept", "text/plain;version=0.0.4;q=1,*/*;q=0.1")
        .body(Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
    let resp = crate::http::once::send(app.addr, req)
        .await
        .map_err(|e| e.to_string())?;
    if resp.status() != StatusCode::OK {
        return Err(format!("status {}", resp.status()));
    }
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?;
    String::from_utf8(body.to_bytes().to_vec()).map_err(|_| "not UTF-8".to_string())
}

fn reply(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r
}

/// Appends `exposition` (OpenMetrics or text 0.0.4) to `out` in text
/// format 0.0.4.
fn to_text_format(exposition: &str, out: &mut String) {
    let mut help: Option<&str> = None;
    for line in exposition.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            // Written with its TYPE, which may rename the family.
            help = Some(rest);
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, "untyped"));
            let (name, kind) = text_format_type(name, kind.trim());
            if let Some(h) = help.take() {
                let text = h.split_once(' ').map_or("", |(_, t)| t);
                out.push_str(&format!("# HELP {name} {text}\n"));
            }
            out.push_str(&format!("# TYPE {name} {kind}\n"));
            continue;
        }
        if line.starts_with('#') || line.trim().is_empty() {
            // `# EOF`, `# UNIT`, comments.
            continue;
        }
        if let Some(h) = help.take() {
            out.push_str("# HELP ");
            out.push_str(h);
            out.push('\n');
        }
        // An OpenMetrics exemplar (` # {…} v`) has no place in 0.0.4.
        let sample = line.split_once(" # ").map_or(line, |(s, _)| s);
        out.push_str(sample);
        out.push('\n');
    }
}

/// A family's name and type in text format 0.0.4.
fn text_format_type(name: &str, kind: &str) -> (String, &'static str) {
    match kind {
        "counter" if !name.ends_with("_total") => (format!("{name}_total"), "counter"),
        "counter" => (name.to_string(), "counter"),
        "gauge" => (name.to_string(), "gauge"),
        "histogram" => (name.to_string(), "histogram"),
        "summary" => (name.to_string(), "summary"),
        "info" => (format!("{name}_info"), "gauge"),
        _ => (name.to_string(), "untyped"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_metrics_becomes_text_format() {
        let om = "# HELP istio_requests Requests.\n# TYPE istio_requests counter\nistio_requests_total{a=\"b\"} 3\n# HELP envoy_server_live x\n# TYPE envoy_server_live unknown\nenvoy_server_live 1\n# TYPE app_seconds histogram\n# UNIT app_seconds seconds\napp_seconds_bucket{le=\"+Inf\"} 1 # {trace_id=\"1\"} 0.5\napp_seconds_sum 0.5\napp_seconds_count 1\n# EOF\n";
        let mut out = String::new();
        to_text_format(om, &mut out);
        assert_eq!(
            out,
            "# HELP istio_requests_total Requests.\n# TYPE istio_requests_total counter\nistio_requests_total{a=\"b\"} 3\n# HELP envoy_server_live x\n# TYPE envoy_server_live untyped\nenvoy_server_live 1\n# TYPE app_seconds histogram\napp_seconds_bucket{le=\"+Inf\"} 1\napp_seconds_sum 0.5\napp_seconds_count 1\n"
        );
        let text = "# HELP up_total x\n# TYPE up_total counter\nup_total 1\nbare 2\n";
        let mut again = String::new();
        to_text_format(text, &mut again);
        assert_eq!(again, text, "text format passes unchanged");
    }

    #[test]
    fn app_locations_read_as_port_and_path() {
        let a: AppMetrics = "9080".parse().unwrap();
        assert_eq!((a.addr.port(), a.path.as_str()), (9080, "/metrics"));
        let b: AppMetrics = "8080/stats/app".parse().unwrap();
        assert_eq!(b.path, "/stats/app");
        assert!("x/metrics".parse::<AppMetrics>().is_err());
    }
}
