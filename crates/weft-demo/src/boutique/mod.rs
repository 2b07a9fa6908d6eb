//! An Online-Boutique-like shop for the course's gRPC labs: `frontend`
//! (HTTP) over gRPC services with Online Boutique's names, ports and
//! messages (`productcatalogservice`, `currencyservice`,
//! `recommendationservice` here; cart, shipping, payment, email, ad and
//! checkout in `shop.rs`), so Istio config written for Online Boutique
//! applies unchanged. As in Online Boutique, productcatalogservice adds
//! the latency its `EXTRA_LATENCY` environment variable names.

mod frontend;
pub(crate) mod grpc;
mod loadgen;
pub mod proto;
mod shop;

use std::net::SocketAddr;
use std::time::Duration;

use hyper::body::Incoming;
use tonic::Status;

use proto::*;

/// Online Boutique's catalog (a part of it), prices in USD.
const CATALOG: &[(&str, &str, i64, i32, &str)] = &[
    ("OLJCESPC7Z", "Sunglasses", 19, 990_000_000, "accessories"),
    ("66VCHSJNUP", "Tank Top", 18, 990_000_000, "clothing"),
    ("1YMWWN1N4O", "Watch", 109, 990_000_000, "accessories"),
    ("L9ECAV7KIM", "Loafers", 89, 990_000_000, "footwear"),
    ("2ZYFJ3GM2N", "Hairdryer", 24, 990_000_000, "hair"),
    ("0PUK6V6EV0", "Candle Holder", 18, 990_000_000, "decor"),
    (
        "LS4PSXUNUM",
        "Salt & Pepper Shakers",
        18,
        490_000_000,
        "kitchen",
    ),
    ("9SIQT8TOJO", "Bamboo Glass Jar", 5, 490_000_000, "kitchen"),
    ("6E92ZMYYFZ", "Mug", 8, 990_000_000, "kitchen"),
];

/// Units of each currency one US dollar buys, as Online Boutique's table
/// has them (rounded).
const RATES: &[(&str, f64)] = &[
    ("USD", 1.0),
    ("EUR", 0.885),
    ("JPY", 108.4),
    ("GBP", 0.758),
    ("TRY", 5.69),
    ("CAD", 1.313),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    Frontend,
    ProductCatalog,
    Currency,
    Recommendation,
    Cart,
    Shipping,
    Payment,
    Email,
    Checkout,
    Ad,
    /// Simulated visitors of the frontend (`loadgen.rs`).
    LoadGenerator,
}

impl Service {
    pub fn from_name(name: &str) -> Option<Service> {
        Some(match name {
            "frontend" => Service::Frontend,
            "productcatalogservice" => Service::ProductCatalog,
            "currencyservice" => Service::Currency,
            "recommendationservice" => Service::Recommendation,
            "cartservice" => Service::Cart,
            "shippingservice" => Service::Shipping,
            "paymentservice" => Service::Payment,
            "emailservice" => Service::Email,
            "checkoutservice" => Service::Checkout,
            "adservice" => Service::Ad,
            "loadgenerator" => Service::LoadGenerator,
            _ => return None,
        })
    }
}

pub async fn run(
    service: Service,
    workload: String,
    listen: SocketAddr,
    delay: Duration,
) -> anyhow::Result<()> {
    let hostname = workload.clone();
    match service {
        Service::Frontend => frontend::run(workload, listen).await,
        Service::ProductCatalog => {
            let latency = extra_latency().max(delay);
            grpc::serve(listen, &hostname, move |req| productcatalog(req, latency)).await
        }
        Service::Currency => grpc::serve(listen, &hostname, currency).await,
        Service::Recommendation => {
            let catalog = grpc::Client::new(CATALOG_URL)?;
            grpc::serve(listen, &hostname, move |req| {
                recommendation(req, catalog.clone())
            })
            .await
        }
        Service::Cart => {
            let carts = shop::Carts::default();
            grpc::serve(listen, &hostname, move |req| shop::cart(req, carts.clone())).await
        }
        Service::Shipping => grpc::serve(listen, &hostname, shop::shipping).await,
        Service::Payment => grpc::serve(listen, &hostname, shop::payment).await,
        Service::Email => {
            grpc::serve(listen, &hostname, move |req| {
                shop::email(req, workload.clone())
            })
            .await
        }
        Service::Ad => grpc::serve(listen, &hostname, shop::ad).await,
        Service::LoadGenerator => loadgen::run(loadgen::Settings::from_env()?).await,
        Service::Checkout => {
            let clients = shop::Checkout {
                cart: grpc::Client::new(CART_URL)?,
                catalog: grpc::Client::new(CATALOG_URL)?,
                currency: grpc::Client::new(CURRENCY_URL)?,
                shipping: grpc::Client::new("http://shippingservice:50051")?,
                payment: grpc::Client::new("http://paymentservice:50051")?,
                email: grpc::Client::new("http://emailservice:5000")?,
            };
            grpc::serve(listen, &hostname, move |req| {
                shop::checkout(req, clients.clone())
            })
            .await
        }
    }
}

