//! Envoy's JWT filter (`envoy.filters.http.jwt_authn`), as istiod writes
//! it for RequestAuthentication: providers (issuer, audiences, where the
//! token is, JWKS inline) and one requirement for every path, usually
//! "any provider, or no token at all". A request without a token passes;
//! one with a token that does not verify is answered 401 with the reason
//! (403 when only its audience is wrong), as Envoy does. A verified
//! token's claims are what RBAC's `request.auth.*` conditions read.

use std::collections::HashMap;
use std::sync::Arc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use envoy_types::pb::envoy::config::route::v3::route_match::PathSpecifier;
use envoy_types::pb::envoy::extensions::filters::http::jwt_authn::v3::{
    jwt_provider::JwksSourceSpecifier, jwt_requirement::RequiresType,
    requirement_rule::RequirementType, JwtAuthentication, JwtProvider, JwtRequirement,
};
use http::{HeaderName, HeaderValue, StatusCode};
use jsonwebtoken::jwk::AlgorithmParameters;
use jsonwebtoken::{Algorithm, DecodingKey};
use serde::Serialize;
use serde_json::Value;

pub const NAME: &str = "envoy.filters.http.jwt_authn";

/// Envoy's default clock skew, in seconds.
const CLOCK_SKEW: u64 = 60;

#[derive(Debug, Serialize)]
pub struct JwtCfg {
    providers: Vec<Provider>,
    /// What every request must satisfy; None: nothing is checked.
    requirement: Option<Requirement>,
    bypass_cors_preflight: bool,
}

#[derive(Debug, Serialize)]
struct Provider {
    name: String,
    issuer: String,
    audiences: Vec<String>,
    /// Where a token may be, in order.
    from: Vec<Location>,
    forward: bool,
    forward_payload_header: Option<String>,
    claim_to_headers: Vec<(String, String)>,
    clock_skew: u64,
    /// Claims whose space-separated string is read as a list.
    space_delimited: Vec<String>,
    /// Keys with the algorithms each may verify.
    #[serde(skip)]
    keys: Arc<Vec<Key>>,
}

struct Key {
    kid: Option<String>,
    algorithms: Vec<Algorithm>,
    decoding: DecodingKey,
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Key({:?}, {:?})", self.kid, self.algorithms)
    }
}

#[derive(Debug, Clone, Serialize)]
enum Location {
    /// A header, with the prefix before the token (`Bearer `).
    Header(String, String),
    Param(String),
    Cookie(String),
}

#[derive(Debug, Serialize)]
enum Requirement {
    Provider(usize),
    Any(Vec<Requirement>),
    All(Vec<Requirement>),
    AllowMissing,
    AllowMissingOrFailed,
}

pub(crate) fn compile(cfg: &JwtAuthentication) -> Result<JwtCfg, String> {
    let mut names: Vec<&String> = cfg.providers.keys().collect();
    names.sort();
    let providers = names
        .iter()
        .map(|n| provider(n, &cfg.providers[*n]).map_err(|e| format!("provider {n:?}: {e}")))
        .collect::<Result<Vec<_>, _>>()?;
    let index: HashMap<&str, usize> = names
        .iter()
        .enumerate()
        .map(|(i, n)| (n.as_str(), i))
        .collect();
    let requirement = match cfg.rules.as_slice() {
        [] => None,
        [rule] => {
            let every_path = rule.r#match.as_ref().is_none_or(|m| {
                matches!(&m.path_specifier, Some(PathSpecifier::Prefix(p)) if p == "/" || p.is_empty())
            });
            if !every_path {
                return Err("rules: only a rule for every path (prefix \"/\") is supported".into());
            }
            let r = match &rule.requirement_type {
                Some(RequirementType::Requires(r)) => r,
                Some(RequirementType::RequirementName(n)) => cfg
                    .requirement_map
                    .get(n)
                    .ok_or_else(|| format!("rules: requirement {n:?} is not in requirement_map"))?,
                None => return Err("rules[0] names no requirement".into()),
            };
            Some(requirement(r, &index)?)
        }
        _ => return Err("rules: only one rule (for every path) is supported".into()),
    };
    Ok(JwtCfg {
        providers,
        requirement,
        bypass_cors_preflight: cfg.bypass_cors_preflight,
    })
}

