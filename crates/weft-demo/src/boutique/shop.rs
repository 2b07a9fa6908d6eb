//! The shop's back office, as Online Boutique's services: cartservice
//! (carts in memory), shippingservice (a flat quote, a tracking id),
//! paymentservice (checks the card, returns a transaction id),
//! emailservice (logs the confirmation), adservice (ads by category) and
//! checkoutservice, which places an order by calling all of them in
//! Online Boutique's order.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use hyper::body::Incoming;
use tonic::Status;

use super::grpc::{self, Client};
use super::proto::*;

type Reply = http::Response<tonic::body::Body>;

pub type Carts = Arc<Mutex<HashMap<String, Vec<CartItem>>>>;

pub async fn cart(req: http::Request<Incoming>, carts: Carts) -> Reply {
    let path = req.uri().path().to_string();
    match path.as_str() {
        "/hipstershop.CartService/AddItem" => {
            grpc::unary(req, move |r: AddItemRequest| {
                let carts = carts.clone();
                async move {
                    let item = r.item.unwrap_or_default();
                    let mut carts = carts.lock().unwrap_or_else(|e| e.into_inner());
                    let items = carts.entry(r.user_id).or_default();
                    match items.iter_mut().find(|i| i.product_id == item.product_id) {
                        Some(i) => i.quantity += item.quantity,
                        None => items.push(item),
                    }
                    Ok(Empty {})
                }
            })
            .await
        }
        "/hipstershop.CartService/GetCart" => {
            grpc::unary(req, move |r: UserRequest| {
                let carts = carts.clone();
                async move {
                    let carts = carts.lock().unwrap_or_else(|e| e.into_inner());
                    let items = carts.get(&r.user_id).cloned().unwrap_or_default();
                    Ok(Cart {
                        user_id: r.user_id,
                        items,
                    })
                }
            })
            .await
        }
        "/hipstershop.CartService/EmptyCart" => {
            grpc::unary(req, move |r: UserRequest| {
                let carts = carts.clone();
                async move {
                    carts
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .remove(&r.user_id);
                    Ok(Empty {})
                }
            })
            .await
        }
        other => grpc::unimplemented(other),
    }
}

fn usd(units: i64, nanos: i32) -> Money {
    Money {
        currency_code: "USD".into(),
        units,
        nanos,
    }
}

fn id(prefix: &str) -> String {
    format!("{prefix}-{:016x}", fastrand::u64(..))
}

pub async fn shipping(req: http::Request<Incoming>) -> Reply {
    let path = req.uri().path().to_string();
    match path.as_str() {
        "/hipstershop.ShippingService/GetQuote" => {
            grpc::unary(req, |_: ShippingRequest| async {
                Ok(GetQuoteResponse {
                    cost_usd: Some(usd(8, 990_000_000)),
                })
            })
            .await
        }
        "/hipstershop.ShippingService/ShipOrder" => {
            grpc::unary(req, |_: ShippingRequest| async {
                Ok(ShipOrderResponse {
                    tracking_id: id("track"),
                })
            })
            .await
        }
        other => grpc::unimplemented(other),
    }
}

pub async fn payment(req: http::Request<Incoming>) -> Reply {
    let path = req.uri().path().to_string();
    if path != "/hipstershop.PaymentService/Charge" {
        return grpc::unimplemented(&path);
    }
    grpc::unary(req, |r: ChargeRequest| async move {
        let card = r.credit_card.unwrap_or_default();
        let digits = card
            .credit_card_number
            .chars()
            .filter(char::is_ascii_digit)
            .count();
        if digits < 12 {
            return Err(Status::invalid_argument("Credit card info is invalid"));
        }
        Ok(ChargeResponse {
            transaction_id: id("tx"),
        })
    })
    .await
}

pub async fn email(req: http::Request<Incoming>, workload: String) -> Reply {
    let path = req.uri().path().to_string();
    if path != "/hipstershop.EmailService/SendOrderConfirmation" {
        return grpc::unimplemented(&path);
    }
    grpc::unary(req, move |r: SendOrderConfirmationRequest| {
        let workload = workload.clone();
        async move {
            let order = r.order.unwrap_or_default().order_id;
            println!("{workload}: order confirmation {order} sent to {}", r.email);
            Ok(Empty {})
        }
    })
    .await
}

