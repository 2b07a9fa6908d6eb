//! HTTP/1.1 on the wire, on both sides of the proxy: raw bytes from an
//! upstream that frames its responses every way RFC 9112 allows (and some
//! it does not), raw requests that try to smuggle a second request past
//! the proxy, and what the upstream receives of a streamed upload.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use std::net::SocketAddr;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A short answer on a connection kept open.
const OK: (&str, bool) = ("HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok", false);

/// An upstream that answers the n-th request it reads with `replies[n]`
/// (the last one again after that), byte for byte, closing the connection
/// after a reply marked so; it keeps every request as it arrived.
struct RawUpstream {
    addr: SocketAddr,
    connections: Arc<AtomicUsize>,
    requests: Arc<Mutex<Vec<String>>>,
}

async fn raw_upstream(replies: &[(&'static str, bool)]) -> RawUpstream {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let connections = Arc::new(AtomicUsize::new(0));
    let requests = Arc::new(Mutex::new(Vec::new()));
    let replies = replies.to_vec();
    let (accepted, seen) = (connections.clone(), requests.clone());
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            accepted.fetch_add(1, Ordering::SeqCst);
            let (seen, replies) = (seen.clone(), replies.clone());
            tokio::spawn(async move {
                while let Some(request) = read_request(&mut s).await {
                    let n = {
                        let mut seen = seen.lock().unwrap();
                        seen.push(request);
                        seen.len() - 1
                    };
                    let (reply, close) = replies[n.min(replies.len() - 1)];
                    if s.write_all(reply.as_bytes()).await.is_err() || close {
                        return;
                    }
                }
            });
        }
    });
    RawUpstream {
        addr,
        connections,
        requests,
    }
}

/// One request's raw bytes: the head, then a body by its content-length or
/// up to the last chunk. None when the connection ends first.
async fn read_request(s: &mut TcpStream) -> Option<String> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let complete = |buf: &[u8]| {
        let text = String::from_utf8_lossy(buf).to_lowercase();
        let Some(end) = text.find("\r\n\r\n") else {
            return false;
        };
        if text.contains("transfer-encoding: chunked") {
            return text.ends_with("0\r\n\r\n");
        }
        let length = text
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
            .map_or(0, |n| n.trim().parse::<usize>().unwrap());
        buf.len() >= end + 4 + length
    };
    while !complete(&buf) {
        match s.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    Some(String::from_utf8_lossy(&buf).into_owned())
}

fn through(up: &RawUpstream) -> Proxy {
    proxy(vec![static_cluster("c", &[up.addr])], vec![route_to("c")])
}

/// A request on a new connection to the proxy: the status and the body.
async fn fetch(to: SocketAddr, req: Request<Full<Bytes>>) -> (u16, String) {
    let r = send(to, req).await;
    (r.status.as_u16(), r.body)
}

fn req(method: &str, path: &str) -> Request<Full<Bytes>> {
    Request::builder()
        .method(method)
        .uri(path)
        .header("host", "example")
        .body(Full::new(Bytes::new()))
        .unwrap()
}

#[tokio::test]
async fn chunked_responses_are_decoded_and_the_connection_kept() {
    let up = raw_upstream(&[(
        "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nx-trailer: t\r\n\r\n",
        false,
    )])
    .await;
    let p = through(&up);
    for i in 0..3 {
        let (status, body) = fetch(p.addr, req("GET", "/")).await;
        assert_eq!((status, body.as_str()), (200, "hello world"), "request {i}");
    }
    assert_eq!(
        up.connections.load(Ordering::SeqCst),
        1,
        "one pooled connection"
    );
}

#[tokio::test]
async fn a_response_without_length_is_read_to_the_close() {
    let up = raw_upstream(&[("HTTP/1.1 200 OK\r\n\r\nuntil the end", true)]).await;
    let p = through(&up);
    for i in 0..2 {
        let (status, body) = fetch(p.addr, req("GET", "/")).await;
        assert_eq!(
            (status, body.as_str()),
            (200, "until the end"),
            "request {i}"
        );
    }
    assert_eq!(up.connections.load(Ordering::SeqCst), 2, "not reused");
}

