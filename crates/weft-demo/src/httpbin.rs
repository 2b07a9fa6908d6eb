//! An httpbin-like service, for Istio's timeout, retry, mirroring and
//! circuit-breaking tasks: `/status/{code}`, `/delay/{seconds}`,
//! `/headers`, `/get`, `/anything…`, `/ip`, and `/websocket/echo` (an
//! HTTP/1.1 upgrade whose bytes come back as sent). Every answer names the
//! workload (`workload` in JSON bodies, and an `x-workload` header) and
//! every request is logged on standard output, so a test can see which
//! replica got what (a mirror's copy included).

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use serde_json::{json, Map, Value};

pub(crate) async fn handle(
    workload: &str,
    peer: SocketAddr,
    mut req: Request<Incoming>,
) -> Response<Full<Bytes>> {
    let host = req
        .headers()
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("-")
        .to_string();
    println!("{workload} {} {} host={host}", req.method(), req.uri());
    let path = req.uri().path().to_string();
    let mut parts = path.trim_start_matches('/').splitn(2, '/');
    let (first, rest) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    match first {
        "websocket" if rest == "echo" => upgrade_echo(workload, &mut req),
        "status" => match rest
            .parse::<u16>()
            .ok()
            .and_then(|c| StatusCode::from_u16(c).ok())
        {
            Some(code) => reply(workload, code, Value::Null),
            None => reply(
                workload,
                StatusCode::BAD_REQUEST,
                json!({"error": "bad status"}),
            ),
        },
        "delay" => {
            let secs: f64 = rest.parse().unwrap_or(0.0);
            tokio::time::sleep(Duration::from_secs_f64(secs.clamp(0.0, 10.0))).await;
            let echo = echo(workload, peer, req).await;
            reply(workload, StatusCode::OK, echo)
        }
        "headers" => reply(
            workload,
            StatusCode::OK,
            json!({"headers": headers(&req), "workload": workload}),
        ),
        "ip" => reply(
            workload,
            StatusCode::OK,
            json!({"origin": peer.ip().to_string()}),
        ),
        "get" | "anything" => {
            let echo = echo(workload, peer, req).await;
            reply(workload, StatusCode::OK, echo)
        }
        "" => reply(workload, StatusCode::OK, json!({"workload": workload})),
        _ => reply(
            workload,
            StatusCode::NOT_FOUND,
            json!({"error": format!("no such page {path}")}),
        ),
    }
}

/// Header names as httpbin writes them: each word capitalized.
fn headers<B>(req: &Request<B>) -> Value {
    let mut out = Map::new();
    for (k, v) in req.headers() {
        let name = k
            .as_str()
            .split('-')
            .map(|w| {
                let mut c = w.chars();
                c.next()
                    .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                    .unwrap_or_default()
            })
            .collect::<Vec<_>>()
            .join("-");
        out.insert(name, Value::String(v.to_str().unwrap_or("").to_string()));
    }
    Value::Object(out)
}

async fn echo(workload: &str, peer: SocketAddr, req: Request<Incoming>) -> Value {
    let method = req.method().to_string();
    let url = req.uri().to_string();
    let args: Map<String, Value> = req
        .uri()
        .query()
        .unwrap_or("")
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), Value::String(v.to_string())))
        .collect();
    let headers = headers(&req);
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    json!({
        "args": args, "headers": headers, "method": method, "url": url,
        "origin": peer.ip().to_string(), "data": String::from_utf8_lossy(&body),
        "workload": workload,
    })
}

fn reply(workload: &str, status: StatusCode, body: Value) -> Response<Full<Bytes>> {
    let text = if body.is_null() {
        String::new()
    } else {
        body.to_string()
    };
    let mut r = Response::new(Full::new(Bytes::from(text)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        "content-type",
        http::HeaderValue::from_static("application/json"),
    );
    if let Ok(v) = http::HeaderValue::from_str(workload) {
        r.headers_mut().insert("x-workload", v);
    }
    r
}

/// Switches an upgrade request (any `Upgrade` token, WebSocket's included)
/// and echoes the upgraded stream byte for byte; WebSocket frames come
/// back as the client sent them.
fn upgrade_echo(workload: &str, req: &mut Request<Incoming>) -> Response<Full<Bytes>> {
    let Some(token) = req.headers().get(http::header::UPGRADE).cloned() else {
        return reply(
            workload,
            StatusCode::BAD_REQUEST,
            json!({"error": "an Upgrade header is needed"}),
        );
    };
    let on_upgrade = hyper::upgrade::on(req);
    tokio::spawn(async move {
        if let Ok(upgraded) = on_upgrade.await {
            let io = hyper_util::rt::TokioIo::new(upgraded);
            let (mut r, mut w) = tokio::io::split(io);
            let _ = tokio::io::copy(&mut r, &mut w).await;
        }
    });
    let mut resp = Response::new(Full::new(Bytes::new()));
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    resp.headers_mut().insert(http::header::UPGRADE, token);
    resp.headers_mut().insert(
        http::header::CONNECTION,
        http::HeaderValue::from_static("upgrade"),
    );
    resp
}
