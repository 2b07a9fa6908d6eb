//! Small constructors for Envoy messages that every builder needs.

use envoy_types::pb::envoy::config::core::v3::{
    address, config_source, socket_address, Address, AggregatedConfigSource, ApiVersion,
    ConfigSource, SocketAddress,
};
use envoy_types::pb::envoy::config::listener::v3::{filter, Filter};
use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
use envoy_types::pb::envoy::extensions::filters::http::cors::v3::Cors;
use envoy_types::pb::envoy::extensions::filters::http::fault::v3::HttpFault;
use envoy_types::pb::envoy::extensions::filters::http::router::v3::Router;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    http_connection_manager, http_connection_manager::RouteSpecifier, http_filter,
    HttpConnectionManager, HttpFilter, Rds,
};
use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::{tcp_proxy, TcpProxy};
use envoy_types::util::pack_any;

pub const HCM: &str = "envoy.filters.network.http_connection_manager";
pub const TCP_PROXY: &str = "envoy.filters.network.tcp_proxy";
pub const ROUTER: &str = "envoy.filters.http.router";
pub const CORS: &str = "envoy.filters.http.cors";

/// Envoy's `tls_inspector`: reads SNI and ALPN so chains can match them.
pub fn tls_inspector() -> envoy_types::pb::envoy::config::listener::v3::ListenerFilter {
    use envoy_types::pb::envoy::config::listener::v3::{listener_filter, ListenerFilter};
    use envoy_types::pb::envoy::extensions::filters::listener::tls_inspector::v3::TlsInspector;
    ListenerFilter {
        name: "envoy.filters.listener.tls_inspector".into(),
        config_type: Some(listener_filter::ConfigType::TypedConfig(pack_any(
            TlsInspector::default(),
        ))),
        ..Default::default()
    }
}

/// A data source that is a file on the proxy's machine.
pub(crate) fn file_source(path: &str) -> envoy_types::pb::envoy::config::core::v3::DataSource {
    envoy_types::pb::envoy::config::core::v3::DataSource {
        specifier: Some(
            envoy_types::pb::envoy::config::core::v3::data_source::Specifier::Filename(
                path.to_string(),
            ),
        ),
        ..Default::default()
    }
}

pub fn socket(ip: &str, port: u32) -> Address {
    Address {
        address: Some(address::Address::SocketAddress(SocketAddress {
            address: ip.to_string(),
            port_specifier: Some(socket_address::PortSpecifier::PortValue(port)),
            ..Default::default()
        })),
    }
}

pub fn ads() -> ConfigSource {
    ConfigSource {
        config_source_specifier: Some(config_source::ConfigSourceSpecifier::Ads(
            AggregatedConfigSource {},
        )),
        resource_api_version: ApiVersion::V3 as i32,
        ..Default::default()
    }
}

fn http_filter(name: &str, config: envoy_types::pb::google::protobuf::Any) -> HttpFilter {
    HttpFilter {
        name: name.into(),
        config_type: Some(http_filter::ConfigType::TypedConfig(config)),
        ..Default::default()
    }
}

/// The HTTP filters istiod puts in every connection manager, in its order:
/// fault and CORS (configured per route), then the router.
fn http_filters() -> Vec<HttpFilter> {
    vec![
        http_filter(crate::policies::FAULT, pack_any(HttpFault::default())),
        http_filter(CORS, pack_any(Cors::default())),
        http_filter(ROUTER, pack_any(Router::default())),
    ]
}

/// An HTTP connection manager that takes its routes from RDS.
pub fn hcm_rds(stat_prefix: &str, route_name: &str) -> Filter {
    hcm(
        stat_prefix,
        RouteSpecifier::Rds(Rds {
            config_source: Some(ads()),
            route_config_name: route_name.into(),
        }),
    )
}

/// An HTTP connection manager with its routes inline (a sidecar's
/// inbound chains), which tells the app who called over mTLS in
/// `x-forwarded-client-cert` (istiod's APPEND_FORWARD, with subject, URI
/// and DNS).
pub fn hcm_inline(stat_prefix: &str, routes: RouteConfiguration) -> Filter {
    use http_connection_manager::{ForwardClientCertDetails, SetCurrentClientCertDetails};
    let mut f = hcm(stat_prefix, RouteSpecifier::RouteConfig(routes));
    edit_hcm(&mut f, |m| {
        m.forward_client_cert_details = ForwardClientCertDetails::AppendForward as i32;
        m.set_current_client_cert_details = Some(SetCurrentClientCertDetails {
            subject: Some(envoy_types::pb::google::protobuf::BoolValue { value: true }),
            dns: true,
            uri: true,
            ..Default::default()
        });
    });
    f
}

