//! The messages of Online Boutique's `demo.proto` (package `hipstershop`)
//! that the services built here use, with the same field numbers, so real
//! Online Boutique clients and Weft's demo understand each other.

#[derive(Clone, PartialEq, prost::Message)]
pub struct Empty {}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Money {
    #[prost(string, tag = "1")]
    pub currency_code: String,
    #[prost(int64, tag = "2")]
    pub units: i64,
    #[prost(int32, tag = "3")]
    pub nanos: i32,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Product {
    #[prost(string, tag = "1")]
    pub id: String,
    #[prost(string, tag = "2")]
    pub name: String,
    #[prost(string, tag = "3")]
    pub description: String,
    #[prost(string, tag = "4")]
    pub picture: String,
    #[prost(message, optional, tag = "5")]
    pub price_usd: Option<Money>,
    #[prost(string, repeated, tag = "6")]
    pub categories: Vec<String>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ListProductsResponse {
    #[prost(message, repeated, tag = "1")]
    pub products: Vec<Product>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct GetProductRequest {
    #[prost(string, tag = "1")]
    pub id: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct GetSupportedCurrenciesResponse {
    #[prost(string, repeated, tag = "1")]
    pub currency_codes: Vec<String>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct CurrencyConversionRequest {
    #[prost(message, optional, tag = "1")]
    pub from: Option<Money>,
    #[prost(string, tag = "2")]
    pub to_code: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ListRecommendationsRequest {
    #[prost(string, tag = "1")]
    pub user_id: String,
    #[prost(string, repeated, tag = "2")]
    pub product_ids: Vec<String>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ListRecommendationsResponse {
    #[prost(string, repeated, tag = "1")]
    pub product_ids: Vec<String>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct CartItem {
    #[prost(string, tag = "1")]
    pub product_id: String,
    #[prost(int32, tag = "2")]
    pub quantity: i32,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct AddItemRequest {
    #[prost(string, tag = "1")]
    pub user_id: String,
    #[prost(message, optional, tag = "2")]
    pub item: Option<CartItem>,
}

/// `GetCartRequest` and `EmptyCartRequest`: both only name the user.
#[derive(Clone, PartialEq, prost::Message)]
pub struct UserRequest {
    #[prost(string, tag = "1")]
    pub user_id: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Cart {
    #[prost(string, tag = "1")]
    pub user_id: String,
    #[prost(message, repeated, tag = "2")]
    pub items: Vec<CartItem>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Address {
    #[prost(string, tag = "1")]
    pub street_address: String,
    #[prost(string, tag = "2")]
    pub city: String,
    #[prost(string, tag = "3")]
    pub state: String,
    #[prost(string, tag = "4")]
    pub country: String,
    #[prost(int32, tag = "5")]
    pub zip_code: i32,
}

/// `GetQuoteRequest` and `ShipOrderRequest` share their fields.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ShippingRequest {
    #[prost(message, optional, tag = "1")]
    pub address: Option<Address>,
    #[prost(message, repeated, tag = "2")]
    pub items: Vec<CartItem>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct GetQuoteResponse {
    #[prost(message, optional, tag = "1")]
    pub cost_usd: Option<Money>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ShipOrderResponse {
    #[prost(string, tag = "1")]
    pub tracking_id: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct CreditCardInfo {
    #[prost(string, tag = "1")]
    pub credit_card_number: String,
    #[prost(int32, tag = "2")]
    pub credit_card_cvv: i32,
    #[prost(int32, tag = "3")]
    pub credit_card_expiration_year: i32,
    #[prost(int32, tag = "4")]
    pub credit_card_expiration_month: i32,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ChargeRequest {
    #[prost(message, optional, tag = "1")]
    pub amount: Option<Money>,
    #[prost(message, optional, tag = "2")]
    pub credit_card: Option<CreditCardInfo>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ChargeResponse {
    #[prost(string, tag = "1")]
    pub transaction_id: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct OrderItem {
    #[prost(message, optional, tag = "1")]
    pub item: Option<CartItem>,
    #[prost(message, optional, tag = "2")]
    pub cost: Option<Money>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct OrderResult {
    #[prost(string, tag = "1")]
    pub order_id: String,
    #[prost(string, tag = "2")]
    pub shipping_tracking_id: String,
    #[prost(message, optional, tag = "3")]
    pub shipping_cost: Option<Money>,
    #[prost(message, optional, tag = "4")]
    pub shipping_address: Option<Address>,
    #[prost(message, repeated, tag = "5")]
    pub items: Vec<OrderItem>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct SendOrderConfirmationRequest {
    #[prost(string, tag = "1")]
    pub email: String,
    #[prost(message, optional, tag = "2")]
    pub order: Option<OrderResult>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct PlaceOrderRequest {
    #[prost(string, tag = "1")]
    pub user_id: String,
    #[prost(string, tag = "2")]
    pub user_currency: String,
    #[prost(message, optional, tag = "3")]
    pub address: Option<Address>,
    #[prost(string, tag = "5")]
    pub email: String,
    #[prost(message, optional, tag = "6")]
    pub credit_card: Option<CreditCardInfo>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct PlaceOrderResponse {
    #[prost(message, optional, tag = "1")]
    pub order: Option<OrderResult>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct AdRequest {
    #[prost(string, repeated, tag = "1")]
    pub context_keys: Vec<String>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Ad {
    #[prost(string, tag = "1")]
    pub redirect_url: String,
    #[prost(string, tag = "2")]
    pub text: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct AdResponse {
    #[prost(message, repeated, tag = "1")]
    pub ads: Vec<Ad>,
}
