//! `esb-gateway`: the HTTP(S) front door of ESB. See `esb-gateway --help`.

use clap::Parser;

/// mimalloc: fewer cycles per request than glibc's allocator under load (see README).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    esb_gateway::cli::run(esb_gateway::cli::Args::parse()).await
}
