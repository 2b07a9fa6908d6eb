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