#[tokio::test]
async fn head_interim_and_no_content_responses_have_no_body() {
    let up = raw_upstream(&[
        ("HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n", false),
        (
            "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n",
            false,
        ),
        (
            "HTTP/1.1 304 Not Modified\r\ncontent-length: 7\r\n\r\n",
            false,
        ),
        OK,
    ])
    .await;
    let p = through(&up);
    let (status, _) = fetch(p.addr, req("HEAD", "/")).await;
    assert_eq!(status, 200);
    let (status, body) = fetch(p.addr, req("GET", "/")).await;
    assert_eq!((status, body.as_str()), (204, ""));
    let (status, body) = fetch(p.addr, req("GET", "/")).await;
    assert_eq!((status, body.as_str()), (304, ""));
    let (status, body) = fetch(p.addr, req("GET", "/")).await;
    assert_eq!((status, body.as_str()), (200, "ok"));
    assert_eq!(
        up.connections.load(Ordering::SeqCst),
        1,
        "bodiless responses leave the connection ready for the next"
    );
}

/// Envoy's router answers a response that breaks HTTP with 502 and the UPE
/// flag; the broken connection is not reused.
#[tokio::test]
async fn responses_that_break_http_are_502() {
    for (broken, why) in [
        (
            "HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-length: 3\r\n\r\nok",
            "two lengths",
        ),
        ("HTTP/1.1 2x0 OK\r\ncontent-length: 2\r\n\r\nok", "status"),
        ("HTTP/1.1 200 OK\r\nbad header\r\n\r\n", "header line"),
        (
            "HTTP/1.1 101 Switching Protocols\r\n\r\n",
            "an unasked upgrade",
        ),
    ] {
        let up = raw_upstream(&[(broken, false), OK]).await;
        let p = through(&up);
        let (status, body) = fetch(p.addr, req("GET", "/")).await;
        assert_eq!(status, 502, "{why}");
        assert!(body.ends_with("reset reason: protocol error"), "{why}");
        let (status, body) = fetch(p.addr, req("GET", "/")).await;
        assert_eq!(
            (status, body.as_str()),
            (200, "ok"),
            "{why}: then a new connection"
        );
        assert_eq!(up.connections.load(Ordering::SeqCst), 2, "{why}");
    }
}

/// The client never receives a whole response from a body cut short: the
/// connection closes before the length it was promised.
#[tokio::test]
async fn a_body_cut_short_is_cut_short_for_the_client() {
    let up = raw_upstream(&[("HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc", true)]).await;
    let p = through(&up);
    let mut s = TcpStream::connect(p.addr).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nhost: a\r\n\r\n")
        .await
        .unwrap();
    let mut reply = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut reply));
    read.await
        .expect("the proxy closes the connection")
        .unwrap();
    let reply = String::from_utf8_lossy(&reply);
    let body = reply.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    assert!(body.len() < 10, "{reply:?}");
}

#[tokio::test]
async fn uploads_keep_or_gain_their_framing() {
    let up = raw_upstream(&[("HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n", false)]).await;
    let p = through(&up);
    // A body of unknown length goes chunked, piece by piece.
    let pieces = Chunks([Bytes::from("ab"), Bytes::from("cd")].into());
    let r = send(
        p.addr,
        Request::post("/up")
            .header("host", "example")
            .body(pieces)
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, 200);
    // A sized one keeps its length, in the same write as the head.
    let (status, _) = fetch(
        p.addr,
        Request::post("/sized")
            .header("host", "example")
            .body(Full::new(Bytes::from("abcd")))
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200);
    let seen = up.requests.lock().unwrap().clone();
    assert!(seen[0].starts_with("POST /up HTTP/1.1\r\n"), "{}", seen[0]);
    assert!(
        seen[0].contains("transfer-encoding: chunked\r\n"),
        "{}",
        seen[0]
    );
    assert!(!seen[0].contains("content-length"), "{}", seen[0]);
    assert!(
        seen[0].ends_with("\r\n\r\n2\r\nab\r\n2\r\ncd\r\n0\r\n\r\n"),
        "{:?}",
        seen[0]
    );
    assert!(seen[1].contains("content-length: 4\r\n"), "{}", seen[1]);
    assert!(seen[1].ends_with("\r\n\r\nabcd"), "{:?}", seen[1]);
    assert!(!seen[1].contains("transfer-encoding"), "{}", seen[1]);
}

