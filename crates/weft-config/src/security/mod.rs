//! security.istio.io kinds: PeerAuthentication, RequestAuthentication,
//! AuthorizationPolicy (v1 and v1beta1). Typed and validated;
//! AuthorizationPolicy is enforced, the others not yet (validation warns).

pub mod authorization;
mod peer;
mod request;

pub use authorization::AuthorizationPolicy;
pub use peer::PeerAuthentication;
pub use request::{JwtRule, RequestAuthentication};

pub(crate) use authorization::check as check_authorization_policy;
pub(crate) use peer::check as check_peer_authentication;
pub(crate) use request::check as check_request_authentication;
