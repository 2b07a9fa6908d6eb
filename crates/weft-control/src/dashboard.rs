//! The built-in dashboard (Kiali's main view, without Prometheus): the
//! control plane scrapes every sidecar's Istio metrics (15090) and recent
//! failures (admin 15000) when the page asks, and keeps the last scrapes so
//! that rates are the difference between two of them. Edges are the
//! server side's `istio_requests_total` (reporter `destination`), which
//! names the client through the metadata exchange, as Kiali reads them.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use serde_json::{json, Value};

use weft_registry::ProxyKind;

use crate::State;

pub(crate) const PAGE: &str = include_str!("dashboard.html");

const SCRAPE_TIMEOUT: Duration = Duration::from_secs(2);
/// Rates need two scrapes at least this far apart.
const MIN_WINDOW: Duration = Duration::from_secs(1);
const KEEP: usize = 20;

/// A counted flow: requests, successes, and the duration histogram.
#[derive(Debug, Clone, Default)]
struct Counts {
    requests: f64,
    ok: f64,
    /// `le` (ms) → cumulative count.
    buckets: BTreeMap<u64, f64>,
}

/// (source workload, destination service, protocol).
type EdgeKey = (String, String, String);
/// (workload, namespace).
type WorkloadKey = (String, String);

#[derive(Debug, Default)]
struct Snapshot {
    edges: HashMap<EdgeKey, Counts>,
    workloads: HashMap<WorkloadKey, Counts>,
}

/// Past scrapes, newest last.
#[derive(Default)]
pub(crate) struct History(Mutex<VecDeque<(Instant, Arc<Snapshot>)>>);

pub(crate) async fn api(state: &State) -> Value {
    let registry = state.registry.read().expect("registry lock").clone();
    // Every proxy: sidecars on their pod's address, gateways where their
    // admin port is (the local mesh's gateway answers on the host bridge).
    let targets: Vec<(String, std::net::IpAddr)> = registry
        .workloads
        .iter()
        .filter_map(|w| match w.proxy {
            ProxyKind::Sidecar => Some((w.name.clone(), w.ip)),
            ProxyKind::Gateway => Some((w.name.clone(), w.admin.map_or(w.ip, |a| a.ip()))),
            _ => None,
        })
        .collect();
    // Their servers report their own edges; a client reports an edge only
    // to a workload without a sidecar.
    let sidecars: HashSet<WorkloadKey> = registry
        .workloads
        .iter()
        .filter(|w| w.proxy == ProxyKind::Sidecar)
        .map(|w| (w.name.clone(), w.namespace.clone()))
        .collect();
    let scrapes = futures_join(targets.into_iter().map(|(name, ip)| scrape(name, ip))).await;
    let mut now = Snapshot::default();
    let mut failures = Vec::new();
    let mut spans = Vec::new();
    let mut scraped = 0;
    for s in scrapes.into_iter().flatten() {
        scraped += 1;
        add_metrics(&mut now, &s.metrics, &sidecars);
        failures.extend(s.failures);
        spans.extend(s.spans);
    }
    failures.sort_by(|a, b| b["time"].as_str().cmp(&a["time"].as_str()));
    failures.truncate(30);
    let now = Arc::new(now);
    let base = state.dashboard.remember(now.clone());
    let window = base.as_ref().map(|(at, _)| at.elapsed().as_secs_f64());
    let edges = rows(
        &now.edges,
        base.as_ref().map(|(_, b)| &b.edges),
        window,
        |(s, d, p)| json!({"source": s, "destination": d, "protocol": p}),
    );
    let workloads = rows(
        &now.workloads,
        base.as_ref().map(|(_, b)| &b.workloads),
        window,
        |(w, n)| json!({"workload": w, "namespace": n}),
    );
    let proxies: Vec<Value> = state
        .board
        .snapshot()
        .into_iter()
        .map(|p| {
            let types: BTreeMap<&String, &str> =
                p.types.iter().map(|(t, s)| (t, s.state)).collect();
            json!({"proxy": p.node_id, "connected": p.connected, "types": types})
        })
        .collect();
    json!({
        "scraped": scraped,
        "window_seconds": window,
        "edges": edges,
        "workloads": workloads,
        "failures": failures,
        "traces": traces(spans),
        "proxies": proxies,
    })
}