/// A pooled connection that fails before any response (the upstream
/// closed it as the request went out): an idempotent request is retried
/// on a new connection under Istio's default policy; a POST is not, for
/// the upstream may have processed it (RFC 9112 §9.3.1).
#[tokio::test]
async fn only_idempotent_requests_are_retried_after_a_pooled_connection_fails() {
    let gone = ("", true);
    let up = raw_upstream(&[OK, gone, OK, gone, OK]).await;
    let mut route = route_to("c");
    action(&mut route).retry_policy = Some(istio_default_retries());
    let p = proxy(vec![static_cluster("c", &[up.addr])], vec![route]);
    // New downstream connections; the upstream's pool is the proxy's.
    assert_eq!(fetch(p.addr, req("GET", "/one")).await.0, 200);
    assert_eq!(
        fetch(p.addr, req("GET", "/two")).await.0,
        200,
        "retried on a new connection"
    );
    let post = Request::post("/three")
        .header("host", "test.local")
        .body(Full::new(Bytes::from_static(b"x")))
        .unwrap();
    assert_eq!(fetch(p.addr, post).await.0, 503);
    let seen = up.requests.lock().unwrap().clone();
    let posts = seen.iter().filter(|r| r.starts_with("POST ")).count();
    assert_eq!(posts, 1, "the POST was sent once: {seen:?}");
}

/// What the proxy answers to raw request bytes on a new connection, up to
/// its close.
async fn raw_reply(to: SocketAddr, request: &[u8]) -> String {
    let mut s = TcpStream::connect(to).await.unwrap();
    s.write_all(request).await.unwrap();
    let mut reply = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut reply));
    let _ = read.await;
    String::from_utf8_lossy(&reply).into_owned()
}

async fn raw_status(to: SocketAddr, request: &[u8]) -> String {
    let reply = raw_reply(to, request).await;
    reply.lines().next().unwrap_or("(closed)").to_string()
}

/// The probes of request smuggling, and headers past Envoy's 60 KiB
/// limit: refused at the proxy, and nothing reaches the upstream.
#[tokio::test]
async fn smuggling_probes_are_refused() {
    let up = raw_upstream(&[OK]).await;
    let p = through(&up);
    let big = format!(
        "GET / HTTP/1.1\r\nhost: a\r\nx-big: {}\r\n\r\n",
        "a".repeat(61 * 1024)
    );
    let huge = big.replace(&"a".repeat(1024), &"a".repeat(4096));
    let probes: [(&str, &[u8], &str); 7] = [
        (
            // Envoy's answer (`allow_chunked_length` off): bytes hidden
            // behind one framing never become a request of their own.
            "Content-Length beside Transfer-Encoding",
            b"POST / HTTP/1.1\r\nhost: a\r\ncontent-length: 30\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nhost: a\r\n\r\n",
            "400",
        ),
        (
            "two Content-Lengths",
            b"POST / HTTP/1.1\r\nhost: a\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\nab",
            "400",
        ),
        (
            "obs-fold",
            b"GET / HTTP/1.1\r\nhost: a\r\nx-a: b\r\n c\r\n\r\n",
            "400",
        ),
        (
            "a Transfer-Encoding other than chunked",
            b"POST / HTTP/1.1\r\nhost: a\r\ntransfer-encoding: xchunked\r\n\r\n0\r\n\r\n",
            "400",
        ),
        (
            "NUL in the path",
            b"GET /a\0b HTTP/1.1\r\nhost: a\r\n\r\n",
            "400",
        ),
        ("headers over 60 KiB", big.as_bytes(), "431"),
        ("headers far over it", huge.as_bytes(), "431"),
    ];
    for (what, probe, status) in probes {
        let line = raw_status(p.addr, probe).await;
        assert!(
            line.starts_with(&format!("HTTP/1.1 {status}")),
            "{what}: {line}"
        );
    }
    assert!(
        up.requests.lock().unwrap().is_empty(),
        "nothing reached the upstream: {:?}",
        up.requests.lock().unwrap()
    );
}

/// Raw bytes to the proxy; its reply, which must end with the connection
/// closed within two seconds.
async fn reply_then_close(to: SocketAddr, request: &[u8]) -> String {
    let mut s = TcpStream::connect(to).await.unwrap();
    s.write_all(request).await.unwrap();
    let mut reply = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(2), s.read_to_end(&mut reply)).await;
    let text = String::from_utf8_lossy(&reply).into_owned();
    assert!(read.is_ok(), "the proxy closed the connection: {text}");
    text
}

