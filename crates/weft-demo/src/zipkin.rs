//! A Zipkin stand-in for the local mesh (Istio's `samples/addons/extras/
//! zipkin.yaml` role): it takes spans on Zipkin's v2 API (`POST
//! /api/v2/spans`, JSON) and answers the query API a tracing UI and Istio's
//! tasks use — `/api/v2/services`, `/api/v2/spans?serviceName=`,
//! `/api/v2/traces?serviceName=&limit=`, `/api/v2/trace/{id}` — from
//! memory, keeping the latest 10 000 spans. Every accepted batch is logged
//! on standard output.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use serde_json::Value;

const KEEP: usize = 10_000;

#[derive(Default)]
struct Spans(Mutex<VecDeque<Value>>);

pub async fn run(listen: SocketAddr) -> anyhow::Result<()> {
    let spans = Arc::new(Spans::default());
    let listener = tokio::net::TcpListener::bind(listen).await?;
    tracing::info!(%listen, "zipkin listening");
    loop {
        let (sock, _) = listener.accept().await?;
        let spans = spans.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| {
                let spans = spans.clone();
                async move { Ok::<_, std::convert::Infallible>(handle(&spans, req).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(sock), svc)
                .await;
        });
    }
}

fn reply(status: StatusCode, body: Value) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    r
}

fn query(req: &Request<Incoming>, key: &str) -> Option<String> {
    req.uri().query()?.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == key).then(|| v.replace("%2F", "/").replace("%3A", ":"))
    })
}

async fn handle(spans: &Spans, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let path = req.uri().path().to_string();
    match (req.method().clone(), path.as_str()) {
        (Method::POST, "/api/v2/spans") => accept(spans, req).await,
        (Method::GET, "/api/v2/services") => {
            let all = spans.0.lock().unwrap_or_else(|p| p.into_inner());
            let names: BTreeSet<&str> = all.iter().filter_map(service).collect();
            reply(StatusCode::OK, names.into_iter().collect::<Vec<_>>().into())
        }
        (Method::GET, "/api/v2/spans") => {
            let wanted = query(&req, "serviceName").unwrap_or_default();
            let all = spans.0.lock().unwrap_or_else(|p| p.into_inner());
            let names: BTreeSet<&str> = all
                .iter()
                .filter(|s| service(s) == Some(&wanted))
                .filter_map(|s| s["name"].as_str())
                .collect();
            reply(StatusCode::OK, names.into_iter().collect::<Vec<_>>().into())
        }
        (Method::GET, "/api/v2/traces") => {
            let wanted = query(&req, "serviceName");
            let limit = query(&req, "limit")
                .and_then(|l| l.parse().ok())
                .unwrap_or(10);
            reply(StatusCode::OK, traces(spans, wanted.as_deref(), limit))
        }
        (Method::GET, p) if p.starts_with("/api/v2/trace/") => {
            let id = &p["/api/v2/trace/".len()..];
            let all = spans.0.lock().unwrap_or_else(|p| p.into_inner());
            let trace: Vec<Value> = all.iter().filter(|s| s["traceId"] == id).cloned().collect();
            match trace.is_empty() {
                true => reply(StatusCode::NOT_FOUND, Value::Null),
                false => reply(StatusCode::OK, trace.into()),
            }
        }
        _ => reply(StatusCode::NOT_FOUND, Value::Null),
    }
}

fn service(span: &Value) -> Option<&str> {
    span["localEndpoint"]["serviceName"].as_str()
}

async fn accept(spans: &Spans, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let Ok(body) = req.into_body().collect().await else {
        return reply(StatusCode::BAD_REQUEST, Value::Null);
    };
    let batch: Vec<Value> = match serde_json::from_slice(&body.to_bytes()) {
        Ok(b) => b,
        Err(e) => return reply(StatusCode::BAD_REQUEST, e.to_string().into()),
    };
    for s in &batch {
        println!(
            "span trace={} id={} parent={} kind={} service={} name={}",
            s["traceId"].as_str().unwrap_or("-"),
            s["id"].as_str().unwrap_or("-"),
            s["parentId"].as_str().unwrap_or("-"),
            s["kind"].as_str().unwrap_or("-"),
            service(s).unwrap_or("-"),
            s["name"].as_str().unwrap_or("-"),
        );
    }
    let mut all = spans.0.lock().unwrap_or_else(|p| p.into_inner());
    all.extend(batch);
    while all.len() > KEEP {
        all.pop_front();
    }
    reply(StatusCode::ACCEPTED, Value::Null)
}

/// The latest `limit` traces that have a span of `service`, each a list
/// of its spans.
fn traces(spans: &Spans, service_name: Option<&str>, limit: usize) -> Value {
    let all = spans.0.lock().unwrap_or_else(|p| p.into_inner());
    let mut by_trace: BTreeMap<&str, Vec<&Value>> = BTreeMap::new();
    let mut order: Vec<&str> = Vec::new();
    for s in all.iter().rev() {
        let Some(id) = s["traceId"].as_str() else {
            continue;
        };
        if !by_trace.contains_key(id) {
            order.push(id);
        }
        by_trace.entry(id).or_default().push(s);
    }
    let wanted = |trace: &Vec<&Value>| {
        service_name.is_none_or(|name| trace.iter().any(|s| service(s) == Some(name)))
    };
    let picked: Vec<Value> = order
        .into_iter()
        .filter_map(|id| by_trace.get(id))
        .filter(|t| wanted(t))
        .take(limit)
        .map(|t| t.iter().map(|s| (*s).clone()).collect::<Vec<_>>().into())
        .collect();
    picked.into()
}
