//! The control plane's HTTP API (JSON): config in and out for the CLI, and
//! the debug views of what each proxy was sent and answered.
//!
//! POST   /api/v1/apply      body: YAML; header x-weft-file names its source,
//!                            x-weft-namespace places documents naming none
//! POST   /api/v1/validate   same, stores nothing
//! GET    /api/v1/resources?kind=K[&namespace=N][&name=X]
//! DELETE /api/v1/resources?kind=K&namespace=N&name=X
//! GET    /debug/syncz       per proxy, per xDS type: sent, ACKed, NACKed
//! GET    /debug/problems    current problems in the watched files

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use serde_json::{json, Value};
use weft_config::{Key, Kind, Severity};

use crate::State;

pub(crate) async fn serve(listener: tokio::net::TcpListener, state: Arc<State>) {
    weft_xds::debug_http::serve(listener, "api", move |req| {
        let state = state.clone();
        async move { handle(req, &state).await }
    })
    .await
}

fn reply(status: StatusCode, body: Value) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        "content-type",
        http::HeaderValue::from_static("application/json"),
    );
    r
}

fn query(req: &Request<Incoming>) -> HashMap<String, String> {
    req.uri()
        .query()
        .unwrap_or("")
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

async fn handle(req: Request<Incoming>, state: &State) -> Response<Full<Bytes>> {
    let path = req.uri().path().to_string();
    match (req.method().clone(), path.as_str()) {
        (Method::POST, "/api/v1/apply") => apply(req, state, true).await,
        (Method::POST, "/api/v1/validate") => apply(req, state, false).await,
        (Method::GET, "/api/v1/resources") => get(&query(&req), state),
        (Method::DELETE, "/api/v1/resources") => delete(&query(&req), state),
        (Method::GET, "/debug/syncz") => reply(StatusCode::OK, json!(state.board.snapshot())),
        (Method::GET, "/api/v1/dashboard") => {
            reply(StatusCode::OK, crate::dashboard::api(state).await)
        }
        (Method::GET, "/dashboard") => {
            let mut r = Response::new(Full::new(Bytes::from_static(
                crate::dashboard::PAGE.as_bytes(),
            )));
            r.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("text/html; charset=utf-8"),
            );
            r
        }
        // istiod's monitoring port serves its metrics here too.
        (Method::GET, "/metrics") => {
            let mut r = Response::new(Full::new(Bytes::from(
                weft_xds::metrics::metrics().encode(),
            )));
            r.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            r
        }
        (Method::GET, "/debug/problems") => {
            let problems = state.store.read().expect("store lock").problems();
            let texts: Vec<Value> = problems
                .iter()
                .map(|p| json!({"severity": p.severity, "text": p.to_string()}))
                .collect();
            reply(StatusCode::OK, json!(texts))
        }
        _ => reply(
            StatusCode::NOT_FOUND,
            json!({"error": format!("no such endpoint: {path}")}),
        ),
    }
}

/// Validates every document; stores them only if none has an error, so an
/// apply is all or nothing.
async fn apply(req: Request<Incoming>, state: &State, store: bool) -> Response<Full<Bytes>> {
    let file = req
        .headers()
        .get("x-weft-file")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-")
        .to_string();
    // `weft apply -n`: the namespace for documents that name none.
    let namespace = req
        .headers()
        .get("x-weft-namespace")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => return reply(StatusCode::BAD_REQUEST, json!({"error": e.to_string()})),
    };
    let Ok(text) = std::str::from_utf8(&body) else {
        return reply(
            StatusCode::BAD_REQUEST,
            json!({"error": "body is not UTF-8"}),
        );
    };
    let loaded = weft_config::load_str_in(text, &file, namespace.as_deref());
    let problems: Vec<Value> = loaded
        .problems
        .iter()
        .map(|p| json!({"severity": p.severity, "text": p.to_string()}))
        .collect();
    if loaded
        .problems
        .iter()
        .any(|p| p.severity == Severity::Error)
    {
        return reply(
            StatusCode::UNPROCESSABLE_ENTITY,
            json!({"applied": [], "problems": problems}),
        );
    }
    let keys: Vec<String> = loaded
        .resources
        .iter()
        .map(|r| r.key().to_string())
        .collect();
    let analysis = analyze_with(state, &loaded.resources, &keys);
    if store {
        let changed = state
            .store
            .write()
            .expect("store lock")
            .apply(loaded.resources);
        if changed {
            state.push();
        }
    }
    reply(
        StatusCode::OK,
        json!({"applied": keys, "problems": problems, "analysis": analysis}),
    )
}

/// What `weft analyze` would say of the applied resources once they are in
/// the store. A dangling reference is not an error (resources may arrive in
/// any order, as in Istio), but the person applying should hear of it.
fn analyze_with(state: &State, incoming: &[weft_config::Resource], keys: &[String]) -> Vec<String> {
    let config = state.store.read().expect("store lock").preview(incoming);
    let registry = state.registry.read().expect("registry lock").clone();
    let input = weft_analyze::Input {
        config: &config,
        registry: &registry,
    };
    weft_analyze::analyze(&input)
        .into_iter()
        .filter(|m| keys.contains(&m.resource))
        .map(|m| m.to_string())
        .collect()
}

fn get(q: &HashMap<String, String>, state: &State) -> Response<Full<Bytes>> {
    let kind = match q.get("kind").map(|k| Kind::parse(k)) {
        Some(None) => {
            return reply(
                StatusCode::BAD_REQUEST,
                json!({"error": format!("unknown kind {:?}", q["kind"])}),
            )
        }
        Some(Some(k)) => Some(k),
        None => None,
    };
    let resources = state.store.read().expect("store lock").resources();
    let items: Vec<Value> = resources
        .iter()
        .filter(|r| kind.is_none_or(|k| r.kind == k))
        .filter(|r| q.get("namespace").is_none_or(|ns| r.namespace() == ns))
        .filter(|r| q.get("name").is_none_or(|n| &r.meta.name == n))
        .map(|r| r.to_document())
        .collect();
    reply(StatusCode::OK, json!({"items": items}))
}

fn delete(q: &HashMap<String, String>, state: &State) -> Response<Full<Bytes>> {
    let Some(kind) = q.get("kind").and_then(|k| Kind::parse(k)) else {
        return reply(
            StatusCode::BAD_REQUEST,
            json!({"error": "a known kind is required"}),
        );
    };
    let Some(name) = q.get("name") else {
        return reply(
            StatusCode::BAD_REQUEST,
            json!({"error": "a name is required"}),
        );
    };
    let key = Key {
        kind,
        namespace: q
            .get("namespace")
            .cloned()
            .unwrap_or_else(|| "default".into()),
        name: name.clone(),
    };
    let result = state.store.write().expect("store lock").delete(&key);
    match result {
        Ok(()) => {
            state.push();
            reply(StatusCode::OK, json!({"deleted": key.to_string()}))
        }
        Err(e) => reply(StatusCode::NOT_FOUND, json!({"error": e})),
    }
}