/// One connection carries requests the lean server takes (no body, a
/// small declared one) and one it leaves to hyper (a chunked upload),
/// pipelined in one write: each reaches the upstream whole and in order,
/// each is answered in order, and `Connection: close` ends the connection
/// after its answer — on either server.
#[tokio::test]
async fn pipelined_requests_are_answered_in_order_by_either_server() {
    let up = raw_upstream(&[OK]).await;
    let p = through(&up);
    let lean_only = reply_then_close(
        p.addr,
        b"GET /1 HTTP/1.1\r\nhost: a\r\n\r\nPOST /2 HTTP/1.1\r\nhost: a\r\ncontent-length: 3\r\n\r\nabcGET /3 HTTP/1.1\r\nhost: a\r\nconnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(
        lean_only.matches("HTTP/1.1 200 OK\r\n").count(),
        3,
        "{lean_only}"
    );
    assert!(lean_only.contains("connection: close\r\n"), "{lean_only}");
    let both = reply_then_close(
        p.addr,
        b"GET /4 HTTP/1.1\r\nhost: a\r\n\r\nPOST /5 HTTP/1.1\r\nhost: a\r\ntransfer-encoding: chunked\r\n\r\n3\r\nxyz\r\n0\r\n\r\nGET /6 HTTP/1.1\r\nhost: a\r\nconnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(both.matches("HTTP/1.1 200 OK\r\n").count(), 3, "{both}");
    let seen = up.requests.lock().unwrap().clone();
    let lines: Vec<_> = seen.iter().map(|r| r.lines().next().unwrap()).collect();
    assert_eq!(
        lines,
        [
            "GET /1 HTTP/1.1",
            "POST /2 HTTP/1.1",
            "GET /3 HTTP/1.1",
            "GET /4 HTTP/1.1",
            "POST /5 HTTP/1.1",
            "GET /6 HTTP/1.1"
        ]
    );
    assert!(seen[1].ends_with("\r\n\r\nabc"), "{}", seen[1]);
    assert!(seen[4].ends_with("3\r\nxyz\r\n0\r\n\r\n"), "{}", seen[4]);
}

/// HTTP/1.0 (hyper's) closes after its answer unless kept alive.
#[tokio::test]
async fn http_1_0_is_answered_and_closed() {
    let up = raw_upstream(&[OK]).await;
    let p = through(&up);
    let reply = reply_then_close(p.addr, b"GET / HTTP/1.0\r\nhost: a\r\n\r\n").await;
    assert!(
        reply.contains(" 200 OK\r\n") && reply.ends_with("ok"),
        "{reply}"
    );
}

/// Bodies larger than any buffer, both ways: a 60 KiB upload the lean
/// server reads whole, and 3 MiB responses (by length, then chunked) that
/// reach the client byte for byte on one kept-alive connection.
#[tokio::test]
async fn large_bodies_pass_whole() {
    let big = "0123456789abcdef".repeat(3 << 16);
    let by_length = format!(
        "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{big}",
        big.len()
    );
    let chunked = format!(
        "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n{:x}\r\n{big}\r\n0\r\n\r\n",
        big.len()
    );
    let replies: &'static [(&'static str, bool)] = Box::leak(Box::new([
        OK,
        (Box::leak(by_length.into_boxed_str()), false),
        (Box::leak(chunked.into_boxed_str()), false),
    ]));
    let up = raw_upstream(replies).await;
    let p = through(&up);
    let upload = "u".repeat(60 * 1024);
    let mut s = TcpStream::connect(p.addr).await.unwrap();
    let requests = format!(
        "POST /up HTTP/1.1\r\nhost: a\r\ncontent-length: {}\r\n\r\n{upload}GET /1 HTTP/1.1\r\nhost: a\r\n\r\nGET /2 HTTP/1.1\r\nhost: a\r\nconnection: close\r\n\r\n",
        upload.len()
    );
    s.write_all(requests.as_bytes()).await.unwrap();
    let mut reply = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut reply)).await;
    assert!(read.is_ok(), "closed after the last answer");
    let reply = String::from_utf8(reply).unwrap();
    let answers: Vec<&str> = reply.split("HTTP/1.1 200 OK\r\n").skip(1).collect();
    assert_eq!(answers.len(), 3, "{}", &reply[..200]);
    let body = |answer: &str| answer.split_once("\r\n\r\n").unwrap().1.to_string();
    assert_eq!(body(answers[1]), big, "the sized body whole");
    assert!(answers[2].contains("transfer-encoding: chunked\r\n"));
    assert_eq!(dechunk(&body(answers[2])), big, "the chunked body whole");
    let seen = up.requests.lock().unwrap().clone();
    assert!(
        seen[0].ends_with(&format!("\r\n\r\n{upload}")),
        "upload whole"
    );
}