impl History {
    /// Keeps `now`; returns the newest earlier scrape at least
    /// `MIN_WINDOW` old, the rates' baseline.
    fn remember(&self, now: Arc<Snapshot>) -> Option<(Instant, Arc<Snapshot>)> {
        let mut h = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let base = h
            .iter()
            .rev()
            .find(|(at, _)| at.elapsed() >= MIN_WINDOW)
            .cloned();
        h.push_back((Instant::now(), now));
        while h.len() > KEEP {
            h.pop_front();
        }
        base
    }
}

/// Table rows: totals, and rates over the window when there is one.
fn rows<K: std::hash::Hash + Eq + Ord + Clone>(
    now: &HashMap<K, Counts>,
    base: Option<&HashMap<K, Counts>>,
    window: Option<f64>,
    label: impl Fn(&K) -> Value,
) -> Vec<Value> {
    let mut keys: Vec<&K> = now.keys().collect();
    keys.sort();
    keys.into_iter()
        .map(|k| {
            let c = &now[k];
            let delta = match (base.and_then(|b| b.get(k)), base) {
                (Some(b), _) => minus(c, b),
                (None, Some(_)) => c.clone(),
                (None, None) => Counts::default(),
            };
            let seen = if delta.requests > 0.0 { &delta } else { c };
            let mut row = label(k);
            row["requests"] = json!(c.requests);
            row["rps"] = json!(window.map(|w| delta.requests / w));
            row["success"] = json!((seen.requests > 0.0).then(|| seen.ok / seen.requests));
            row["p50"] = json!(quantile(&seen.buckets, 0.5));
            row["p99"] = json!(quantile(&seen.buckets, 0.99));
            row
        })
        .collect()
}

fn minus(a: &Counts, b: &Counts) -> Counts {
    Counts {
        requests: (a.requests - b.requests).max(0.0),
        ok: (a.ok - b.ok).max(0.0),
        buckets: a
            .buckets
            .iter()
            .map(|(le, n)| {
                (
                    *le,
                    (n - b.buckets.get(le).copied().unwrap_or(0.0)).max(0.0),
                )
            })
            .collect(),
    }
}

/// Prometheus' `histogram_quantile`: linear within the bucket.
fn quantile(buckets: &BTreeMap<u64, f64>, q: f64) -> Option<f64> {
    let total = buckets.values().copied().fold(0.0, f64::max);
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let mut prev = (0.0, 0.0);
    for (&bound, n) in buckets {
        let le = bound as f64;
        if *n >= rank {
            if bound == u64::MAX {
                return Some(prev.0);
            }
            let within = if n - prev.1 > 0.0 {
                (rank - prev.1) / (n - prev.1)
            } else {
                1.0
            };
            return Some(prev.0 + (le - prev.0) * within);
        }
        prev = (le, *n);
    }
    Some(prev.0)
}

/// What one sidecar said.
struct Scrape {
    metrics: String,
    failures: Vec<Value>,
    spans: Vec<Value>,
}

async fn scrape(name: String, ip: std::net::IpAddr) -> Option<Scrape> {
    let metrics = get(SocketAddr::new(ip, 15090), "/stats/prometheus").await?;
    let admin = |path: &'static str| {
        let name = name.clone();
        async move {
            get(SocketAddr::new(ip, 15000), path)
                .await
                .and_then(|b| serde_json::from_str::<Vec<Value>>(&b).ok())
                .unwrap_or_default()
                .into_iter()
                .map(|mut f| {
                    f["proxy"] = json!(name);
                    f
                })
                .collect::<Vec<Value>>()
        }
    };
    let failures = admin("/recent_failures").await;
    let spans = admin("/recent_spans").await;
    Some(Scrape {
        metrics,
        failures,
        spans,
    })
}

/// How many traces the page lists.
const TRACES: usize = 10;

