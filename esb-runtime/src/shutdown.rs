//! Waiting for the signal that asks a server to stop.

use tokio::signal::unix::{SignalKind, signal};

/// Resolves on the first SIGTERM or SIGINT (Ctrl-C), with the signal's name.
///
/// When SIGTERM cannot be listened for, only SIGINT (Ctrl-C) is; when neither can, it
/// never resolves (the process then stops only by SIGKILL). Both cases are logged.
pub async fn shutdown_signal() -> &'static str {
    let mut term = match signal(SignalKind::terminate()) {
        Ok(term) => term,
        Err(err) => {
            tracing::warn!(error = %err, "cannot listen for SIGTERM; Ctrl-C only");
            if let Err(err) = tokio::signal::ctrl_c().await {
                tracing::error!(error = %err, "cannot listen for SIGINT either; stop with SIGKILL");
                std::future::pending::<()>().await;
            }
            return "SIGINT";
        }
    };
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        interrupted = tokio::signal::ctrl_c() => match interrupted {
            Ok(()) => "SIGINT",
            Err(err) => {
                tracing::warn!(error = %err, "cannot listen for SIGINT; SIGTERM only");
                term.recv().await;
                "SIGTERM"
            }
        },
    }
}
