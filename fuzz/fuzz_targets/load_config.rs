//! Any text through the config loader, validator and position index: no
//! panic, no hang, bounded memory.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let loaded = weft_config::load_str(text, "fuzz.yaml");
        for p in &loaded.problems {
            let _ = p.to_string();
        }
        for r in &loaded.resources {
            let _ = r.to_document();
        }
    }
});
