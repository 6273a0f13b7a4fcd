//! Managed runtimes: zip functions (`runtime` + `handler` + `code` + `layers`) run the way
//! Lambda's own bootstrap runs them, with this host's interpreters and the official runtime
//! interface clients.
//!
//! - `python3.x`: `python3.x -m awslambdaric <handler>` (the client from `pip install
//!   awslambdaric`);
//! - `nodejsNN.x`: `node <aws-lambda-ric> <handler>` (from `npm install aws-lambda-ric`);
//! - `provided`, `provided.al2`, `provided.al2023`: `<code>/bootstrap`.
//!
//! A `.zip` code package or layer is extracted once into a cache directory named by the
//! SHA-256 of its bytes; a directory is used as it is (so edits show at the next sandbox).
//! Layers are merged in order into one directory, a later layer's files winning, which plays
//! Lambda's `/opt`. The environment is Lambda's (`_HANDLER`, `LAMBDA_TASK_ROOT`,
//! `LAMBDA_RUNTIME_DIR`, `AWS_EXECUTION_ENV`, `PATH`, `LD_LIBRARY_PATH`, `PYTHONPATH`,
//! `NODE_PATH`) with `/var/task`, `/var/runtime` and `/opt` replaced by the code, the
//! client's and the merged layers' directories.

use std::fmt;

/// A runtime identifier Lambda defines and ESB runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ManagedRuntime {
    /// `python3.<minor>`, run with awslambdaric.
    Python {
        /// The minor version (`12` for `python3.12`).
        minor: u32,
    },
    /// `nodejs<major>.x`, run with aws-lambda-ric.
    Node {
        /// The major version (`20` for `nodejs20.x`).
        major: u32,
    },
    /// `provided`, `provided.al2`, `provided.al2023`: the code's own `bootstrap`.
    Provided,
}

impl ManagedRuntime {
    /// Parses a Lambda runtime identifier; `None` for one ESB does not run (Java, .NET, Ruby).
    pub fn parse(name: &str) -> Option<Self> {
        if let Some(minor) = name.strip_prefix("python3.") {
            return minor
                .parse()
                .ok()
                .map(|minor| ManagedRuntime::Python { minor });
        }
        if let Some(major) = name
            .strip_prefix("nodejs")
            .and_then(|rest| rest.strip_suffix(".x"))
        {
            return major
                .parse()
                .ok()
                .map(|major| ManagedRuntime::Node { major });
        }
        matches!(name, "provided" | "provided.al2" | "provided.al2023")
            .then_some(ManagedRuntime::Provided)
    }
}

impl fmt::Display for ManagedRuntime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ManagedRuntime::Python { minor } => write!(f, "python3.{minor}"),
            ManagedRuntime::Node { major } => write!(f, "nodejs{major}.x"),
            ManagedRuntime::Provided => f.write_str("provided"),
        }
    }
}

#[cfg(feature = "managed")]
mod host;
#[cfg(feature = "managed")]
pub use host::{Bootstrap, ImageBootstrap, Managed, ManagedConfig, ZipFunction, default_image};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runtime_identifiers_are_parsed_as_lambda_names_them() {
        assert_eq!(
            ManagedRuntime::parse("python3.12"),
            Some(ManagedRuntime::Python { minor: 12 })
        );
        assert_eq!(
            ManagedRuntime::parse("nodejs20.x"),
            Some(ManagedRuntime::Node { major: 20 })
        );
        for provided in ["provided", "provided.al2", "provided.al2023"] {
            assert_eq!(
                ManagedRuntime::parse(provided),
                Some(ManagedRuntime::Provided)
            );
        }
        for other in [
            "java21",
            "dotnet8",
            "ruby3.3",
            "python2.7",
            "nodejs20",
            "python3.",
        ] {
            assert_eq!(ManagedRuntime::parse(other), None, "{other}");
        }
    }
}