/// The data of a chunked body (no extensions, no trailers).
fn dechunk(mut wire: &str) -> String {
    let mut data = String::new();
    loop {
        let (size, rest) = wire.split_once("\r\n").expect("a chunk-size line");
        let size = usize::from_str_radix(size, 16).unwrap();
        if size == 0 {
            assert_eq!(rest, "\r\n", "the last chunk ends the body");
            return data;
        }
        data.push_str(&rest[..size]);
        wire = rest[size..]
            .strip_prefix("\r\n")
            .expect("CRLF after a chunk");
    }
}

/// A listener to cluster `c` whose connection manager `edit` changes.
fn with_hcm(
    addr: SocketAddr,
    edit: impl FnOnce(&mut envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::HttpConnectionManager),
) -> envoy_types::pb::envoy::config::listener::v3::Listener {
    let mut l = listener(addr, vec![route_to("c")]);
    edit_hcm(&mut l.filter_chains[0], edit);
    l
}

/// A connection idle timeout of `ms` (Envoy's `common_http_protocol_options`).
fn idle_after(
    millis: u64,
) -> Option<envoy_types::pb::envoy::config::core::v3::HttpProtocolOptions> {
    Some(
        envoy_types::pb::envoy::config::core::v3::HttpProtocolOptions {
            idle_timeout: Some(ms(millis)),
            ..Default::default()
        },
    )
}

/// A listener to cluster `c` whose connection manager times a quiet
/// client out: 300 ms idle between requests, 300 ms within one, and the
/// whole head within 800 ms; with `log`, Istio's access log to that file.
fn impatient(
    addr: SocketAddr,
    log: Option<&std::path::Path>,
) -> envoy_types::pb::envoy::config::listener::v3::Listener {
    with_hcm(addr, |hcm| {
        hcm.common_http_protocol_options = idle_after(300);
        hcm.stream_idle_timeout = Some(ms(300));
        hcm.request_headers_timeout = Some(ms(800));
        if let Some(path) = log {
            let mesh = weft_config::MeshConfig::parse("").unwrap();
            let logger =
                weft_translate::access_log::from_mesh_config(path.to_str().unwrap(), &mesh);
            hcm.access_log = vec![logger];
        }
    })
}

/// After `pause`, bytes sent one at a time, `gap` apart, then what comes
/// back up to the close (at most 5 s).
async fn trickle(to: SocketAddr, pause: Duration, bytes: &[u8], gap: Duration) -> String {
    let mut s = TcpStream::connect(to).await.unwrap();
    tokio::time::sleep(pause).await;
    for b in bytes {
        if s.write_all(&[*b]).await.is_err() {
            break;
        }
        tokio::time::sleep(gap).await;
    }
    let mut reply = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut reply));
    let _ = read.await.expect("the proxy closes the connection");
    String::from_utf8_lossy(&reply).into_owned()
}

