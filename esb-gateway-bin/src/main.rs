//! `esb-gateway`: the HTTP(S) front door of ESB. See `esb-gateway --help`.

use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    esb_gateway::cli::run(esb_gateway::cli::Args::parse()).await
}
