//! `esb-gateway`: the HTTP(S) front door of ESB. See `esb-gateway --help`.

use clap::Parser;

/// mimalloc: fewer cycles per request than glibc's allocator under load (see README).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let result = esb_gateway::cli::run(esb_gateway::cli::Args::parse()).await;
    // Records are written by a background thread: let it finish, whatever the outcome.
    let _ = tokio::task::spawn_blocking(|| {
        esb_logs::TerminalLogSink::flush(std::time::Duration::from_secs(2))
    })
    .await;
    result
}
