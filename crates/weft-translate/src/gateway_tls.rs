//! Gateway servers that terminate TLS (HTTPS or TLS with `tls.mode` SIMPLE,
//! MUTUAL, OPTIONAL_MUTUAL or ISTIO_MUTUAL): a filter chain per server,
//! matched by SNI on the server's hosts, with a DownstreamTlsContext whose
//! certificate and CAs come over SDS, as istiod writes them for
//! `credentialName` (the Secret's content), for certificates from files
//! (their paths), or, for ISTIO_MUTUAL, the gateway's own workload
//! certificate with the mesh's roots (`default`, `ROOTCA`): a sidecar
//! calling the gateway with mesh mTLS is known by its SPIFFE identity.

use envoy_types::pb::envoy::config::core::v3::{transport_socket, TransportSocket};
use envoy_types::pb::envoy::config::listener::v3::{Filter, FilterChain, FilterChainMatch};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    common_tls_context::{CombinedCertificateValidationContext, ValidationContextType},
    secret,
    tls_parameters::TlsProtocol,
    CertificateValidationContext, CommonTlsContext, DownstreamTlsContext, SdsSecretConfig, Secret,
    TlsCertificate, TlsParameters,
};
use envoy_types::pb::google::protobuf::BoolValue;
use envoy_types::util::pack_any;
use weft_config::networking::traffic::ServerTls;
use weft_registry::Workload;

use crate::credentials;
use crate::envoy::{ads, file_source};
use crate::gateway::BoundServer;
use crate::mtls;
use crate::{Inputs, ProxyResources};

/// istiod's route table name for an HTTPS server:
/// `https.<port>.<port name>.<gateway>.<namespace>`.
pub(crate) fn route_name(b: &BoundServer) -> String {
    format!(
        "https.{}.{}.{}.{}",
        b.server.port.number,
        b.server.port.name,
        b.gateway.meta.name,
        b.gateway.namespace()
    )
}

/// The server's filter chain, running `filters` on the decrypted stream,
/// with the secrets it names added to `out`; an error says why the server
/// cannot be served.
pub(crate) fn terminating_chain(
    inputs: &Inputs,
    proxy: &Workload,
    bound: &BoundServer,
    filters: Vec<Filter>,
    out: &mut ProxyResources,
) -> Result<FilterChain, String> {
    let tls = bound
        .server
        .tls
        .as_ref()
        .ok_or("an HTTPS server needs tls settings")?;
    let protocol = &bound.server.port.protocol;
    let socket = match tls.mode.as_deref().unwrap_or("PASSTHROUGH") {
        "ISTIO_MUTUAL" => {
            refuse_unserved_checks(tls)?;
            mtls::server_socket(mesh_alpn(protocol))
        }
        mode => user_certificate_socket(inputs, proxy, tls, mode, protocol, out)?,
    };
    Ok(FilterChain {
        filter_chain_match: Some(FilterChainMatch {
            server_names: server_names(&bound.server.hosts),
            ..Default::default()
        }),
        transport_socket: Some(socket),
        filters,
        ..Default::default()
    })
}

