//! TLS termination on loopback: SNI picks the filter chain and its
//! certificate, ALPN gives HTTP/2, MUTUAL wants a client certificate,
//! secrets arrive and change over SDS without dropping connections, and
//! `require_tls` sends plaintext to https; passthrough chains route TLS by
//! name without terminating it. Certificates are made with
//! openssl as Istio's secure-gateway task makes them; the clients are curl
//! and rustls.

mod support;

use std::process::Output;

use envoy_types::pb::envoy::config::core::v3::{
    data_source, transport_socket, DataSource, HttpProtocolOptions, TransportSocket,
};
use envoy_types::pb::envoy::config::listener::v3::{
    listener_filter, FilterChain, FilterChainMatch, Listener, ListenerFilter,
};
use envoy_types::pb::envoy::config::route::v3::virtual_host::TlsRequirementType;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    common_tls_context::ValidationContextType, secret, CertificateValidationContext,
    CommonTlsContext, DownstreamTlsContext, SdsSecretConfig, Secret, TlsCertificate,
};
use envoy_types::pb::google::protobuf::BoolValue;
use envoy_types::util::pack_any;
use support::pki::Pki;
use support::*;

const SECRET: &str = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret";

fn inline(b: Vec<u8>) -> Option<DataSource> {
    Some(DataSource {
        specifier: Some(data_source::Specifier::InlineBytes(b)),
        ..Default::default()
    })
}

fn cert_secret(name: &str, pki: &Pki, leaf: &str, key_of: &str) -> Secret {
    Secret {
        name: name.into(),
        r#type: Some(secret::Type::TlsCertificate(TlsCertificate {
            certificate_chain: inline(pki.read(&format!("{leaf}.crt"))),
            private_key: inline(pki.read(&format!("{key_of}.key"))),
            ..Default::default()
        })),
    }
}

fn ca_secret(name: &str, pki: &Pki, root: &str) -> Secret {
    Secret {
        name: name.into(),
        r#type: Some(secret::Type::ValidationContext(
            CertificateValidationContext {
                trusted_ca: inline(pki.read(&format!("{root}.crt"))),
                ..Default::default()
            },
        )),
    }
}

fn sds(name: &str) -> SdsSecretConfig {
    SdsSecretConfig {
        name: name.into(),
        sds_config: None,
    }
}

/// A chain for `names` that terminates TLS with secret `cert` (and, for
/// client certificates, CAs from `ca`) and routes everything to `backend`.
fn tls_chain(names: &[&str], cert: &str, ca: Option<&str>, require: bool) -> FilterChain {
    let http = listener(free_port(), vec![route_to("backend")]);
    let context = DownstreamTlsContext {
        common_tls_context: Some(CommonTlsContext {
            alpn_protocols: vec!["h2".into(), "http/1.1".into()],
            tls_certificate_sds_secret_configs: vec![sds(cert)],
            validation_context_type: ca
                .map(|c| ValidationContextType::ValidationContextSdsSecretConfig(sds(c))),
            ..Default::default()
        }),
        require_client_certificate: Some(BoolValue { value: require }),
        ..Default::default()
    };
    FilterChain {
        filter_chain_match: Some(FilterChainMatch {
            server_names: names.iter().map(|n| n.to_string()).collect(),
            ..Default::default()
        }),
        transport_socket: Some(TransportSocket {
            name: "envoy.transport_sockets.tls".into(),
            config_type: Some(transport_socket::ConfigType::TypedConfig(pack_any(context))),
        }),
        filters: http.filter_chains[0].filters.clone(),
        ..Default::default()
    }
}

fn tls_listener(addr: std::net::SocketAddr, chains: Vec<FilterChain>) -> Listener {
    Listener {
        name: "tls".into(),
        address: Some(socket(addr)),
        listener_filters: vec![ListenerFilter {
            name: "envoy.filters.listener.tls_inspector".into(),
            config_type: Some(listener_filter::ConfigType::TypedConfig(pack_any(
                envoy_types::pb::envoy::extensions::filters::listener::tls_inspector::v3::TlsInspector::default(),
            ))),
            ..Default::default()
        }],
        filter_chains: chains,
        ..Default::default()
    }
}