/// A gateway's connection manager, as istiod's: the edge of the mesh
/// (`use_remote_address`; the client's address is taken `trusted_hops`
/// proxies back in `x-forwarded-for`), and a client's own
/// `x-forwarded-client-cert` is replaced (SANITIZE_SET).
pub fn gateway_hcm(stat_prefix: &str, route_name: &str, trusted_hops: u32) -> Filter {
    let mut f = hcm_rds(stat_prefix, route_name);
    edit_hcm(&mut f, |m| {
        m.use_remote_address = Some(envoy_types::pb::google::protobuf::BoolValue { value: true });
        m.xff_num_trusted_hops = trusted_hops;
        m.forward_client_cert_details =
            http_connection_manager::ForwardClientCertDetails::SanitizeSet as i32;
    });
    f
}

fn edit_hcm(f: &mut Filter, edit: impl FnOnce(&mut HttpConnectionManager)) {
    if let Some(filter::ConfigType::TypedConfig(any)) = &mut f.config_type {
        if let Ok(mut m) = <HttpConnectionManager as prost::Message>::decode(any.value.as_slice()) {
            edit(&mut m);
            *any = pack_any(m);
        }
    }
}

/// The connection manager of a proxyless gRPC client's listener: routes
/// from RDS, and only the filters gRPC runs (fault, router), as istiod's
/// gRPC generator writes it.
pub fn grpc_connection_manager(route_name: &str) -> HttpConnectionManager {
    HttpConnectionManager {
        route_specifier: Some(RouteSpecifier::Rds(Rds {
            config_source: Some(ads()),
            route_config_name: route_name.into(),
        })),
        http_filters: vec![
            http_filter(crate::policies::FAULT, pack_any(HttpFault::default())),
            http_filter(ROUTER, pack_any(Router::default())),
        ],
        ..Default::default()
    }
}

fn hcm(stat_prefix: &str, routes: RouteSpecifier) -> Filter {
    let manager = HttpConnectionManager {
        stat_prefix: stat_prefix.into(),
        route_specifier: Some(routes),
        http_filters: http_filters(),
        // istiod lets WebSocket upgrades through every connection manager.
        upgrade_configs: vec![http_connection_manager::UpgradeConfig {
            upgrade_type: "websocket".into(),
            ..Default::default()
        }],
        ..Default::default()
    };
    Filter {
        name: HCM.into(),
        config_type: Some(filter::ConfigType::TypedConfig(pack_any(manager))),
    }
}

pub fn tcp_proxy(stat_prefix: &str, cluster: &str) -> Filter {
    tcp_proxy_to(
        stat_prefix.into(),
        tcp_proxy::ClusterSpecifier::Cluster(cluster.into()),
        None,
    )
}

/// A tcp_proxy to one cluster or weighted clusters; no idle timeout is
/// Envoy's default of one hour.
pub fn tcp_proxy_to(
    stat_prefix: String,
    specifier: tcp_proxy::ClusterSpecifier,
    idle_timeout: Option<envoy_types::pb::google::protobuf::Duration>,
) -> Filter {
    let proxy = TcpProxy {
        stat_prefix,
        cluster_specifier: Some(specifier),
        idle_timeout,
        ..Default::default()
    };
    Filter {
        name: TCP_PROXY.into(),
        config_type: Some(filter::ConfigType::TypedConfig(pack_any(proxy))),
    }
}

/// Puts `filters` at the front of the HTTP filters of every connection
/// manager in `chain` (policies run before everything else).
pub(crate) fn prepend_http_filters(
    chain: &mut envoy_types::pb::envoy::config::listener::v3::FilterChain,
    filters: &[HttpFilter],
) {
    use envoy_types::pb::envoy::config::listener::v3::filter;
    for f in chain.filters.iter_mut() {
        let Some(filter::ConfigType::TypedConfig(any)) = &mut f.config_type else {
            continue;
        };
        if !any.type_url.ends_with(".HttpConnectionManager") {
            continue;
        }
        let Ok(mut hcm) = <HttpConnectionManager as prost::Message>::decode(any.value.as_slice())
        else {
            continue;
        };
        let mut all = filters.to_vec();
        all.append(&mut hcm.http_filters);
        hcm.http_filters = all;
        *any = pack_any(hcm);
    }
}

/// Runs `f` on the connection manager of every chain of `l` that ends in
/// one, and writes each back.
pub(crate) fn edit_connection_managers(
    l: &mut envoy_types::pb::envoy::config::listener::v3::Listener,
    mut f: impl FnMut(&mut HttpConnectionManager),
) {
    for chain in &mut l.filter_chains {
        let Some(last) = chain.filters.last_mut() else {
            continue;
        };
        let Some(filter::ConfigType::TypedConfig(any)) = &mut last.config_type else {
            continue;
        };
        if !any.type_url.ends_with(".HttpConnectionManager") {
            continue;
        }
        if let Ok(mut h) = <HttpConnectionManager as prost::Message>::decode(any.value.as_slice()) {
            f(&mut h);
            *any = pack_any(h);
        }
    }
}