/// Where the services are, by Online Boutique's service names and ports.
const CATALOG_URL: &str = "http://productcatalogservice:3550";
const CURRENCY_URL: &str = "http://currencyservice:7000";
const CART_URL: &str = "http://cartservice:7070";

/// The first product of a category (for an ad's link).
fn first_in(category: &str) -> &'static str {
    CATALOG
        .iter()
        .find(|p| p.4 == category)
        .map_or(CATALOG[0].0, |p| p.0)
}

/// `EXTRA_LATENCY`, as Online Boutique's productcatalogservice reads it
/// (`5.5s`, `300ms`).
fn extra_latency() -> Duration {
    let text = std::env::var("EXTRA_LATENCY").unwrap_or_default();
    let (number, unit) = match text.strip_suffix("ms") {
        Some(n) => (n, 0.001),
        None => (text.strip_suffix('s').unwrap_or(""), 1.0),
    };
    number
        .parse::<f64>()
        .map(|n| Duration::from_secs_f64((n * unit).max(0.0)))
        .unwrap_or_default()
}

fn product(entry: &(&str, &str, i64, i32, &str)) -> Product {
    let (id, name, units, nanos, category) = *entry;
    Product {
        id: id.into(),
        name: name.into(),
        description: format!("{name}, from the catalog."),
        picture: format!("/static/img/products/{}.jpg", id.to_lowercase()),
        price_usd: Some(Money {
            currency_code: "USD".into(),
            units,
            nanos,
        }),
        categories: vec![category.into()],
    }
}

async fn productcatalog(
    req: http::Request<Incoming>,
    latency: Duration,
) -> http::Response<tonic::body::Body> {
    let path = req.uri().path().to_string();
    match path.as_str() {
        "/hipstershop.ProductCatalogService/ListProducts" => {
            grpc::unary(req, move |_: Empty| async move {
                tokio::time::sleep(latency).await;
                Ok(ListProductsResponse {
                    products: CATALOG.iter().map(product).collect(),
                })
            })
            .await
        }
        "/hipstershop.ProductCatalogService/GetProduct" => {
            grpc::unary(req, move |r: GetProductRequest| async move {
                tokio::time::sleep(latency).await;
                CATALOG
                    .iter()
                    .find(|p| p.0 == r.id)
                    .map(product)
                    .ok_or_else(|| Status::not_found(format!("no product with ID {}", r.id)))
            })
            .await
        }
        other => grpc::unimplemented(other),
    }
}

async fn currency(req: http::Request<Incoming>) -> http::Response<tonic::body::Body> {
    let path = req.uri().path().to_string();
    match path.as_str() {
        "/hipstershop.CurrencyService/GetSupportedCurrencies" => {
            grpc::unary(req, |_: Empty| async {
                Ok(GetSupportedCurrenciesResponse {
                    currency_codes: RATES.iter().map(|r| r.0.to_string()).collect(),
                })
            })
            .await
        }
        "/hipstershop.CurrencyService/Convert" => {
            grpc::unary(
                req,
                |r: CurrencyConversionRequest| async move { convert(&r) },
            )
            .await
        }
        other => grpc::unimplemented(other),
    }
}

fn convert(r: &CurrencyConversionRequest) -> Result<Money, Status> {
    let rate = |code: &str| {
        RATES
            .iter()
            .find(|(c, _)| *c == code)
            .map(|r| r.1)
            .ok_or_else(|| Status::invalid_argument(format!("unsupported currency {code}")))
    };
    let from = r.from.clone().unwrap_or_default();
    let amount = from.units as f64 + f64::from(from.nanos) / 1e9;
    let converted = amount / rate(&from.currency_code)? * rate(&r.to_code)?;
    let nanos = (converted * 1e9).round() as i64;
    Ok(Money {
        currency_code: r.to_code.clone(),
        units: nanos / 1_000_000_000,
        nanos: (nanos % 1_000_000_000) as i32,
    })
}

async fn recommendation(
    req: http::Request<Incoming>,
    catalog: grpc::Client,
) -> http::Response<tonic::body::Body> {
    let path = req.uri().path().to_string();
    if path != "/hipstershop.RecommendationService/ListRecommendations" {
        return grpc::unimplemented(&path);
    }
    grpc::unary(req, move |r: ListRecommendationsRequest| {
        let catalog = catalog.clone();
        async move {
            let all: ListProductsResponse = catalog
                .call("/hipstershop.ProductCatalogService/ListProducts", Empty {})
                .await?;
            let mut ids: Vec<String> = all
                .products
                .into_iter()
                .map(|p| p.id)
                .filter(|id| !r.product_ids.contains(id))
                .collect();
            fastrand::shuffle(&mut ids);
            ids.truncate(5);
            Ok(ListRecommendationsResponse { product_ids: ids })
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversions_go_through_usd() {
        let eur = convert(&CurrencyConversionRequest {
            from: Some(Money {
                currency_code: "USD".into(),
                units: 100,
                nanos: 0,
            }),
            to_code: "EUR".into(),
        })
        .unwrap();
        assert_eq!((eur.currency_code.as_str(), eur.units), ("EUR", 88));
        assert!(convert(&CurrencyConversionRequest {
            from: None,
            to_code: "XXX".into(),
        })
        .is_err());
    }
}