/// A proxy with the backend cluster, `secrets`, then the listener.
async fn tls_proxy(secrets: Vec<Secret>, chains: Vec<FilterChain>) -> (Proxy, Upstream) {
    let backend = upstream("backend", None).await;
    let mut proxy = serve(vec![static_cluster("backend", &[backend.addr])], |_| {
        // A placeholder: the TLS listener replaces it below.
        listener(free_port(), vec![route_to("backend")])
    });
    let secrets: Vec<_> = secrets.into_iter().map(pack_any).collect();
    proxy.inner.apply(SECRET, &secrets).unwrap();
    proxy
        .inner
        .apply(LISTENER, &[pack_any(tls_listener(proxy.addr, chains))])
        .unwrap();
    (proxy, backend)
}

/// curl to https://HOST:PORT/PATH, resolving HOST to the proxy, with
/// `extra` arguments; the body, then the HTTP version on the last line.
async fn curl(host: &str, proxy: &Proxy, pki: &Pki, extra: &[&str]) -> Output {
    curl_port(host, proxy.addr.port(), pki, extra).await
}

async fn curl_port(host: &str, port: u16, pki: &Pki, extra: &[&str]) -> Output {
    let mut args: Vec<String> = vec![
        "-sS".into(),
        "--max-time".into(),
        "10".into(),
        "--cacert".into(),
        pki.path("example.com.crt"),
        "--resolve".into(),
        format!("{host}:{port}:127.0.0.1"),
        "-w".into(),
        "\n%{http_version}".into(),
        format!("https://{host}:{port}/status/200"),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    tokio::process::Command::new("curl")
        .args(&args)
        .output()
        .await
        .expect("curl must be installed")
}

fn text(o: &Output) -> String {
    format!(
        "exit {:?}\n{}\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[tokio::test]
async fn sni_picks_the_chain_and_its_certificate_and_alpn_gives_http2() {
    let pki = Pki::new("sni");
    pki.root("example.com");
    pki.leaf("example.com", "httpbin.example.com");
    pki.leaf("example.com", "helloworld.example.com");
    let (proxy, _backend) = tls_proxy(
        vec![
            cert_secret(
                "httpbin",
                &pki,
                "httpbin.example.com",
                "httpbin.example.com",
            ),
            cert_secret(
                "helloworld",
                &pki,
                "helloworld.example.com",
                "helloworld.example.com",
            ),
        ],
        vec![
            tls_chain(&["httpbin.example.com"], "httpbin", None, false),
            tls_chain(&["helloworld.example.com"], "helloworld", None, false),
        ],
    )
    .await;
    // curl checks the certificate's name: each host gets its own.
    for host in ["httpbin.example.com", "helloworld.example.com"] {
        let h2 = curl(host, &proxy, &pki, &["--http2"]).await;
        assert!(h2.status.success(), "{host}: {}", text(&h2));
        let out = String::from_utf8_lossy(&h2.stdout);
        assert!(out.starts_with("backend\n"), "{out}");
        assert!(out.contains("x-forwarded-proto: https"), "{out}");
        assert!(out.trim_end().ends_with("\n2"), "ALPN h2: {out}");
        let h1 = curl(host, &proxy, &pki, &["--http1.1"]).await;
        assert!(
            String::from_utf8_lossy(&h1.stdout)
                .trim_end()
                .ends_with("\n1.1"),
            "{}",
            text(&h1)
        );
    }
    // A name no chain serves: no handshake.
    let other = curl("other.example.com", &proxy, &pki, &[]).await;
    assert_eq!(other.status.code(), Some(35), "{}", text(&other));
}

/// A client that offers none of the chain's protocols (a sidecar calling
/// a gateway's ISTIO_MUTUAL server offers Istio's own) is served with no
/// protocol selected, as Envoy serves it; rustls alone would refuse.
#[tokio::test]
async fn a_client_offering_other_protocols_is_served_without_alpn() {
    let pki = Pki::new("noalpn");
    pki.root("example.com");
    pki.leaf("example.com", "httpbin.example.com");
    let (proxy, _backend) = tls_proxy(
        vec![cert_secret(
            "httpbin",
            &pki,
            "httpbin.example.com",
            "httpbin.example.com",
        )],
        vec![tls_chain(&["httpbin.example.com"], "httpbin", None, false)],
    )
    .await;
    let script = format!(
        "printf 'GET /status/200 HTTP/1.1\\r\\nhost: httpbin.example.com\\r\\nconnection: close\\r\\n\\r\\n' | timeout 10 openssl s_client -connect {} -servername httpbin.example.com -CAfile {} -alpn istio-http/1.1,istio -ign_eof 2>&1",
        proxy.addr,
        pki.path("example.com.crt")
    );
    let out = tokio::process::Command::new("sh")
        .args(["-c", &script])
        .output()
        .await
        .expect("openssl must be installed");
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("No ALPN negotiated"), "{said}");
    assert!(said.contains("HTTP/1.1 200"), "{said}");
    // A client offering one of them still gets it.
    let h2 = curl("httpbin.example.com", &proxy, &pki, &["--http2"]).await;
    assert!(
        String::from_utf8_lossy(&h2.stdout)
            .trim_end()
            .ends_with("\n2"),
        "{}",
        text(&h2)
    );
}

#[tokio::test]
async fn mutual_wants_a_client_certificate_from_the_trusted_ca() {
    let pki = Pki::new("mutual");
    pki.root("example.com");
    pki.root("elsewhere.com");
    pki.leaf("example.com", "httpbin.example.com");
    pki.leaf("example.com", "client.example.com");
    pki.leaf("elsewhere.com", "stranger.example.com");
    let (proxy, _backend) = tls_proxy(
        vec![
            cert_secret(
                "httpbin",
                &pki,
                "httpbin.example.com",
                "httpbin.example.com",
            ),
            ca_secret("httpbin-cacert", &pki, "example.com"),
        ],
        vec![
            tls_chain(
                &["httpbin.example.com"],
                "httpbin",
                Some("httpbin-cacert"),
                true,
            ),
            tls_chain(
                &["optional.example.com"],
                "httpbin",
                Some("httpbin-cacert"),
                false,
            ),
        ],
    )
    .await;
    let host = "httpbin.example.com";
    // No certificate: a TLS alert, at once, not a hang.
    let none = curl(host, &proxy, &pki, &[]).await;
    assert!(!none.status.success(), "{}", text(&none));
    assert!(
        String::from_utf8_lossy(&none.stderr).contains("alert"),
        "{}",
        text(&none)
    );
    let (crt, key) = (
        pki.path("client.example.com.crt"),
        pki.path("client.example.com.key"),
    );
    let with = curl(host, &proxy, &pki, &["--cert", &crt, "--key", &key]).await;
    assert!(with.status.success(), "{}", text(&with));
    // A certificate from another CA is refused.
    let (crt, key) = (
        pki.path("stranger.example.com.crt"),
        pki.path("stranger.example.com.key"),
    );
    let stranger = curl(host, &proxy, &pki, &["--cert", &crt, "--key", &key]).await;
    assert!(!stranger.status.success(), "{}", text(&stranger));
    // OPTIONAL_MUTUAL lets a client without one in. (The server
    // certificate names httpbin, so curl is told not to check the name.)
    let port = proxy.addr.port().to_string();
    let optional = tokio::process::Command::new("curl")
        .args(["-sS", "--max-time", "10", "-k", "--resolve"])
        .arg(format!("optional.example.com:{port}:127.0.0.1"))
        .arg(format!("https://optional.example.com:{port}/"))
        .output()
        .await
        .unwrap();
    assert!(optional.status.success(), "{}", text(&optional));
}

/// A rustls client that accepts any server certificate and keeps the one
/// it saw (the proxy's certificates are X.509 v1, which webpki refuses).
mod client {
    use std::sync::Arc;

    use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
    use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
    use rustls::{DigitallySignedStruct, SignatureScheme};

    #[derive(Debug)]
    struct AnyCert;

    impl ServerCertVerifier for AnyCert {
        fn verify_server_cert(
            &self,
            _: &CertificateDer<'_>,
            _: &[CertificateDer<'_>],
            _: &ServerName<'_>,
            _: &[u8],
            _: UnixTime,
        ) -> Result<ServerCertVerified, rustls::Error> {
            Ok(ServerCertVerified::assertion())
        }
        fn verify_tls12_signature(
            &self,
            _: &[u8],
            _: &CertificateDer<'_>,
            _: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            Ok(HandshakeSignatureValid::assertion())
        }
        fn verify_tls13_signature(
            &self,
            _: &[u8],
            _: &CertificateDer<'_>,
            _: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            Ok(HandshakeSignatureValid::assertion())
        }
        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            rustls::crypto::ring::default_provider()
                .signature_verification_algorithms
                .supported_schemes()
        }
    }

    pub type Stream = tokio_rustls::client::TlsStream<tokio::net::TcpStream>;

    fn config() -> Arc<rustls::ClientConfig> {
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCert))
        .with_no_client_auth();
        Arc::new(config)
    }

    pub async fn connect(addr: std::net::SocketAddr, sni: &str) -> std::io::Result<Stream> {
        let tcp = tokio::net::TcpStream::connect(addr).await?;
        let name = ServerName::try_from(sni.to_string()).unwrap();
        tokio_rustls::TlsConnector::from(config())
            .connect(name, tcp)
            .await
    }

    /// A connection that sends its ClientHello for `sni` and nothing more.
    pub async fn stall(addr: std::net::SocketAddr, sni: &str) -> tokio::net::TcpStream {
        use tokio::io::AsyncWriteExt;
        let name = ServerName::try_from(sni.to_string()).unwrap();
        let mut tls = rustls::ClientConnection::new(config(), name).unwrap();
        let mut hello = Vec::new();
        tls.write_tls(&mut hello).unwrap();
        let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        tcp.write_all(&hello).await.unwrap();
        tcp
    }

    pub fn served(s: &Stream) -> Vec<u8> {
        s.get_ref().1.peer_certificates().unwrap()[0].to_vec()
    }
}

