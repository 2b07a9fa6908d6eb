//! The `istio.stats` filter's config (Istio's `stats.PluginConfig`),
//! compiled: per standard metric, whether it is dropped, which tags it
//! loses and which it gains (Telemetry `tagOverrides`), with the gained
//! tags' expressions parsed once here.

use std::sync::Arc;

use envoy_types::pb::google::protobuf::Any;
use serde::Serialize;
use weft_xds::stats_config::PluginConfig;

use super::Reporter;

/// Istio's standard metrics, in `stats.PluginConfig`'s names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum Metric {
    Requests,
    Duration,
    RequestBytes,
    ResponseBytes,
    TcpOpened,
    TcpClosed,
    TcpSent,
    TcpReceived,
    RequestMessages,
    ResponseMessages,
}

const NAMES: [(Metric, &str); 10] = [
    (Metric::Requests, "requests_total"),
    (Metric::Duration, "request_duration_milliseconds"),
    (Metric::RequestBytes, "request_bytes"),
    (Metric::ResponseBytes, "response_bytes"),
    (Metric::TcpOpened, "tcp_connections_opened_total"),
    (Metric::TcpClosed, "tcp_connections_closed_total"),
    (Metric::TcpSent, "tcp_sent_bytes_total"),
    (Metric::TcpReceived, "tcp_received_bytes_total"),
    (Metric::RequestMessages, "request_messages_total"),
    (Metric::ResponseMessages, "response_messages_total"),
];

/// A tag's value (the CEL forms Istio's metric customization task uses).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub enum Expr {
    Literal(String),
    RequestHost,
    RequestMethod,
    RequestPath,
    RequestUrlPath,
    RequestProtocol,
    RequestHeader(String),
    ResponseCode,
    DestinationPort,
}

impl Expr {
    /// Parses one expression; None for a form Weft does not evaluate.
    pub fn parse(text: &str) -> Option<Expr> {
        let t = text.trim();
        let t = t
            .strip_prefix("string(")
            .and_then(|s| s.strip_suffix(')'))
            .unwrap_or(t)
            .trim();
        let quoted = |s: &str| {
            let s = s.trim();
            (s.len() >= 2
                && ((s.starts_with('\'') && s.ends_with('\''))
                    || (s.starts_with('"') && s.ends_with('"'))))
            .then(|| s[1..s.len() - 1].to_string())
        };
        if let Some(lit) = quoted(t) {
            return Some(Expr::Literal(lit));
        }
        if let Some(name) = t
            .strip_prefix("request.headers[")
            .and_then(|s| s.strip_suffix(']'))
            .and_then(quoted)
        {
            return Some(Expr::RequestHeader(name.to_ascii_lowercase()));
        }
        Some(match t {
            "request.host" => Expr::RequestHost,
            "request.method" => Expr::RequestMethod,
            "request.path" => Expr::RequestPath,
            "request.url_path" => Expr::RequestUrlPath,
            "request.protocol" => Expr::RequestProtocol,
            "response.code" => Expr::ResponseCode,
            "destination.port" => Expr::DestinationPort,
            _ => return None,
        })
    }
}

/// One metric's overrides.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Tweak {
    pub drop: bool,
    /// Standard tags it does not carry.
    pub removed: Vec<String>,
    /// Tags it carries besides (or instead of) the standard ones.
    pub extra: Vec<(Arc<str>, Expr)>,
}

impl Tweak {
    pub fn is_plain(&self) -> bool {
        !self.drop && self.removed.is_empty() && self.extra.is_empty()
    }
}

/// A chain's stats: its reporter and each metric's overrides.
#[derive(Debug, Clone, Serialize)]
pub struct StatsCfg {
    pub reporter: Reporter,
    /// The Host header names the service when no cluster does (istiod
    /// turns it off inbound and on gateways).
    pub host_fallback: bool,
    /// How often an open TCP connection's bytes are counted.
    pub tcp_reporting: std::time::Duration,
    tweaks: Vec<(Metric, Tweak)>,
}

/// Istio's stats filter reports open TCP connections this often unless
/// told otherwise.
pub const TCP_REPORTING: std::time::Duration = std::time::Duration::from_secs(15);

