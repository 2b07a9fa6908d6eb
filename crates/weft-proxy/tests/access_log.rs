//! Access logs on loopback, configured as istiod configures them from the
//! mesh config (`accessLogFile`, `accessLogEncoding`, `accessLogFormat`)
//! and the Telemetry API (a CEL filter): real requests through a real
//! proxy, lines read back from the files it writes.

mod support;

use std::time::Duration;

use bytes::Bytes;
use envoy_types::pb::envoy::config::accesslog::v3::AccessLog;
use envoy_types::pb::envoy::config::listener::v3::{filter, Listener};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::HttpConnectionManager;
use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::TcpProxy;
use envoy_types::util::pack_any;
use http::Request;
use http_body_util::Full;
use prost::Message;
use support::*;
use weft_config::MeshConfig;
use weft_translate::access_log::{cel, from_mesh_config};

fn mesh(yaml: &str) -> MeshConfig {
    MeshConfig::parse(yaml).unwrap()
}

/// The listener's connection manager (or TCP proxy) with these loggers.
fn with_logs(mut l: Listener, logs: Vec<AccessLog>) -> Listener {
    let Some(filter::ConfigType::TypedConfig(any)) = &mut l.filter_chains[0].filters[0].config_type
    else {
        panic!("typed filter")
    };
    if any.type_url.ends_with("HttpConnectionManager") {
        let mut hcm = HttpConnectionManager::decode(any.value.as_slice()).unwrap();
        hcm.access_log = logs;
        *any = pack_any(hcm);
    } else {
        let mut tcp = TcpProxy::decode(any.value.as_slice()).unwrap();
        tcp.access_log = logs;
        *any = pack_any(tcp);
    }
    l
}

/// Istio's default text line for a proxied request: every field in its
/// place, bytes both ways, the upstream and the route.
#[tokio::test]
async fn istios_text_format_for_a_proxied_request() {
    let up = upstream("a", None).await;
    let file = temp("text.log");
    let logger = from_mesh_config(file.to_str().unwrap(), &mesh(""));
    let p = serve(vec![static_cluster("c", &[up.addr])], |a| {
        with_logs(listener(a, vec![route_to("c")]), vec![logger])
    });
    let req = Request::post("/echo?x=1")
        .header("host", "test.local")
        .header("user-agent", "weft-test/1")
        .header("x-request-id", "rid-1")
        .body(Full::new(Bytes::from_static(b"hello")))
        .unwrap();
    let r = send(p.addr, req).await;
    assert_eq!(r.status, 200);
    assert!(r.headers.contains_key("x-envoy-upstream-service-time"));
    let line = &lines(&file, 1).await[0];
    let want = format!(
        "\"POST /echo?x=1 HTTP/1.1\" 200 - via_upstream - \"-\" 5 {} ",
        r.body.len()
    );
    assert!(line.contains(&want), "{want}\nin\n{line}");
    let tail = format!(
        "\"-\" \"weft-test/1\" \"rid-1\" \"test.local\" \"{}\" c ",
        up.addr
    );
    assert!(line.contains(&tail), "{tail}\nin\n{line}");
    let end = format!(" {} 127.0.0.1:", p.addr);
    assert!(line.contains(&end) && line.ends_with(" - test"), "{line}");
}

/// JSON encoding with Istio's fields, and a Telemetry filter
/// (`response.code >= 400`): only the failure is logged, typed.
#[tokio::test]
async fn json_lines_filtered_by_cel() {
    let up = upstream("a", None).await;
    let file = temp("json.log");
    let mut logger = from_mesh_config(file.to_str().unwrap(), &mesh("accessLogEncoding: JSON"));
    logger.filter = Some(cel("response.code >= 400".into()));
    let p = serve(vec![static_cluster("c", &[up.addr])], |a| {
        with_logs(listener(a, vec![route_to("c")]), vec![logger])
    });
    assert_eq!(get(p.addr, "/ok").await.status, 200);
    assert_eq!(get(p.addr, "/status/503").await.status, 503);
    let lines = lines(&file, 1).await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let all = std::fs::read_to_string(&*file).unwrap();
    assert_eq!(all.lines().count(), 1, "only the failure: {all}");
    let v: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
    assert_eq!(v["response_code"], 503);
    assert_eq!(v["path"], "/status/503");
    assert_eq!(v["response_code_details"], "via_upstream");
    assert_eq!(v["upstream_cluster"], "c");
    assert!(v["x_forwarded_for"].is_null(), "{v}");
    assert!(v["duration"].is_u64() && v["bytes_sent"].is_u64(), "{v}");
    assert_eq!(v.as_object().unwrap().len(), 24, "Istio's fields: {v}");
}