async fn get_over(
    sender: &mut hyper::client::conn::http1::SendRequest<http_body_util::Empty<bytes::Bytes>>,
) -> u16 {
    let req = http::Request::get("/status/200")
        .header("host", "httpbin.example.com")
        .body(http_body_util::Empty::new())
        .unwrap();
    sender.send_request(req).await.unwrap().status().as_u16()
}

#[tokio::test]
async fn a_replaced_certificate_serves_new_handshakes_and_open_connections_go_on() {
    let pki = Pki::new("rotate");
    pki.root("example.com");
    pki.leaf("example.com", "httpbin.example.com");
    pki.leaf("example.com", "new.example.com");
    let first = cert_secret(
        "httpbin",
        &pki,
        "httpbin.example.com",
        "httpbin.example.com",
    );
    let (mut proxy, _backend) = tls_proxy(
        vec![first],
        vec![tls_chain(&["httpbin.example.com"], "httpbin", None, false)],
    )
    .await;
    let open = client::connect(proxy.addr, "httpbin.example.com")
        .await
        .unwrap();
    let old_cert = client::served(&open);
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(open))
            .await
            .unwrap();
    tokio::spawn(conn);
    assert_eq!(get_over(&mut sender).await, 200);

    // The Secret is replaced (same name, new certificate and key).
    let second = cert_secret("httpbin", &pki, "new.example.com", "new.example.com");
    proxy.inner.apply(SECRET, &[pack_any(second)]).unwrap();
    assert_eq!(
        get_over(&mut sender).await,
        200,
        "the open connection goes on"
    );
    let fresh = client::connect(proxy.addr, "httpbin.example.com")
        .await
        .unwrap();
    assert_ne!(
        client::served(&fresh),
        old_cert,
        "a new handshake gets the new certificate"
    );
    assert_eq!(
        client::served(&fresh),
        weft_tls_der(&pki.read("new.example.com.crt"))
    );

    // A key that belongs to another certificate is refused whole, and the
    // last good certificate keeps serving.
    let broken = cert_secret("httpbin", &pki, "httpbin.example.com", "new.example.com");
    let err = proxy.inner.apply(SECRET, &[pack_any(broken)]).unwrap_err();
    assert!(
        err.contains("Secret \"httpbin\"") && err.contains("does not belong"),
        "{err}"
    );
    let again = client::connect(proxy.addr, "httpbin.example.com")
        .await
        .unwrap();
    assert_eq!(
        client::served(&again),
        weft_tls_der(&pki.read("new.example.com.crt"))
    );
}

