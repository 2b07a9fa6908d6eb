//! `weft-proxy`: what a sidecar or gateway runs. The same proxy as
//! `weft proxy`, in a binary of its own so that a proxy maps only the
//! proxy's code: an idle sidecar's resident memory is mostly the code
//! pages it touched, and the all-in-one `weft` binary's CLI, control plane
//! and demo apps sit between them.

use clap::Parser;

#[derive(Parser)]
#[command(
    name = "weft-proxy",
    version,
    about = "Weft's proxy (sidecar or gateway), fed by a control plane over ADS"
)]
struct Cli {
    #[command(flatten)]
    args: weft_proxy::cli::ProxyArgs,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    weft_proxy::cli::init_logging();
    weft_proxy::cli::main(cli.args)
}
