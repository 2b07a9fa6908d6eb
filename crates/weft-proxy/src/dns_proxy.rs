//! Istio's DNS proxy: a pod's DNS queries, captured to the sidecar (port
//! 15053, UDP and TCP, as Istio's agent serves them), are answered from
//! the control plane's name table (NDS) for the services this proxy
//! knows, and forwarded to the pod's own resolvers (`/etc/resolv.conf`)
//! otherwise. A name in the table answers A with its IPv4 addresses and
//! AAAA with its IPv6 ones (an empty answer, not an error, when it has
//! none, so resolvers do not fall through to search domains), with
//! Istio's 30 s TTL; other query types are forwarded. Queries that came
//! over TCP are forwarded over UDP too (a truncated upstream answer stays
//! truncated).

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use simple_dns::rdata::{RData, A, AAAA};
use simple_dns::{Packet, PacketFlag, ResourceRecord, CLASS, QTYPE, RCODE, TYPE};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};

use crate::Shared;

/// What Istio's DNS proxy answers with.
const TTL: u32 = 30;
/// How long one upstream resolver has to answer a forwarded query.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(2);

/// The names of the table: lower-case, without a final dot.
#[derive(Debug, Default)]
pub(crate) struct Names {
    map: HashMap<String, Vec<IpAddr>>,
}

impl Names {
    /// The names of NDS tables (a host and its `alt_hosts` share its
    /// addresses); an address that does not parse is an error (a NACK).
    pub fn from_tables(tables: &[weft_xds::nds::NameTable]) -> Result<Names, String> {
        let mut map = HashMap::new();
        for (host, info) in tables.iter().flat_map(|t| &t.table) {
            let ips = info
                .ips
                .iter()
                .map(|ip| {
                    ip.parse::<IpAddr>()
                        .map_err(|_| format!("name table: {host}: {ip:?} is not an IP address"))
                })
                .collect::<Result<Vec<_>, _>>()?;
            for name in std::iter::once(host).chain(&info.alt_hosts) {
                map.insert(normal(name), ips.clone());
            }
        }
        Ok(Names { map })
    }

    fn lookup(&self, name: &str) -> Option<&[IpAddr]> {
        self.map.get(&normal(name)).map(Vec::as_slice)
    }
}

fn normal(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

/// Serves the DNS proxy on `addr`, forwarding to the resolvers of
/// `/etc/resolv.conf`.
pub(crate) async fn start(addr: SocketAddr, shared: Arc<Shared>) -> io::Result<SocketAddr> {
    start_with(addr, shared, system_resolvers()).await
}

/// Serves on `addr` (UDP, and TCP on the same port), forwarding what the
/// table does not know to `upstreams`; returns the address bound.
pub(crate) async fn start_with(
    addr: SocketAddr,
    shared: Arc<Shared>,
    upstreams: Vec<SocketAddr>,
) -> io::Result<SocketAddr> {
    let (udp, tcp) = bind_both(addr).await?;
    let local = udp.local_addr()?;
    let upstreams: Arc<[SocketAddr]> = upstreams.into();
    tokio::spawn(serve_udp(Arc::new(udp), shared.clone(), upstreams.clone()));
    tokio::spawn(serve_tcp(tcp, shared, upstreams));
    tracing::info!(%local, "DNS proxy listening");
    Ok(local)
}

/// A UDP socket and a TCP listener on one port. For port 0 the UDP
/// socket picks it, and a TCP socket may already hold that number: then
/// another is picked (the in-process tests bind this way).
async fn bind_both(addr: SocketAddr) -> io::Result<(UdpSocket, TcpListener)> {
    let mut tries = if addr.port() == 0 { 16 } else { 1 };
    loop {
        let udp = UdpSocket::bind(addr).await?;
        match TcpListener::bind(udp.local_addr()?).await {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(e) if e.kind() == io::ErrorKind::AddrInUse && tries > 1 => tries -= 1,
            Err(e) => return Err(e),
        }
    }
}

/// `nameserver` lines of /etc/resolv.conf (none: no forwarding).
fn system_resolvers() -> Vec<SocketAddr> {
    let text = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .filter_map(|ip| ip.trim().parse::<IpAddr>().ok())
        .map(|ip| SocketAddr::new(ip, 53))
        .collect()
}

async fn serve_udp(sock: Arc<UdpSocket>, shared: Arc<Shared>, upstreams: Arc<[SocketAddr]>) {
    let mut buf = vec![0u8; 4096];
    loop {
        let (n, from) = match sock.recv_from(&mut buf).await {
            Ok(got) => got,
            Err(e) => {
                tracing::debug!(error = %e, "DNS proxy: receive failed");
                continue;
            }
        };
        let query = buf[..n].to_vec();
        let (sock, shared, upstreams) = (sock.clone(), shared.clone(), upstreams.clone());
        tokio::spawn(async move {
            if let Some(reply) = answer(&query, &shared, &upstreams).await {
                let _ = sock.send_to(&reply, from).await;
            }
        });
    }
}

async fn serve_tcp(listener: TcpListener, shared: Arc<Shared>, upstreams: Arc<[SocketAddr]>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let (shared, upstreams) = (shared.clone(), upstreams.clone());
        tokio::spawn(async move {
            let _ = serve_tcp_connection(stream, &shared, &upstreams).await;
        });
    }
}