/// Envoy's timeouts on a quiet client, as the connection manager sets
/// them: an idle connection is closed, a request that stops half-way
/// gets 408 `stream timeout`, a head that trickles in past the headers
/// timeout gets 408 `request header timeout`; the upstream sees none.
#[tokio::test]
async fn quiet_clients_are_timed_out() {
    let up = raw_upstream(&[OK]).await;
    let p = serve(vec![static_cluster("c", &[up.addr])], |a| {
        impatient(a, None)
    });
    // Idle from the start, and idle after a request.
    let none = trickle(p.addr, Duration::ZERO, b"", Duration::ZERO).await;
    assert_eq!(none, "");
    let after = raw_reply(p.addr, b"GET / HTTP/1.1\r\nhost: a\r\n\r\n").await;
    assert!(after.starts_with("HTTP/1.1 200"), "{after}");
    assert_eq!(after.matches("HTTP/1.1").count(), 1, "{after}");
    // A head, then nothing.
    let half = raw_reply(p.addr, b"GET / HTTP/1.1\r\nhost: a\r\n").await;
    assert!(half.starts_with("HTTP/1.1 408"), "{half}");
    assert!(half.ends_with("stream timeout"), "{half}");
    // A body that stops short of its length.
    let short = raw_reply(
        p.addr,
        b"POST / HTTP/1.1\r\nhost: a\r\ncontent-length: 9\r\n\r\nabc",
    )
    .await;
    assert!(short.ends_with("stream timeout"), "{short}");
    // A byte every 100 ms never idles 300 ms, but the head is not whole
    // after 800.
    let slow = trickle(
        p.addr,
        Duration::ZERO,
        b"GET / HTTP/1.1\r\nhost: a\r\nx-slow: ....",
        Duration::from_millis(100),
    )
    .await;
    assert!(slow.starts_with("HTTP/1.1 408"), "{slow}");
    assert!(slow.ends_with("request header timeout"), "{slow}");
    assert_eq!(up.requests.lock().unwrap().len(), 1);
}

/// Without those settings, Envoy's defaults (1 h idle, 5 min within a
/// request) leave a client that pauses for a second alone.
#[tokio::test]
async fn a_pause_within_the_defaults_is_waited_for() {
    let up = raw_upstream(&[OK]).await;
    let p = through(&up);
    let request = b"GET / HTTP/1.1\r\nhost: a\r\nconnection: close\r\n\r\n";
    let slow = trickle(p.addr, Duration::ZERO, request, Duration::from_millis(20)).await;
    assert!(slow.starts_with("HTTP/1.1 200"), "{slow}");
    let late = trickle(p.addr, Duration::from_secs(1), request, Duration::ZERO).await;
    assert!(late.starts_with("HTTP/1.1 200"), "{late}");
}

/// Those answers, and the refused heads', are logged as Envoy logs them:
/// a head refused or stalled before it was whole has no method or path
/// (Envoy's filters, Istio's metrics among them, never saw a request); a
/// request whose body stalled has both.
#[tokio::test]
async fn refusals_are_logged_as_envoy_logs_them() {
    let up = raw_upstream(&[OK]).await;
    let log = temp("refusals.log");
    let p = serve(vec![static_cluster("c", &[up.addr])], |a| {
        impatient(a, Some(&log))
    });
    let big = format!(
        "GET / HTTP/1.1\r\nhost: a\r\nx-big: {}\r\n\r\n",
        "a".repeat(61 * 1024)
    );
    // Past the lean server's 64 KiB: hyper's own 431.
    let huge = big.replace(&"a".repeat(1024), &"a".repeat(4096));
    let probes: [&[u8]; 6] = [
        b"POST / HTTP/1.1\r\nhost: a\r\ncontent-length: 3\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n",
        b"GET / HTTP/1.1\r\nhost: a\r\nx-a: b\r\n c\r\n\r\n",
        big.as_bytes(),
        huge.as_bytes(),
        b"GET / HTTP/1.1\r\nhost: a\r\n",
        b"POST /up HTTP/1.1\r\nhost: a\r\ncontent-length: 9\r\n\r\nabc",
    ];
    for probe in probes {
        raw_reply(p.addr, probe).await;
    }
    let slow = b"GET / HTTP/1.1\r\nhost: a\r\nx-slow: ....";
    trickle(p.addr, Duration::ZERO, slow, Duration::from_millis(100)).await;
    let lines = lines(&log, 7).await;
    let expected = [
        "\"- - HTTP/1.1\" 400 DPE http1.content_length_and_chunked_not_allowed - \"-\" 0 11 ",
        "\"- - HTTP/1.1\" 400 DPE http1.codec_error - \"-\" 0 0 ",
        "\"- - HTTP/1.1\" 431 DPE http1.headers_too_large - \"-\" 0 0 ",
        "\"- - HTTP/1.1\" 431 DPE http1.headers_too_large - \"-\" 0 0 ",
        "\"- - HTTP/1.1\" 408 SI stream_idle_timeout - \"-\" 0 14 ",
        "\"POST /up HTTP/1.1\" 408 SI stream_idle_timeout - \"-\" 0 14 ",
        "\"- - HTTP/1.1\" 408 - request_header_timeout - \"-\" 0 22 ",
    ];
    let mut left = lines.clone();
    for want in expected {
        let at = left.iter().position(|l| l.contains(want));
        let at = at.unwrap_or_else(|| panic!("no line has {want:?}: {lines:#?}"));
        left.remove(at);
    }
    assert!(left.is_empty(), "only those lines: {lines:#?}");
    assert!(up.requests.lock().unwrap().is_empty());
}