/// SIMPLE, MUTUAL and OPTIONAL_MUTUAL: the certificate (and client CAs)
/// the server names, by credential or by files, as SDS secrets added to
/// `out`.
fn user_certificate_socket(
    inputs: &Inputs,
    proxy: &Workload,
    tls: &ServerTls,
    mode: &str,
    protocol: &str,
    out: &mut ProxyResources,
) -> Result<TransportSocket, String> {
    let mutual = match mode {
        "SIMPLE" => None,
        "MUTUAL" => Some(true),
        "OPTIONAL_MUTUAL" => Some(false),
        other => return Err(format!("tls.mode {other} is not supported yet")),
    };
    refuse_unserved_checks(tls)?;
    let secrets = match files(tls, mutual.is_some())? {
        Some(from_files) => from_files,
        None => from_credential(inputs, proxy, tls, mutual.is_some())?,
    };
    let context = DownstreamTlsContext {
        common_tls_context: Some(CommonTlsContext {
            tls_params: Some(tls_params(tls)?),
            alpn_protocols: alpn(protocol),
            tls_certificate_sds_secret_configs: vec![sds(&secrets[0].name)],
            validation_context_type: secrets.get(1).map(|ca| {
                ValidationContextType::CombinedValidationContext(
                    CombinedCertificateValidationContext {
                        default_validation_context: Some(Default::default()),
                        validation_context_sds_secret_config: Some(sds(&ca.name)),
                        ..Default::default()
                    },
                )
            }),
            ..Default::default()
        }),
        require_client_certificate: Some(BoolValue {
            value: mutual == Some(true),
        }),
        ..Default::default()
    };
    for s in secrets {
        if !out.secrets.iter().any(|have| have.name == s.name) {
            out.secrets.push(s);
        }
    }
    Ok(TransportSocket {
        name: "envoy.transport_sockets.tls".into(),
        config_type: Some(transport_socket::ConfigType::TypedConfig(pack_any(context))),
    })
}

/// HTTPS servers offer HTTP/2 and HTTP/1.1, as istiod sets them; a TLS
/// server carries opaque bytes and offers nothing.
fn alpn(protocol: &str) -> Vec<String> {
    if protocol.eq_ignore_ascii_case("HTTPS") {
        vec!["h2".into(), "http/1.1".into()]
    } else {
        Vec::new()
    }
}

/// An ISTIO_MUTUAL server's ALPN, as istiod's: a TLS server also offers
/// the metadata exchange's `istio-peer-exchange`, which the sidecars that
/// call it ask for. A client offering none of these still connects (the
/// proxy then selects no protocol, as Envoy does).
fn mesh_alpn(protocol: &str) -> Vec<String> {
    let mut out = alpn(protocol);
    if protocol.eq_ignore_ascii_case("TLS") {
        out = ["istio-peer-exchange", "h2", "http/1.1"]
            .map(String::from)
            .to_vec();
    }
    out
}

/// The certificate (and, for MUTUAL, the CAs) of `credentialName`'s
/// Secret, checked here.
fn from_credential(
    inputs: &Inputs,
    proxy: &Workload,
    tls: &ServerTls,
    mutual: bool,
) -> Result<Vec<Secret>, String> {
    let name = tls
        .credential_name
        .as_deref()
        .or(tls.credential_names.first().map(String::as_str))
        .ok_or("tls.credentialName (or serverCertificate and privateKey) is required")?;
    let ns = proxy.namespace.as_str();
    let mut secrets = vec![credentials::certificate(inputs.config, ns, name)
        .map_err(|e| format!("tls.credentialName {name:?}: {e}"))?];
    if mutual {
        let ca_name = tls.ca_cert_credential_name.as_deref().unwrap_or(name);
        let ca = credentials::trusted_ca(inputs.config, ns, ca_name)
            .map_err(|e| format!("tls.credentialName {name:?}: {e}"))?;
        secrets.push(ca);
    }
    Ok(secrets)
}

/// Certificates from files on the gateway's machine (`serverCertificate`,
/// `privateKey`, `caCertificates`), when the server names them and no
/// credential: SDS secrets named as istiod names them (`file-cert:`,
/// `file-root:`) that point at the files, which the proxy reads when the
/// secret arrives (a file it cannot read is its NACK).
fn files(tls: &ServerTls, mutual: bool) -> Result<Option<Vec<Secret>>, String> {
    if tls.credential_name.is_some() || !tls.credential_names.is_empty() {
        return Ok(None);
    }
    let (Some(cert), Some(key)) = (&tls.server_certificate, &tls.private_key) else {
        return Ok(None);
    };
    let mut secrets = vec![Secret {
        name: format!("file-cert:{cert}~{key}"),
        r#type: Some(secret::Type::TlsCertificate(TlsCertificate {
            certificate_chain: Some(file_source(cert)),
            private_key: Some(file_source(key)),
            ..Default::default()
        })),
    }];
    if mutual {
        let ca = tls
            .ca_certificates
            .as_deref()
            .ok_or("MUTUAL TLS requires a client CA bundle (tls.caCertificates)")?;
        secrets.push(Secret {
            name: format!("file-root:{ca}"),
            r#type: Some(secret::Type::ValidationContext(
                CertificateValidationContext {
                    trusted_ca: Some(file_source(ca)),
                    ..Default::default()
                },
            )),
        });
    }
    Ok(Some(secrets))
}

