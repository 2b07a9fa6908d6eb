//! gRPC over tonic without generated code: a server that dispatches unary
//! calls by path to plain async functions, and a client call by path, both
//! with prost messages. Online Boutique's services are all unary.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::uri::PathAndQuery;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tonic::{Request, Response, Status};
use tonic_prost::ProstCodec;

/// One unary method as a tower service, which is what tonic's server takes.
struct Unary<F>(F);

impl<F, Fut, Req, Resp> tower_service::Service<Request<Req>> for Unary<F>
where
    F: FnMut(Req) -> Fut,
    Fut: Future<Output = Result<Resp, Status>> + Send + 'static,
{
    type Response = Response<Resp>;
    type Error = Status;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Resp>, Status>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Status>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Req>) -> Self::Future {
        let reply = (self.0)(req.into_inner());
        Box::pin(async move { reply.await.map(Response::new) })
    }
}

/// Answers `req` with `handler`, decoding and encoding prost messages.
pub async fn unary<Req, Resp, F, Fut>(
    req: http::Request<Incoming>,
    handler: F,
) -> http::Response<tonic::body::Body>
where
    Req: prost::Message + Default + Send + 'static,
    Resp: prost::Message + Send + 'static,
    F: FnMut(Req) -> Fut,
    Fut: Future<Output = Result<Resp, Status>> + Send + 'static,
{
    let mut grpc = tonic::server::Grpc::new(ProstCodec::<Resp, Req>::default());
    grpc.unary(Unary(handler), req).await
}

/// An `UNIMPLEMENTED` answer for a path the service does not have.
pub fn unimplemented(path: &str) -> http::Response<tonic::body::Body> {
    Status::unimplemented(format!("unknown method {path}")).into_http()
}

/// Serves `route(request)` over h2c (and HTTP/1.1) on `listen`. Every
/// answer carries the workload's name in a `hostname` header (initial
/// metadata), as Istio's echo server names itself, so a client can tell
/// which version served it.
pub async fn serve<R, Fut>(listen: SocketAddr, workload: &str, route: R) -> anyhow::Result<()>
where
    R: Fn(http::Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = http::Response<tonic::body::Body>> + Send + 'static,
{
    let hostname = http::HeaderValue::from_str(workload)?;
    let listener = tokio::net::TcpListener::bind(listen).await?;
    tracing::info!(%workload, %listen, "boutique service listening");
    loop {
        let (sock, _) = listener.accept().await?;
        let route = route.clone();
        let hostname = hostname.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| {
                let reply = route(req);
                let hostname = hostname.clone();
                async move {
                    let mut reply = reply.await;
                    reply.headers_mut().insert("hostname", hostname);
                    Ok::<_, Infallible>(reply)
                }
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(sock), svc)
                .await;
        });
    }
}

/// A client of one service (`http://name:port`), connecting when first
/// used; calls go through the pod's sidecar like any other traffic.
#[derive(Clone)]
pub struct Client(tonic::transport::Channel);

impl Client {
    pub fn new(target: &str) -> anyhow::Result<Client> {
        Ok(Client(
            tonic::transport::Channel::from_shared(target.to_string())?.connect_lazy(),
        ))
    }

    pub async fn call<Req, Resp>(&self, path: &'static str, req: Req) -> Result<Resp, Status>
    where
        Req: prost::Message + Send + Sync + 'static,
        Resp: prost::Message + Default + Send + Sync + 'static,
    {
        let mut grpc = tonic::client::Grpc::new(self.0.clone());
        grpc.ready()
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        let codec = ProstCodec::<Req, Resp>::default();
        grpc.unary(Request::new(req), PathAndQuery::from_static(path), codec)
            .await
            .map(Response::into_inner)
    }
}