/// An upstream that never answers: Istio's routes set no timeout, so the
/// connection manager's stream idle timeout ends the wait, as in Envoy —
/// 504 `stream timeout`, flag SI — over HTTP/1.1 (the lean server) and
/// HTTP/2 (hyper's); an answer that comes within it is waited for.
#[tokio::test]
async fn a_silent_upstream_is_timed_out_by_the_stream_idle_timeout() {
    let silent = raw_upstream(&[("", false)]).await;
    let log = temp("silent.log");
    let p = serve(vec![static_cluster("c", &[silent.addr])], |a| {
        impatient(a, Some(&log))
    });
    let request = b"GET /never HTTP/1.1\r\nhost: a\r\nconnection: close\r\n\r\n";
    let h1 = raw_reply(p.addr, request).await;
    assert!(h1.starts_with("HTTP/1.1 504"), "{h1}");
    assert!(h1.ends_with("stream timeout"), "{h1}");
    let h2 = Request::get(format!("http://{}/never", p.addr))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let (reply, _) = send_h2(p.addr, h2).await;
    assert_eq!(
        (reply.status.as_u16(), reply.body.as_str()),
        (504, "stream timeout")
    );
    for line in lines(&log, 2).await {
        assert!(line.contains("\" 504 SI stream_idle_timeout "), "{line}");
    }
    // A body that stops coming: cut short, as Envoy resets the stream.
    let stalled =
        raw_upstream(&[("HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc", false)]).await;
    let log = temp("stalled.log");
    let p = serve(vec![static_cluster("c", &[stalled.addr])], |a| {
        impatient(a, Some(&log))
    });
    let cut = raw_reply(p.addr, request).await;
    assert!(cut.starts_with("HTTP/1.1 200"), "{cut}");
    assert!(cut.ends_with("\r\n\r\nabc"), "{cut}");
    let line = lines(&log, 1).await.remove(0);
    assert!(line.contains("\" 200 SI "), "{line}");
    // 150 ms of the 300 allowed.
    let up = upstream("a", None).await;
    let p = serve(vec![static_cluster("c", &[up.addr])], |a| {
        impatient(a, None)
    });
    assert_eq!(get(p.addr, "/delay/150").await.status, 200);
}

/// A streamed upload is bounded by the stream idle timeout too, counted
/// from the client's last data: one that stops gets 408 `stream timeout`
/// (SI), as Envoy answers a request not yet whole; one that keeps
/// sending goes through however long it takes in all.
#[tokio::test]
async fn a_stalled_upload_is_timed_out_by_the_stream_idle_timeout() {
    let up = raw_upstream(&[OK]).await;
    let log = temp("upload.log");
    let p = serve(vec![static_cluster("c", &[up.addr])], |a| {
        impatient(a, Some(&log))
    });
    let chunked = "POST /upload HTTP/1.1\r\nhost: a\r\ntransfer-encoding: chunked\r\n\r\n";
    // Stopped after a chunk; and a declared body past what the lean
    // server reads whole (64 KiB), stopped partway.
    let declared = format!(
        "POST /upload HTTP/1.1\r\nhost: a\r\ncontent-length: 100000\r\n\r\n{}",
        "a".repeat(70_000)
    );
    for stopped in [format!("{chunked}5\r\nhello\r\n"), declared] {
        let mut s = TcpStream::connect(p.addr).await.unwrap();
        s.write_all(stopped.as_bytes()).await.unwrap();
        let mut reply = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(10), async {
            let mut buf = [0u8; 4096];
            while !String::from_utf8_lossy(&reply).ends_with("stream timeout") {
                match s.read(&mut buf).await {
                    Ok(n) if n > 0 => reply.extend_from_slice(&buf[..n]),
                    _ => break,
                }
            }
        });
        let _ = read.await;
        let reply = String::from_utf8_lossy(&reply);
        assert!(reply.starts_with("HTTP/1.1 408"), "{reply}");
        assert!(reply.ends_with("stream timeout"), "{reply}");
    }
    for line in lines(&log, 2).await {
        assert!(line.contains("\" 408 SI stream_idle_timeout "), "{line}");
    }
    // A chunk every 100 ms for a second: more than three times the
    // timeout in all, never 300 ms without data.
    let mut s = TcpStream::connect(p.addr).await.unwrap();
    s.write_all(chunked.as_bytes()).await.unwrap();
    for i in 0..10 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        s.write_all(format!("1\r\n{i}\r\n").as_bytes())
            .await
            .unwrap();
    }
    s.write_all(b"0\r\n\r\n").await.unwrap();
    let mut reply = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut reply))
        .await
        .expect("a reply")
        .unwrap();
    let reply = String::from_utf8_lossy(&reply[..n]);
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    let sent = up.requests.lock().unwrap().last().cloned().unwrap();
    assert!(sent.contains("1\r\n9\r\n0\r\n\r\n"), "{sent}");
}