fn weft_tls_der(pem: &[u8]) -> Vec<u8> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::from_pem_slice(pem)
        .unwrap()
        .to_vec()
}

#[tokio::test]
async fn a_chain_whose_secret_has_not_arrived_closes_until_it_does() {
    let pki = Pki::new("late");
    pki.root("example.com");
    pki.leaf("example.com", "httpbin.example.com");
    let (mut proxy, _backend) = tls_proxy(
        Vec::new(),
        vec![tls_chain(&["httpbin.example.com"], "httpbin", None, false)],
    )
    .await;
    assert!(client::connect(proxy.addr, "httpbin.example.com")
        .await
        .is_err());
    let s = cert_secret(
        "httpbin",
        &pki,
        "httpbin.example.com",
        "httpbin.example.com",
    );
    proxy.inner.apply(SECRET, &[pack_any(s)]).unwrap();
    let served = curl("httpbin.example.com", &proxy, &pki, &[]).await;
    assert!(served.status.success(), "{}", text(&served));
}

/// A client that stops mid-handshake is closed once the chain's bound
/// passes: its connection manager's idle timeout (Envoy's timer runs from
/// the connection's start), or `transport_socket_connect_timeout` where
/// the chain sets one; a client that completes its handshake is served.
#[tokio::test]
async fn a_stalled_handshake_is_closed_after_its_timeout() {
    use tokio::io::AsyncReadExt;
    let pki = Pki::new("stall");
    pki.root("example.com");
    pki.leaf("example.com", "httpbin.example.com");
    pki.leaf("example.com", "helloworld.example.com");
    let mut idle = tls_chain(&["httpbin.example.com"], "httpbin", None, false);
    edit_hcm(&mut idle, |hcm| {
        hcm.common_http_protocol_options = Some(HttpProtocolOptions {
            idle_timeout: Some(ms(300)),
            ..Default::default()
        })
    });
    let mut bounded = tls_chain(&["helloworld.example.com"], "helloworld", None, false);
    bounded.transport_socket_connect_timeout = Some(ms(300));
    let secrets = ["httpbin", "helloworld"].map(|name| {
        let host = format!("{name}.example.com");
        cert_secret(name, &pki, &host, &host)
    });
    let (proxy, _backend) = tls_proxy(secrets.into(), vec![idle, bounded]).await;
    for host in ["httpbin.example.com", "helloworld.example.com"] {
        let start = std::time::Instant::now();
        let mut sock = client::stall(proxy.addr, host).await;
        // The server's flight comes, then nothing until the close.
        let mut buf = vec![0; 16384];
        let drained = async { while matches!(sock.read(&mut buf).await, Ok(n) if n > 0) {} };
        let closed = tokio::time::timeout(std::time::Duration::from_secs(10), drained).await;
        assert!(closed.is_ok(), "{host}: a stalled handshake stays open");
        assert!(
            start.elapsed() >= std::time::Duration::from_millis(250),
            "{host}: closed before its timeout"
        );
        let served = curl(host, &proxy, &pki, &[]).await;
        assert!(served.status.success(), "{host}: {}", text(&served));
    }
}

