//! The shop's frontend: HTTP pages over the gRPC services. `/` lists the
//! catalog with prices in the visitor's currency (`shop_currency` cookie,
//! USD by default), the cart's size and an ad; `/product/{id}` shows one
//! product and the recommendations for it; `/cart` shows the cart and
//! takes `product_id` and `quantity` (POST); `/cart/checkout` (POST)
//! places the order. The visitor is the `shop_session-id` cookie. A failed
//! gRPC call is a 500 page naming the call and its status, as Online
//! Boutique's frontend renders it.

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
    cart: Client,
    checkout: Client,
    ad: Client,
}

pub async fn run(workload: String, listen: SocketAddr) -> anyhow::Result<()> {
    let app = Arc::new(Frontend {
        workload,
        catalog: Client::new(super::CATALOG_URL)?,
        currency: Client::new(super::CURRENCY_URL)?,
        recommendation: Client::new("http://recommendationservice:8080")?,
        cart: Client::new(super::CART_URL)?,
        checkout: Client::new("http://checkoutservice:5050")?,
        ad: Client::new("http://adservice:9555")?,
    });
    let listener = tokio::net::TcpListener::bind(listen).await?;
    tracing::info!(workload = %app.workload, %listen, "boutique frontend listening");
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

/// `POST /setCurrency` (`currency_code=EUR`): Online Boutique keeps the
/// choice in the `shop_currency` cookie and sends the visitor home; a
/// currency it does not sell in is a 422.
fn set_currency(workload: &str, form: &str) -> Response<Full<Bytes>> {
    let code = field(form, "currency_code").unwrap_or_default();
    if !super::RATES.iter().any(|(c, _)| *c == code) {
        return page(
            StatusCode::UNPROCESSABLE_ENTITY,
            workload,
            format!("{workload}\ninvalid currency {code:?}\n"),
        );
    }
    let mut resp = page(StatusCode::FOUND, workload, String::new());
    let headers = resp.headers_mut();
    headers.insert(http::header::LOCATION, http::HeaderValue::from_static("/"));
    if let Ok(v) = http::HeaderValue::from_str(&format!("shop_currency={code}; Path=/")) {
        headers.insert(http::header::SET_COOKIE, v);
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

fn cookie<B>(req: &Request<B>, name: &str, default: &str) -> String {
    let prefix = format!("{name}=");
    req.headers()
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| c.trim().strip_prefix(prefix.as_str()))
        .unwrap_or(default)
        .to_string()
}

/// `a=1&b=2` form fields.
fn field(form: &str, name: &str) -> Option<String> {
    form.split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
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
        let currency = cookie(&req, "shop_currency", "USD");
        let user = cookie(&req, "shop_session-id", "visitor");
        let post = req.method() == http::Method::POST;
        let form = if post {
            use http_body_util::BodyExt;
            let body = req.into_body().collect().await.map(|b| b.to_bytes());
            String::from_utf8_lossy(&body.unwrap_or_default()).into_owned()
        } else {
            String::new()
        };
        let w = &self.workload;
        let result = match (path.as_str(), post) {
            ("/_healthz", _) => return page(StatusCode::OK, w, "ok\n".into()),
            ("/", false) => self.home(&currency, &user).await,
            (p, false) if p.starts_with("/product/") => {
                self.product(&p["/product/".len()..], &currency).await
            }
            ("/cart", false) => self.view_cart(&user).await,
            ("/cart", true) => self.add_to_cart(&user, &form).await,
            ("/cart/checkout", true) => self.place_order(&user, &currency).await,
            ("/setCurrency", true) => return set_currency(w, &form),
            _ => return page(StatusCode::NOT_FOUND, w, format!("{w}\nnot found\n")),
        };
        match result {
            Ok(body) => page(StatusCode::OK, w, body),
            Err((what, e)) => failed(w, what, &e),
        }
    }

    async fn view_cart(&self, user: &str) -> Result<String, (&'static str, Status)> {
        let cart = self.get_cart(user).await?;
        let mut out = format!("{}\ncart of {user}\n", self.workload);
        for i in cart.items {
            let _ = writeln!(out, "{} x{}", i.product_id, i.quantity);
        }
        Ok(out)
    }

    async fn get_cart(&self, user: &str) -> Result<Cart, (&'static str, Status)> {
        self.cart
            .call(
                "/hipstershop.CartService/GetCart",
                UserRequest {
                    user_id: user.into(),
                },
            )
            .await
            .map_err(|e| ("could not retrieve cart", e))
    }

    async fn add_to_cart(&self, user: &str, form: &str) -> Result<String, (&'static str, Status)> {
        let product_id = field(form, "product_id").unwrap_or_default();
        let quantity = field(form, "quantity")
            .and_then(|q| q.parse().ok())
            .unwrap_or(1);
        let _: Empty = self
            .cart
            .call(
                "/hipstershop.CartService/AddItem",
                AddItemRequest {
                    user_id: user.into(),
                    item: Some(CartItem {
                        product_id,
                        quantity,
                    }),
                },
            )
            .await
            .map_err(|e| ("failed to add to cart", e))?;
        self.view_cart(user).await
    }

    async fn place_order(
        &self,
        user: &str,
        currency: &str,
    ) -> Result<String, (&'static str, Status)> {
        let placed: PlaceOrderResponse = self
            .checkout
            .call(
                "/hipstershop.CheckoutService/PlaceOrder",
                PlaceOrderRequest {
                    user_id: user.into(),
                    user_currency: currency.into(),
                    address: Some(Address {
                        street_address: "1600 Amphitheatre Parkway".into(),
                        city: "Mountain View".into(),
                        state: "CA".into(),
                        country: "United States".into(),
                        zip_code: 94043,
                    }),
                    email: "someone@example.com".into(),
                    credit_card: Some(CreditCardInfo {
                        credit_card_number: "4432-8015-6152-0454".into(),
                        credit_card_cvv: 672,
                        credit_card_expiration_year: 2039,
                        credit_card_expiration_month: 1,
                    }),
                },
            )
            .await
            .map_err(|e| ("failed to complete the order", e))?;
        let order = placed.order.unwrap_or_default();
        Ok(format!(
            "{}\nYour order is complete!\norder {} tracking {} shipping {}\n",
            self.workload,
            order.order_id,
            order.shipping_tracking_id,
            order.shipping_cost.as_ref().map(price).unwrap_or_default()
        ))
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

    async fn home(&self, currency: &str, user: &str) -> Result<String, (&'static str, Status)> {
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
        let cart = self.get_cart(user).await?;
        // As in Online Boutique, a missing ad does not fail the page.
        let ad: Option<AdResponse> = self
            .ad
            .call("/hipstershop.AdService/GetAds", AdRequest::default())
            .await
            .ok();
        let mut out = format!(
            "{}\nOnline Boutique\ncurrencies: {}\ncart: {} items\nad: {}\n",
            self.workload,
            currencies.currency_codes.join(" "),
            cart.items.iter().map(|i| i.quantity).sum::<i32>(),
            ad.and_then(|a| a.ads.into_iter().next())
                .map_or(String::new(), |a| a.text)
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