fn requirement(r: &JwtRequirement, index: &HashMap<&str, usize>) -> Result<Requirement, String> {
    let named = |n: &str| {
        index
            .get(n)
            .copied()
            .map(Requirement::Provider)
            .ok_or_else(|| format!("requirement names provider {n:?}, which is not configured"))
    };
    let list = |rs: &[JwtRequirement]| -> Result<Vec<Requirement>, String> {
        rs.iter().map(|r| requirement(r, index)).collect()
    };
    Ok(match &r.requires_type {
        Some(RequiresType::ProviderName(n)) => named(n)?,
        Some(RequiresType::RequiresAny(l)) => Requirement::Any(list(&l.requirements)?),
        Some(RequiresType::RequiresAll(l)) => Requirement::All(list(&l.requirements)?),
        Some(RequiresType::AllowMissing(_)) => Requirement::AllowMissing,
        Some(RequiresType::AllowMissingOrFailed(_)) => Requirement::AllowMissingOrFailed,
        _ => return Err("a requirement of this kind is not supported".into()),
    })
}

fn provider(name: &str, p: &JwtProvider) -> Result<Provider, String> {
    let jwks = match &p.jwks_source_specifier {
        Some(JwksSourceSpecifier::LocalJwks(source)) => {
            crate::compile::secret_bytes(&Some(source.clone()), "local_jwks")?
        }
        Some(JwksSourceSpecifier::RemoteJwks(_)) => {
            return Err("remote_jwks is not supported: the control plane inlines JWKS (local_jwks), as istiod does by default".into())
        }
        None => return Err("no JWKS (local_jwks)".into()),
    };
    let mut from: Vec<Location> = p
        .from_headers
        .iter()
        .map(|h| Location::Header(h.name.to_ascii_lowercase(), h.value_prefix.clone()))
        .chain(p.from_params.iter().cloned().map(Location::Param))
        .chain(p.from_cookies.iter().cloned().map(Location::Cookie))
        .collect();
    if from.is_empty() {
        from = vec![
            Location::Header("authorization".into(), "Bearer ".into()),
            Location::Param("access_token".into()),
        ];
    }
    for l in &from {
        if let Location::Header(h, _) = l {
            HeaderName::from_bytes(h.as_bytes())
                .map_err(|_| format!("{h:?} is not a header name"))?;
        }
    }
    Ok(Provider {
        name: name.to_string(),
        issuer: p.issuer.clone(),
        audiences: p.audiences.clone(),
        from,
        forward: p.forward,
        forward_payload_header: Some(p.forward_payload_header.clone()).filter(|h| !h.is_empty()),
        claim_to_headers: p
            .claim_to_headers
            .iter()
            .map(|c| (c.header_name.to_ascii_lowercase(), c.claim_name.clone()))
            .collect(),
        clock_skew: if p.clock_skew_seconds == 0 {
            CLOCK_SKEW
        } else {
            u64::from(p.clock_skew_seconds)
        },
        space_delimited: p
            .normalize_payload_in_metadata
            .as_ref()
            .map(|n| n.space_delimited_claims.clone())
            .unwrap_or_default(),
        keys: Arc::new(keys(&jwks)?),
    })
}

/// The usable keys of a JWKS; a JWKS that is not `{"keys": [...]}` is an
/// error. Each key is read on its own and one Weft cannot use (an unknown
/// kind or curve, an encryption key) is left out (logged), as Envoy
/// ignores it, so a new key kind at a key server never blocks the rest.
/// A key verifies only the algorithms of its kind (RSA: RS/PS, EC: ES of
/// its curve, OKP: EdDSA, oct: HS); its `alg`, when given, must be one of
/// them and narrows them to it.
fn keys(jwks: &[u8]) -> Result<Vec<Key>, String> {
    let set: Value = serde_json::from_slice(jwks).map_err(|e| format!("JWKS: {e}"))?;
    let list = set["keys"].as_array().ok_or("JWKS: no \"keys\" list")?;
    let mut out = Vec::new();
    for (i, raw) in list.iter().enumerate() {
        match key(raw) {
            Ok(k) => out.push(k),
            Err(e) => tracing::warn!(index = i, kid = ?raw["kid"], error = %e, "JWKS key skipped"),
        }
    }
    Ok(out)
}