/// Queries on one TCP connection, each with its two-byte length.
async fn serve_tcp_connection(
    mut stream: TcpStream,
    shared: &Shared,
    upstreams: &[SocketAddr],
) -> io::Result<()> {
    loop {
        let len = stream.read_u16().await? as usize;
        let mut query = vec![0u8; len];
        stream.read_exact(&mut query).await?;
        let Some(reply) = answer(&query, shared, upstreams).await else {
            return Ok(());
        };
        let len = u16::try_from(reply.len()).map_err(|_| io::Error::other("reply too long"))?;
        stream.write_u16(len).await?;
        stream.write_all(&reply).await?;
    }
}

/// The reply to one query: from the table, else from an upstream, else
/// SERVFAIL; None for what is not a DNS query at all.
async fn answer(query: &[u8], shared: &Shared, upstreams: &[SocketAddr]) -> Option<Vec<u8>> {
    let packet = Packet::parse(query).ok()?;
    if let Some(reply) = from_table(&packet, &shared.names.load()) {
        return Some(reply);
    }
    for upstream in upstreams {
        match forward(query, *upstream).await {
            Ok(reply) => return Some(reply),
            Err(e) => tracing::debug!(%upstream, error = %e, "DNS proxy: upstream failed"),
        }
    }
    let mut failed = packet.into_reply();
    *failed.rcode_mut() = RCODE::ServerFailure;
    failed.build_bytes_vec().ok()
}

/// The table's answer to a one-question query for a name it has.
fn from_table(query: &Packet, names: &Names) -> Option<Vec<u8>> {
    let [question] = query.questions.as_slice() else {
        return None;
    };
    // Only addresses come from the table; other types (SRV, TXT, …) are
    // the upstream's to answer, as Istio's agent leaves them.
    if !matches!(
        question.qtype,
        QTYPE::TYPE(TYPE::A) | QTYPE::TYPE(TYPE::AAAA)
    ) {
        return None;
    }
    let ips = names.lookup(&question.qname.to_string())?;
    let mut reply = Packet::new_reply(query.id());
    reply.set_flags(PacketFlag::AUTHORITATIVE_ANSWER | PacketFlag::RECURSION_AVAILABLE);
    if query.has_flags(PacketFlag::RECURSION_DESIRED) {
        reply.set_flags(PacketFlag::RECURSION_DESIRED);
    }
    reply.questions.push(question.clone());
    for ip in ips {
        let rdata = match (question.qtype, ip) {
            (QTYPE::TYPE(TYPE::A), IpAddr::V4(v4)) => RData::A(A::from(*v4)),
            (QTYPE::TYPE(TYPE::AAAA), IpAddr::V6(v6)) => RData::AAAA(AAAA::from(*v6)),
            _ => continue,
        };
        reply.answers.push(ResourceRecord::new(
            question.qname.clone(),
            CLASS::IN,
            TTL,
            rdata,
        ));
    }
    reply.build_bytes_vec_compressed().ok()
}

/// The query as it is to one upstream resolver, over UDP.
async fn forward(query: &[u8], upstream: SocketAddr) -> io::Result<Vec<u8>> {
    let bind: SocketAddr = if upstream.is_ipv4() {
        "0.0.0.0:0".parse().expect("literal")
    } else {
        "[::]:0".parse().expect("literal")
    };
    let sock = UdpSocket::bind(bind).await?;
    sock.connect(upstream).await?;
    sock.send(query).await?;
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(UPSTREAM_TIMEOUT, sock.recv(&mut buf))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no answer"))??;
    buf.truncate(n);
    Ok(buf)
}
