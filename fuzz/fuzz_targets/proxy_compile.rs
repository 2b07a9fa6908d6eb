//! The proxy's compile step, fed arbitrary protobuf bytes as each xDS
//! type: it must answer Ok or a NACK reason, never panic or hang.
#![no_main]

use libfuzzer_sys::fuzz_target;

const TYPES: [&str; 4] = [
    "type.googleapis.com/envoy.config.listener.v3.Listener",
    "type.googleapis.com/envoy.config.route.v3.RouteConfiguration",
    "type.googleapis.com/envoy.config.cluster.v3.Cluster",
    "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment",
];

fuzz_target!(|data: &[u8]| {
    let Some((first, rest)) = data.split_first() else {
        return;
    };
    let _ = weft_proxy::compile::check(TYPES[usize::from(*first) % TYPES.len()], rest);
});