#[tokio::test]
async fn require_tls_sends_plaintext_to_https() {
    let backend = upstream("backend", None).await;
    let proxy = serve(vec![static_cluster("backend", &[backend.addr])], |addr| {
        let mut l = listener(addr, vec![route_to("backend")]);
        let filter = &mut l.filter_chains[0].filters[0];
        let Some(envoy_types::pb::envoy::config::listener::v3::filter::ConfigType::TypedConfig(
            any,
        )) = &mut filter.config_type
        else {
            unreachable!()
        };
        use prost::Message;
        let mut hcm = envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::HttpConnectionManager::decode(any.value.as_slice()).unwrap();
        if let Some(envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::http_connection_manager::RouteSpecifier::RouteConfig(rc)) = &mut hcm.route_specifier {
            rc.virtual_hosts[0].require_tls = TlsRequirementType::All as i32;
        }
        *any = pack_any(hcm);
        l
    });
    let r = get(proxy.addr, "/a/b?c=d").await;
    assert_eq!(r.status, 301);
    assert_eq!(
        r.headers.get("location").unwrap(),
        "https://test.local/a/b?c=d"
    );
    assert_eq!(
        backend.requests.load(std::sync::atomic::Ordering::SeqCst),
        0
    );
}

/// PASSTHROUGH: the ClientHello's name picks a chain that proxies the
/// still-encrypted bytes, here to the proxy's own terminating listener, so
/// curl verifies the far end's certificate. A TLS server with a tcp_proxy
/// terminates TLS and forwards the plaintext bytes.
#[tokio::test]
async fn passthrough_routes_tls_by_name_and_tls_servers_proxy_bytes() {
    let pki = Pki::new("passthrough");
    pki.root("example.com");
    pki.leaf("example.com", "nginx.example.com");
    let terminating = || tls_chain(&["nginx.example.com"], "nginx", None, false);
    let (mut proxy, backend) = tls_proxy(
        vec![cert_secret(
            "nginx",
            &pki,
            "nginx.example.com",
            "nginx.example.com",
        )],
        vec![terminating()],
    )
    .await;
    let clusters = [
        static_cluster("backend", &[backend.addr]),
        static_cluster("terminator", &[proxy.addr]),
    ];
    let clusters: Vec<_> = clusters.into_iter().map(pack_any).collect();
    proxy.inner.apply(CLUSTER, &clusters).unwrap();
    let (pass, tcp) = (free_port(), free_port());
    let passthrough = FilterChain {
        filter_chain_match: Some(FilterChainMatch {
            server_names: vec!["nginx.example.com".into()],
            transport_protocol: "tls".into(),
            ..Default::default()
        }),
        filters: vec![tcp_proxy_filter("terminator")],
        ..Default::default()
    };
    let tls_tcp = FilterChain {
        filters: vec![tcp_proxy_filter("backend")],
        ..terminating()
    };
    let listeners = [
        tls_listener(proxy.addr, vec![terminating()]),
        Listener {
            name: "passthrough".into(),
            ..tls_listener(pass, vec![passthrough])
        },
        Listener {
            name: "tls-tcp".into(),
            ..tls_listener(tcp, vec![tls_tcp])
        },
    ];
    let listeners: Vec<_> = listeners.into_iter().map(pack_any).collect();
    proxy.inner.apply(LISTENER, &listeners).unwrap();

    let through = curl_port("nginx.example.com", pass.port(), &pki, &["--http2"]).await;
    assert!(through.status.success(), "{}", text(&through));
    let out = String::from_utf8_lossy(&through.stdout);
    assert!(out.starts_with("backend\n"), "{out}");
    assert!(
        out.trim_end().ends_with("\n2"),
        "ALPN reached the far end: {out}"
    );
    let unknown = curl_port("other.example.com", pass.port(), &pki, &[]).await;
    assert_eq!(unknown.status.code(), Some(35), "{}", text(&unknown));

    let bytes = curl_port("nginx.example.com", tcp.port(), &pki, &["--http1.1"]).await;
    assert!(bytes.status.success(), "{}", text(&bytes));
    let out = String::from_utf8_lossy(&bytes.stdout);
    assert!(out.starts_with("backend\n"), "{out}");
    assert!(
        !out.contains("x-forwarded-proto"),
        "opaque bytes, not HTTP the proxy read: {out}"
    );
}

