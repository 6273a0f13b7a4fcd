//! Process limits a server of sandboxes needs: enough file descriptors.

use nix::sys::resource::{Resource, getrlimit, setrlimit};

/// The open-file limit after [`raise_fd_limit`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct FdLimit {
    /// The soft limit in force before.
    pub before: u64,
    /// The soft limit in force now (the hard limit when raising it worked).
    pub soft: u64,
    /// The hard limit.
    pub hard: u64,
}

impl FdLimit {
    /// How many client connections fit under the soft limit: three quarters of it, the rest
    /// kept for sandboxes (pipes, Runtime API sockets), agents, logs and files.
    pub fn connection_budget(&self) -> usize {
        usize::try_from(self.soft / 4 * 3)
            .unwrap_or(usize::MAX)
            .max(1)
    }
}

/// Descriptors an idle process sandbox holds in the process that runs it: its runtime
/// client's Runtime API connection, its stdout and its stderr.
pub const FDS_PER_IDLE_SANDBOX: u64 = 3;

/// Descriptors kept aside for what is neither a client connection nor a sandbox (listeners,
/// agents, log shipping, files being read).
pub const FDS_RESERVED: u64 = 64;

impl FdLimit {
    /// How many idle process sandboxes fit under the soft limit beside `connections` client
    /// connections and [`FDS_RESERVED`].
    pub fn sandbox_budget(&self, connections: usize) -> u64 {
        let connections = u64::try_from(connections).unwrap_or(u64::MAX);
        self.soft
            .saturating_sub(connections)
            .saturating_sub(FDS_RESERVED)
            / FDS_PER_IDLE_SANDBOX
    }
}

/// Raises this process's soft open-file limit (`RLIMIT_NOFILE`) to its hard limit, as
/// servers that hold many sockets do; returns the limits.
pub fn raise_fd_limit() -> std::io::Result<FdLimit> {
    let (before, hard) = getrlimit(Resource::RLIMIT_NOFILE).map_err(std::io::Error::from)?;
    if before >= hard {
        return Ok(FdLimit {
            before,
            soft: before,
            hard,
        });
    }
    setrlimit(Resource::RLIMIT_NOFILE, hard, hard).map_err(std::io::Error::from)?;
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).map_err(std::io::Error::from)?;
    Ok(FdLimit { before, soft, hard })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn the_soft_limit_reaches_the_hard_one() {
        let limit = raise_fd_limit().unwrap();
        assert_eq!(limit.soft, limit.hard);
        assert_eq!(getrlimit(Resource::RLIMIT_NOFILE).unwrap().0, limit.hard);
        assert!(limit.connection_budget() < usize::try_from(limit.soft).unwrap());
    }

    #[test]
    fn sandboxes_get_what_connections_and_the_reserve_leave() {
        let limit = FdLimit {
            before: 1024,
            soft: 1024,
            hard: 1024,
        };
        assert_eq!(limit.sandbox_budget(0), (1024 - FDS_RESERVED) / 3);
        assert_eq!(limit.sandbox_budget(700), (1024 - 700 - FDS_RESERVED) / 3);
        assert_eq!(limit.sandbox_budget(5000), 0);
    }
}
