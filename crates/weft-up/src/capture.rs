//! The traffic capture rules, as Istio's istio-iptables writes them for a
//! sidecar: outbound TCP to 15001, inbound TCP to 15006, the proxy's own
//! traffic (uid/gid 1337) excluded, inbound passthrough from 127.0.0.6
//! excluded; and DNS (UDP and TCP port 53) to the sidecar's DNS proxy on
//! 15053, as with Istio's `ISTIO_META_DNS_CAPTURE` (all DNS, as
//! `--capture-all-dns` does). Loaded with iptables-restore inside the
//! pod's namespace, so the rules disappear with the namespace.

pub const PROXY_UID: u32 = 1337;
pub const OUTBOUND_CAPTURE_PORT: u16 = 15001;
pub const INBOUND_CAPTURE_PORT: u16 = 15006;
/// Where the sidecar's DNS proxy listens (on 127.0.0.1).
pub const DNS_CAPTURE_PORT: u16 = 15053;
/// Inbound ports never captured: the proxy's own admin, health and stats ports.
pub const INBOUND_EXCLUDED: [u16; 5] = [15000, 15008, 15020, 15021, 15090];

pub fn rules() -> String {
    let mut r = String::from(
        "*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n\
         :ISTIO_INBOUND - [0:0]\n:ISTIO_IN_REDIRECT - [0:0]\n:ISTIO_OUTPUT - [0:0]\n:ISTIO_REDIRECT - [0:0]\n\
         -A PREROUTING -p tcp -j ISTIO_INBOUND\n-A OUTPUT -p tcp -j ISTIO_OUTPUT\n",
    );
    let uid = PROXY_UID;
    let dns = DNS_CAPTURE_PORT;
    // DNS: the proxy's own queries (forwarded upstream) go out as they are.
    r.push_str(&format!(
        "-A OUTPUT -p udp --dport 53 -m owner --uid-owner {uid} -j RETURN\n\
         -A OUTPUT -p udp --dport 53 -m owner --gid-owner {uid} -j RETURN\n\
         -A OUTPUT -p udp --dport 53 -j REDIRECT --to-ports {dns}\n\
         -A ISTIO_OUTPUT -p tcp --dport 53 -m owner ! --uid-owner {uid} -m owner ! --gid-owner {uid} -j REDIRECT --to-ports {dns}\n"
    ));
    for port in INBOUND_EXCLUDED {
        r.push_str(&format!(
            "-A ISTIO_INBOUND -p tcp --dport {port} -j RETURN\n"
        ));
    }
    r.push_str(&format!(
        "-A ISTIO_INBOUND -p tcp -j ISTIO_IN_REDIRECT\n\
         -A ISTIO_IN_REDIRECT -p tcp -j REDIRECT --to-ports {INBOUND_CAPTURE_PORT}\n\
         -A ISTIO_OUTPUT -s 127.0.0.6/32 -o lo -j RETURN\n\
         -A ISTIO_OUTPUT ! -d 127.0.0.1/32 -o lo -p tcp -m owner --uid-owner {uid} -j ISTIO_IN_REDIRECT\n\
         -A ISTIO_OUTPUT -o lo -m owner ! --uid-owner {uid} -j RETURN\n\
         -A ISTIO_OUTPUT -m owner --uid-owner {uid} -j RETURN\n\
         -A ISTIO_OUTPUT ! -d 127.0.0.1/32 -o lo -p tcp -m owner --gid-owner {uid} -j ISTIO_IN_REDIRECT\n\
         -A ISTIO_OUTPUT -o lo -m owner ! --gid-owner {uid} -j RETURN\n\
         -A ISTIO_OUTPUT -m owner --gid-owner {uid} -j RETURN\n\
         -A ISTIO_OUTPUT -d 127.0.0.1/32 -j RETURN\n\
         -A ISTIO_OUTPUT -j ISTIO_REDIRECT\n\
         -A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports {OUTBOUND_CAPTURE_PORT}\n\
         COMMIT\n"
    ));
    r
}
