//! Semantic rules beyond the schema: what Istio's validation webhook rejects,
//! plus warnings for fields Weft accepts but does not enforce yet.

use crate::error::{Problem, Severity};
use crate::networking::common::MatchForm;
use crate::networking::destination_rule::SIMPLE_LB_POLICIES;
use crate::networking::gateway::PROTOCOLS;
use crate::networking::{DestinationRule, Gateway, StringMatch, VirtualService};
use crate::resource::{Resource, Spec};

mod l4;
mod locality;

/// Collects problems for one resource, each tagged with its field path.
pub(crate) struct Report<'a> {
    resource: &'a Resource,
    problems: Vec<Problem>,
}

impl Report<'_> {
    fn push(&mut self, severity: Severity, field: impl Into<String>, message: impl Into<String>) {
        let field: String = field.into();
        self.problems.push(Problem {
            severity,
            origin: self.resource.origin.clone(),
            resource: Some(format!(
                "{} {}/{}",
                self.resource.kind,
                self.resource.namespace(),
                self.resource.meta.name
            )),
            field: (!field.is_empty()).then_some(field),
            message: message.into(),
        });
    }

    pub(crate) fn error(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.push(Severity::Error, field, message);
    }

    pub(crate) fn namespace(&self) -> String {
        self.resource.namespace().to_string()
    }

    pub(crate) fn warn(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.push(Severity::Warning, field, message);
    }
}

/// `value`, when set, must be one of `allowed` (an enum of Istio's API).
pub(crate) fn one_of(r: &mut Report, at: &str, value: Option<&str>, allowed: &[&str]) {
    if let Some(v) = value {
        if !allowed.contains(&v) {
            r.error(
                at,
                format!(
                    "Unsupported value: {v:?}: use one of {}",
                    allowed.join(", ")
                ),
            );
        }
    }
}

pub(crate) fn validate(resource: &Resource) -> Vec<Problem> {
    let mut r = Report {
        resource,
        problems: Vec::new(),
    };
    validate_meta(&mut r);
    match &resource.spec {
        Spec::VirtualService(vs) => virtual_service(&mut r, vs),
        Spec::DestinationRule(dr) => destination_rule(&mut r, dr),
        Spec::Gateway(gw) => gateway(&mut r, gw),
        Spec::ServiceEntry(se) => crate::networking::service_entry::check_service_entry(&mut r, se),
        Spec::Sidecar(s) => crate::networking::sidecar::check(&mut r, s),
        Spec::WorkloadEntry(we) => {
            crate::networking::service_entry::check_workload_entry(&mut r, we)
        }
        Spec::WorkloadGroup(wg) => {
            crate::networking::service_entry::check_workload_group(&mut r, wg)
        }
        Spec::EnvoyFilter(ef) => crate::networking::envoy_filter::check(&mut r, ef),
        Spec::ProxyConfig(pc) => crate::networking::envoy_filter::check_proxy_config(&mut r, pc),
        Spec::PeerAuthentication(pa) => crate::security::check_peer_authentication(&mut r, pa),
        Spec::RequestAuthentication(ra) => {
            crate::security::check_request_authentication(&mut r, ra)
        }
        Spec::AuthorizationPolicy(ap) => crate::security::check_authorization_policy(&mut r, ap),
        Spec::Telemetry(t) => crate::telemetry::check_telemetry(&mut r, t),
        Spec::WasmPlugin(w) => crate::extensions::check_wasm_plugin(&mut r, w),
        Spec::TrafficExtension(t) => crate::extensions::check_traffic_extension(&mut r, t),
        Spec::GatewayClass(g) => crate::gateway_api::check_gateway_class(&mut r, g),
        Spec::KubeGateway(g) => crate::gateway_api::check_gateway(&mut r, g),
        Spec::HttpRoute(h) => crate::gateway_api::check_http_route(&mut r, h),
        Spec::GrpcRoute(g) => crate::gateway_api::check_grpc_route(&mut r, g),
        Spec::TcpRoute(t) | Spec::TlsRoute(t) => crate::gateway_api::check_backend_route(&mut r, t),
        Spec::ReferenceGrant(g) => crate::gateway_api::check_reference_grant(&mut r, g),
        Spec::Service(svc) => crate::kube::check_service(&mut r, svc),
        Spec::Deployment(d) => crate::kube::check_deployment(&mut r, d),
        Spec::Pod(p) => crate::kube::check_pod(&mut r, p),
        Spec::Namespace(_) | Spec::ServiceAccount(_) | Spec::EndpointSlice(_) | Spec::Secret(_) => {
        }
        Spec::ConfigMap(_) => crate::mesh_config::check(&mut r, resource),
        Spec::Ingress(i) => crate::kube::check_ingress(&mut r, i),
        Spec::IngressClass(_) => {}
    }
    if !resource.kind.is_enforced() && !resource.kind.is_kube() {
        r.warn(
            "",
            format!(
                "{} is validated and stored but not enforced by this version of Weft",
                resource.kind
            ),
        );
    }
    r.problems
}

fn validate_meta(r: &mut Report) {
    let name = r.resource.meta.name.clone();
    if name.is_empty() {
        r.error("metadata.name", "a name is required");
    } else if !is_dns1123_subdomain(&name) {
        r.error(
            "metadata.name",
            format!("{name:?} is not a valid name: lower-case letters, digits, '-' and '.', starting and ending with a letter or digit, at most 253 characters"),
        );
    }
    if let Some(ns) = r.resource.meta.namespace.clone() {
        if !is_dns1123_label(&ns) {
            r.error(
                "metadata.namespace",
                format!("{ns:?} is not a valid namespace name"),
            );
        }
    }
}

