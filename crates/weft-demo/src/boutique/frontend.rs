//! The shop's frontend: HTTP pages over the gRPC services. `/` lists the
//! catalog with prices in the visitor's currency (`currency_code` cookie,
//! USD by default); `/product/{id}` shows one product and the
//! recommendations for it. A failed gRPC call is a 500 page naming the
//! call and its status, as Online Boutique's frontend renders it.

use std::convert::Infallible;
use std::fmt::Write;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tonic::Status;

use super::grpc::Client;
use super::proto::*;

struct Frontend {
    workload: String,
    catalog: Client,
    currency: Client,
    recommendation: Client,
}

pub async fn run(workload: String, listen: SocketAddr) -> anyhow::Result<()> {
    let app = Arc::new(Frontend {
        workload,
        catalog: Client::new("http://productcatalogservice:3550")?,
        currency: Client::new("http://currencyservice:7000")?,
        recommendation: Client::new("http://recommendationservice:8080")?,
    });
    let listener = tokio::net::TcpListener::bind(listen).await?;
    loop {
        let (sock, _) = listener.accept().await?;
        let app = app.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| {
                let app = app.clone();
                async move { Ok::<_, Infallible>(app.page(req).await) }
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(sock), svc)
                .await;
        });
    }
}

fn page(status: StatusCode, workload: &str, body: String) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    if let Ok(v) = http::HeaderValue::from_str(workload) {
        resp.headers_mut().insert("x-workload", v);
    }
    resp
}

/// Online Boutique's error page: what failed, and the gRPC status.
fn failed(workload: &str, what: &str, e: &Status) -> Response<Full<Bytes>> {
    page(
        StatusCode::INTERNAL_SERVER_ERROR,
        workload,
        format!(
            "{workload}\nHTTP Status: 500 Internal Server Error\n{what}: rpc error: code = {:?} desc = {}\n",
            e.code(),
            e.message()
        ),
    )
}

fn currency_of<B>(req: &Request<B>) -> String {
    req.headers()
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| c.trim().strip_prefix("shop_currency="))
        .unwrap_or("USD")
        .to_string()
}

fn price(m: &Money) -> String {
    format!(
        "{} {}.{:02}",
        m.currency_code,
        m.units,
        m.nanos / 10_000_000
    )
}

impl Frontend {
    async fn page(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        let path = req.uri().path().to_string();
        let currency = currency_of(&req);
        let w = &self.workload;
        match path.as_str() {
            "/_healthz" => page(StatusCode::OK, w, "ok\n".into()),
            "/" => match self.home(&currency).await {
                Ok(body) => page(StatusCode::OK, w, body),
                Err((what, e)) => failed(w, what, &e),
            },
            p if p.starts_with("/product/") => {
                match self.product(&p["/product/".len()..], &currency).await {
                    Ok(body) => page(StatusCode::OK, w, body),
                    Err((what, e)) => failed(w, what, &e),
                }
            }
            _ => page(StatusCode::NOT_FOUND, w, format!("{w}\nnot found\n")),
        }
    }

    async fn convert(&self, money: Option<Money>, to: &str) -> Result<Money, Status> {
        self.currency
            .call(
                "/hipstershop.CurrencyService/Convert",
                CurrencyConversionRequest {
                    from: money,
                    to_code: to.into(),
                },
            )
            .await
    }

    async fn home(&self, currency: &str) -> Result<String, (&'static str, Status)> {
        let currencies: GetSupportedCurrenciesResponse = self
            .currency
            .call(
                "/hipstershop.CurrencyService/GetSupportedCurrencies",
                Empty {},
            )
            .await
            .map_err(|e| ("could not retrieve currencies", e))?;
        let list: ListProductsResponse = self
            .catalog
            .call("/hipstershop.ProductCatalogService/ListProducts", Empty {})
            .await
            .map_err(|e| ("could not retrieve products", e))?;
        let mut out = format!(
            "{}\nOnline Boutique\ncurrencies: {}\n",
            self.workload,
            currencies.currency_codes.join(" ")
        );
        for p in list.products {
            let cost = self
                .convert(p.price_usd, currency)
                .await
                .map_err(|e| ("failed to do currency conversion for product", e))?;
            let _ = writeln!(out, "{} {} {}", p.id, p.name, price(&cost));
        }
        Ok(out)
    }

    async fn product(&self, id: &str, currency: &str) -> Result<String, (&'static str, Status)> {
        let p: Product = self
            .catalog
            .call(
                "/hipstershop.ProductCatalogService/GetProduct",
                GetProductRequest { id: id.into() },
            )
            .await
            .map_err(|e| ("could not retrieve product", e))?;
        let cost = self
            .convert(p.price_usd.clone(), currency)
            .await
            .map_err(|e| ("failed to convert currency", e))?;
        let recommended: ListRecommendationsResponse = self
            .recommendation
            .call(
                "/hipstershop.RecommendationService/ListRecommendations",
                ListRecommendationsRequest {
                    user_id: String::new(),
                    product_ids: vec![p.id.clone()],
                },
            )
            .await
            .map_err(|e| ("failed to get product recommendations", e))?;
        Ok(format!(
            "{}\n{} {} {}\n{}\nrecommended: {}\n",
            self.workload,
            p.id,
            p.name,
            price(&cost),
            p.description,
            recommended.product_ids.join(" ")
        ))
    }
}
