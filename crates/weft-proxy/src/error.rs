//! Why a request or connection did not get what it asked for, and the one
//! place that maps each reason to Envoy's status, body and response flag.
//!
//! Flags are a bit set: a request can carry several (a delayed request that
//! then timed out is `DI,UT`), and they print in Envoy's own order so access
//! logs read as Envoy's do.

use http::StatusCode;

/// Envoy's response flags, in the order Envoy prints them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub(crate) struct Flags(u32);

impl Flags {
    pub const NO_HEALTHY_UPSTREAM: Flags = Flags(1 << 0); // UH
    pub const UPSTREAM_TIMEOUT: Flags = Flags(1 << 1); // UT
    pub const CONNECT_FAILURE: Flags = Flags(1 << 2); // UF
    pub const CONNECTION_TERMINATION: Flags = Flags(1 << 3); // UC
    pub const OVERFLOW: Flags = Flags(1 << 4); // UO
    pub const NO_ROUTE: Flags = Flags(1 << 5); // NR
    pub const DELAY_INJECTED: Flags = Flags(1 << 6); // DI
    pub const FAULT_INJECTED: Flags = Flags(1 << 7); // FI
    pub const DOWNSTREAM_TERMINATION: Flags = Flags(1 << 8); // DC
    pub const RETRY_LIMIT_EXCEEDED: Flags = Flags(1 << 9); // URX
    pub const NO_CLUSTER: Flags = Flags(1 << 10); // NC
    pub const DURATION_TIMEOUT: Flags = Flags(1 << 11); // DT
    pub const RBAC_DENIED: Flags = Flags(1 << 12); // RBAC
    pub const EXT_AUTHZ_DENIED: Flags = Flags(1 << 13); // UAEX
    pub const UPSTREAM_PROTOCOL_ERROR: Flags = Flags(1 << 14); // UPE
    pub const STREAM_IDLE_TIMEOUT: Flags = Flags(1 << 15); // SI
    pub const DOWNSTREAM_PROTOCOL_ERROR: Flags = Flags(1 << 16); // DPE

    const NAMES: [&'static str; 17] = [
        "UH", "UT", "UF", "UC", "UO", "NR", "DI", "FI", "DC", "URX", "NC", "DT", "RBAC", "UAEX",
        "UPE", "SI", "DPE",
    ];

    pub fn insert(&mut self, other: Flags) {
        self.0 |= other.0;
    }

    #[cfg(test)]
    pub fn contains(self, other: Flags) -> bool {
        self.0 & other.0 == other.0
    }

    pub fn intersects(self, other: Flags) -> bool {
        self.0 & other.0 != 0
    }

    /// The flag Envoy prints as `name` (`UF`, `NR`, …).
    pub fn named(name: &str) -> Option<Flags> {
        let bit = Flags::NAMES.iter().position(|n| *n == name)?;
        Some(Flags(1 << bit))
    }
}

impl std::fmt::Display for Flags {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.0 == 0 {
            return f.write_str("-");
        }
        let mut first = true;
        for (bit, name) in Flags::NAMES.iter().enumerate() {
            if self.0 & (1 << bit) != 0 {
                if !first {
                    f.write_str(",")?;
                }
                f.write_str(name)?;
                first = false;
            }
        }
        Ok(())
    }
}

/// Every way the proxy answers a request itself instead of with an
/// upstream's response.
#[derive(Debug)]
pub(crate) enum ProxyError {
    /// No virtual host or route matched.
    NoRoute,
    /// The route names a cluster this proxy does not have.
    NoCluster,
    /// The cluster has no endpoint to send to.
    NoHealthyUpstream,
    /// No connection could be made.
    ConnectFailure(std::io::Error),
    /// The connection failed after the request was handed to it.
    ConnectionTermination(crate::upstream::BoxError),
    /// The upstream's response broke HTTP (Envoy's `protocol_error` reset).
    UpstreamProtocol(crate::upstream::BoxError),
    /// The route's timeout (or the last try's timeout) passed.
    UpstreamTimeout,
    /// The stream's own deadline (a gRPC `grpc-timeout` under
    /// `max_stream_duration`) passed.
    StreamTimeout,
    /// A circuit breaker's limit (connections, pending or active requests).
    Overflow,
    /// The fault filter aborted the request with this status.
    FaultAbort(StatusCode),
    /// The fault filter aborted a gRPC request with this gRPC status.
    GrpcFaultAbort(u32),
    /// Reading the request body from the client failed.
    DownstreamBody,
    /// The request, whole, waited for its response past the connection
    /// manager's `stream_idle_timeout`.
    StreamIdle,
    /// The client's upload sent nothing for the `stream_idle_timeout`
    /// before any response (Envoy answers 408 while the request is not
    /// whole).
    UploadIdle,
}

