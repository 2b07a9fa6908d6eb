//! The termination drain (`drain.rs`), as SIGTERM starts it: requests in
//! flight finish, every connection is asked to end, and the drain is over
//! when the last one has, or when its time is up.

mod support;

use std::time::Duration;

use bytes::Bytes;
use http_body_util::Empty;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Writes one request and reads its whole response (the upstream's
/// answers are short and `content-length` framed), then the headers.
async fn exchange(s: &mut TcpStream, path: &str) -> String {
    let req = format!("GET {path} HTTP/1.1\r\nhost: drain\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut got = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = s.read(&mut chunk).await.unwrap();
        assert!(n > 0, "closed before a whole response: {got:?}");
        got.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&got).to_string();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let len = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length: "))
                .map_or(0, |v| v.parse::<usize>().unwrap());
            if body.len() >= len {
                return head.to_ascii_lowercase();
            }
        }
    }
}

/// Resolves when the proxy closes `s` (a read of nothing).
async fn closed(s: &mut TcpStream) {
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut rest)).await;
    assert!(read.is_ok(), "the proxy kept the connection open");
}

#[tokio::test]
async fn a_drain_lets_requests_finish_and_ends_every_connection() {
    let up = upstream("up", None).await;
    let p = proxy(vec![static_cluster("up", &[up.addr])], vec![route_to("up")]);
    let addr = p.addr;
    // Idle after one request, HTTP/1.1 and HTTP/2.
    let mut idle = TcpStream::connect(addr).await.unwrap();
    assert!(exchange(&mut idle, "/").await.starts_with("http/1.1 200"));
    let (mut h2, h2_conn) = h2_client::<Empty<Bytes>>(addr).await;
    let req = http::Request::get(format!("http://{addr}/")).body(Empty::new());
    assert_eq!(h2.send_request(req.unwrap()).await.unwrap().status(), 200);
    // In flight when the drain begins.
    let slow = tokio::spawn(async move {
        let mut s = TcpStream::connect(addr).await.unwrap();
        let head = exchange(&mut s, "/delay/600").await;
        (s, head)
    });
    tokio::time::sleep(Duration::from_millis(200)).await;

    let drain = tokio::spawn(async move { p.inner.drain(Duration::from_secs(60)).await });
    closed(&mut idle).await;
    let h2_ended = tokio::time::timeout(Duration::from_secs(5), h2_conn).await;
    assert!(h2_ended.is_ok(), "the HTTP/2 connection had no GOAWAY");
    // A connection made during the drain is served, and told to close.
    let mut late = TcpStream::connect(addr).await.unwrap();
    let head = exchange(&mut late, "/").await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(head.contains("connection: close"), "{head}");
    closed(&mut late).await;

    let (mut s, head) = slow.await.unwrap();
    assert!(
        head.starts_with("http/1.1 200"),
        "the request in flight: {head}"
    );
    assert!(head.contains("connection: close"), "{head}");
    closed(&mut s).await;
    let left = tokio::time::timeout(Duration::from_secs(10), drain).await;
    assert_eq!(
        left.expect("the drain ended with its last connection")
            .unwrap(),
        0
    );
}

/// An opaque TCP stream cannot be asked to end: it holds the drain until
/// its time is up.
#[tokio::test]
async fn a_tcp_stream_holds_the_drain_until_its_time_is_up() {
    let echo = tcp_echo().await;
    let p = serve(vec![static_cluster("echo", &[echo])], |addr| {
        let mut l = listener(addr, vec![]);
        l.filter_chains[0].filters = vec![tcp_proxy_filter("echo")];
        l
    });
    let mut s = TcpStream::connect(p.addr).await.unwrap();
    s.write_all(b"ping").await.unwrap();
    let mut back = [0u8; 4];
    s.read_exact(&mut back).await.unwrap();
    assert_eq!(p.inner.drain(Duration::from_millis(300)).await, 1);
    // Still open: the process exits next, which ends it.
    s.write_all(b"pong").await.unwrap();
    s.read_exact(&mut back).await.unwrap();
    assert_eq!(&back, b"pong");
}
