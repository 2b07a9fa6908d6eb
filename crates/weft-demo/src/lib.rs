//! A Bookinfo-like demo application: productpage (calls details and
//! reviews), details, reviews v1/v2/v3 (v2 and v3 call ratings), ratings.
//!
//! Every response names the workload that produced it, and every outbound
//! call forwards the trace and identity headers it received, as Bookinfo's
//! apps do, so routing and tracing behave as in Istio's samples. It knows
//! nothing of the mesh: it listens on a port and calls services by name.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{json, Value};

pub mod boutique;
pub mod ext_authz;
mod httpbin;
mod zipkin;

/// What Bookinfo's pages say when a service behind them fails.
pub const DETAILS_UNAVAILABLE: &str =
    "Sorry, product details are currently unavailable for this book.";
pub const REVIEWS_UNAVAILABLE: &str =
    "Sorry, product reviews are currently unavailable for this book.";
pub const RATINGS_UNAVAILABLE: &str = "Ratings service is currently unavailable";

/// Headers Bookinfo's services pass from the request they serve to the
/// requests they make.
pub const FORWARDED_HEADERS: &[&str] = &[
    "x-request-id",
    "x-b3-traceid",
    "x-b3-spanid",
    "x-b3-parentspanid",
    "x-b3-sampled",
    "x-b3-flags",
    "b3",
    "traceparent",
    "tracestate",
    "x-ot-span-context",
    "end-user",
    "user-agent",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Productpage,
    Details,
    Reviews,
    Ratings,
    /// Opaque TCP: echoes each line back, prefixed with the workload name.
    TcpEcho,
    /// httpbin's endpoints, for the resilience tasks (`httpbin.rs`).
    Httpbin,
    /// A service of the Online-Boutique-like shop (`boutique/`).
    Boutique(boutique::Service),
    /// Istio's sample external authorizer (`samples/extauthz`), HTTP: a
    /// request carrying `x-ext-authz: allow` is allowed, any other denied.
    ExtAuthz,
    /// A Zipkin collector and query API, in memory (`zipkin.rs`).
    Zipkin,
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "productpage" => Ok(Role::Productpage),
            "details" => Ok(Role::Details),
            "reviews" => Ok(Role::Reviews),
            "ratings" => Ok(Role::Ratings),
            "tcp-echo" => Ok(Role::TcpEcho),
            "httpbin" => Ok(Role::Httpbin),
            "ext-authz" => Ok(Role::ExtAuthz),
            "zipkin" => Ok(Role::Zipkin),
            other => boutique::Service::from_name(other).map(Role::Boutique).ok_or_else(|| {
                format!(
                    "unknown demo service {s:?}: productpage, details, reviews, ratings, httpbin, tcp-echo, ext-authz, zipkin, or a boutique service (frontend, productcatalogservice, currencyservice, recommendationservice, cartservice, shippingservice, paymentservice, emailservice, checkoutservice, adservice, loadgenerator)"
                )
            }),
        }
    }
}

/// The failure knob every HTTP demo service has: answer a share of
/// requests with 503, and/or add latency to every request.
#[derive(Debug, Clone, Copy, Default)]
pub struct Knob {
    /// Percent of requests answered 503 (0–100).
    pub fail_percent: u8,
    pub delay: Duration,
}

pub struct App {
    role: Role,
    knob: Knob,
    version: String,
    workload: String,
    client: Client<HttpConnector, Empty<Bytes>>,
    /// Requests answered (not probes), for the app's own `/metrics`.
    served: std::sync::atomic::AtomicU64,
}

pub async fn run(
    role: Role,
    version: String,
    listen: SocketAddr,
    knob: Knob,
) -> anyhow::Result<()> {
    if role == Role::TcpEcho {
        return tcp_echo(format!("tcp-echo-{version}"), listen).await;
    }
    if role == Role::Zipkin {
        return zipkin::run(listen).await;
    }
    if role == Role::ExtAuthz {
        let grpc = SocketAddr::new(listen.ip(), listen.port() + 1000);
        tokio::spawn(ext_authz::serve_grpc(grpc, format!("ext-authz-{version}")));
    }
    if let Role::Boutique(service) = role {
        let name = format!("{service:?}").to_ascii_lowercase();
        return boutique::run(service, format!("{name}-{version}"), listen, knob.delay).await;
    }
    let name = format!("{role:?}").to_ascii_lowercase();
    let app = Arc::new(App {
        role,
        knob,
        workload: format!("{name}-{version}"),
        version,
        client: Client::builder(TokioExecutor::new()).build(HttpConnector::new()),
        served: Default::default(),
    });
    let listener = tokio::net::TcpListener::bind(listen).await?;
    tracing::info!(workload = %app.workload, %listen, "demo service listening");
    loop {
        let (sock, peer) = listener.accept().await?;
        let app = app.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req: Request<Incoming>| {
                let app = app.clone();
                async move {
                    // Which HTTP version reached the app, for HTTP/2 demos.
                    let version = format!("{:?}", req.version());
                    let mut resp = app.handle(req, peer).await;
                    if let Ok(v) = http::HeaderValue::from_str(&version) {
                        resp.headers_mut().insert("x-protocol", v);
                    }
                    Ok::<_, Infallible>(resp)
                }
            });
            // HTTP/1.1 and h2c (prior knowledge), as gRPC-era services do.
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection_with_upgrades(TokioIo::new(sock), svc)
                .await;
        });
    }
}

