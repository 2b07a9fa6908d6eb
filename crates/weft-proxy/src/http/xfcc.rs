//! `x-forwarded-client-cert` as Envoy's connection manager writes it
//! (`forward_client_cert_details`): Istio's sidecars append the mTLS
//! client's details on inbound (`APPEND_FORWARD` with subject, URI and
//! DNS), so an app sees who called it —
//! `By=<own id>;Hash=<client cert SHA-256>;Subject="";URI=<client id>`.
//! Without a client certificate the header is removed (sanitized), so a
//! plaintext client cannot forge one.

use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    http_connection_manager::ForwardClientCertDetails as Mode, HttpConnectionManager,
};
use http::{HeaderName, HeaderValue, Request};
use serde::Serialize;

/// Named once: a `&str` key is parsed on every lookup.
const HEADER: HeaderName = HeaderName::from_static("x-forwarded-client-cert");

#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub enum Action {
    /// Remove the header (Envoy's default).
    #[default]
    Sanitize,
    /// Keep what came, over mTLS only.
    ForwardOnly,
    /// Add this hop's client, over mTLS only.
    AppendForward,
    /// Replace with this hop's client, over mTLS only.
    SanitizeSet,
    /// Keep what came, always.
    AlwaysForwardOnly,
}

#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Xfcc {
    pub action: Action,
    subject: bool,
    uri: bool,
    dns: bool,
}

pub(crate) fn compile(hcm: &HttpConnectionManager) -> Result<Xfcc, String> {
    let action = match Mode::try_from(hcm.forward_client_cert_details) {
        Ok(Mode::Sanitize) => Action::Sanitize,
        Ok(Mode::ForwardOnly) => Action::ForwardOnly,
        Ok(Mode::AppendForward) => Action::AppendForward,
        Ok(Mode::SanitizeSet) => Action::SanitizeSet,
        Ok(Mode::AlwaysForwardOnly) => Action::AlwaysForwardOnly,
        Err(_) => return Err("unknown forward_client_cert_details".into()),
    };
    let set = hcm.set_current_client_cert_details.unwrap_or_default();
    if set.cert || set.chain || set.issuer {
        return Err(
            "set_current_client_cert_details: cert, chain and issuer are not supported".into(),
        );
    }
    Ok(Xfcc {
        action,
        subject: set.subject.is_some_and(|b| b.value),
        uri: set.uri,
        dns: set.dns,
    })
}

impl Xfcc {
    /// Applies the action to a request that came on `conn`; `own` is the
    /// proxy's own SPIFFE id (the `By` element).
    pub(crate) fn apply<B>(
        &self,
        req: &mut Request<B>,
        conn: &super::Connection,
        own: Option<&str>,
    ) {
        let peer = conn.tls.as_ref().and_then(|t| t.peer.as_deref());
        let headers = req.headers_mut();
        let (keep, add) = match (self.action, peer) {
            (Action::AlwaysForwardOnly, _) => return,
            (Action::Sanitize, _) | (_, None) => (false, false),
            (Action::ForwardOnly, Some(_)) => return,
            (Action::AppendForward, Some(_)) => (true, true),
            (Action::SanitizeSet, Some(_)) => (false, true),
        };
        let before: Vec<String> = if keep {
            headers
                .get_all(HEADER)
                .iter()
                .filter_map(|v| v.to_str().ok().map(String::from))
                .collect()
        } else {
            Vec::new()
        };
        super::remove_all(headers, &[HEADER]);
        let mut value = before.join(",");
        if let (true, Some(p)) = (add, peer) {
            if !value.is_empty() {
                value.push(',');
            }
            value.push_str(&self.element(p, own));
        }
        if let Ok(v) = HeaderValue::from_str(&value) {
            if !value.is_empty() {
                headers.insert(HEADER, v);
            }
        }
    }

    fn element(&self, p: &crate::identity::tls::PeerCert, own: Option<&str>) -> String {
        let mut parts = Vec::new();
        if let Some(by) = own {
            parts.push(format!("By={by}"));
        }
        parts.push(format!("Hash={}", p.hash));
        if self.subject {
            parts.push(format!("Subject=\"{}\"", p.subject.replace('"', "\\\"")));
        }
        if self.uri {
            parts.extend(p.uris.iter().map(|u| format!("URI={u}")));
        }
        if self.dns {
            parts.extend(p.dns.iter().map(|d| format!("DNS={d}")));
        }
        parts.join(";")
    }
}