/// Checks on the client's certificate that are not built: serving without
/// them would let in clients the user meant to keep out.
fn refuse_unserved_checks(tls: &ServerTls) -> Result<(), String> {
    match tls.unserved_client_checks().first() {
        Some(field) => Err(format!("tls.{field} is not supported yet")),
        None => Ok(()),
    }
}

fn sds(name: &str) -> SdsSecretConfig {
    SdsSecretConfig {
        name: name.into(),
        sds_config: Some(ads()),
    }
}

/// Istio's defaults for gateways: TLS 1.2 at least, the maximum automatic.
fn tls_params(tls: &ServerTls) -> Result<TlsParameters, String> {
    let version = |v: Option<&str>, default: TlsProtocol| -> Result<i32, String> {
        Ok(match v {
            None | Some("TLS_AUTO") => default,
            Some("TLSV1_0") => TlsProtocol::TlSv10,
            Some("TLSV1_1") => TlsProtocol::TlSv11,
            Some("TLSV1_2") => TlsProtocol::TlSv12,
            Some("TLSV1_3") => TlsProtocol::TlSv13,
            Some(other) => return Err(format!("unknown TLS version {other}")),
        } as i32)
    };
    Ok(TlsParameters {
        tls_minimum_protocol_version: version(
            tls.min_protocol_version.as_deref(),
            TlsProtocol::TlSv12,
        )?,
        tls_maximum_protocol_version: version(
            tls.max_protocol_version.as_deref(),
            TlsProtocol::TlsAuto,
        )?,
        cipher_suites: tls.cipher_suites.clone(),
        ..Default::default()
    })
}

/// The SNI names of a server's hosts (`ns/` dropped); `*` matches any
/// name, so a server with it matches on none.
fn server_names(hosts: &[String]) -> Vec<String> {
    let names: Vec<String> = hosts
        .iter()
        .map(|h| h.split_once('/').map_or(h.as_str(), |(_, h)| h).to_string())
        .collect();
    if names.iter().any(|n| n == "*") {
        Vec::new()
    } else {
        names
    }
}

#[cfg(test)]
mod tests {
    use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::secret;

