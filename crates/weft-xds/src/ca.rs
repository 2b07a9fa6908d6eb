//! Istio's certificate service (`istio.v1.auth.IstioCertificateService`,
//! istio/api `security/v1alpha1/ca.proto`), both ends: a workload sends a
//! CSR with its token in `authorization: Bearer …` and gets its chain. The
//! messages are declared by hand, field for field as Istio's proto has
//! them, so Istio's agent speaks to Weft's CA and Weft's to istiod's.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use tonic::codegen::BoxFuture;
use tonic::{Request, Response, Status};

pub const SERVICE: &str = "istio.v1.auth.IstioCertificateService";
const CREATE: &str = "/istio.v1.auth.IstioCertificateService/CreateCertificate";

#[derive(Clone, PartialEq, prost::Message)]
pub struct IstioCertificateRequest {
    /// PEM-encoded certificate signing request.
    #[prost(string, tag = "1")]
    pub csr: String,
    /// Requested lifetime, in seconds (0: the CA's default).
    #[prost(int64, tag = "3")]
    pub validity_duration: i64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct IstioCertificateResponse {
    /// The leaf first, the root(s) last, each PEM.
    #[prost(string, repeated, tag = "1")]
    pub cert_chain: Vec<String>,
}

/// What the server needs of a CA: a decision on one request, given the
/// caller's bearer token (None when it sent none).
pub trait Signer: Send + Sync + 'static {
    fn create(
        &self,
        token: Option<&str>,
        request: IstioCertificateRequest,
    ) -> Result<IstioCertificateResponse, Status>;
}

/// The service, for tonic's router beside ADS (Istio serves both on one
/// port, 15012).
pub struct CertificateServer<S>(Arc<S>);

impl<S> CertificateServer<S> {
    pub fn new(signer: Arc<S>) -> Self {
        CertificateServer(signer)
    }
}

impl<S> Clone for CertificateServer<S> {
    fn clone(&self) -> Self {
        CertificateServer(self.0.clone())
    }
}

impl<S> tonic::server::NamedService for CertificateServer<S> {
    const NAME: &'static str = SERVICE;
}

/// The one method, as tonic's unary service.
struct Create<S>(Arc<S>);

impl<S: Signer> tonic::server::UnaryService<IstioCertificateRequest> for Create<S> {
    type Response = IstioCertificateResponse;
    type Future = BoxFuture<Response<IstioCertificateResponse>, Status>;

    fn call(&mut self, req: Request<IstioCertificateRequest>) -> Self::Future {
        let token = req
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(|v| v.strip_prefix("Bearer ").unwrap_or(v).to_string());
        let reply = self.0.create(token.as_deref(), req.into_inner());
        Box::pin(async move { reply.map(Response::new) })
    }
}

impl<S, B> tower_service::Service<http::Request<B>> for CertificateServer<S>
where
    S: Signer,
    B: http_body::Body + Send + 'static,
    B::Error: Into<tonic::codegen::StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Infallible>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        if req.uri().path() != CREATE {
            let path = req.uri().path().to_string();
            return Box::pin(async move {
                Ok(Status::unimplemented(format!("unknown method {path}")).into_http())
            });
        }
        let signer = self.0.clone();
        Box::pin(async move {
            let codec = tonic_prost::ProstCodec::default();
            let mut grpc = tonic::server::Grpc::new(codec);
            Ok(grpc.unary(Create(signer), req).await)
        })
    }
}

/// One CreateCertificate call on `channel`, with `token` as the bearer.
pub async fn create_certificate(
    channel: tonic::transport::Channel,
    token: Option<&str>,
    request: IstioCertificateRequest,
) -> Result<IstioCertificateResponse, Status> {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready()
        .await
        .map_err(|e| Status::unavailable(e.to_string()))?;
    let mut req = Request::new(request);
    if let Some(token) = token {
        let value = format!("Bearer {token}")
            .parse()
            .map_err(|_| Status::invalid_argument("the token is not a valid header value"))?;
        req.metadata_mut().insert("authorization", value);
    }
    let codec = tonic_prost::ProstCodec::default();
    let path = http::uri::PathAndQuery::from_static(CREATE);
    grpc.unary(req, path, codec).await.map(Response::into_inner)
}

pub use tonic::transport::Channel;

/// A channel to the CA at `address` (`http://host:port`), connected when
/// first used.
pub fn channel(address: &str) -> Result<Channel, String> {
    tonic::transport::Endpoint::from_shared(address.to_string())
        .map(|e| {
            e.connect_timeout(std::time::Duration::from_secs(5))
                .connect_lazy()
        })
        .map_err(|e| format!("{address:?} is not a URL: {e}"))
}