impl ProxyError {
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::NoRoute => StatusCode::NOT_FOUND,
            ProxyError::DownstreamBody => StatusCode::BAD_REQUEST,
            ProxyError::UploadIdle => StatusCode::REQUEST_TIMEOUT,
            // Envoy's stream idle timeout on a request it has whole.
            ProxyError::UpstreamTimeout | ProxyError::StreamTimeout | ProxyError::StreamIdle => {
                StatusCode::GATEWAY_TIMEOUT
            }
            ProxyError::FaultAbort(s) => *s,
            // gRPC carries its status in `grpc-status`, on an HTTP 200.
            ProxyError::GrpcFaultAbort(_) => StatusCode::OK,
            // Envoy's router answers an upstream protocol error with 502.
            ProxyError::UpstreamProtocol(_) => StatusCode::BAD_GATEWAY,
            _ => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    pub fn flag(&self) -> Flags {
        match self {
            ProxyError::NoRoute => Flags::NO_ROUTE,
            ProxyError::DownstreamBody => Flags::DOWNSTREAM_TERMINATION,
            ProxyError::NoCluster => Flags::NO_CLUSTER,
            ProxyError::NoHealthyUpstream => Flags::NO_HEALTHY_UPSTREAM,
            ProxyError::ConnectFailure(_) => Flags::CONNECT_FAILURE,
            ProxyError::ConnectionTermination(_) => Flags::CONNECTION_TERMINATION,
            ProxyError::UpstreamProtocol(_) => Flags::UPSTREAM_PROTOCOL_ERROR,
            ProxyError::UpstreamTimeout => Flags::UPSTREAM_TIMEOUT,
            ProxyError::StreamTimeout => Flags::DURATION_TIMEOUT,
            ProxyError::StreamIdle | ProxyError::UploadIdle => Flags::STREAM_IDLE_TIMEOUT,
            ProxyError::Overflow => Flags::OVERFLOW,
            ProxyError::FaultAbort(_) | ProxyError::GrpcFaultAbort(_) => Flags::FAULT_INJECTED,
        }
    }

    /// The body of Envoy's local reply for this reason.
    pub fn body(&self) -> &'static str {
        match self {
            ProxyError::NoHealthyUpstream => "no healthy upstream",
            ProxyError::ConnectFailure(_) => {
                "upstream connect error or disconnect/reset before headers. reset reason: connection failure"
            }
            ProxyError::ConnectionTermination(_) => {
                "upstream connect error or disconnect/reset before headers. reset reason: connection termination"
            }
            ProxyError::UpstreamProtocol(_) => {
                "upstream connect error or disconnect/reset before headers. reset reason: protocol error"
            }
            ProxyError::UpstreamTimeout => "upstream request timeout",
            ProxyError::StreamTimeout => "downstream duration timeout",
            ProxyError::StreamIdle | ProxyError::UploadIdle => "stream timeout",
            ProxyError::Overflow => {
                "upstream connect error or disconnect/reset before headers. reset reason: overflow"
            }
            ProxyError::FaultAbort(_) | ProxyError::GrpcFaultAbort(_) => "fault filter abort",
            ProxyError::NoRoute | ProxyError::NoCluster | ProxyError::DownstreamBody => "",
        }
    }

    /// The gRPC status Envoy sets itself, where it does not map the HTTP
    /// status.
    pub fn grpc_status(&self) -> Option<u32> {
        match self {
            ProxyError::GrpcFaultAbort(code) => Some(*code),
            ProxyError::StreamTimeout => Some(4), // DEADLINE_EXCEEDED
            _ => None,
        }
    }

    /// Envoy's response code details for this reply.
    pub fn details(&self) -> &'static str {
        match self {
            ProxyError::NoRoute => "route_not_found",
            ProxyError::NoCluster => "cluster_not_found",
            ProxyError::NoHealthyUpstream => "no_healthy_upstream",
            ProxyError::ConnectFailure(_) => {
                "upstream_reset_before_response_started{connection_failure}"
            }
            ProxyError::ConnectionTermination(_) => {
                "upstream_reset_before_response_started{connection_termination}"
            }
            ProxyError::UpstreamProtocol(_) => {
                "upstream_reset_before_response_started{protocol_error}"
            }
            ProxyError::UpstreamTimeout => "upstream_response_timeout",
            ProxyError::StreamTimeout => "max_duration_timeout",
            ProxyError::StreamIdle | ProxyError::UploadIdle => "stream_idle_timeout",
            ProxyError::Overflow => "upstream_reset_before_response_started{overflow}",
            ProxyError::FaultAbort(_) | ProxyError::GrpcFaultAbort(_) => "fault_filter_abort",
            ProxyError::DownstreamBody => "downstream_remote_disconnect",
        }
    }

    /// Why the upstream connection failed, in the error's own words (the
    /// access log's `%UPSTREAM_TRANSPORT_FAILURE_REASON%`).
    pub fn transport_failure(&self) -> Option<String> {
        match self {
            ProxyError::ConnectFailure(e) => Some(e.to_string()),
            ProxyError::ConnectionTermination(e) | ProxyError::UpstreamProtocol(e) => {
                Some(e.to_string())
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Flags;

    #[test]
    fn flags_print_in_envoys_order() {
        assert_eq!(Flags::default().to_string(), "-");
        let mut f = Flags::RETRY_LIMIT_EXCEEDED;
        f.insert(Flags::CONNECT_FAILURE);
        assert_eq!(f.to_string(), "UF,URX");
        let mut f = Flags::UPSTREAM_TIMEOUT;
        f.insert(Flags::DELAY_INJECTED);
        assert_eq!(f.to_string(), "UT,DI");
        assert!(f.contains(Flags::DELAY_INJECTED));
    }
}