    /// A self-signed certificate and its key, PEM, made by openssl.
    fn pem_pair(tag: &str) -> (String, String) {
        let dir = std::env::temp_dir().join(format!("weft-translate-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let out = std::process::Command::new("openssl")
            .args(["req", "-x509", "-nodes", "-days", "1", "-newkey", "ec"])
            .args([
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-subj",
                "/CN=example.com",
            ])
            .args(["-keyout", "k.pem", "-out", "c.pem"])
            .current_dir(&dir)
            .output()
            .expect("openssl must be installed");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let read = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap();
        let pair = (read("c.pem"), read("k.pem"));
        let _ = std::fs::remove_dir_all(&dir);
        pair
    }

    fn block(pem: &str) -> String {
        pem.lines().map(|l| format!("    {l}\n")).collect()
    }

    fn secret_yaml(name: &str, keys: &[(&str, &str)]) -> String {
        let mut out =
            format!("---\napiVersion: v1\nkind: Secret\nmetadata: {{name: {name}}}\nstringData:\n");
        for (k, v) in keys {
            out.push_str(&format!("  {k}: |\n{}", block(v)));
        }
        out
    }

    fn gateway(mode: &str, credential: &str) -> String {
        format!("apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {{name: gw}}\nspec:\n  selector: {{istio: ingressgateway}}\n  servers:\n  - port: {{number: 443, name: https, protocol: HTTPS}}\n    hosts: [a.example.com, '*/b.example.com']\n    tls: {{mode: {mode}, credentialName: {credential}, minProtocolVersion: TLSV1_3}}\n  - port: {{number: 8080, name: http, protocol: HTTP}}\n    hosts: ['*']\n    tls: {{httpsRedirect: true}}\n---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: vs}}\nspec:\n  hosts: ['*']\n  gateways: [gw]\n  http:\n  - route:\n    - destination: {{host: reviews, port: {{number: 9080}}}}\n")
    }

    /// A DestinationRule's `credentialName` is read on gateways (as in
    /// Istio): the client certificate and CAs go by SDS; a sidecar gets
    /// no endpoints rather than plaintext.
    #[test]
    fn destination_rule_credentials_on_a_gateway() {
        let (cert, key) = pem_pair("dr-credential");
        let config = crate::tests::CONFIG.replace(
            "  host: reviews\n  subsets:",
            "  host: reviews\n  trafficPolicy:\n    tls: {mode: MUTUAL, credentialName: client}\n  subsets:",
        ) + &secret_yaml("client", &[("tls.crt", &cert), ("tls.key", &key), ("ca.crt", &cert)]);
        assert!(config.contains("credentialName: client"));
        let gw = crate::tests::translated_with(&config, 2);
        let names: Vec<&str> = gw.secrets.iter().map(|s| s.name.as_str()).collect();
        assert!(
            names.contains(&"kubernetes://client") && names.contains(&"kubernetes://client-cacert"),
            "{names:?} {:?}",
            gw.problems
        );
    }

    #[test]
    fn certificates_from_files_are_secrets_that_name_the_files() {
        use envoy_types::pb::envoy::config::core::v3::data_source::Specifier;
        let config = gateway("MUTUAL", "x").replace(
            "credentialName: x",
            "serverCertificate: /etc/certs/tls.crt, privateKey: /etc/certs/tls.key, caCertificates: /etc/certs/ca.crt",
        );
        let out = crate::tests::translated_with(&config, 2);
        assert!(out.problems.is_empty(), "{:?}", out.problems);
        let names: Vec<&str> = out.secrets.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "file-cert:/etc/certs/tls.crt~/etc/certs/tls.key",
                "file-root:/etc/certs/ca.crt"
            ]
        );
        let Some(secret::Type::TlsCertificate(c)) = &out.secrets[0].r#type else {
            panic!()
        };
        assert_eq!(
            c.private_key.as_ref().unwrap().specifier,
            Some(Specifier::Filename("/etc/certs/tls.key".into()))
        );
        let without_ca = config.replace(", caCertificates: /etc/certs/ca.crt", "");
        let loaded = weft_config::load_str(&without_ca, "t.yaml");
        assert!(
            loaded.errors().any(|e| e
                .to_string()
                .contains("MUTUAL TLS requires a client CA bundle")),
            "{:?}",
            loaded.problems
        );
    }

    #[test]
    fn https_servers_become_sni_chains_with_sds_secrets() {
        let (cert, key) = pem_pair("sds");
        let (other_cert, _) = pem_pair("sds-other");
        let config = gateway("MUTUAL", "cred")
            + &secret_yaml(
                "cred",
                &[("cert", &cert), ("key", &key), ("cacert", &other_cert)],
            )
            + &secret_yaml("cred-cacert", &[("ca.crt", &cert)]);
        let out = crate::tests::translated_with(&config, 2);
        assert!(out.problems.is_empty(), "{:?}", out.problems);
        let names: Vec<&str> = out.secrets.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["kubernetes://cred", "kubernetes://cred-cacert"]);
        // The -cacert Secret wins over the CA inside the Secret, as in istiod.
        let Some(secret::Type::ValidationContext(v)) = &out.secrets[1].r#type else {
            panic!()
        };
        let inline = v.trusted_ca.as_ref().and_then(|d| d.specifier.clone());
        assert_eq!(
            inline,
            Some(
                envoy_types::pb::envoy::config::core::v3::data_source::Specifier::InlineBytes(
                    cert.clone().into_bytes()
                )
            )
        );
        let https = out
            .listeners
            .iter()
            .find(|l| l.name == "0.0.0.0_443")
            .expect("443 listener");
        assert_eq!(
            https.listener_filters[0].name,
            "envoy.filters.listener.tls_inspector"
        );
        let chain = &https.filter_chains[0];
        let m = chain.filter_chain_match.as_ref().unwrap();
        assert_eq!(m.server_names, ["a.example.com", "b.example.com"]);
        let ctx = first_context(&out, "0.0.0.0_443");
        assert!(ctx.require_client_certificate.unwrap().value);
        let common = ctx.common_tls_context.unwrap();
        assert_eq!(common.alpn_protocols, ["h2", "http/1.1"]);
        assert_eq!(
            common.tls_params.unwrap().tls_minimum_protocol_version,
            super::TlsProtocol::TlSv13 as i32
        );
        let routes: Vec<&str> = out.routes.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(routes, ["https.443.https.gw.default", "http.8080"]);
        let plain = out.routes.iter().find(|r| r.name == "http.8080").unwrap();
        assert_eq!(plain.virtual_hosts[0].require_tls, 2, "httpsRedirect: ALL");
    }

    #[test]
    fn a_server_without_a_usable_secret_is_left_out_and_named() {
        let (cert, key) = pem_pair("bad");
        let (other_cert, _) = pem_pair("bad-other");
        let cases = [
            (
                gateway("SIMPLE", "missing"),
                "Secret default/missing not found",
            ),
            (
                gateway("SIMPLE", "cred") + &secret_yaml("cred", &[("tls.crt", &cert)]),
                "neither tls.crt and tls.key nor cert and key (it has: tls.crt)",
            ),
            (
                gateway("SIMPLE", "cred")
                    + &secret_yaml("cred", &[("tls.crt", &other_cert), ("tls.key", &key)]),
                "does not belong",
            ),
            (
                gateway("MUTUAL", "cred")
                    + &secret_yaml("cred", &[("tls.crt", &cert), ("tls.key", &key)]),
                "MUTUAL needs CA certificates",
            ),
        ];
        for (config, want) in cases {
            let out = crate::tests::translated_with(&config, 2);
            assert!(
                out.problems
                    .iter()
                    .any(|p| p.contains(want) && p.contains("Gateway default/gw: spec.servers[0]")),
                "{want}: {:?}",
                out.problems
            );
            assert!(
                out.listeners.iter().all(|l| l.name != "0.0.0.0_443"),
                "{want}"
            );
            assert!(
                out.listeners.iter().any(|l| l.name == "0.0.0.0_8080"),
                "the other server goes on"
            );
            assert!(out.secrets.is_empty());
        }
    }

    /// The TLS context of a listener's first chain.
    fn first_context(out: &crate::ProxyResources, listener: &str) -> super::DownstreamTlsContext {
        let l = out.listeners.iter().find(|l| l.name == listener).unwrap();
        let ts = l.filter_chains[0].transport_socket.as_ref().unwrap();
        let Some(
            envoy_types::pb::envoy::config::core::v3::transport_socket::ConfigType::TypedConfig(
                any,
            ),
        ) = &ts.config_type
        else {
            panic!()
        };
        prost::Message::decode(any.value.as_slice()).unwrap()
    }

    /// ISTIO_MUTUAL (Istio's "Egress Gateways with TLS Origination"):
    /// the gateway's workload certificate, clients checked against the
    /// mesh's roots and required, the chain matched by the server's hosts
    /// (the calling sidecar's DestinationRule sets that SNI); no secret of
    /// the config's own.
    #[test]
    fn istio_mutual_servers_serve_the_workload_certificate() {
        use super::ValidationContextType;
        let config = gateway("ISTIO_MUTUAL", "x")
            .replace(", credentialName: x, minProtocolVersion: TLSV1_3", "")
            + "---\napiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: tcp}\nspec:\n  selector: {istio: ingressgateway}\n  servers:\n  - port: {number: 15443, name: tls, protocol: TLS}\n    hosts: [db.example.com]\n    tls: {mode: ISTIO_MUTUAL}\n---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: db}\nspec:\n  hosts: [db.example.com]\n  gateways: [tcp]\n  tcp:\n  - route:\n    - destination: {host: reviews, port: {number: 9080}}\n";
        assert!(config.contains("tls: {mode: ISTIO_MUTUAL}"), "{config}");
        let out = crate::tests::translated_with(&config, 2);
        assert!(out.problems.is_empty(), "{:?}", out.problems);
        assert!(out.secrets.is_empty(), "the workload's own secrets");
        let https = out
            .listeners
            .iter()
            .find(|l| l.name == "0.0.0.0_443")
            .unwrap();
        let m = https.filter_chains[0].filter_chain_match.as_ref().unwrap();
        assert_eq!(m.server_names, ["a.example.com", "b.example.com"]);
        let ctx = first_context(&out, "0.0.0.0_443");
        assert!(ctx.require_client_certificate.unwrap().value);
        let common = ctx.common_tls_context.unwrap();
        assert_eq!(common.alpn_protocols, ["h2", "http/1.1"]);
        assert_eq!(common.tls_certificate_sds_secret_configs[0].name, "default");
        let Some(ValidationContextType::CombinedValidationContext(v)) =
            common.validation_context_type
        else {
            panic!()
        };
        assert_eq!(
            v.validation_context_sds_secret_config.unwrap().name,
            "ROOTCA"
        );
        let tcp = first_context(&out, "0.0.0.0_15443")
            .common_tls_context
            .unwrap();
        assert_eq!(
            tcp.alpn_protocols,
            ["istio-peer-exchange", "h2", "http/1.1"]
        );
    }

    /// A TLS server that terminates (SIMPLE) carries opaque bytes: no ALPN
    /// offered, a tcp_proxy from the bound VirtualService's `tcp[]` route.
    #[test]
    fn tls_servers_that_terminate_proxy_tcp() {
        let (cert, key) = pem_pair("tls-tcp");
        let config = String::from("apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: gw}\nspec:\n  selector: {istio: ingressgateway}\n  servers:\n  - port: {number: 15443, name: tls, protocol: TLS}\n    hosts: [db.example.com]\n    tls: {mode: SIMPLE, credentialName: cred}\n---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: vs}\nspec:\n  hosts: [db.example.com]\n  gateways: [gw]\n  tcp:\n  - match:\n    - port: 15443\n    route:\n    - destination: {host: reviews, port: {number: 9080}}\n")
            + &secret_yaml("cred", &[("tls.crt", &cert), ("tls.key", &key)]);
        let out = crate::tests::translated_with(&config, 2);
        assert!(out.problems.is_empty(), "{:?}", out.problems);
        let l = out
            .listeners
            .iter()
            .find(|l| l.name == "0.0.0.0_15443")
            .unwrap();
        let chain = &l.filter_chains[0];
        assert_eq!(
            chain.filter_chain_match.as_ref().unwrap().server_names,
            ["db.example.com"]
        );
        assert_eq!(chain.filters.last().unwrap().name, crate::envoy::TCP_PROXY);
        let ctx = first_context(&out, "0.0.0.0_15443");
        assert!(ctx.common_tls_context.unwrap().alpn_protocols.is_empty());
        assert!(out.routes.is_empty(), "no HTTP route table");
    }
}