/// The proxies' recent spans as traces, newest first: each trace's spans
/// in start order with their depth under the trace's roots (a span whose
/// parent no sidecar reported, such as the gateway's, is a root).
fn traces(spans: Vec<Value>) -> Vec<Value> {
    let mut by_trace: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for s in spans {
        let Some(t) = s["trace"].as_str().map(str::to_string) else {
            continue;
        };
        by_trace.entry(t).or_default().push(s);
    }
    let mut out: Vec<(u64, Value)> = by_trace
        .into_iter()
        .map(|(trace, mut spans)| {
            spans.sort_by_key(|s| s["start_us"].as_u64().unwrap_or(0));
            let depth = |s: &Value| {
                let mut d = 0;
                let mut at = s;
                while let Some(p) = at["parent"].as_str() {
                    match spans.iter().find(|x| x["id"].as_str() == Some(p)) {
                        Some(parent) if d < spans.len() => {
                            d += 1;
                            at = parent;
                        }
                        _ => break,
                    }
                }
                d
            };
            let depths: Vec<usize> = spans.iter().map(depth).collect();
            for (s, d) in spans.iter_mut().zip(depths) {
                s["depth"] = json!(d);
            }
            let start = spans
                .first()
                .and_then(|s| s["start_us"].as_u64())
                .unwrap_or(0);
            let end = spans
                .iter()
                .map(|s| {
                    s["start_us"].as_u64().unwrap_or(0)
                        + (s["duration_ms"].as_f64().unwrap_or(0.0) * 1000.0) as u64
                })
                .max()
                .unwrap_or(start);
            let root = spans.first().map_or(json!(null), |s| s["name"].clone());
            let trace = json!({
                "trace": trace,
                "root": root,
                "duration_ms": (end.saturating_sub(start)) as f64 / 1000.0,
                "spans": spans,
            });
            (start, trace)
        })
        .collect();
    out.sort_by_key(|t| std::cmp::Reverse(t.0));
    out.into_iter().take(TRACES).map(|(_, t)| t).collect()
}

async fn get(addr: SocketAddr, path: &str) -> Option<String> {
    let fetch = async {
        let s = tokio::net::TcpStream::connect(addr).await.ok()?;
        let (mut send, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(s))
                .await
                .ok()?;
        tokio::spawn(conn);
        let req = http::Request::get(path)
            .header(http::header::HOST, addr.to_string())
            .body(Empty::<Bytes>::new())
            .ok()?;
        let resp = send.send_request(req).await.ok()?;
        let body = resp.into_body().collect().await.ok()?.to_bytes();
        String::from_utf8(body.to_vec()).ok()
    };
    tokio::time::timeout(SCRAPE_TIMEOUT, fetch).await.ok()?
}

async fn futures_join<F: std::future::Future + Send + 'static>(
    futures: impl Iterator<Item = F>,
) -> Vec<F::Output>
where
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futures.map(tokio::spawn).collect();
    let mut out = Vec::new();
    for h in handles {
        if let Ok(v) = h.await {
            out.push(v);
        }
    }
    out
}

/// Adds one scrape's destination-side request series to the snapshot.
/// Adds one proxy's series: the servers' (`reporter="destination"`), and
/// the clients' to destinations without a sidecar, which report nothing.
fn add_metrics(snap: &mut Snapshot, text: &str, sidecars: &HashSet<WorkloadKey>) {
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((name, labels, value)) = sample(line) else {
            continue;
        };
        let get = |k: &str| labels.get(k).cloned().unwrap_or_else(|| "unknown".into());
        let counted = match labels.get("reporter").map(String::as_str) {
            Some("destination") => true,
            Some("source") => !sidecars.contains(&(
                get("destination_workload"),
                get("destination_workload_namespace"),
            )),
            _ => false,
        };
        if !counted {
            continue;
        }
        let edge = (
            get("source_workload"),
            get("destination_service_name"),
            get("request_protocol"),
        );
        let workload = (
            get("destination_workload"),
            get("destination_workload_namespace"),
        );
        match name {
            "istio_requests_total" => {
                let code: u16 = labels
                    .get("response_code")
                    .and_then(|c| c.parse().ok())
                    .unwrap_or(0);
                let grpc_ok = labels
                    .get("grpc_response_status")
                    .is_none_or(|s| s == "0" || s.is_empty());
                let ok = if (1..500).contains(&code) && grpc_ok {
                    value
                } else {
                    0.0
                };
                for c in [
                    snap.edges.entry(edge).or_default(),
                    snap.workloads.entry(workload).or_default(),
                ] {
                    c.requests += value;
                    c.ok += ok;
                }
            }
            "istio_request_duration_milliseconds_bucket" => {
                let le = match labels.get("le").map(String::as_str) {
                    Some("+Inf") => u64::MAX,
                    Some(l) => l.parse::<f64>().map_or(u64::MAX, |v| v as u64),
                    None => continue,
                };
                for c in [
                    snap.edges.entry(edge).or_default(),
                    snap.workloads.entry(workload).or_default(),
                ] {
                    *c.buckets.entry(le).or_default() += value;
                }
            }
            _ => {}
        }
    }
}