fn key(raw: &Value) -> Result<Key, String> {
    use jsonwebtoken::jwk::{EllipticCurve, Jwk, PublicKeyUse};
    use Algorithm::*;
    let jwk: Jwk = serde_json::from_value(raw.clone()).map_err(|e| e.to_string())?;
    if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
        return Err("an encryption key (use: enc)".into());
    }
    let family = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => vec![RS256, RS384, RS512, PS256, PS384, PS512],
        AlgorithmParameters::EllipticCurve(ec) => match ec.curve {
            EllipticCurve::P256 => vec![ES256],
            EllipticCurve::P384 => vec![ES384],
            _ => return Err("an EC curve other than P-256 and P-384".into()),
        },
        AlgorithmParameters::OctetKeyPair(_) => vec![EdDSA],
        AlgorithmParameters::OctetKey(_) => vec![HS256, HS384, HS512],
    };
    let algorithms = match jwk.common.key_algorithm {
        None => family,
        Some(alg) => {
            let alg: Algorithm = alg
                .to_string()
                .parse()
                .map_err(|_| format!("alg {alg:?}"))?;
            if !family.contains(&alg) {
                return Err(format!("alg {alg:?} does not fit the key's kind"));
            }
            vec![alg]
        }
    };
    let decoding = DecodingKey::from_jwk(&jwk).map_err(|e| e.to_string())?;
    Ok(Key {
        kid: jwk.common.key_id.clone(),
        algorithms,
        decoding,
    })
}

/// A refused request: the reason (for the access log) and the reply.
pub(crate) type Refused = (String, http::Response<crate::http::Body>);

/// Why a token was not taken: Envoy's status text, and the HTTP status.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Failure {
    pub reason: &'static str,
    pub status: StatusCode,
}

const MISSING: Failure = fail("Jwt is missing");

const fn fail(reason: &'static str) -> Failure {
    Failure {
        reason,
        status: StatusCode::UNAUTHORIZED,
    }
}

/// A token one provider took: its claims, and where it was found.
struct Verified {
    provider: usize,
    location: Location,
    payload_b64: String,
    claims: Value,
}

impl JwtCfg {
    /// Checks a request: Ok passes it with the verified claims (if any)
    /// and the request changed as the providers say; Err is the reason
    /// and the reply.
    pub(crate) fn on_request<B>(
        &self,
        req: &mut http::Request<B>,
    ) -> Result<Option<Arc<Value>>, Box<Refused>> {
        // Headers only a verified token may set: a client's own are removed
        // first, as Envoy does, so an app never takes one for a verified claim.
        for p in &self.providers {
            let named = p
                .forward_payload_header
                .iter()
                .chain(p.claim_to_headers.iter().map(|c| &c.0));
            for h in named {
                req.headers_mut().remove(h.as_str());
            }
        }
        let Some(requirement) = &self.requirement else {
            return Ok(None);
        };
        if self.bypass_cors_preflight && is_preflight(req) {
            return Ok(None);
        }
        match self.check(requirement, req) {
            Ok(None) => Ok(None),
            Ok(Some(v)) => {
                let p = &self.providers[v.provider];
                p.rewrite(req, &v);
                Ok(Some(Arc::new(p.normalized(v.claims))))
            }
            Err(f) => {
                tracing::debug!(reason = f.reason, "JWT refused");
                // Envoy's response code detail spells the reason with `_`.
                Err(Box::new((f.reason.replace(' ', "_"), refusal(req, &f))))
            }
        }
    }