fn is_dns1123_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

fn is_dns1123_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_dns1123_label)
}

/// A host as Istio writes it: a DNS name, a short name, `*` or `*.suffix`.
pub(crate) fn host_is_valid(host: &str) -> bool {
    if host == "*" {
        return true;
    }
    let name = host.strip_prefix("*.").unwrap_or(host);
    !name.is_empty()
        && name.len() <= 255
        && name.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

fn virtual_service(r: &mut Report, vs: &VirtualService) {
    // No hosts: a delegate, which only HTTP routes of another VirtualService
    // bring in (Istio's rules).
    if vs.hosts.is_empty() {
        if !vs.gateways.is_empty() {
            r.error(
                "spec.gateways",
                "a delegate VirtualService (no hosts) must not name gateways",
            );
        }
        if !vs.tcp.is_empty() || !vs.tls.is_empty() {
            r.error(
                "spec",
                "a delegate VirtualService (no hosts) may hold HTTP routes only",
            );
        }
        for (i, route) in vs.http.iter().enumerate() {
            if route.delegate.is_some() {
                r.error(
                    format!("spec.http[{i}].delegate"),
                    "a delegate VirtualService cannot delegate again",
                );
            }
        }
    }
    for (i, host) in vs.hosts.iter().enumerate() {
        if !host_is_valid(host) {
            r.error(
                format!("spec.hosts[{i}]"),
                format!("{host:?} is not a valid host: use a DNS name, a short service name, \"*\" or \"*.domain\""),
            );
        } else if host == "*" && vs.gateways.iter().all(|g| g == "mesh") {
            r.error(
                format!("spec.hosts[{i}]"),
                "the wildcard host \"*\" is only allowed for gateways, not for the mesh",
            );
        }
    }
    for (i, route) in vs.http.iter().enumerate() {
        let at = format!("spec.http[{i}]");
        let terminal =
            route.redirect.is_some() || route.direct_response.is_some() || route.delegate.is_some();
        if route.route.is_empty() && !terminal {
            r.error(
                &at,
                "an HTTP route needs a route, redirect, directResponse or delegate",
            );
        }
        for (j, m) in route.matches.iter().enumerate() {
            let at = format!("{at}.match[{j}]");
            for (field, sm) in [
                ("uri", &m.uri),
                ("scheme", &m.scheme),
                ("method", &m.method),
                ("authority", &m.authority),
            ] {
                if let Some(sm) = sm {
                    string_match(r, &format!("{at}.{field}"), sm);
                }
            }
            for (field, map) in [
                ("headers", &m.headers),
                ("withoutHeaders", &m.without_headers),
            ] {
                for (name, sm) in map {
                    if name.is_empty() || name.bytes().any(|b| b.is_ascii_uppercase()) {
                        r.error(
                            format!("{at}.{field}"),
                            format!("header name {name:?} must be non-empty and lower case"),
                        );
                    }
                    presence_or_string_match(r, &format!("{at}.{field}.{name}"), sm);
                }
            }
            for (name, sm) in &m.query_params {
                presence_or_string_match(r, &format!("{at}.queryParams.{name}"), sm);
            }
            for field in m.unenforced_fields() {
                r.warn(
                    format!("{at}.{field}"),
                    "accepted but not enforced by this version of Weft",
                );
            }
        }
        route_weights(r, &at, route.route.iter().map(|d| d.weight));
        for (j, d) in route.route.iter().enumerate() {
            destination(
                r,
                &format!("{at}.route[{j}].destination"),
                &d.destination.host,
                d.destination.subset.as_deref(),
            );
        }
        if let Some(t) = &route.timeout {
            duration_at_least_1ms(r, &format!("{at}.timeout"), &t.0);
        }
        http_policies(r, &at, route);
    }
    l4::routes(r, vs);
}

/// Durations, percentages and statuses of retries, faults and mirrors.
fn http_policies(r: &mut Report, at: &str, route: &crate::networking::HttpRoute) {
    if let Some(per_try) = route
        .retries
        .as_ref()
        .and_then(|v| v.per_try_timeout.as_ref())
    {
        duration_at_least_1ms(r, &format!("{at}.retries.perTryTimeout"), &per_try.0);
    }
    let delay = route.fault.as_ref().and_then(|f| f.delay.as_ref());
    let abort = route.fault.as_ref().and_then(|f| f.abort.as_ref());
    if let Some(d) = delay.and_then(|d| d.fixed_delay.as_ref()) {
        duration_at_least_1ms(r, &format!("{at}.fault.delay.fixedDelay"), &d.0);
    }
    let percentages = [
        (
            "fault.delay.percentage",
            delay.and_then(|d| d.percentage.as_ref()),
        ),
        (
            "fault.abort.percentage",
            abort.and_then(|a| a.percentage.as_ref()),
        ),
        ("mirrorPercentage", route.mirror_percentage.as_ref()),
    ];
    for (name, pct) in percentages {
        if pct.is_some_and(|p| !(0.0..=100.0).contains(&p.value)) {
            r.error(
                format!("{at}.{name}.value"),
                "a percentage is between 0 and 100",
            );
        }
    }
    if let Some(code) = abort.and_then(|a| a.http_status) {
        if !(200..=599).contains(&code) {
            r.error(
                format!("{at}.fault.abort.httpStatus"),
                format!("{code} is not an HTTP status (200-599)"),
            );
        }
    }
    // Istio's rules: a redirect or direct response answers the request
    // itself, so it cannot also forward, rewrite or answer the other way.
    let exclusive = [
        (
            route.redirect.is_some() && !route.route.is_empty(),
            "redirect",
            "route",
        ),
        (
            route.direct_response.is_some() && !route.route.is_empty(),
            "directResponse",
            "route",
        ),
        (
            route.redirect.is_some() && route.direct_response.is_some(),
            "redirect",
            "directResponse",
        ),
        (
            route.redirect.is_some() && route.rewrite.is_some(),
            "redirect",
            "rewrite",
        ),
    ];
    for (both, a, b) in exclusive {
        if both {
            r.error(
                format!("{at}.{a}"),
                format!("an HTTP route cannot have both {a} and {b}"),
            );
        }
    }
    if let Some(rw) = &route.rewrite {
        if rw.uri.is_some() && rw.uri_regex_rewrite.is_some() {
            r.error(
                format!("{at}.rewrite"),
                "uri and uriRegexRewrite are alternatives: set one",
            );
        }
    }
    if delay.is_some_and(|d| d.fixed_delay.is_none()) {
        r.error(
            format!("{at}.fault.delay"),
            "a delay needs fixedDelay (exponentialDelay is not supported, as in Istio)",
        );
    }
    if abort.is_some_and(|a| a.http_status.is_none() && a.grpc_status.is_none()) {
        r.error(
            format!("{at}.fault.abort"),
            "an abort needs httpStatus or grpcStatus (http2Error is not supported)",
        );
    }
    if let Some(redirect) = &route.redirect {
        if redirect.uri.is_some() && redirect.prefix_rewrite.is_some() {
            r.error(
                format!("{at}.redirect"),
                "uri and prefixRewrite are alternatives: set one",
            );
        }
        if redirect.port.is_some() && redirect.derive_port.is_some() {
            r.error(
                format!("{at}.redirect"),
                "port and derivePort are alternatives: set one",
            );
        }
    }
    if route.mirror.is_some() && route.mirrors.is_some() {
        r.error(format!("{at}.mirror"), "set only one of mirror and mirrors");
    }
}

fn destination(r: &mut Report, at: &str, host: &str, subset: Option<&str>) {
    if host.is_empty() {
        r.error(format!("{at}.host"), "a destination needs a host");
    } else if !host_is_valid(host) || host.starts_with('*') {
        r.error(
            format!("{at}.host"),
            format!("{host:?} is not a valid destination host"),
        );
    }
    if subset == Some("") {
        r.error(format!("{at}.subset"), "subset name must not be empty");
    }
}

/// Istio treats weights as relative (Envoy's weighted clusters normalize
/// them); it rejects negative weights and a split whose weights are all zero.
fn route_weights(r: &mut Report, at: &str, weights: impl Iterator<Item = Option<i64>>) {
    let weights: Vec<i64> = weights.map(|w| w.unwrap_or(0)).collect();
    for (j, w) in weights.iter().enumerate() {
        if *w < 0 {
            r.error(
                format!("{at}.route[{j}].weight"),
                format!("weight {w} is negative"),
            );
        }
    }
    let total: i64 = weights.iter().sum();
    if weights.len() > 1 && total == 0 {
        r.error(
            format!("{at}.route"),
            "the destinations' weights add up to 0: no traffic could be sent",
        );
    } else if weights.len() > 1 && total != 100 {
        r.warn(
            format!("{at}.route"),
            format!("the destinations' weights add up to {total}, not 100; they are used as proportions"),
        );
    }
}

/// For headers and query parameters an empty match (`{}`) asks only that
/// the name be present.
fn presence_or_string_match(r: &mut Report, at: &str, sm: &StringMatch) {
    if *sm != StringMatch::default() {
        string_match(r, at, sm);
    }
}

fn string_match(r: &mut Report, at: &str, sm: &StringMatch) {
    match sm.form() {
        None => r.error(at, "set exactly one of exact, prefix or regex"),
        Some(MatchForm::Regex(re)) => {
            // Syntax only: compiling the automaton would cost far more and
            // the proxy compiles it anyway when it applies the route.
            if let Err(e) = regex_syntax::Parser::new().parse(re) {
                r.error(
                    format!("{at}.regex"),
                    format!(
                        "{re:?} is not a valid regular expression: {}",
                        first_line(&e.to_string())
                    ),
                );
            }
        }
        Some(_) => {}
    }
}

/// Enums and durations inside a traffic policy.
fn traffic_details(r: &mut Report, at: &str, tp: &crate::networking::TrafficPolicy) {
    use crate::networking::traffic::CLIENT_TLS_MODES;
    if let Some(mode) = tp.tls.as_ref().and_then(|t| t.mode.as_deref()) {
        if !CLIENT_TLS_MODES.contains(&mode) {
            r.error(
                format!("{at}.tls.mode"),
                format!(
                    "Unsupported value: {mode:?}: use one of {}",
                    CLIENT_TLS_MODES.join(", ")
                ),
            );
        }
    }
    if let Some(pool) = &tp.connection_pool {
        let tcp = pool.tcp.as_ref();
        let http = pool.http.as_ref();
        let durations = [
            (
                "connectionPool.tcp.connectTimeout",
                tcp.and_then(|t| t.connect_timeout.as_ref()),
            ),
            (
                "connectionPool.tcp.maxConnectionDuration",
                tcp.and_then(|t| t.max_connection_duration.as_ref()),
            ),
            (
                "connectionPool.http.idleTimeout",
                http.and_then(|h| h.idle_timeout.as_ref()),
            ),
        ];
        for (name, d) in durations {
            if let Some(d) = d {
                duration_at_least_1ms(r, &format!("{at}.{name}"), &d.0);
            }
        }
        if let Some(p) = http.and_then(|h| h.h2_upgrade_policy.as_deref()) {
            if !["DEFAULT", "DO_NOT_UPGRADE", "UPGRADE"].contains(&p) {
                r.error(
                    format!("{at}.connectionPool.http.h2UpgradePolicy"),
                    format!("Unsupported value: {p:?}"),
                );
            }
        }
    }
    if let Some(od) = &tp.outlier_detection {
        for (name, d) in [
            ("interval", &od.interval),
            ("baseEjectionTime", &od.base_ejection_time),
        ] {
            if let Some(d) = d {
                duration_at_least_1ms(r, &format!("{at}.outlierDetection.{name}"), &d.0);
            }
        }
        if od
            .max_ejection_percent
            .is_some_and(|p| !(0..=100).contains(&p))
        {
            r.error(
                format!("{at}.outlierDetection.maxEjectionPercent"),
                "a percentage is between 0 and 100",
            );
        }
    }
    if let Some(v) = tp
        .proxy_protocol
        .as_ref()
        .and_then(|p| p.version.as_deref())
    {
        if !["V1", "V2"].contains(&v) {
            r.error(
                format!("{at}.proxyProtocol.version"),
                format!("Unsupported value: {v:?}: use V1 or V2"),
            );
        }
    }
}

fn warmup(
    r: &mut Report,
    at: &str,
    lb: &crate::networking::destination_rule::LoadBalancerSettings,
) {
    if let Some(d) = &lb.warmup_duration_secs {
        duration_at_least_1ms(r, &format!("{at}.loadBalancer.warmupDurationSecs"), d);
    }
    let Some(w) = &lb.warmup else { return };
    let here = format!("{at}.loadBalancer.warmup");
    match &w.duration {
        Some(d) => duration_at_least_1ms(r, &format!("{here}.duration"), d),
        None => r.error(
            format!("{here}.duration"),
            "Required value: how long new endpoints warm up",
        ),
    }
    if w.minimum_percent
        .is_some_and(|p| !(0.0..=100.0).contains(&p))
    {
        r.error(
            format!("{here}.minimumPercent"),
            "Invalid value: must be between 0 and 100",
        );
    }
    if w.aggression.is_some_and(|a| a < 0.0) {
        r.error(
            format!("{here}.aggression"),
            "Invalid value: must be 0 or more",
        );
    }
}

fn duration_at_least_1ms(r: &mut Report, at: &str, text: &str) {
    if crate::networking::common::parse_duration(text)
        .is_none_or(|d| d < std::time::Duration::from_millis(1))
    {
        r.error(
            at,
            format!("must be a valid duration greater than 1ms: {text:?}"),
        );
    }
}

fn first_line(s: &str) -> String {
    s.lines().last().unwrap_or(s).trim().to_string()
}

fn destination_rule(r: &mut Report, dr: &DestinationRule) {
    if dr.host.is_empty() {
        r.error("spec.host", "a host is required");
    } else if !host_is_valid(&dr.host) {
        r.error("spec.host", format!("{:?} is not a valid host", dr.host));
    }
    let mut seen = std::collections::BTreeSet::new();
    for (i, subset) in dr.subsets.iter().enumerate() {
        let at = format!("spec.subsets[{i}]");
        if subset.name.is_empty() {
            r.error(format!("{at}.name"), "a subset needs a name");
        } else if !seen.insert(subset.name.as_str()) {
            r.error(
                format!("{at}.name"),
                format!("subset {:?} is defined twice", subset.name),
            );
        }
        if let Some(tp) = &subset.traffic_policy {
            traffic_policy(r, &format!("{at}.trafficPolicy"), tp);
        }
    }
    if let Some(tp) = &dr.traffic_policy {
        traffic_policy(r, "spec.trafficPolicy", tp);
    }
    if dr.workload_selector.is_some() {
        r.warn(
            "spec.workloadSelector",
            "accepted but not enforced by this version of Weft",
        );
    }
}

fn traffic_policy(r: &mut Report, at: &str, tp: &crate::networking::TrafficPolicy) {
    if let Some(lb) = &tp.load_balancer {
        if let Some(simple) = &lb.simple {
            if !SIMPLE_LB_POLICIES.contains(&simple.as_str()) {
                r.error(
                    format!("{at}.loadBalancer.simple"),
                    format!(
                        "{simple:?} is not a load balancer; use one of {}",
                        SIMPLE_LB_POLICIES.join(", ")
                    ),
                );
            }
        }
        if lb.simple.is_some() && lb.consistent_hash.is_some() {
            r.error(
                format!("{at}.loadBalancer"),
                "set only one of simple and consistentHash",
            );
        }
        warmup(r, at, lb);
    }
    traffic_details(r, at, tp);
    locality::check(r, at, tp);
    for (i, p) in tp.port_level_settings.iter().flatten().enumerate() {
        let at = format!("{at}.portLevelSettings[{i}]");
        if p.port
            .as_ref()
            .is_none_or(|s| s.number == 0 || s.number > 65535)
        {
            r.error(
                format!("{at}.port"),
                "portTrafficPolicy must have valid port",
            );
        }
        if p.is_empty() {
            r.error(&at, "port traffic policy must have at least one field");
        }
        traffic_policy(r, &at, &p.as_policy());
    }
    if tp
        .outlier_detection
        .as_ref()
        .is_some_and(|o| !o.outlier_detection_http_error_codes.is_empty())
    {
        r.warn(
            format!("{at}.outlierDetection.outlierDetectionHttpErrorCodes"),
            "sent to proxies as istiod writes it, but Weft's proxy does not implement it yet and rejects the cluster (NACK): the cluster keeps its previous config",
        );
    }
    for field in tp.unenforced_fields() {
        r.warn(
            format!("{at}.{field}"),
            "accepted but not enforced by this version of Weft",
        );
    }
}

fn gateway(r: &mut Report, gw: &Gateway) {
    if gw.servers.is_empty() {
        r.error("spec.servers", "a Gateway needs at least one server");
    }
    for (i, server) in gw.servers.iter().enumerate() {
        let at = format!("spec.servers[{i}]");
        if server.port.number == 0 || server.port.number > 65535 {
            r.error(
                format!("{at}.port.number"),
                format!("{} is not a port number (1-65535)", server.port.number),
            );
        }
        let protocol = server.port.protocol.to_ascii_uppercase();
        if !PROTOCOLS.contains(&protocol.as_str()) {
            r.error(
                format!("{at}.port.protocol"),
                format!(
                    "{:?} is not a protocol; use one of {}",
                    server.port.protocol,
                    PROTOCOLS.join(", ")
                ),
            );
        }
        if server.hosts.is_empty() {
            r.error(format!("{at}.hosts"), "a server needs at least one host");
        }
        for (j, host) in server.hosts.iter().enumerate() {
            let name = host.split_once('/').map_or(host.as_str(), |(_, h)| h);
            if !host_is_valid(name) {
                r.error(
                    format!("{at}.hosts[{j}]"),
                    format!("{host:?} is not a valid host"),
                );
            }
        }
        const TLS_VERSIONS: &[&str] = &["TLS_AUTO", "TLSV1_0", "TLSV1_1", "TLSV1_2", "TLSV1_3"];
        if let Some(tls) = &server.tls {
            one_of(
                r,
                &format!("{at}.tls.minProtocolVersion"),
                tls.min_protocol_version.as_deref(),
                TLS_VERSIONS,
            );
            one_of(
                r,
                &format!("{at}.tls.maxProtocolVersion"),
                tls.max_protocol_version.as_deref(),
                TLS_VERSIONS,
            );
        }
        if let Some(mode) = server.tls.as_ref().and_then(|t| t.mode.as_deref()) {
            let modes = crate::networking::traffic::SERVER_TLS_MODES;
            if !modes.contains(&mode) {
                r.error(
                    format!("{at}.tls.mode"),
                    format!(
                        "Unsupported value: {mode:?}: use one of {}",
                        modes.join(", ")
                    ),
                );
            }
        }
        gateway_tls_gaps(r, &at, &protocol, server.tls.as_ref());
    }
}

/// Istio's rules for where a terminating server's certificates come
/// from: a credential, or files (with the client CAs for MUTUAL).
fn server_certificates(
    r: &mut Report,
    at: &str,
    mode: &str,
    tls: &crate::networking::traffic::ServerTls,
) {
    if tls.credential_name.is_some() || !tls.credential_names.is_empty() {
        return;
    }
    let mode = match mode {
        "OPTIONAL_MUTUAL" => "MUTUAL",
        other => other,
    };
    if !matches!(mode, "SIMPLE" | "MUTUAL") {
        return;
    }
    if tls.server_certificate.is_none() {
        r.error(
            format!("{at}.tls.serverCertificate"),
            format!("{mode} TLS requires a server certificate (or credentialName)"),
        );
    }
    if tls.private_key.is_none() {
        r.error(
            format!("{at}.tls.privateKey"),
            format!("{mode} TLS requires a private key (or credentialName)"),
        );
    }
    if mode == "MUTUAL" && tls.ca_certificates.is_none() {
        r.error(
            format!("{at}.tls.caCertificates"),
            "MUTUAL TLS requires a client CA bundle (or credentialName)",
        );
    }
}

/// ISTIO_MUTUAL serves the gateway's own workload certificate and checks
/// clients against the mesh's roots: as in Istio, a server naming other
/// certificates is an error, not a choice between them.
fn mesh_certificates_only(r: &mut Report, at: &str, tls: &crate::networking::traffic::ServerTls) {
    let named = [
        (
            "serverCertificate",
            "server certificate",
            tls.server_certificate.is_some(),
        ),
        ("privateKey", "private key", tls.private_key.is_some()),
        ("caCertificates", "CA bundle", tls.ca_certificates.is_some()),
        (
            "tlsCertificates",
            "tlsCertificates",
            !tls.tls_certificates.is_empty(),
        ),
        (
            "credentialName",
            "credentialName",
            tls.credential_name.is_some(),
        ),
        (
            "credentialNames",
            "credentialNames",
            !tls.credential_names.is_empty(),
        ),
    ];
    for (field, what, set) in named {
        if set {
            r.error(
                format!("{at}.tls.{field}"),
                format!("ISTIO_MUTUAL TLS cannot have associated {what}"),
            );
        }
    }
}

/// What of a server's TLS Weft does not serve yet.
fn gateway_tls_gaps(
    r: &mut Report,
    at: &str,
    protocol: &str,
    tls: Option<&crate::networking::traffic::ServerTls>,
) {
    const NOT_YET: &str = "accepted but not served by this version of Weft";
    let terminates = matches!(protocol, "HTTPS" | "TLS");
    let Some(tls) = tls else {
        if terminates {
            r.error(
                format!("{at}.tls"),
                format!("a {protocol} server needs tls settings (tls.mode)"),
            );
        }
        return;
    };
    if !terminates {
        return; // httpsRedirect on an HTTP server is served.
    }
    let mode = tls.mode.as_deref().unwrap_or("PASSTHROUGH");
    if mode == "PASSTHROUGH" {
        return; // Routed by SNI; nothing else of tls applies.
    }
    if !matches!(
        mode,
        "SIMPLE" | "MUTUAL" | "OPTIONAL_MUTUAL" | "ISTIO_MUTUAL"
    ) {
        r.warn(
            format!("{at}.tls.mode"),
            format!("{mode} is {NOT_YET}: the server is left out"),
        );
    }
    if mode == "ISTIO_MUTUAL" {
        mesh_certificates_only(r, at, tls);
    }
    server_certificates(r, at, mode, tls);
    // Checks on client certificates cannot be dropped silently: the
    // server is left out instead.
    for field in tls.unserved_client_checks() {
        r.warn(
            format!("{at}.tls.{field}"),
            format!("{NOT_YET}: the server is left out"),
        );
    }
    let ignored = [
        ("ecdhCurves", !tls.ecdh_curves.is_empty()),
        ("credentialNames", tls.credential_names.len() > 1),
    ];
    for (field, set) in ignored {
        if set {
            r.warn(
                format!("{at}.tls.{field}"),
                format!("{NOT_YET} (ignored; the first credential serves)"),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::load::load_str;

    fn problems(spec: &str, kind: &str) -> Vec<String> {
        let doc = format!(
            "apiVersion: networking.istio.io/v1\nkind: {kind}\nmetadata:\n  name: x\nspec:\n{spec}"
        );
        load_str(&doc, "t.yaml")
            .problems
            .iter()
            .map(|p| p.to_string())
            .collect()
    }

    fn has(problems: &[String], needle: &str) -> bool {
        problems.iter().any(|p| p.contains(needle))
    }

    #[test]
    fn semantic_problems_point_at_their_field() {
        let text = "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: x}\nspec:\n  host: r\n  subsets:\n  - name: v1\n  - name: v1\n";
        let l = load_str(text, "dr.yaml");
        let e = l.errors().next().expect("duplicate subset");
        assert_eq!(e.origin.to_string(), "dr.yaml:8:5", "{e}");
    }

    #[test]
    fn bad_regex_is_rejected_with_field() {
        let p = problems("  hosts: [r]\n  http:\n  - match:\n    - uri: {regex: \"(\"}\n    route:\n    - destination: {host: r}\n", "VirtualService");
        assert!(has(&p, "spec.http[0].match[0].uri.regex"), "{p:?}");
        let ok = problems("  hosts: [r]\n  http:\n  - match:\n    - uri: {regex: \"/a.*\"}\n    route:\n    - destination: {host: r}\n", "VirtualService");
        assert!(ok.is_empty(), "{ok:?}");
    }

    #[test]
    fn weights_all_zero_or_negative_are_rejected() {
        let p = problems("  hosts: [r]\n  http:\n  - route:\n    - destination: {host: r, subset: a}\n      weight: -1\n    - destination: {host: r, subset: b}\n      weight: 1\n", "VirtualService");
        assert!(
            has(&p, "spec.http[0].route[0].weight: weight -1 is negative"),
            "{p:?}"
        );
        let p = problems("  hosts: [r]\n  http:\n  - route:\n    - destination: {host: r, subset: a}\n    - destination: {host: r, subset: b}\n", "VirtualService");
        assert!(has(&p, "add up to 0"), "{p:?}");
        let ok = problems("  hosts: [r]\n  http:\n  - route:\n    - destination: {host: r, subset: a}\n      weight: 80\n    - destination: {host: r, subset: b}\n      weight: 20\n", "VirtualService");
        assert!(ok.is_empty(), "{ok:?}");
    }

    #[test]
    fn durations_must_parse_and_be_at_least_1ms() {
        let route = |extra: &str| {
            format!("  hosts: [r]\n  http:\n  - route:\n    - destination: {{host: r}}\n{extra}")
        };
        let p = problems(&route("    timeout: soon\n"), "VirtualService");
        assert!(
            has(&p, "spec.http[0].timeout: must be a valid duration"),
            "{p:?}"
        );
        let p = problems(
            &route("    retries: {attempts: 3, perTryTimeout: 0.0001ms}\n"),
            "VirtualService",
        );
        assert!(has(&p, "spec.http[0].retries.perTryTimeout"), "{p:?}");
        let ok = problems(&route("    timeout: 0.5s\n"), "VirtualService");
        assert!(!has(&ok, "error"), "{ok:?}");
    }

    #[test]
    fn two_match_forms_are_rejected() {
        let p = problems("  hosts: [r]\n  http:\n  - match:\n    - headers:\n        end-user: {exact: a, prefix: b}\n    route:\n    - destination: {host: r}\n", "VirtualService");
        assert!(has(&p, "headers.end-user: set exactly one"), "{p:?}");
    }

    #[test]
    fn mesh_wildcard_host_is_rejected() {
        let p = problems(
            "  hosts: [\"*\"]\n  http:\n  - route:\n    - destination: {host: r}\n",
            "VirtualService",
        );
        assert!(has(&p, "only allowed for gateways"), "{p:?}");
        let ok = problems("  hosts: [\"*\"]\n  gateways: [gw]\n  http:\n  - route:\n    - destination: {host: r}\n", "VirtualService");
        assert!(ok.is_empty(), "{ok:?}");
    }

    #[test]
    fn subsets_need_unique_names() {
        let p = problems(
            "  host: r\n  subsets:\n  - name: v1\n  - name: v1\n  - labels: {a: b}\n",
            "DestinationRule",
        );
        assert!(
            has(&p, "spec.subsets[1].name: subset \"v1\" is defined twice"),
            "{p:?}"
        );
        assert!(
            has(&p, "spec.subsets[2].name: a subset needs a name"),
            "{p:?}"
        );
    }

    #[test]
    fn typed_traffic_policy_rejects_typos_and_bad_values() {
        let p = problems(
            "  host: r\n  trafficPolicy:\n    connectionPool:\n      tcp: {maxConections: 10}\n",
            "DestinationRule",
        );
        assert!(has(&p, "maxConections"), "{p:?}");
        let p = problems("  host: r\n  trafficPolicy:\n    tls: {mode: ISTIO_MUTAL}\n    outlierDetection: {interval: 0s, maxEjectionPercent: 150}\n", "DestinationRule");
        assert!(
            has(&p, "spec.trafficPolicy.tls.mode: Unsupported value"),
            "{p:?}"
        );
        assert!(
            has(&p, "outlierDetection.interval: must be a valid duration"),
            "{p:?}"
        );
        assert!(has(&p, "outlierDetection.maxEjectionPercent"), "{p:?}");
        let ok = problems("  host: r\n  trafficPolicy:\n    connectionPool: {tcp: {maxConnections: 10, connectTimeout: 30ms}, http: {http2MaxRequests: 100}}\n    tls: {mode: ISTIO_MUTUAL}\n", "DestinationRule");
        assert!(!has(&ok, "error"), "{ok:?}");
    }

    #[test]
    fn traffic_extension_needs_exactly_one_of_wasm_or_lua() {
        let doc = |spec: &str| {
            format!("apiVersion: extensions.istio.io/v1alpha1\nkind: TrafficExtension\nmetadata: {{name: x}}\nspec:\n{spec}")
        };
        let errors = |spec: &str| -> Vec<String> {
            load_str(&doc(spec), "t.yaml")
                .errors()
                .map(|e| e.to_string())
                .collect()
        };
        let neither = errors("  phase: AUTHN\n");
        assert!(
            neither
                .iter()
                .any(|e| e.contains("exactly one of wasm or lua")),
            "{neither:?}"
        );
        let both = errors("  wasm: {url: oci://x/y}\n  lua: {inlineCode: x}\n");
        assert!(
            both.iter()
                .any(|e| e.contains("exactly one of wasm or lua")),
            "{both:?}"
        );
        let empty_lua = errors("  lua: {inlineCode: ''}\n");
        assert!(
            empty_lua.iter().any(|e| e.contains("spec.lua.inlineCode")),
            "{empty_lua:?}"
        );
        let bad_url = errors("  wasm: {url: 'ftp://x/y'}\n");
        assert!(
            bad_url.iter().any(|e| e.contains("spec.wasm.url")),
            "{bad_url:?}"
        );
        assert!(errors("  lua: {inlineCode: 'function envoy_on_request(h) end'}\n").is_empty());
        assert!(errors("  targetRefs: [{kind: Service, name: reviews}]\n  wasm: {url: oci://x/y, vmConfig: {env: [{name: A, value: b}]}}\n").is_empty());
    }

    #[test]
    fn enums_of_every_kind_are_checked() {
        let doc = |api: &str, kind: &str, spec: &str| {
            format!("apiVersion: {api}\nkind: {kind}\nmetadata: {{name: x}}\nspec:\n{spec}")
        };
        let cases = [
            (doc("networking.istio.io/v1", "ServiceEntry", "  hosts: [a.example]\n  location: MESH_ELSEWHERE\n"), "spec.location"),
            (doc("extensions.istio.io/v1alpha1", "WasmPlugin", "  url: oci://x/y\n  phase: LATE\n"), "spec.phase"),
            (doc("extensions.istio.io/v1alpha1", "TrafficExtension", "  phase: LATE\n  lua: {inlineCode: x}\n"), "spec.phase"),
            (doc("telemetry.istio.io/v1", "Telemetry", "  metrics:\n  - overrides:\n    - match: {metric: REQUEST_COUNTS}\n"), "match.metric"),
            (doc("networking.istio.io/v1", "Gateway", "  servers:\n  - port: {number: 443, name: https, protocol: HTTPS}\n    hosts: ['*']\n    tls: {mode: SIMPLE, credentialName: cred, minProtocolVersion: TLSV1_4}\n"), "tls.minProtocolVersion"),
            (doc("security.istio.io/v1", "RequestAuthentication", "  jwtRules:\n  - jwksUri: https://x/jwks\n"), "jwtRules[0].issuer"),
        ];
        for (text, field) in cases {
            let l = load_str(&text, "e.yaml");
            let errors: Vec<String> = l.errors().map(|e| e.to_string()).collect();
            assert!(
                errors.iter().any(|e| e.contains(field)),
                "{field}: {errors:?}"
            );
            let fixed = load_str(
                &text
                    .replace("MESH_ELSEWHERE", "MESH_EXTERNAL")
                    .replace("LATE", "AUTHN")
                    .replace("REQUEST_COUNTS", "REQUEST_COUNT")
                    .replace("TLSV1_4", "TLSV1_2")
                    .replace("- jwksUri", "- issuer: https://x\n    jwksUri"),
                "e.yaml",
            );
            assert!(!fixed.has_errors(), "{field}: {:?}", fixed.problems);
        }
    }

    #[test]
    fn lb_policy_enum() {
        let p = problems(
            "  host: r\n  trafficPolicy:\n    loadBalancer:\n      simple: FASTEST\n",
            "DestinationRule",
        );
        assert!(has(&p, "loadBalancer.simple"), "{p:?}");
    }

    #[test]
    fn gateway_servers() {
        let p = problems("  selector: {istio: ingressgateway}\n  servers:\n  - port: {number: 70000, name: http, protocol: SMTP}\n    hosts: []\n", "Gateway");
        assert!(has(&p, "port.number"), "{p:?}");
        assert!(has(&p, "port.protocol"), "{p:?}");
        assert!(has(&p, "spec.servers[0].hosts"), "{p:?}");
    }

    /// An Ingress as the API server checks it; the task's loads clean.
    #[test]
    fn ingress_paths_and_backends() {
        let ingress = |path: &str| {
            format!("apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n  name: ingress\n  annotations: {{kubernetes.io/ingress.class: istio}}\nspec:\n  rules:\n  - host: httpbin.example.com\n    http:\n      paths:\n{path}")
        };
        let ok = ingress("      - path: /status\n        pathType: Prefix\n        backend: {service: {name: httpbin, port: {number: 8000}}}\n");
        let l = load_str(&ok, "i.yaml");
        assert!(l.problems.is_empty(), "{:?}", l.problems);
        assert_eq!(l.resources[0].kind, crate::Kind::Ingress);
        let cases = [
            ("      - path: /status\n        backend: {service: {name: httpbin, port: {number: 8000}}}\n", "paths[0].pathType"),
            ("      - path: status\n        pathType: Exact\n        backend: {service: {name: httpbin, port: {number: 8000}}}\n", "must be an absolute path"),
            ("      - path: /\n        pathType: Prefix\n        backend: {service: {name: httpbin, port: {number: 8000, name: http}}}\n", "backend.service.port"),
            ("      - path: /\n        pathType: Prefix\n        backend: {}\n", "exactly one of `service` or `resource`"),
        ];
        for (path, want) in cases {
            let l = load_str(&ingress(path), "i.yaml");
            let errors: Vec<String> = l.errors().map(|e| e.to_string()).collect();
            assert!(
                errors.iter().any(|e| e.contains(want)),
                "{want}: {errors:?}"
            );
        }
    }

    /// Istio's rule: an ISTIO_MUTUAL server names no certificate of its
    /// own (it serves the gateway's workload certificate).
    #[test]
    fn istio_mutual_servers_name_no_certificates() {
        let server = |tls: &str| {
            format!("  selector: {{istio: egressgateway}}\n  servers:\n  - port: {{number: 80, name: https, protocol: HTTPS}}\n    hosts: [edition.cnn.com]\n    tls: {{mode: ISTIO_MUTUAL{tls}}}\n")
        };
        assert_eq!(problems(&server(""), "Gateway"), Vec::<String>::new());
        let p = problems(
            &server(", credentialName: c, serverCertificate: /c.pem, privateKey: /k.pem, caCertificates: /ca.pem"),
            "Gateway",
        );
        for field in [
            "credentialName",
            "serverCertificate",
            "privateKey",
            "caCertificates",
        ] {
            assert!(
                p.iter()
                    .any(|e| e.contains(&format!("spec.servers[0].tls.{field}"))
                        && e.contains("ISTIO_MUTUAL TLS cannot have associated")),
                "{field}: {p:?}"
            );
        }
    }

    #[test]
    fn unenforced_fields_warn_but_load() {
        let text = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: x}\nspec:\n  hosts: [r]\n  http:\n  - fault: {abort: {httpStatus: 500, percentage: {value: 100}}}\n    match: [{statPrefix: x}]\n    mirror: {host: r}\n    route:\n    - destination: {host: r}\n";
        let l = load_str(text, "t.yaml");
        assert_eq!(l.resources.len(), 1);
        let said = |needle: &str| l.problems.iter().any(|p| p.to_string().contains(needle));
        assert!(said(
            "spec.http[0].match[0].statPrefix: accepted but not enforced"
        ));
        assert!(
            !said("http[0].fault"),
            "fault is enforced: {:?}",
            l.problems
        );
    }
}
