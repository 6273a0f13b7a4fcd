//! The logging flags both binaries share (`--victorialogs-user`, `--logs-spool`, ...), to
//! `#[command(flatten)]` into a binary's arguments. The URL itself stays with each binary.

use std::fmt;
use std::path::PathBuf;

use crate::{Auth, Error, VictoriaLogsConfig};

/// How a binary reaches VictoriaLogs besides its URL. `Debug` hides the password and the
/// header values.
#[derive(Clone, clap::Args)]
#[non_exhaustive]
pub struct VictoriaLogsArgs {
    /// VictoriaLogs basic-auth user (instead of user:password@ in the URL).
    #[arg(long, env = "VICTORIALOGS_USER", requires = "victorialogs_password")]
    pub victorialogs_user: Option<String>,

    /// VictoriaLogs basic-auth password.
    #[arg(
        long,
        env = "VICTORIALOGS_PASSWORD",
        hide_env_values = true,
        requires = "victorialogs_user"
    )]
    pub victorialogs_password: Option<String>,

    /// A header sent to VictoriaLogs, 'Name: value' (repeatable), e.g. 'Authorization: Bearer T'
    /// or 'AccountID: 3'.
    #[arg(
        long = "victorialogs-header",
        env = "VICTORIALOGS_HEADERS",
        hide_env_values = true,
        value_delimiter = '\n',
        value_name = "NAME: VALUE",
        value_parser = parse_header
    )]
    pub victorialogs_headers: Vec<(String, String)>,

    /// CA certificate(s) (PEM) trusted for an https:// VictoriaLogs, besides the system's.
    #[arg(long, env = "VICTORIALOGS_CA")]
    pub victorialogs_ca: Option<PathBuf>,

    /// The `host` field of every log record [default: this machine's hostname].
    #[arg(long, env = "ESB_LOG_HOST")]
    pub log_host: Option<String>,

    /// Bytes of log records held while VictoriaLogs is slow or away; past it the oldest
    /// are dropped (and counted).
    #[arg(long, env = "ESB_LOGS_QUEUE_BYTES", default_value_t = crate::DEFAULT_QUEUE_BYTES)]
    pub logs_queue_bytes: usize,

    /// A directory keeping the log records still unsent at shutdown, sent first at the next start.
    #[arg(long, env = "ESB_LOGS_SPOOL")]
    pub logs_spool: Option<PathBuf>,

    /// Most bytes the spool directory holds; past it the oldest unsent records are dropped.
    #[arg(long, env = "ESB_LOGS_SPOOL_BYTES", default_value_t = crate::DEFAULT_SPOOL_BYTES)]
    pub logs_spool_bytes: u64,
}

impl fmt::Debug for VictoriaLogsArgs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let headers: Vec<&str> = self
            .victorialogs_headers
            .iter()
            .map(|(name, _)| name.as_str())
            .collect();
        f.debug_struct("VictoriaLogsArgs")
            .field("victorialogs_user", &self.victorialogs_user)
            .field(
                "victorialogs_password",
                &self.victorialogs_password.as_ref().map(|_| "<redacted>"),
            )
            .field("victorialogs_headers", &headers)
            .field("victorialogs_ca", &self.victorialogs_ca)
            .field("log_host", &self.log_host)
            .field("logs_queue_bytes", &self.logs_queue_bytes)
            .field("logs_spool", &self.logs_spool)
            .field("logs_spool_bytes", &self.logs_spool_bytes)
            .finish_non_exhaustive()
    }
}

impl VictoriaLogsArgs {
    /// The shipper's settings for the VictoriaLogs at `url`.
    pub fn config(&self, url: &str) -> Result<VictoriaLogsConfig, Error> {
        let mut config = VictoriaLogsConfig::new(url);
        if let (Some(username), Some(password)) =
            (&self.victorialogs_user, &self.victorialogs_password)
        {
            config.auth = Some(Auth::Basic {
                username: username.clone(),
                password: password.clone(),
            });
        }
        config.headers.clone_from(&self.victorialogs_headers);
        if let Some(path) = &self.victorialogs_ca {
            let pem = std::fs::read(path).map_err(|source| Error::ReadFile {
                what: "VictoriaLogs CA certificate",
                path: path.clone(),
                source,
            })?;
            config.ca_pem = Some(pem);
        }
        config.host = Some(self.host());
        config.spool_dir.clone_from(&self.logs_spool);
        config.spool_max_bytes = self.logs_spool_bytes;
        config.queue_max_bytes =
            std::num::NonZeroUsize::new(self.logs_queue_bytes).ok_or(Error::InvalidConfig {
                field: "queue_max_bytes",
                reason: "must be at least 1".into(),
            })?;
        config.validate()?;
        Ok(config)
    }

    /// The `host` of this machine's records.
    pub fn host(&self) -> String {
        self.log_host.clone().unwrap_or_else(crate::hostname)
    }
}

fn parse_header(text: &str) -> Result<(String, String), String> {
    match text.split_once(':') {
        Some((name, value)) if !name.trim().is_empty() => {
            Ok((name.trim().to_owned(), value.trim().to_owned()))
        }
        _ => Err("expected 'Name: value'".into()),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        logs: VictoriaLogsArgs,
    }

    #[test]
    fn flags_become_settings_and_debug_hides_secrets() {
        let cli = Cli::try_parse_from([
            "x",
            "--victorialogs-user",
            "esb",
            "--victorialogs-password",
            "hunter2",
            "--victorialogs-header",
            "AccountID: 3",
            "--victorialogs-header",
            "Authorization: Bearer s3cret",
            "--log-host",
            "edge-1",
            "--logs-queue-bytes",
            "1000000",
        ])
        .unwrap();
        let debug = format!("{cli:?}");
        assert!(
            !debug.contains("hunter2") && !debug.contains("s3cret"),
            "{debug}"
        );
        let config = cli.logs.config("http://logs:9428").unwrap();
        assert_eq!(
            config.auth,
            Some(Auth::Basic {
                username: "esb".into(),
                password: "hunter2".into()
            })
        );
        assert_eq!(config.headers[0], ("AccountID".into(), "3".into()));
        assert_eq!(config.host.as_deref(), Some("edge-1"));
        assert_eq!(config.queue_max_bytes.get(), 1_000_000);
        assert!(Cli::try_parse_from(["x", "--victorialogs-user", "u"]).is_err());
        assert!(Cli::try_parse_from(["x", "--victorialogs-header", "nocolon"]).is_err());
    }
}