pub async fn ad(req: http::Request<Incoming>) -> Reply {
    let path = req.uri().path().to_string();
    if path != "/hipstershop.AdService/GetAds" {
        return grpc::unimplemented(&path);
    }
    grpc::unary(req, |r: AdRequest| async move {
        let key = r
            .context_keys
            .first()
            .cloned()
            .unwrap_or_else(|| "kitchen".into());
        Ok(AdResponse {
            ads: vec![Ad {
                redirect_url: format!("/product/{}", super::first_in(&key)),
                text: format!("{key} for less: 20% off today"),
            }],
        })
    })
    .await
}

/// checkoutservice's clients.
#[derive(Clone)]
pub struct Checkout {
    pub cart: Client,
    pub catalog: Client,
    pub currency: Client,
    pub shipping: Client,
    pub payment: Client,
    pub email: Client,
}

pub async fn checkout(req: http::Request<Incoming>, c: Checkout) -> Reply {
    let path = req.uri().path().to_string();
    if path != "/hipstershop.CheckoutService/PlaceOrder" {
        return grpc::unimplemented(&path);
    }
    grpc::unary(req, move |r: PlaceOrderRequest| {
        let c = c.clone();
        async move { c.place_order(r).await }
    })
    .await
}

fn add(a: &Money, b: &Money) -> Money {
    let nanos = |m: &Money| i128::from(m.units) * 1_000_000_000 + i128::from(m.nanos);
    let sum = nanos(a) + nanos(b);
    Money {
        currency_code: a.currency_code.clone(),
        units: (sum / 1_000_000_000) as i64,
        nanos: (sum % 1_000_000_000) as i32,
    }
}

fn times(m: &Money, n: i32) -> Money {
    (1..n.max(1)).fold(m.clone(), |acc, _| add(&acc, m))
}

impl Checkout {
    async fn convert(&self, from: Option<Money>, to: &str) -> Result<Money, Status> {
        self.currency
            .call(
                "/hipstershop.CurrencyService/Convert",
                CurrencyConversionRequest {
                    from,
                    to_code: to.into(),
                },
            )
            .await
    }

    async fn place_order(&self, r: PlaceOrderRequest) -> Result<PlaceOrderResponse, Status> {
        let user = UserRequest {
            user_id: r.user_id.clone(),
        };
        let cart: Cart = self
            .cart
            .call("/hipstershop.CartService/GetCart", user.clone())
            .await?;
        if cart.items.is_empty() {
            return Err(Status::failed_precondition("the cart is empty"));
        }
        let mut items = Vec::new();
        let mut total = Money {
            currency_code: r.user_currency.clone(),
            ..Default::default()
        };
        for item in &cart.items {
            let p: Product = self
                .catalog
                .call(
                    "/hipstershop.ProductCatalogService/GetProduct",
                    GetProductRequest {
                        id: item.product_id.clone(),
                    },
                )
                .await?;
            let cost = self.convert(p.price_usd, &r.user_currency).await?;
            total = add(&total, &times(&cost, item.quantity));
            items.push(OrderItem {
                item: Some(item.clone()),
                cost: Some(cost),
            });
        }
        let shipping = ShippingRequest {
            address: r.address.clone(),
            items: cart.items.clone(),
        };
        let quote: GetQuoteResponse = self
            .shipping
            .call("/hipstershop.ShippingService/GetQuote", shipping.clone())
            .await?;
        let shipping_cost = self.convert(quote.cost_usd, &r.user_currency).await?;
        total = add(&total, &shipping_cost);
        let _: ChargeResponse = self
            .payment
            .call(
                "/hipstershop.PaymentService/Charge",
                ChargeRequest {
                    amount: Some(total),
                    credit_card: r.credit_card.clone(),
                },
            )
            .await?;
        let shipped: ShipOrderResponse = self
            .shipping
            .call("/hipstershop.ShippingService/ShipOrder", shipping)
            .await?;
        let _: Empty = self
            .cart
            .call("/hipstershop.CartService/EmptyCart", user)
            .await?;
        let order = OrderResult {
            order_id: id("order"),
            shipping_tracking_id: shipped.tracking_id,
            shipping_cost: Some(shipping_cost),
            shipping_address: r.address,
            items,
        };
        // As in Online Boutique, a failed confirmation e-mail does not fail
        // the order.
        let sent: Result<Empty, Status> = self
            .email
            .call(
                "/hipstershop.EmailService/SendOrderConfirmation",
                SendOrderConfirmationRequest {
                    email: r.email,
                    order: Some(order.clone()),
                },
            )
            .await;
        if let Err(e) = sent {
            tracing::warn!(error = %e, "order confirmation not sent");
        }
        Ok(PlaceOrderResponse { order: Some(order) })
    }
}