/// A body of what comes through a channel, ending when it closes.
struct ChannelBody(tokio::sync::mpsc::Receiver<Bytes>);

impl hyper::body::Body for ChannelBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
        self.0
            .poll_recv(cx)
            .map(|data| data.map(|d| Ok(hyper::body::Frame::data(d))))
    }
}

/// An h2c upstream that answers at once and sends its body, what it was
/// sent, only when the request's body has ended.
async fn answer_after_upload() -> SocketAddr {
    use http_body_util::BodyExt;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            let svc = hyper::service::service_fn(|req: Request<hyper::body::Incoming>| async {
                let (tx, rx) = tokio::sync::mpsc::channel(1);
                tokio::spawn(async move {
                    if let Ok(all) = req.into_body().collect().await {
                        let _ = tx.send(all.to_bytes()).await;
                    }
                });
                Ok::<_, std::convert::Infallible>(http::Response::new(ChannelBody(rx)))
            });
            let io = hyper_util::rt::TokioIo::new(s);
            let h2 = hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new());
            tokio::spawn(async move { h2.serve_connection(io, svc).await });
        }
    });
    addr
}

/// Envoy's stream idle timer restarts on data either way: a response
/// body its upstream holds back while the client's upload still moves is
/// not idle (HTTP/2 on both sides, so the upload goes on after the
/// response has begun).
#[tokio::test]
async fn an_upload_that_moves_keeps_its_response_from_idling() {
    use http_body_util::BodyExt;
    let up = answer_after_upload().await;
    let p = serve(vec![http2_cluster(static_cluster("c", &[up]))], |a| {
        impatient(a, None)
    });
    let (mut sender, _) = h2_client(p.addr).await;
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    let req = Request::post(format!("http://{}/upload", p.addr))
        .body(ChannelBody(rx))
        .unwrap();
    let sending = tokio::spawn(async move {
        // A chunk every 100 ms for a second; the timeout is 300 ms.
        for i in 0..10 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            tx.send(Bytes::from(i.to_string())).await.unwrap();
        }
    });
    let reply = sender.send_request(req).await.expect("the response head");
    assert_eq!(reply.status(), 200);
    let body = reply.into_body().collect().await.expect("the whole body");
    assert_eq!(body.to_bytes(), "0123456789");
    sending.await.unwrap();
}

/// The connection idle timeout holds for HTTP/2 too (hyper's server): a
/// connection with no stream for it gets GOAWAY and the close; one whose
/// stream outlasts it is not idle.
#[tokio::test]
async fn idle_http2_connections_are_closed() {
    let up = upstream("a", None).await;
    let p = serve(vec![static_cluster("c", &[up.addr])], |a| {
        with_hcm(a, |hcm| hcm.common_http_protocol_options = idle_after(200))
    });
    let (mut sender, conn) = h2_client(p.addr).await;
    let slow = Request::get(format!("http://{}/delay/500", p.addr))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let reply = sender.send_request(slow).await.expect("a 500 ms stream");
    assert_eq!(reply.status(), 200);
    let ended = tokio::time::timeout(Duration::from_secs(3), conn).await;
    assert!(ended.is_ok(), "the idle connection was not closed");
}