/// `name{k="v",…} value` (Prometheus text exposition), with escapes.
fn sample(line: &str) -> Option<(&str, HashMap<String, String>, f64)> {
    let (name, rest) = match line.find('{') {
        Some(i) => (&line[..i], &line[i + 1..]),
        None => {
            let (n, v) = line.split_once(' ')?;
            return Some((n, HashMap::new(), v.trim().parse().ok()?));
        }
    };
    let mut labels = HashMap::new();
    let mut chars = rest.char_indices().peekable();
    let mut key = String::new();
    let end = loop {
        let (i, c) = chars.next()?;
        match c {
            '}' => break i,
            ',' | ' ' => {}
            '=' => {
                if chars.next()?.1 != '"' {
                    return None;
                }
                let mut value = String::new();
                loop {
                    match chars.next()?.1 {
                        '\\' => match chars.next()?.1 {
                            'n' => value.push('\n'),
                            other => value.push(other),
                        },
                        '"' => break,
                        other => value.push(other),
                    }
                }
                labels.insert(std::mem::take(&mut key), value);
            }
            other => key.push(other),
        }
    };
    let value = rest[end + 1..].split_whitespace().next()?.parse().ok()?;
    Some((name, labels, value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_parse_with_escapes() {
        let (name, labels, v) =
            sample(r#"istio_requests_total{reporter="destination",source_workload="a\"b",response_code="200"} 7"#)
                .unwrap();
        assert_eq!(name, "istio_requests_total");
        assert_eq!(labels["source_workload"], "a\"b");
        assert_eq!(v, 7.0);
        assert_eq!(sample("istio_build 1").unwrap().2, 1.0);
    }

    #[test]
    fn quantiles_interpolate_within_buckets() {
        let b: BTreeMap<u64, f64> = [(1, 0.0), (5, 50.0), (10, 100.0), (u64::MAX, 100.0)].into();
        assert_eq!(quantile(&b, 0.5), Some(5.0));
        assert_eq!(quantile(&b, 0.99), Some(9.9));
        assert_eq!(quantile(&BTreeMap::new(), 0.5), None);
    }

    #[test]
    fn spans_become_traces_newest_first_with_their_depth() {
        let span = |trace: &str, id: &str, parent: Option<&str>, start: u64| {
            json!({"trace": trace, "id": id, "parent": parent, "name": id,
                "start_us": start, "duration_ms": 1.0})
        };
        let out = traces(vec![
            span("old", "a", None, 10),
            span("new", "child", Some("root"), 101),
            span("new", "root", Some("gateway"), 100),
            span("new", "grandchild", Some("child"), 102),
        ]);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0]["trace"], "new", "newest first");
        let depths: Vec<(String, u64)> = out[0]["spans"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                (
                    s["id"].as_str().unwrap().into(),
                    s["depth"].as_u64().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            depths,
            [
                ("root".into(), 0),
                ("child".into(), 1),
                ("grandchild".into(), 2)
            ],
            "a parent no sidecar reported (the gateway's) makes a root"
        );
        assert_eq!(out[0]["duration_ms"], 1.002, "first start to last end");
    }

    #[test]
    fn edges_come_from_the_destination_side() {
        let mut s = Snapshot::default();
        let sidecars: HashSet<WorkloadKey> = [("y-v1".into(), "default".into())].into();
        add_metrics(
            &mut s,
            "istio_requests_total{reporter=\"destination\",source_workload=\"productpage-v1\",destination_service_name=\"reviews\",request_protocol=\"http\",response_code=\"200\",destination_workload=\"reviews-v1\",destination_workload_namespace=\"default\"} 3\n\
             istio_requests_total{reporter=\"destination\",source_workload=\"productpage-v1\",destination_service_name=\"reviews\",request_protocol=\"http\",response_code=\"503\",destination_workload=\"reviews-v1\",destination_workload_namespace=\"default\"} 1\n\
             istio_requests_total{reporter=\"source\",source_workload=\"x\",destination_service_name=\"y\",destination_workload=\"y-v1\",destination_workload_namespace=\"default\"} 9\n\
             istio_requests_total{reporter=\"source\",source_workload=\"x\",destination_service_name=\"httpbin\",request_protocol=\"http\",response_code=\"200\",destination_workload=\"httpbin\",destination_workload_namespace=\"default\"} 2\n",
            &sidecars,
        );
        let e = &s.edges[&("productpage-v1".into(), "reviews".into(), "http".into())];
        assert_eq!((e.requests, e.ok), (4.0, 3.0));
        // Only the client saw its edge to a workload without a sidecar.
        let e = &s.edges[&("x".into(), "httpbin".into(), "http".into())];
        assert_eq!((e.requests, e.ok), (2.0, 2.0));
        assert_eq!(s.edges.len(), 2);
    }
}
