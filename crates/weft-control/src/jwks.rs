//! JWKS for RequestAuthentication's `jwksUri`, fetched by the control
//! plane and inlined into the proxies' JWT filters, as istiod does by
//! default: a proxy needs no route to the key server. New URIs are
//! fetched as soon as config names them, then every 20 minutes (istiod's
//! refresh). A failed fetch keeps the keys last fetched; a URI never
//! fetched gives an empty key set, so its tokens are refused, never let
//! through. A changed key set is pushed to the proxies.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};

use crate::State;

const REFRESH: Duration = Duration::from_secs(20 * 60);
const RETRY: Duration = Duration::from_secs(5);
const TIMEOUT: Duration = Duration::from_secs(5);
const MAX_SIZE: usize = 1 << 20;

/// Keeps `state.jwks` filled for the URIs config names.
pub(crate) async fn run(state: Arc<State>) {
    let mut next: std::collections::HashMap<String, Instant> = Default::default();
    loop {
        let wanted = uris(&state);
        next.retain(|uri, _| wanted.contains(uri));
        state
            .jwks
            .write()
            .expect("JWKS lock")
            .retain(|uri, _| wanted.contains(uri));
        for uri in wanted {
            if next.get(&uri).is_some_and(|at| *at > Instant::now()) {
                continue;
            }
            // One slow server must not hold up the others for long.
            let fetched = match tokio::time::timeout(TIMEOUT * 2, fetch(&uri)).await {
                Ok(r) => r,
                Err(_) => Err(anyhow::anyhow!("no JWKS within {:?}", TIMEOUT * 2)),
            };
            let again = match fetched {
                Ok(text) => {
                    let mut jwks = state.jwks.write().expect("JWKS lock");
                    if jwks.get(&uri) != Some(&text) {
                        tracing::info!(%uri, "JWKS fetched");
                        jwks.insert(uri.clone(), text);
                        drop(jwks);
                        state.push();
                    }
                    REFRESH
                }
                Err(e) => {
                    let kept = state.jwks.read().expect("JWKS lock").contains_key(&uri);
                    tracing::warn!(%uri, error = format!("{e:#}"), kept_last_keys = kept, "JWKS fetch failed");
                    RETRY
                }
            };
            next.insert(uri, Instant::now() + again);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Every `jwksUri` of the stored RequestAuthentications.
fn uris(state: &State) -> Vec<String> {
    let config = state.store.read().expect("store lock").resources();
    let mut out: Vec<String> = config
        .iter()
        .filter_map(|r| r.as_request_authentication())
        .flat_map(|ra| &ra.jwt_rules)
        .filter(|rule| rule.jwks.is_none())
        .filter_map(|rule| {
            rule.jwks_uri
                .clone()
                .or_else(|| rule.jwks_uri_legacy.clone())
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

/// GET `uri` (http or https, checked against the system's CAs); the body
/// must be a JWKS.
async fn fetch(uri: &str) -> anyhow::Result<String> {
    let parsed: http::Uri = uri.parse().context("not a URL")?;
    let https = match parsed.scheme_str() {
        Some("https") => true,
        Some("http") => false,
        _ => bail!("only http and https URLs are fetched"),
    };
    let host = parsed.host().context("no host")?.to_string();
    let port = parsed.port_u16().unwrap_or(if https { 443 } else { 80 });
    let tcp = tokio::time::timeout(
        TIMEOUT,
        tokio::net::TcpStream::connect((host.as_str(), port)),
    )
    .await
    .context("connect timed out")??;
    let path = parsed
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_string();
    let request = http::Request::get(path)
        .header(
            http::header::HOST,
            parsed.authority().map_or(host.clone(), |a| a.to_string()),
        )
        .body(Empty::<Bytes>::new())?;
    let body = if https {
        let tls = tokio_rustls::TlsConnector::from(client_config()?)
            .connect(rustls::pki_types::ServerName::try_from(host.clone())?, tcp)
            .await?;
        send(tls, request).await?
    } else {
        send(tcp, request).await?
    };
    let text = String::from_utf8(body.to_vec()).context("not UTF-8")?;
    let json: serde_json::Value = serde_json::from_str(&text).context("not JSON")?;
    if !json["keys"].is_array() {
        bail!("not a JWKS (no \"keys\" list)");
    }
    Ok(text)
}

async fn send<S>(io: S, request: http::Request<Empty<Bytes>>) -> anyhow::Result<Bytes>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(io)).await?;
    tokio::spawn(conn);
    let resp = tokio::time::timeout(TIMEOUT, sender.send_request(request))
        .await
        .context("no answer in time")??;
    if resp.status() != http::StatusCode::OK {
        bail!("answered {}", resp.status());
    }
    let body = Limited::new(resp.into_body(), MAX_SIZE)
        .collect()
        .await
        .map_err(|e| anyhow::anyhow!("body: {e}"))?;
    Ok(body.to_bytes())
}

/// The system's CAs (Debian's bundle), as istiod trusts them.
fn client_config() -> anyhow::Result<Arc<rustls::ClientConfig>> {
    let pem = std::fs::read("/etc/ssl/certs/ca-certificates.crt").context("system CAs")?;
    let mut roots = rustls::RootCertStore::empty();
    for ca in weft_tls::certificates(&pem).map_err(anyhow::Error::msg)? {
        let _ = roots.add(ca);
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(weft_tls::provider()))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}
