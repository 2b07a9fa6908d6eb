//! Any text as a mesh description (`mesh.yaml`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = weft_registry::MeshSpec::from_yaml(text);
    }
});
