//! The control plane's JSON API, from the CLI: hyper's HTTP/1.1 client, one
//! request per connection, which is all a CLI needs.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{bail, Context};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;

pub async fn call(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> anyhow::Result<(u16, serde_json::Value)> {
    let stream = tokio::time::timeout(Duration::from_secs(3), tokio::net::TcpStream::connect(addr))
        .await
        .ok()
        .and_then(Result::ok)
        .with_context(|| format!("cannot reach the control plane at {addr}: is the mesh up?"))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let mut req = http::Request::builder()
        .method(method)
        .uri(path)
        .header(http::header::HOST, addr.to_string());
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(Full::new(Bytes::copy_from_slice(body)))?;
    let resp = tokio::time::timeout(Duration::from_secs(30), sender.send_request(req))
        .await
        .with_context(|| format!("the control plane at {addr} did not answer within 30 s"))??;
    let code = resp.status().as_u16();
    let body = resp.into_body().collect().await?.to_bytes();
    let text = String::from_utf8_lossy(&body);
    if text.trim().is_empty() && code != 200 {
        bail!("control plane answered {code} with an empty body");
    }
    let json = serde_json::from_str(text.trim())
        .with_context(|| format!("control plane answered {code} with non-JSON: {text}"))?;
    Ok((code, json))
}
