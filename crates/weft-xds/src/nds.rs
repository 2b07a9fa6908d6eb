//! Istio's name table (NDS, `istio.networking.nds.v1.NameTable`): the
//! host names a sidecar's DNS proxy answers itself, with their addresses.
//! Sent over ADS like any xDS type; the message is declared here by hand,
//! field for field as Istio's proto has it, since no crate carries Istio's
//! own protos.

use std::collections::HashMap;

pub const NAME_TABLE: &str = "type.googleapis.com/istio.networking.nds.v1.NameTable";

/// host name → what it resolves to.
#[derive(Clone, PartialEq, prost::Message)]
pub struct NameTable {
    #[prost(map = "string, message", tag = "1")]
    pub table: HashMap<String, NameInfo>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct NameInfo {
    /// The addresses the name resolves to.
    #[prost(string, repeated, tag = "1")]
    pub ips: Vec<String>,
    /// `Kubernetes` or `External` (a ServiceEntry host).
    #[prost(string, tag = "2")]
    pub registry: String,
    /// For a Kubernetes service: its name, so `name` and `name.namespace`
    /// resolve from pods of its namespace.
    #[prost(string, tag = "3")]
    pub shortname: String,
    #[prost(string, tag = "4")]
    pub namespace: String,
    /// Other names for the same addresses.
    #[prost(string, repeated, tag = "5")]
    pub alt_hosts: Vec<String>,
}

impl prost::Name for NameTable {
    const NAME: &'static str = "NameTable";
    const PACKAGE: &'static str = "istio.networking.nds.v1";

    fn type_url() -> String {
        NAME_TABLE.to_string()
    }
}
