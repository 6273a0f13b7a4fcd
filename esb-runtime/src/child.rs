//! What a process sandbox's leader does between fork and exec: the crate's one `unsafe`
//! island (`pre_exec`), kept to async-signal-safe system calls.
//!
//! The leader asks for SIGKILL when the thread that forked it dies (`PR_SET_PDEATHSIG`), so
//! that a gateway or agent killed with SIGKILL leaves no sandbox running, and takes its CPU
//! set itself (forking from a short-lived pinned thread would trigger that very signal).
#![allow(unsafe_code)]

use nix::sched::CpuSet;
use nix::sys::signal::Signal;
use nix::unistd::Pid;

/// Makes the child of `command` die with this process's forking thread and, with `cpus`,
/// run on those CPUs.
pub(crate) fn prepare(command: &mut tokio::process::Command, cpus: Option<CpuSet>) {
    let parent = nix::unistd::getpid();
    let hook = move || -> std::io::Result<()> {
        nix::sys::prctl::set_pdeathsig(Some(Signal::SIGKILL)).map_err(std::io::Error::from)?;
        // The parent may have died between fork and prctl: then nobody would kill us.
        if nix::unistd::getppid() != parent {
            return Err(std::io::Error::other("the parent exited during the spawn"));
        }
        if let Some(cpus) = &cpus {
            nix::sched::sched_setaffinity(Pid::from_raw(0), cpus).map_err(std::io::Error::from)?;
        }
        Ok(())
    };
    // SAFETY: the hook runs in the forked child before exec and only makes system calls
    // (prctl, getppid, sched_setaffinity) on values moved in before the fork: no allocation,
    // no lock, nothing that is not async-signal-safe.
    unsafe {
        command.pre_exec(hook);
    }
}

/// Makes the child of `command` get SIGKILL when the thread that spawns it dies, so that a
/// process killed with SIGKILL leaves no such child running.
pub fn die_with_parent(command: &mut tokio::process::Command) {
    prepare(command, None);
}