    fn check<B>(
        &self,
        r: &Requirement,
        req: &http::Request<B>,
    ) -> Result<Option<Verified>, Failure> {
        match r {
            Requirement::Provider(i) => self.providers[*i].verify(*i, req).map(Some),
            Requirement::AllowMissingOrFailed => Ok(self.first_verified(req)),
            Requirement::AllowMissing => {
                let found = self
                    .providers
                    .iter()
                    .enumerate()
                    .map(|(i, p)| p.verify(i, req));
                let mut failure = None;
                for r in found {
                    match r {
                        Ok(v) => return Ok(Some(v)),
                        Err(f) if f != MISSING => failure = Some(f),
                        Err(_) => {}
                    }
                }
                failure.map_or(Ok(None), Err)
            }
            Requirement::Any(list) => {
                let mut missing_ok = false;
                let mut failure = None;
                for r in list {
                    if matches!(r, Requirement::AllowMissing) {
                        missing_ok = true;
                        continue;
                    }
                    match self.check(r, req) {
                        Ok(v) => return Ok(v),
                        Err(f) if f == MISSING => {}
                        Err(f) => failure = failure.or(Some(f)),
                    }
                }
                match failure {
                    Some(f) => Err(f),
                    None if missing_ok => Ok(None),
                    None => Err(MISSING),
                }
            }
            Requirement::All(list) => {
                let mut first = None;
                for r in list {
                    let v = self.check(r, req)?;
                    first = first.or(v);
                }
                Ok(first)
            }
        }
    }

    fn first_verified<B>(&self, req: &http::Request<B>) -> Option<Verified> {
        self.providers
            .iter()
            .enumerate()
            .find_map(|(i, p)| p.verify(i, req).ok())
    }
}

impl Provider {
    /// The token at this provider's locations, verified.
    fn verify<B>(&self, index: usize, req: &http::Request<B>) -> Result<Verified, Failure> {
        let (token, location) = self.extract(req).ok_or(MISSING)?;
        let (payload_b64, claims) = self.validate(&token)?;
        Ok(Verified {
            provider: index,
            location,
            payload_b64,
            claims,
        })
    }

    fn extract<B>(&self, req: &http::Request<B>) -> Option<(String, Location)> {
        self.from.iter().find_map(|l| {
            let token = match l {
                Location::Header(name, prefix) => req
                    .headers()
                    .get_all(name.as_str())
                    .iter()
                    .filter_map(|v| v.to_str().ok())
                    .find_map(|v| {
                        v.strip_prefix(prefix.as_str())
                            .map(|t| t.trim().to_string())
                    }),
                Location::Param(name) => query_param(req.uri().query()?, name),
                Location::Cookie(name) => cookie(req, name),
            };
            token.filter(|t| !t.is_empty()).map(|t| (t, l.clone()))
        })
    }

    /// jwt_verify_lib's checks, in its order, with its status texts.
    fn validate(&self, token: &str) -> Result<(String, Value), Failure> {
        let parts: Vec<&str> = token.split('.').collect();
        let form =
            fail("Jwt is not in the form of Header.Payload.Signature with two dots and 3 sections");
        let [header, payload, signature] = parts.as_slice() else {
            return Err(form);
        };
        if header.is_empty() || payload.is_empty() {
            return Err(form);
        }
        let header: Value = B64
            .decode(header)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or(fail("Jwt header is an invalid Base64url encoded"))?;
        let alg = header["alg"].as_str().ok_or(fail(
            "Jwt header [alg] field is required and must be a string",
        ))?;
        // `none` and anything else unknown: never accepted.
        let alg: Algorithm = alg
            .parse()
            .map_err(|_| fail("Jwt header [alg] is not supported"))?;
        let claims: Value = B64
            .decode(payload)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .filter(Value::is_object)
            .ok_or(fail("Jwt payload is an invalid Base64url encoded"))?;
        if !self.issuer.is_empty() && claims["iss"].as_str() != Some(self.issuer.as_str()) {
            return Err(fail("Jwt issuer is not configured"));
        }
        self.check_times(&claims)?;
        if !self.audiences.is_empty() && !audience_allowed(&claims["aud"], &self.audiences) {
            return Err(Failure {
                reason: "Audiences in Jwt are not allowed",
                status: StatusCode::FORBIDDEN,
            });
        }
        if signature.is_empty() {
            return Err(fail("Jwt verification fails"));
        }
        let kid = header["kid"].as_str();
        let candidates: Vec<&Key> = self
            .keys
            .iter()
            .filter(|k| k.algorithms.contains(&alg))
            .filter(|k| kid.is_none() || k.kid.is_none() || k.kid.as_deref() == kid)
            .collect();
        if candidates.is_empty() {
            return Err(fail("Jwks doesn't have key to match kid or alg from Jwt"));
        }
        let message = format!("{}.{}", parts[0], parts[1]);
        let good = candidates.iter().any(|k| {
            jsonwebtoken::crypto::verify(signature, message.as_bytes(), &k.decoding, alg)
                .unwrap_or(false)
        });
        if !good {
            return Err(fail("Jwt verification fails"));
        }
        Ok((payload.to_string(), claims))
    }

