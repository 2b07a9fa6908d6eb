//! Mesh mTLS between two proxies on loopback, with the contexts Weft's
//! translation writes (SDS `default`/`ROOTCA`) and certificates from the
//! mesh CA: the client proxy originates mTLS to endpoints tagged
//! `tlsMode: istio`, the server proxy terminates it, RBAC sees the
//! client's SPIFFE id, openssl sees the server's, and a renewed
//! certificate serves new handshakes while pooled connections go on.

mod support;

use std::net::SocketAddr;
use std::process::Command;

use envoy_types::pb::envoy::config::core::v3::Metadata;
use envoy_types::pb::envoy::config::listener::v3::{filter, FilterChainMatch, Listener};
use envoy_types::pb::envoy::config::rbac::v3::{permission, Rbac as Rules};
use envoy_types::pb::envoy::config::rbac::v3::{principal, rbac, Permission, Policy, Principal};
use envoy_types::pb::envoy::extensions::filters::http::rbac::v3::Rbac;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    http_filter, HttpConnectionManager, HttpFilter,
};
use envoy_types::pb::envoy::r#type::matcher::v3::{string_matcher::MatchPattern, StringMatcher};
use envoy_types::pb::google::protobuf::{value::Kind, Struct, Value};
use envoy_types::util::pack_any;
use prost::Message;
use support::*;
use weft_ca::{Authority, SpiffeId};
use weft_translate::mtls;

const SLEEP: &str = "spiffe://cluster.local/ns/default/sa/sleep";
const HTTPBIN: &str = "spiffe://cluster.local/ns/default/sa/httpbin";

struct Ca {
    authority: Authority,
    dir: std::path::PathBuf,
}