impl StatsCfg {
    pub fn plain(reporter: Reporter) -> StatsCfg {
        StatsCfg {
            reporter,
            host_fallback: true,
            tcp_reporting: TCP_REPORTING,
            tweaks: Vec::new(),
        }
    }

    /// A metric's overrides (None: reported as standard).
    pub fn tweak(&self, m: Metric) -> Option<&Tweak> {
        self.tweaks.iter().find(|(k, _)| *k == m).map(|(_, t)| t)
    }

    /// Whether the HTTP metrics are all standard (the fast path).
    pub fn plain_http(&self) -> bool {
        !self.tweaks.iter().any(|(m, _)| {
            matches!(
                m,
                Metric::Requests | Metric::Duration | Metric::RequestBytes | Metric::ResponseBytes
            )
        })
    }

    /// Request headers some tag reads.
    pub fn headers(&self) -> impl Iterator<Item = &str> {
        self.tweaks.iter().flat_map(|(_, t)| {
            t.extra.iter().filter_map(|(_, e)| match e {
                Expr::RequestHeader(h) => Some(h.as_str()),
                _ => None,
            })
        })
    }
}

/// Compiles the filter's config; an empty or absent one is the standard
/// metrics. An expression Weft cannot evaluate makes the tag `unknown`
/// (validation names it when the Telemetry is applied).
pub fn compile(config: Option<&Any>, reporter: Reporter) -> Result<StatsCfg, String> {
    let Some(any) = config.filter(|a| !a.value.is_empty()) else {
        return Ok(StatsCfg::plain(reporter));
    };
    let pc: PluginConfig =
        prost::Message::decode(any.value.as_slice()).map_err(|e| format!("istio.stats: {e}"))?;
    let mut tweaks: Vec<(Metric, Tweak)> = Vec::new();
    for mc in &pc.metrics {
        let targets: Vec<Metric> = if mc.name.is_empty() {
            NAMES.iter().map(|(m, _)| *m).collect()
        } else {
            match NAMES.iter().find(|(_, n)| *n == mc.name) {
                Some((m, _)) => vec![*m],
                // A custom metric: Weft defines none; nothing to tweak.
                None => continue,
            }
        };
        for m in targets {
            let t = match tweaks.iter_mut().find(|(k, _)| *k == m) {
                Some((_, t)) => t,
                None => {
                    tweaks.push((m, Tweak::default()));
                    &mut tweaks.last_mut().expect("pushed").1
                }
            };
            t.drop |= mc.drop;
            t.removed.extend(mc.tags_to_remove.iter().cloned());
            let mut dims: Vec<_> = mc.dimensions.iter().collect();
            dims.sort();
            for (tag, expr) in dims {
                if !super::labels::valid_tag(tag) {
                    continue;
                }
                let parsed = Expr::parse(expr).unwrap_or(Expr::Literal("unknown".into()));
                t.extra.retain(|(k, _)| **k != **tag);
                t.extra.push((tag.as_str().into(), parsed));
            }
        }
    }
    tweaks.retain(|(_, t)| !t.is_plain());
    let tcp_reporting = pc
        .tcp_reporting_duration
        .map(|d| std::time::Duration::new(d.seconds.max(0) as u64, d.nanos.max(0) as u32))
        .filter(|d| !d.is_zero())
        .unwrap_or(TCP_REPORTING);
    Ok(StatsCfg {
        reporter,
        host_fallback: !pc.disable_host_header_fallback,
        tcp_reporting,
        tweaks,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expressions_of_istios_customization_task_parse() {
        assert_eq!(Expr::parse("request.host"), Some(Expr::RequestHost));
        assert_eq!(
            Expr::parse("string(destination.port)"),
            Some(Expr::DestinationPort)
        );
        assert_eq!(
            Expr::parse("request.headers['User-Agent']"),
            Some(Expr::RequestHeader("user-agent".into()))
        );
        assert_eq!(Expr::parse("'v1'"), Some(Expr::Literal("v1".into())));
        assert_eq!(Expr::parse("upstream_peer.labels['x'].value"), None);
    }
}
