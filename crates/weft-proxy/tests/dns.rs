//! The DNS proxy on loopback: names of the control plane's table (NDS)
//! are answered by the proxy, others forwarded to the upstream resolver,
//! over UDP and TCP; a table that changes answers at once.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use envoy_types::util::pack_any;
use simple_dns::rdata::RData;
use simple_dns::{Name, Packet, PacketFlag, Question, CLASS, QCLASS, QTYPE, RCODE, TYPE};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use weft_proxy::StaticProxy;
use weft_xds::nds::{NameInfo, NameTable, NAME_TABLE};

fn table(entries: &[(&str, &[&str])]) -> NameTable {
    NameTable {
        table: entries
            .iter()
            .map(|(host, ips)| {
                let info = NameInfo {
                    ips: ips.iter().map(|s| s.to_string()).collect(),
                    ..Default::default()
                };
                (host.to_string(), info)
            })
            .collect(),
    }
}

fn query(name: &str, qtype: TYPE) -> Vec<u8> {
    let mut q = Packet::new_query(7);
    q.set_flags(PacketFlag::RECURSION_DESIRED);
    q.questions.push(Question::new(
        Name::new_unchecked(name),
        QTYPE::TYPE(qtype),
        QCLASS::CLASS(CLASS::IN),
        false,
    ));
    q.build_bytes_vec().unwrap()
}

/// (rcode, IPv4 answers) of a reply.
fn addresses(reply: &[u8]) -> (RCODE, Vec<Ipv4Addr>) {
    let p = Packet::parse(reply).unwrap();
    let ips = p
        .answers
        .iter()
        .filter_map(|rr| match &rr.rdata {
            RData::A(a) => Some(Ipv4Addr::from(a.address)),
            _ => None,
        })
        .collect();
    (p.rcode(), ips)
}

async fn ask_udp(server: SocketAddr, q: &[u8]) -> Vec<u8> {
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    sock.send_to(q, server).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), sock.recv(&mut buf))
        .await
        .expect("an answer")
        .unwrap();
    buf.truncate(n);
    buf
}

async fn ask_tcp(server: SocketAddr, q: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(server).await.unwrap();
    s.write_u16(q.len() as u16).await.unwrap();
    s.write_all(q).await.unwrap();
    let len = s.read_u16().await.unwrap() as usize;
    let mut buf = vec![0u8; len];
    s.read_exact(&mut buf).await.unwrap();
    buf
}

/// An upstream resolver that answers every A query with 198.18.0.99.
async fn upstream() -> SocketAddr {
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = sock.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 4096];
        while let Ok((n, from)) = sock.recv_from(&mut buf).await {
            let q = Packet::parse(&buf[..n]).unwrap();
            let mut reply = Packet::new_reply(q.id());
            for question in &q.questions {
                reply.questions.push(question.clone());
                reply.answers.push(simple_dns::ResourceRecord::new(
                    question.qname.clone(),
                    CLASS::IN,
                    60,
                    RData::A(Ipv4Addr::new(198, 18, 0, 99).into()),
                ));
            }
            let _ = sock.send_to(&reply.build_bytes_vec().unwrap(), from).await;
        }
    });
    addr
}

#[tokio::test]
async fn the_table_answers_and_the_rest_is_forwarded() {
    let mut proxy = StaticProxy::start(1).unwrap();
    proxy
        .apply(
            NAME_TABLE,
            &[pack_any(table(&[
                ("address.internal", &["198.19.0.200"]),
                ("reviews.default.svc.cluster.local", &["198.19.0.10"]),
            ]))],
        )
        .unwrap();
    let dns = proxy.serve_dns(vec![upstream().await]).await.unwrap();

    let a = ask_udp(dns, &query("address.internal", TYPE::A)).await;
    assert_eq!(
        addresses(&a),
        (RCODE::NoError, vec![Ipv4Addr::new(198, 19, 0, 200)])
    );
    let upper = ask_tcp(dns, &query("Reviews.Default.svc.cluster.local.", TYPE::A)).await;
    assert_eq!(addresses(&upper).1, vec![Ipv4Addr::new(198, 19, 0, 10)]);
    // A known name has no IPv6 address: an empty answer, not NXDOMAIN.
    let aaaa = ask_udp(dns, &query("address.internal", TYPE::AAAA)).await;
    assert_eq!(addresses(&aaaa), (RCODE::NoError, vec![]));
    let other = ask_udp(dns, &query("www.example.org", TYPE::A)).await;
    assert_eq!(addresses(&other).1, vec![Ipv4Addr::new(198, 18, 0, 99)]);

    // A new table answers the next query.
    proxy
        .apply(
            NAME_TABLE,
            &[pack_any(table(&[("address.internal", &["198.19.0.201"])]))],
        )
        .unwrap();
    let a = ask_udp(dns, &query("address.internal", TYPE::A)).await;
    assert_eq!(addresses(&a).1, vec![Ipv4Addr::new(198, 19, 0, 201)]);
    let err = proxy
        .apply(NAME_TABLE, &[pack_any(table(&[("bad", &["not-an-ip"])]))])
        .unwrap_err();
    assert!(err.contains("not-an-ip"), "{err}");
}

#[tokio::test]
async fn without_an_upstream_unknown_names_fail_as_servfail() {
    let proxy = StaticProxy::start(1).unwrap();
    let dns = proxy.serve_dns(vec![]).await.unwrap();
    let reply = ask_udp(dns, &query("nothing.example", TYPE::A)).await;
    assert_eq!(addresses(&reply), (RCODE::ServerFailure, vec![]));
}