impl Ca {
    fn new(tag: &str) -> Ca {
        let dir = std::env::temp_dir().join(format!("weft-mtls-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let authority = Authority::load_or_create(&dir, "cluster.local").unwrap();
        Ca { authority, dir }
    }

    /// (chain, key, roots) for `sa` in `default`.
    fn issue(&self, sa: &str) -> (String, String, String) {
        let req = weft_ca::workload::request(None).unwrap();
        let id = SpiffeId {
            trust_domain: "cluster.local".into(),
            namespace: "default".into(),
            service_account: sa.into(),
        };
        let mut chain = self.authority.sign(&req.csr_pem, &id, None).unwrap().chain;
        let roots = chain.pop().unwrap();
        (chain.concat(), req.key_pem, roots)
    }

    /// Writes a certificate of `sa`, its key and the roots into the CA's
    /// directory: openssl's `-cert`, `-key` and `-CAfile` for them.
    fn openssl_identity(&self, sa: &str) -> String {
        let (chain, key, roots) = self.issue(sa);
        let d = self.dir.display();
        std::fs::write(format!("{d}/{sa}.pem"), chain).unwrap();
        std::fs::write(format!("{d}/{sa}.key"), key).unwrap();
        std::fs::write(format!("{d}/{sa}-roots.pem"), roots).unwrap();
        format!("-cert {d}/{sa}.pem -key {d}/{sa}.key -CAfile {d}/{sa}-roots.pem")
    }

    fn give(&self, proxy: &Proxy, sa: &str) -> String {
        let (chain, key, roots) = self.issue(sa);
        proxy.inner.install_identity(&chain, &key, &roots).unwrap();
        chain
    }
}

impl Drop for Ca {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The server side: a sidecar's mTLS chain (only), RBAC letting only
/// `sleep` in, to the backend.
fn server_listener(addr: SocketAddr) -> Listener {
    let mut l = listener(addr, vec![route_to("backend")]);
    let chain = &mut l.filter_chains[0];
    let Some(filter::ConfigType::TypedConfig(any)) = &mut chain.filters[0].config_type else {
        panic!()
    };
    let mut hcm = HttpConnectionManager::decode(any.value.as_slice()).unwrap();
    let only_sleep = Policy {
        permissions: vec![Permission {
            rule: Some(permission::Rule::Any(true)),
        }],
        principals: vec![Principal {
            identifier: Some(principal::Identifier::Authenticated(
                principal::Authenticated {
                    principal_name: Some(StringMatcher {
                        match_pattern: Some(MatchPattern::Exact(SLEEP.into())),
                        ..Default::default()
                    }),
                },
            )),
        }],
        ..Default::default()
    };
    let rbac = Rbac {
        rules: Some(Rules {
            action: rbac::Action::Allow as i32,
            policies: [("only-sleep".to_string(), only_sleep)]
                .into_iter()
                .collect(),
            ..Default::default()
        }),
        ..Default::default()
    };
    hcm.http_filters.insert(
        0,
        HttpFilter {
            name: "envoy.filters.http.rbac".into(),
            config_type: Some(http_filter::ConfigType::TypedConfig(pack_any(rbac))),
            ..Default::default()
        },
    );
    *any = pack_any(hcm);
    let alpn: Vec<String> = mtls::ALPN_TCP
        .iter()
        .chain(&mtls::ALPN_HTTP)
        .map(|a| a.to_string())
        .collect();
    chain.filter_chain_match = Some(FilterChainMatch {
        transport_protocol: "tls".into(),
        application_protocols: alpn,
        ..Default::default()
    });
    chain.transport_socket = Some(mtls::inbound_socket());
    l.listener_filters.push(tls_inspector());
    l
}

fn tls_inspector() -> envoy_types::pb::envoy::config::listener::v3::ListenerFilter {
    use envoy_types::pb::envoy::config::listener::v3::{listener_filter, ListenerFilter};
    ListenerFilter {
        name: "envoy.filters.listener.tls_inspector".into(),
        config_type: Some(listener_filter::ConfigType::TypedConfig(pack_any(
            envoy_types::pb::envoy::extensions::filters::listener::tls_inspector::v3::TlsInspector::default(),
        ))),
        ..Default::default()
    }
}

/// A client cluster to `server` with auto mTLS expecting `sans`; the
/// endpoint carries `tlsMode: istio`.
fn mesh_cluster(
    name: &str,
    server: SocketAddr,
    sans: &[&str],
) -> envoy_types::pb::envoy::config::cluster::v3::Cluster {
    let mut c = static_cluster(name, &[server]);
    let sans: Vec<String> = sans.iter().map(|s| s.to_string()).collect();
    c.transport_socket_matches =
        mtls::auto_matches(mtls::upstream_socket(mtls::sni(8000, "", "httpbin"), &sans));
    let tag = Struct {
        fields: [(
            "tlsMode".to_string(),
            Value {
                kind: Some(Kind::StringValue("istio".into())),
            },
        )]
        .into_iter()
        .collect(),
    };
    let ep = &mut c.load_assignment.as_mut().unwrap().endpoints[0].lb_endpoints[0];
    ep.metadata = Some(Metadata {
        filter_metadata: [("envoy.transport_socket_match".to_string(), tag)]
            .into_iter()
            .collect(),
        ..Default::default()
    });
    c
}

/// The server's sidecar (`server_listener`) in front of its backend.
async fn server_sidecar() -> (Proxy, Upstream) {
    let backend = upstream("backend", None).await;
    let server = serve(
        vec![static_cluster("backend", &[backend.addr])],
        server_listener,
    );
    (server, backend)
}

/// What a shell script printed (stdout).
fn sh(script: &str) -> String {
    let out = Command::new("sh")
        .arg("-c")
        .arg(script)
        .output()
        .expect("sh and openssl must be installed");
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// The server's certificate as `openssl s_client` sees it, as text.
fn s_client(server: SocketAddr, ca: &Ca, client_sa: &str) -> String {
    let id = ca.openssl_identity(client_sa);
    sh(&format!(
        "openssl s_client -connect {server} -alpn istio {id} </dev/null 2>/dev/null | openssl x509 -noout -serial -ext subjectAltName"
    ))
}

#[tokio::test]
async fn sidecars_speak_mtls_and_rbac_sees_the_client_identity() {
    let ca = Ca::new("pair");
    let (server, _backend) = server_sidecar().await;
    let served = ca.give(&server, "httpbin");

    let client = proxy(
        vec![
            mesh_cluster("mesh", server.addr, &[HTTPBIN]),
            mesh_cluster(
                "wrong-peer",
                server.addr,
                &["spiffe://cluster.local/ns/default/sa/other"],
            ),
        ],
        vec![route_to("mesh")],
    );
    ca.give(&client, "sleep");
    let r = get(client.addr, "/get").await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.headers["x-upstream"], "backend");

    // A client proxy of another account gets through TLS, and RBAC says no.
    let other = proxy(
        vec![mesh_cluster("mesh", server.addr, &[HTTPBIN])],
        vec![route_to("mesh")],
    );
    ca.give(&other, "other");
    let r = get(other.addr, "/get").await;
    assert_eq!(
        (r.status.as_u16(), r.body.as_str()),
        (403, "RBAC: access denied")
    );

    // A peer whose certificate does not name the expected account.
    let wrong = proxy(
        vec![mesh_cluster(
            "wrong-peer",
            server.addr,
            &["spiffe://cluster.local/ns/default/sa/other"],
        )],
        vec![route_to("wrong-peer")],
    );
    ca.give(&wrong, "sleep");
    assert_eq!(get(wrong.addr, "/get").await.status, 503);

    // Plaintext to the mTLS-only server: no chain takes it.
    let plain = tokio::time::timeout(std::time::Duration::from_secs(5), async {
        let mut s = tokio::net::TcpStream::connect(server.addr).await.unwrap();
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        s.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        let mut buf = Vec::new();
        let _ = s.read_to_end(&mut buf).await;
        buf
    })
    .await
    .unwrap();
    assert!(
        plain.is_empty(),
        "plaintext got an answer: {:?}",
        String::from_utf8_lossy(&plain)
    );

    // openssl sees the server's SVID, and it verifies against the root.
    let seen = s_client(server.addr, &ca, "sleep");
    assert!(seen.contains(&format!("URI:{HTTPBIN}")), "{seen}");
    let serial = weft_ca::inspect::chain(&served).unwrap()[0]
        .serial
        .to_uppercase();
    assert!(seen.contains(&serial), "{seen} vs {serial}");
    std::fs::write(ca.dir.join("leaf.pem"), &served).unwrap();
    let verify = Command::new("openssl")
        .args(["verify", "-CAfile"])
        .arg(ca.dir.join("sleep-roots.pem"))
        .arg(ca.dir.join("leaf.pem"))
        .output()
        .unwrap();
    assert!(verify.status.success(), "{verify:?}");

    // Renewal: the next handshake gets the new certificate; the client's
    // pooled connection goes on.
    let renewed = ca.give(&server, "httpbin");
    let new_serial = weft_ca::inspect::chain(&renewed).unwrap()[0]
        .serial
        .to_uppercase();
    let seen = s_client(server.addr, &ca, "sleep");
    assert!(seen.contains(&new_serial), "{seen} vs {new_serial}");
    assert_eq!(get(client.addr, "/get").await.status, 200);
}

#[tokio::test]
async fn a_client_certificate_from_another_ca_is_refused() {
    let ca = Ca::new("trusted");
    let foreign = Ca::new("foreign");
    let (server, _backend) = server_sidecar().await;
    ca.give(&server, "httpbin");
    // The client trusts the mesh root but holds a foreign certificate
    // (its own bundle has the foreign root too, so it installs).
    let client = proxy(
        vec![mesh_cluster("mesh", server.addr, &[])],
        vec![route_to("mesh")],
    );
    let (chain, key, foreign_root) = foreign.issue("sleep");
    let (_, _, roots) = ca.issue("sleep");
    assert!(
        client.inner.install_identity(&chain, &key, &roots).is_err(),
        "a chain that does not lead to its own bundle is refused"
    );
    client
        .inner
        .install_identity(&chain, &key, &(roots.clone() + &foreign_root))
        .unwrap();
    assert_eq!(get(client.addr, "/get").await.status, 503);
    // With no certificate yet at all, mTLS cannot start either.
    let bare = proxy(
        vec![mesh_cluster("mesh", server.addr, &[])],
        vec![route_to("mesh")],
    );
    assert_eq!(get(bare.addr, "/get").await.status, 503);
}

/// One request over `openssl s_client` as `client_sa`, resuming the
/// session in `session` when the file exists and saving the next one
/// there: everything s_client printed, the response included.
fn s_client_request(server: SocketAddr, ca: &Ca, client_sa: &str, session: &str) -> String {
    let id = ca.openssl_identity(client_sa);
    let session = ca.dir.join(session);
    let resume = if session.exists() {
        format!("-sess_in {}", session.display())
    } else {
        String::new()
    };
    sh(&format!(
        "printf 'GET /get HTTP/1.1\\r\\nhost: x\\r\\nconnection: close\\r\\n\\r\\n' | timeout 10 openssl s_client -connect {server} -alpn istio-http/1.1 {id} {resume} -sess_out {s} -ign_eof 2>&1",
        s = session.display()
    ))
}

/// Resumption between mesh peers, server side, with openssl as the
/// client: a session resumes with the client's identity (RBAC still sees
/// it), and not once the server's certificate has been renewed.
#[tokio::test(flavor = "multi_thread")]
async fn mesh_sessions_resume_until_the_certificate_changes() {
    let ca = Ca::new("resume-server");
    let (server, _backend) = server_sidecar().await;
    ca.give(&server, "httpbin");
    // openssl blocks; the proxies serve on the runtime's other workers.
    let run = |sa: &str, session: &str| {
        tokio::task::block_in_place(|| s_client_request(server.addr, &ca, sa, session))
    };
    let first = run("sleep", "sleep.session");
    assert!(first.contains("New, TLSv1.3"), "{first}");
    assert!(first.contains("HTTP/1.1 200"), "{first}");
    let resumed = run("sleep", "sleep.session");
    assert!(resumed.contains("Reused, TLSv1.3"), "{resumed}");
    assert!(
        resumed.contains("HTTP/1.1 200"),
        "RBAC sees sleep: {resumed}"
    );
    // Another account's resumed session keeps its own identity.
    assert!(run("other", "other.session").contains("HTTP/1.1 403"));
    let other = run("other", "other.session");
    assert!(other.contains("Reused, TLSv1.3"), "{other}");
    assert!(other.contains("HTTP/1.1 403"), "{other}");

    ca.give(&server, "httpbin");
    let after = run("sleep", "sleep.session");
    assert!(after.contains("New, TLSv1.3"), "renewed: {after}");
    assert!(after.contains("HTTP/1.1 200"), "{after}");
}

/// `openssl s_server -www` as a mesh server (httpbin's certificate,
/// client certificates required): its page says whether the session was
/// new or reused.
struct SServer {
    addr: SocketAddr,
    child: std::process::Child,
}

impl SServer {
    fn start(ca: &Ca) -> SServer {
        let id = ca.openssl_identity("httpbin");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let server = Command::new("openssl")
            .args(["s_server", "-quiet", "-www", "-Verify", "1"])
            .args(["-accept", &format!("127.0.0.1:{port}")])
            .args(id.split(' '))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("openssl must be installed");
        // Killed and waited for on drop, a failed start included.
        let server = SServer {
            addr: ([127, 0, 0, 1], port).into(),
            child: server,
        };
        for _ in 0..100 {
            if std::net::TcpStream::connect(server.addr).is_ok() {
                return server;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        panic!("openssl s_server did not listen on {}", server.addr);
    }
}

impl Drop for SServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Resumption between mesh peers, client side, with openssl as the
/// server: the second connection resumes, and not once the client's own
/// certificate has been renewed.
#[tokio::test]
async fn a_mesh_client_resumes_until_its_certificate_changes() {
    let ca = Ca::new("resume-client");
    let server = SServer::start(&ca);
    let client = proxy(
        vec![mesh_cluster("mesh", server.addr, &[HTTPBIN])],
        vec![route_to("mesh")],
    );
    ca.give(&client, "sleep");
    let page = |r: Reply| {
        assert_eq!(r.status, 200, "{}", r.body);
        r.body
    };
    let first = page(get(client.addr, "/").await);
    assert!(first.contains("New, TLSv1.3"), "{first}");
    // The suite Envoy's sidecars agree on (BoringSSL's order).
    assert!(
        first.contains("Cipher is TLS_AES_128_GCM_SHA256"),
        "{first}"
    );
    let second = page(get(client.addr, "/").await);
    assert!(second.contains("Reused, TLSv1.3"), "{second}");
    ca.give(&client, "sleep");
    let renewed = page(get(client.addr, "/").await);
    assert!(renewed.contains("New, TLSv1.3"), "{renewed}");
}