/// A cluster's UpstreamTlsContext, as istiod writes DestinationRule `tls`
/// SIMPLE: SNI, trusted CAs (none and no names: any certificate),
/// expected names.
fn originate(sni: &str, ca: Option<Vec<u8>>, names: &[&str]) -> TransportSocket {
    use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
        subject_alt_name_matcher::SanType, SubjectAltNameMatcher, UpstreamTlsContext,
    };
    use envoy_types::pb::envoy::r#type::matcher::v3::{
        string_matcher::MatchPattern, StringMatcher,
    };
    let validation = (ca.is_some() || !names.is_empty()).then(|| {
        ValidationContextType::ValidationContext(CertificateValidationContext {
            trusted_ca: ca.and_then(inline),
            match_typed_subject_alt_names: names
                .iter()
                .map(|n| SubjectAltNameMatcher {
                    san_type: SanType::Dns as i32,
                    matcher: Some(StringMatcher {
                        match_pattern: Some(MatchPattern::Exact(n.to_string())),
                        ..Default::default()
                    }),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        })
    });
    let ctx = UpstreamTlsContext {
        common_tls_context: Some(CommonTlsContext {
            validation_context_type: validation,
            ..Default::default()
        }),
        sni: sni.into(),
        ..Default::default()
    };
    TransportSocket {
        name: "envoy.transport_sockets.tls".into(),
        config_type: Some(transport_socket::ConfigType::TypedConfig(pack_any(ctx))),
    }
}

/// Istio's TLS origination on loopback: a plaintext request leaves one
/// proxy over TLS to a second that terminates it (the stand-in external
/// server). The upstream's certificate is checked against the trusted CA
/// and the expected name; a wrong CA or name fails the connection (503),
/// and without a validation context any certificate is taken.
#[tokio::test]
async fn clusters_originate_tls_and_check_the_upstream_certificate() {
    let pki = Pki::new("originate");
    pki.root("example.com");
    pki.server_leaf("example.com", "api.example.com");
    pki.root("other.org");
    let (server, _backend) = tls_proxy(
        vec![cert_secret(
            "cert",
            &pki,
            "api.example.com",
            "api.example.com",
        )],
        vec![tls_chain(&[], "cert", None, false)],
    )
    .await;
    let through = |socket: TransportSocket| {
        let mut c = static_cluster("external", &[server.addr]);
        c.transport_socket = Some(socket);
        proxy(vec![c], vec![route_to("external")])
    };
    let root = pki.read("example.com.crt");
    let cases = [
        (
            "trusted CA, SNI as the name",
            originate("api.example.com", Some(root.clone()), &[]),
            200,
        ),
        (
            "trusted CA, expected SAN",
            originate("x.test", Some(root.clone()), &["api.example.com"]),
            200,
        ),
        (
            "another SAN expected",
            originate("api.example.com", Some(root.clone()), &["www.example.com"]),
            503,
        ),
        (
            "untrusted CA",
            originate("api.example.com", Some(pki.read("other.org.crt")), &[]),
            503,
        ),
        (
            "no validation context",
            originate("api.example.com", None, &[]),
            200,
        ),
        // A wildcard host has no SNI: the expected name is checked.
        (
            "no SNI, expected SAN",
            originate("", Some(root.clone()), &["api.example.com"]),
            200,
        ),
    ];
    for (what, socket, status) in cases {
        let client = through(socket);
        let r = get(client.addr, "/origin").await;
        assert_eq!(r.status, status, "{what}: {}", r.body);
        if status == 200 {
            assert!(r.body.starts_with("backend\n/origin"), "{what}: {}", r.body);
        }
    }
    // Names to check without CAs to check them by: refused, as Envoy does.
    let mut c = static_cluster("external", &[server.addr]);
    c.transport_socket = Some(originate("api.example.com", None, &["api.example.com"]));
    let mut p = weft_proxy::StaticProxy::start(1).unwrap();
    let err = p.apply(CLUSTER, &[pack_any(c)]).unwrap_err();
    assert!(err.contains("need a trusted_ca"), "{err}");
}

/// A gateway's DestinationRule `credentialName` as istiod writes it: the
/// client certificate and the CAs by SDS (`kubernetes://<name>`,
/// `kubernetes://<name>-cacert`). Until the secrets arrive no connection
/// is made (503, never plaintext); then MUTUAL origination works against
/// a server that wants a client certificate from that CA.
#[tokio::test]
async fn clusters_originate_mutual_tls_with_sds_secrets() {
    use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
        common_tls_context::CombinedCertificateValidationContext,
        subject_alt_name_matcher::SanType, SubjectAltNameMatcher, UpstreamTlsContext,
    };
    use envoy_types::pb::envoy::r#type::matcher::v3::{
        string_matcher::MatchPattern, StringMatcher,
    };
    let pki = Pki::new("credential");
    pki.root("example.com");
    pki.server_leaf("example.com", "api.example.com");
    pki.leaf("example.com", "client.example.com");
    let (server, _backend) = tls_proxy(
        vec![
            cert_secret("cert", &pki, "api.example.com", "api.example.com"),
            ca_secret("cacert", &pki, "example.com"),
        ],
        vec![tls_chain(&[], "cert", Some("cacert"), true)],
    )
    .await;
    let ctx = UpstreamTlsContext {
        common_tls_context: Some(CommonTlsContext {
            tls_certificate_sds_secret_configs: vec![sds("kubernetes://client")],
            validation_context_type: Some(ValidationContextType::CombinedValidationContext(
                CombinedCertificateValidationContext {
                    default_validation_context: Some(CertificateValidationContext {
                        match_typed_subject_alt_names: vec![SubjectAltNameMatcher {
                            san_type: SanType::Dns as i32,
                            matcher: Some(StringMatcher {
                                match_pattern: Some(MatchPattern::Exact("api.example.com".into())),
                                ..Default::default()
                            }),
                            ..Default::default()
                        }],
                        ..Default::default()
                    }),
                    validation_context_sds_secret_config: Some(sds("kubernetes://client-cacert")),
                    ..Default::default()
                },
            )),
            ..Default::default()
        }),
        sni: "api.example.com".into(),
        ..Default::default()
    };
    let mut cluster = static_cluster("external", &[server.addr]);
    cluster.transport_socket = Some(TransportSocket {
        name: "envoy.transport_sockets.tls".into(),
        config_type: Some(transport_socket::ConfigType::TypedConfig(pack_any(ctx))),
    });
    let mut client = proxy(vec![cluster], vec![route_to("external")]);
    assert_eq!(get(client.addr, "/get").await.status, 503, "no secrets yet");
    let secrets = vec![
        pack_any(cert_secret(
            "kubernetes://client",
            &pki,
            "client.example.com",
            "client.example.com",
        )),
        pack_any(ca_secret("kubernetes://client-cacert", &pki, "example.com")),
    ];
    client.inner.apply(SECRET, &secrets).unwrap();
    let r = get(client.addr, "/get").await;
    assert_eq!(r.status, 200, "{}", r.body);
}
