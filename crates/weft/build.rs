//! Release builds of `weft-proxy` place the functions a proxy runs next to
//! each other (`layout/weft-proxy.order`, written by `bench/layout.sh`).
//!
//! Why: an idle sidecar's resident memory is mostly code pages, and the
//! kernel maps a binary's code 64 KiB at a time around each page a process
//! touches. With the functions a proxy runs spread over the whole text,
//! nearly all of it ends up resident; packed together, only that part
//! does, and the request path's code shares cache lines and TLB entries.
//!
//! Only the layout changes, never what the code does, so a stale list costs
//! nothing but the gain (the linker skips names it does not know).
//!
//! Release builds of both binaries pack their relocations (`-z
//! pack-relative-relocs`, glibc ≥ 2.36): the loader reads every relocation
//! at start-up, and a position-independent Rust binary has 400–530 KB of
//! them (one per vtable and string slot), resident for the process's life;
//! packed, a few KB.
//!
//! Both are applied where the linker is rustc's own LLD, which knows both
//! options: x86_64 Linux with no linker configured. `scripts/release.sh`
//! also links `weft-proxy` statically (glibc's functions then join the
//! list); a build script cannot ask for that, only `cargo rustc` can.

use std::env;
use std::path::Path;

fn main() {
    let order = Path::new(&env::var("CARGO_MANIFEST_DIR").unwrap()).join("layout/weft-proxy.order");
    println!("cargo::rerun-if-changed={}", order.display());
    println!("cargo::rerun-if-env-changed=RUSTC_LINKER");
    let release = env::var("PROFILE").as_deref() == Ok("release");
    let own_lld = env::var("TARGET").as_deref() == Ok("x86_64-unknown-linux-gnu")
        && env::var_os("RUSTC_LINKER").is_none()
        && !env::var("CARGO_ENCODED_RUSTFLAGS").is_ok_and(|f| f.contains("link"));
    if !(release && own_lld) {
        return;
    }
    // Both binaries: `weft` (control plane, CLI, demo apps) has 530 KB.
    println!("cargo::rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    if order.exists() {
        println!(
            "cargo::rustc-link-arg-bin=weft-proxy=-Wl,--symbol-ordering-file={},--no-warn-symbol-ordering",
            order.display()
        );
    }
}