impl App {
    async fn handle(&self, req: Request<Incoming>, peer: SocketAddr) -> Response<Full<Bytes>> {
        // Probes (`/`, `/health`) are answered whatever the knob says, as a
        // failing pod can still be ready.
        let probe = matches!(req.uri().path(), "/" | "/health");
        if !self.knob.delay.is_zero() && !probe {
            tokio::time::sleep(self.knob.delay).await;
        }
        if !probe && self.knob.fail_percent > 0 && fastrand::u8(..100) < self.knob.fail_percent {
            return text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("{} failed on purpose (--fail-percent)\n", self.workload),
            );
        }
        if self.role == Role::Httpbin {
            return httpbin::handle(&self.workload, peer, req).await;
        }
        if self.role == Role::ExtAuthz {
            return ext_authz(&req);
        }
        let path = req.uri().path().to_string();
        if path == "/" || path == "/health" {
            return text(StatusCode::OK, format!("{} ok\n", self.workload));
        }
        if path == "/metrics" {
            return self.metrics();
        }
        self.served
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        match (self.role, path.split('/').nth(1).unwrap_or("")) {
            (Role::Productpage, "productpage") => self.productpage(&req).await,
            (Role::Details, "details") => json_reply(json!({
                "workload": self.workload, "id": 0, "author": "William Shakespeare",
                "year": 1595, "type": "paperback", "pages": 200, "publisher": "PublisherA",
                "received": received(&req),
            })),
            (Role::Reviews, "reviews") => self.reviews(&req).await,
            (Role::Ratings, "ratings") => json_reply(json!({
                "workload": self.workload, "id": 0, "ratings": {"Reviewer1": 5, "Reviewer2": 4},
                "received": received(&req),
            })),
            _ => text(
                StatusCode::NOT_FOUND,
                format!("{}: no such page {path}\n", self.workload),
            ),
        }
    }

    /// The app's own metrics, in Prometheus' text format, as an app that
    /// Istio merges on 15020 would serve them.
    fn metrics(&self) -> Response<Full<Bytes>> {
        let served = self.served.load(std::sync::atomic::Ordering::Relaxed);
        let body = format!(
            "# HELP bookinfo_requests_total Requests this app answered.\n# TYPE bookinfo_requests_total counter\nbookinfo_requests_total{{workload=\"{}\"}} {served}\n",
            self.workload
        );
        let mut r = text(StatusCode::OK, body);
        r.headers_mut().insert(
            "content-type",
            http::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        );
        r
    }

    async fn reviews(&self, req: &Request<Incoming>) -> Response<Full<Bytes>> {
        let stars = match self.version.as_str() {
            "v2" => Some("black"),
            "v3" => Some("red"),
            _ => None,
        };
        // Bookinfo's reviews waits 10 s for ratings in v2 (black stars)
        // and 2.5 s in v3, and says so when ratings fail.
        let wait = if stars == Some("black") {
            Duration::from_secs(10)
        } else {
            Duration::from_millis(2500)
        };
        let ratings = match stars {
            Some(_) => {
                let r = self.call("ratings", "/ratings/0", req, wait, 1).await;
                if r.get("error").is_some() {
                    json!({"error": RATINGS_UNAVAILABLE, "cause": r["error"]})
                } else {
                    r
                }
            }
            None => Value::Null,
        };
        json_reply(json!({
            "workload": self.workload,
            "received": received(req),
            "stars": stars,
            "ratings": ratings,
            "reviews": [
                {"reviewer": "Reviewer1", "text": "An extremely entertaining play by Shakespeare."},
                {"reviewer": "Reviewer2", "text": "Absolutely fun and entertaining."},
            ],
        }))
    }

    /// The page shows the whole chain, so a test (or a person) can see which
    /// workloads served each part of it.
    async fn productpage(&self, req: &Request<Incoming>) -> Response<Full<Bytes>> {
        // Bookinfo's timeouts: 3 s for details; 3 s for reviews, tried
        // twice (the "bug" Istio's fault-injection task shows).
        let details = self
            .call("details", "/details/0", req, Duration::from_secs(3), 1)
            .await;
        let reviews = self
            .call("reviews", "/reviews/0", req, Duration::from_secs(3), 2)
            .await;
        let notice = |v: &Value, sorry: &str| {
            if v.get("error").is_some() {
                format!("<p class=\"error\">{sorry}</p>\n")
            } else {
                String::new()
            }
        };
        let notices =
            notice(&details, DETAILS_UNAVAILABLE) + &notice(&reviews, REVIEWS_UNAVAILABLE);
        let name = |v: &Value| {
            v["workload"]
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| format!("error: {}", v["error"]))
        };
        let ratings = &reviews["ratings"];
        let rating_part = if ratings.is_null() {
            String::new()
        } else {
            format!(
                " -> {} ({} stars)",
                name(ratings),
                reviews["stars"].as_str().unwrap_or("?")
            )
        };
        let user = req
            .headers()
            .get("end-user")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-");
        let chain = format!(
            "{} -> {} ; {} -> {}{}",
            self.workload,
            name(&details),
            self.workload,
            name(&reviews),
            rating_part
        );
        let body = format!(
            "<html><head><title>Bookinfo on Weft</title></head><body>\n<h1>The Comedy of Errors</h1>\n<p>end-user: {user}</p>\n<p id=\"chain\">{chain}</p>\n{notices}<p>details: {details}</p>\n<p>reviews: {reviews}</p>\n</body></html>\n"
        );
        let mut r = text(StatusCode::OK, body);
        r.headers_mut()
            .insert("content-type", http::HeaderValue::from_static("text/html"));
        r
    }

    /// GET http://SERVICE:9080/PATH with the forwarded headers, `tries`
    /// times at most, each within `timeout`; errors come back as
    /// `{"error": …}` so the page still renders, as Bookinfo's does.
    async fn call(
        &self,
        service: &str,
        path: &str,
        from: &Request<Incoming>,
        timeout: Duration,
        tries: u32,
    ) -> Value {
        let mut last = Value::Null;
        for _ in 0..tries.max(1) {
            last = match tokio::time::timeout(timeout, self.fetch(service, path, from)).await {
                Ok(v) => v,
                Err(_) => json!({"error": format!("{service}: no answer within {timeout:?}")}),
            };
            if last.get("error").is_none() {
                break;
            }
        }
        last
    }

    async fn fetch(&self, service: &str, path: &str, from: &Request<Incoming>) -> Value {
        let mut req = Request::get(format!("http://{service}:9080{path}"));
        for name in FORWARDED_HEADERS {
            if let Some(v) = from.headers().get(*name) {
                req = req.header(*name, v);
            }
        }
        let Ok(req) = req.body(Empty::new()) else {
            return json!({"error": "bad request"});
        };
        let resp = match self.client.request(req).await {
            Ok(r) => r,
            Err(e) => return json!({"error": format!("{service}: {e}")}),
        };
        let status = resp.status();
        let body = resp
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        if !status.is_success() {
            return json!({"error": format!("{service}: {status} {}", String::from_utf8_lossy(&body).trim())});
        }
        serde_json::from_slice(&body)
            .unwrap_or_else(|e| json!({"error": format!("{service}: {e}")}))
    }
}