/// A custom text format (the mesh config's `accessLogFormat`) and the
/// proxy's own replies: no route is `404 NR route_not_found`, a dead
/// upstream `503 UF` with why the connection failed.
#[tokio::test]
async fn custom_format_and_local_replies() {
    let dead = free_port();
    let file = temp("custom.log");
    let format = "accessLogFormat: '%RESPONSE_CODE% %RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS% [%UPSTREAM_TRANSPORT_FAILURE_REASON%] %REQ(:PATH):4% %START_TIME(%s)%'";
    let logger = from_mesh_config(file.to_str().unwrap(), &mesh(format));
    let mut only_api = route_to("c");
    only_api.r#match = Some(envoy_types::pb::envoy::config::route::v3::RouteMatch {
        path_specifier: Some(
            envoy_types::pb::envoy::config::route::v3::route_match::PathSpecifier::Prefix(
                "/api".into(),
            ),
        ),
        ..Default::default()
    });
    let p = serve(vec![static_cluster("c", &[dead])], |a| {
        with_logs(listener(a, vec![only_api]), vec![logger])
    });
    assert_eq!(get(p.addr, "/nothing").await.status, 404);
    assert_eq!(get(p.addr, "/api/x").await.status, 503);
    let lines = lines(&file, 2).await;
    assert!(
        lines[0].starts_with("404 NR route_not_found [-] /not "),
        "{lines:?}"
    );
    assert!(
        lines[1].starts_with("503 UF upstream_reset_before_response_started{connection_failure} [")
            && lines[1].contains("refused"),
        "{lines:?}"
    );
    let epoch: u64 = lines[1].rsplit(' ').next().unwrap().parse().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(now - epoch < 60, "{epoch} vs {now}");
}

/// The addresses of a request: the client (the last `x-forwarded-for`
/// entry on a sidecar's connection manager) beside the peer, and the
/// proxy's own end of the pooled upstream connection.
#[tokio::test]
async fn addresses_of_the_client_the_peer_and_the_upstream_connection() {
    let up = upstream("a", None).await;
    let file = temp("addresses.log");
    let format = "accessLogFormat: '%DOWNSTREAM_REMOTE_ADDRESS% %DOWNSTREAM_DIRECT_REMOTE_ADDRESS_WITHOUT_PORT% %UPSTREAM_LOCAL_ADDRESS% %UPSTREAM_HOST%'";
    let logger = from_mesh_config(file.to_str().unwrap(), &mesh(format));
    let p = serve(vec![static_cluster("c", &[up.addr])], |a| {
        with_logs(listener(a, vec![route_to("c")]), vec![logger])
    });
    let req = Request::get("/")
        .header("x-forwarded-for", "203.0.113.9, 198.18.0.7")
        .body(Full::new(Bytes::new()))
        .unwrap();
    assert_eq!(send(p.addr, req).await.status, 200);
    assert_eq!(get(p.addr, "/").await.status, 200);
    let lines = lines(&file, 2).await;
    let first: Vec<&str> = lines[0].split(' ').collect();
    assert_eq!(first[..2], ["198.18.0.7:0", "127.0.0.1"], "{lines:?}");
    let local: std::net::SocketAddr = first[2].parse().expect("an address");
    assert!(local.ip().is_loopback() && local.port() != 0, "{lines:?}");
    assert_eq!(first[3], up.addr.to_string());
    let second: Vec<&str> = lines[1].split(' ').collect();
    assert!(
        second[0].starts_with("127.0.0.1:"),
        "no header: the peer, {lines:?}"
    );
    assert_eq!(second[2], first[2], "the same pooled connection: {lines:?}");
}

/// A TCP proxy's line: `- - -` for the HTTP fields, bytes both ways.
#[tokio::test]
async fn tcp_connections_are_logged_with_their_bytes() {
    let echo = tcp_echo().await;
    let file = temp("tcp.log");
    let logger = from_mesh_config(file.to_str().unwrap(), &mesh(""));
    let p = serve(vec![static_cluster("echo", &[echo])], |addr| {
        let mut l = listener(addr, vec![]);
        l.filter_chains[0].filters = vec![tcp_proxy_filter("echo")];
        with_logs(l, vec![logger])
    });
    {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(p.addr).await.unwrap();
        s.write_all(b"twelve bytes").await.unwrap();
        let mut back = [0u8; 12];
        s.read_exact(&mut back).await.unwrap();
    }
    let line = &lines(&file, 1).await[0];
    assert!(line.contains("\"- - -\" 0 - - - \"-\" 12 12 "), "{line}");
    assert!(
        line.contains(&format!("\"{echo}\" echo 127.0.0.1:")),
        "{line}"
    );
}

/// A client that leaves while its request is upstream: the request ends
/// there, logged with status 0 and `DC` as Envoy logs it, on both
/// HTTP/1.1 servers (the lean one for a plain GET, hyper's for a chunked
/// upload).
#[tokio::test]
async fn a_client_that_leaves_is_logged_dc() {
    use tokio::io::AsyncWriteExt;
    let up = upstream("a", None).await;
    let file = temp("dc.log");
    let logger = from_mesh_config(file.to_str().unwrap(), &mesh(""));
    let p = serve(vec![static_cluster("c", &[up.addr])], |a| {
        with_logs(listener(a, vec![route_to("c")]), vec![logger])
    });
    for request in [
        &b"GET /delay/3000 HTTP/1.1\r\nhost: a\r\n\r\n"[..],
        b"POST /delay/3000 HTTP/1.1\r\nhost: a\r\ntransfer-encoding: chunked\r\n\r\n1\r\nx\r\n0\r\n\r\n",
    ] {
        let mut s = tokio::net::TcpStream::connect(p.addr).await.unwrap();
        s.write_all(request).await.unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        drop(s);
    }
    let lines = lines(&file, 2).await;
    for (line, method) in lines.iter().zip(["GET", "POST"]) {
        assert!(
            line.contains(&format!("\"{method} /delay/3000 HTTP/1.1\" 0 DC ")),
            "{line}"
        );
    }
}