    fn check_times(&self, claims: &Value) -> Result<(), Failure> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        if let Some(exp) = claims.get("exp") {
            let exp = exp
                .as_u64()
                .ok_or(fail("Jwt payload [exp] field must be an integer"))?;
            if now > exp.saturating_add(self.clock_skew) {
                return Err(fail("Jwt is expired"));
            }
        }
        if let Some(nbf) = claims.get("nbf") {
            let nbf = nbf
                .as_u64()
                .ok_or(fail("Jwt payload [nbf] field must be an integer"))?;
            if now.saturating_add(self.clock_skew) < nbf {
                return Err(fail("Jwt not yet valid"));
            }
        }
        Ok(())
    }

    /// After a token is taken: it leaves its header unless `forward`; the
    /// payload and chosen claims go into headers when asked.
    fn rewrite<B>(&self, req: &mut http::Request<B>, v: &Verified) {
        let headers = req.headers_mut();
        if let (false, Location::Header(name, _)) = (self.forward, &v.location) {
            headers.remove(name.as_str());
        }
        let mut set = |name: &str, value: String| {
            if let (Ok(n), Ok(v)) = (
                HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_str(&value),
            ) {
                headers.insert(n, v);
            }
        };
        if let Some(h) = &self.forward_payload_header {
            set(h, v.payload_b64.clone());
        }
        for (header, claim) in &self.claim_to_headers {
            let value = match &v.claims[claim] {
                Value::String(s) => Some(s.clone()),
                Value::Number(n) => Some(n.to_string()),
                Value::Bool(b) => Some(b.to_string()),
                _ => None,
            };
            if let Some(value) = value {
                set(header, value);
            }
        }
    }

    /// The claims as RBAC reads them: space-separated claims as lists.
    fn normalized(&self, mut claims: Value) -> Value {
        for name in &self.space_delimited {
            if let Some(Value::String(s)) = claims.get(name) {
                let list = s
                    .split_whitespace()
                    .map(|w| Value::String(w.into()))
                    .collect();
                claims[name] = Value::Array(list);
            }
        }
        claims
    }
}

fn audience_allowed(aud: &Value, allowed: &[String]) -> bool {
    match aud {
        Value::String(a) => allowed.contains(a),
        Value::Array(list) => list
            .iter()
            .filter_map(Value::as_str)
            .any(|a| allowed.iter().any(|x| x == a)),
        _ => false,
    }
}

fn is_preflight<B>(req: &http::Request<B>) -> bool {
    req.method() == http::Method::OPTIONS
        && req.headers().contains_key(http::header::ORIGIN)
        && req
            .headers()
            .contains_key(http::header::ACCESS_CONTROL_REQUEST_METHOD)
}

fn query_param(query: &str, name: &str) -> Option<String> {
    query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

fn cookie<B>(req: &http::Request<B>, name: &str) -> Option<String> {
    req.headers()
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

/// Envoy's reply: the status text as the body, and `WWW-Authenticate`.
fn refusal<B>(req: &http::Request<B>, f: &Failure) -> http::Response<crate::http::Body> {
    let mut resp =
        crate::http::local_reply::direct(f.status, bytes::Bytes::from_static(f.reason.as_bytes()));
    let host = crate::router::authority(req);
    let realm = format!("http://{host}{}", req.uri().path());
    let value = if *f == MISSING {
        format!("Bearer realm=\"{realm}\"")
    } else {
        format!("Bearer realm=\"{realm}\", error=\"invalid_token\"")
    };
    if let Ok(v) = HeaderValue::from_str(&value) {
        resp.headers_mut().insert(http::header::WWW_AUTHENTICATE, v);
    }
    resp
}