/// The forwarded headers this request arrived with, so a test (or a
/// person) can follow a trace and a user through the chain.
fn received(req: &Request<Incoming>) -> Value {
    FORWARDED_HEADERS
        .iter()
        .filter(|name| **name != "user-agent")
        .filter_map(|name| {
            let v = req.headers().get(*name)?.to_str().ok()?;
            Some((name.to_string(), Value::String(v.to_string())))
        })
        .collect::<serde_json::Map<_, _>>()
        .into()
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r
}

fn json_reply(v: Value) -> Response<Full<Bytes>> {
    let mut r = text(StatusCode::OK, v.to_string());
    r.headers_mut().insert(
        "content-type",
        http::HeaderValue::from_static("application/json"),
    );
    r
}

/// Echoes every line back as `<workload> <line>`, so a test can see which
/// workload a TCP connection reached.
async fn tcp_echo(workload: String, listen: SocketAddr) -> anyhow::Result<()> {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let listener = tokio::net::TcpListener::bind(listen).await?;
    tracing::info!(%workload, %listen, "tcp echo listening");
    loop {
        let (sock, _) = listener.accept().await?;
        let workload = workload.clone();
        tokio::spawn(async move {
            let (read, mut write) = sock.into_split();
            let mut lines = BufReader::new(read).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if write
                    .write_all(format!("{workload} {line}\n").as_bytes())
                    .await
                    .is_err()
                {
                    break;
                }
            }
        });
    }
}

/// The check Istio's sample authorizer makes, with its answers.
fn ext_authz<B>(req: &Request<B>) -> Response<Full<Bytes>> {
    let allowed = req
        .headers()
        .get("x-ext-authz")
        .is_some_and(|v| v == "allow");
    let (status, result, body) = if allowed {
        (StatusCode::OK, "allowed", String::new())
    } else {
        (
            StatusCode::FORBIDDEN,
            "denied",
            "denied by ext_authz for not found header `x-ext-authz: allow` in the request"
                .to_string(),
        )
    };
    let mut resp = text(status, body);
    resp.headers_mut().insert(
        "x-ext-authz-check-result",
        http::HeaderValue::from_static(result),
    );
    resp
}
