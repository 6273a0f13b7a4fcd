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

/// What a sandbox's leader is started with.
#[derive(Debug)]
pub(crate) struct Launch {
    /// The program: a path, or a name looked up in the `PATH` of `env` (else this
    /// process's).
    pub program: std::ffi::OsString,
    /// Its arguments after the program.
    pub args: Vec<std::ffi::OsString>,
    /// Its whole environment.
    pub env: Vec<(String, String)>,
    /// Its working directory (else this process's).
    pub cwd: Option<std::path::PathBuf>,
    /// The CPUs it runs on (else all).
    pub cpus: Option<CpuSet>,
}

/// A started leader: its pid (also its process group) and the read ends of its stdout and
/// stderr pipes. Its stdin is `/dev/null`.
#[derive(Debug)]
pub(crate) struct Spawned {
    pub pid: Pid,
    pub stdout: std::os::fd::OwnedFd,
    pub stderr: std::os::fd::OwnedFd,
}

/// Starts `launch` in its own process group, dying with the calling thread
/// (`PR_SET_PDEATHSIG`), on its CPU set.
///
/// The child shares this process's memory until it execs (`clone` with `CLONE_VM |
/// CLONE_VFORK`, as `posix_spawn` does), so the cost of a start does not grow with the
/// size of this process: a `fork` copies the page tables of the whole gateway, and its
/// exec tears that copy down again. It also shares the descriptor table at first
/// (`CLONE_FILES`), then takes a table of its own holding only 0, 1 and 2
/// (`close_range(3, ~0, CLOSE_RANGE_UNSHARE)`) and opens its stdio anew (`/dev/null`, and
/// the pipes' write ends through `/proc/<this process>/fd`): a gateway holding thousands of
/// descriptors would otherwise copy them all for each child, which then closes them all
/// at its exec. Everything the child needs is prepared here; between clone and exec it
/// makes only system calls.
pub(crate) fn spawn(launch: &Launch) -> std::io::Result<Spawned> {
    use std::ffi::CString;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    use std::os::unix::ffi::OsStrExt;
    use std::sync::atomic::{AtomicI32, Ordering};

    let c = |bytes: &[u8]| {
        CString::new(bytes).map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "nul byte found in provided data",
            )
        })
    };
    let program = c(resolve(launch)?.as_os_str().as_bytes())?;
    let argv_store = std::iter::once(Ok(c(launch.program.as_bytes())?))
        .chain(launch.args.iter().map(|a| c(a.as_bytes())))
        .collect::<std::io::Result<Vec<CString>>>()?;
    let envp_store = launch
        .env
        .iter()
        .map(|(k, v)| c(format!("{k}={v}").as_bytes()))
        .collect::<std::io::Result<Vec<CString>>>()?;
    let argv: Vec<*const libc::c_char> = argv_store
        .iter()
        .map(|a| a.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect();
    let envp: Vec<*const libc::c_char> = envp_store
        .iter()
        .map(|e| e.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect();
    let cwd = launch
        .cwd
        .as_ref()
        .map(|dir| c(dir.as_os_str().as_bytes()))
        .transpose()?;
    let stdin = OwnedFd::from(std::fs::File::options().read(true).open("/dev/null")?);
    let (stdout_r, stdout_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    let (stderr_r, stderr_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;

    let parent = nix::unistd::getpid().as_raw();
    let reopen = [
        c(b"/dev/null")?,
        c(format!("/proc/{parent}/fd/{}", stdout_w.as_raw_fd()).as_bytes())?,
        c(format!("/proc/{parent}/fd/{}", stderr_w.as_raw_fd()).as_bytes())?,
    ];
    let mut child = Child {
        program: program.as_ptr(),
        argv: argv.as_ptr(),
        envp: envp.as_ptr(),
        cwd: cwd.as_ref().map_or(std::ptr::null(), |d| d.as_ptr()),
        stdio: [
            stdin.as_raw_fd(),
            stdout_w.as_raw_fd(),
            stderr_w.as_raw_fd(),
        ],
        reopen: [reopen[0].as_ptr(), reopen[1].as_ptr(), reopen[2].as_ptr()],
        proc_fds: std::path::Path::new(&format!("/proc/{parent}/fd")).is_dir(),
        cpus: launch.cpus,
        parent,
        mask: empty_sigset(),
        error: AtomicI32::new(0),
    };
    let mut stack = vec![0u8; CHILD_STACK];
    // SAFETY: all signals are blocked in this thread while the child borrows its memory,
    // so no handler of this process runs on the child's stack; the old mask is restored
    // here after the clone and in the child before its exec. `child` and `stack` outlive
    // the child's use of them: with CLONE_VFORK this thread resumes only once the child
    // has exec'd or exited. The stack top is 16-byte aligned inside `stack`.
    let pid = unsafe {
        let mut all = empty_sigset();
        libc::sigfillset(&mut all);
        let mut old = empty_sigset();
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
        child.mask = old;
        let child_ptr: *mut Child = &mut child;
        let top = stack.as_mut_ptr().add(CHILD_STACK);
        let top = top.sub(top as usize % 16);
        let pid = libc::clone(
            child_main,
            top.cast(),
            libc::CLONE_VM | libc::CLONE_VFORK | libc::CLONE_FILES | libc::SIGCHLD,
            child_ptr.cast(),
        );
        let clone_error = std::io::Error::last_os_error();
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
        if pid < 0 {
            return Err(clone_error);
        }
        pid
    };
    drop(stack);
    drop((stdin, stdout_w, stderr_w));
    let pid = Pid::from_raw(pid);
    let errno = child.error.load(Ordering::SeqCst);
    if errno != 0 {
        // The child exited without exec: reap it now, nobody else follows it.
        let _ = nix::sys::wait::waitpid(pid, None);
        return Err(std::io::Error::from_raw_os_error(errno));
    }
    // SAFETY: both are open descriptors owned by nothing else.
    let (stdout, stderr) = unsafe {
        use std::os::fd::IntoRawFd;
        (
            OwnedFd::from_raw_fd(stdout_r.into_raw_fd()),
            OwnedFd::from_raw_fd(stderr_r.into_raw_fd()),
        )
    };
    Ok(Spawned {
        pid,
        stdout,
        stderr,
    })
}

/// The child's stack until it execs: a few system calls deep.
const CHILD_STACK: usize = 64 * 1024;

/// What the child reads (prepared before the clone) and writes (`error`).
struct Child {
    program: *const libc::c_char,
    argv: *const *const libc::c_char,
    envp: *const *const libc::c_char,
    cwd: *const libc::c_char,
    /// The descriptors to become 0, 1 and 2, in this process's table.
    stdio: [libc::c_int; 3],
    /// The same, as paths a child with a table of its own opens.
    reopen: [*const libc::c_char; 3],
    /// Whether `/proc/<pid>/fd` can be read (else the child copies the whole table).
    proc_fds: bool,
    cpus: Option<CpuSet>,
    parent: libc::pid_t,
    mask: libc::sigset_t,
    /// The errno of the step that failed, 0 while all went well.
    error: std::sync::atomic::AtomicI32,
}

fn empty_sigset() -> libc::sigset_t {
    // SAFETY: sigset_t is plain data; sigemptyset initialises it.
    unsafe {
        let mut set = std::mem::zeroed::<libc::sigset_t>();
        libc::sigemptyset(&mut set);
        set
    }
}

/// The child between clone and exec: only system calls, no allocation, no lock.
extern "C" fn child_main(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` is the `Child` the parent keeps alive until this child execs or exits;
    // every call below is a plain system call wrapper on prepared values.
    unsafe {
        let child = &*arg.cast::<Child>();
        let fail = |errno: libc::c_int| -> ! {
            child
                .error
                .store(errno.max(1), std::sync::atomic::Ordering::SeqCst);
            libc::_exit(127)
        };
        let errno = || *libc::__errno_location();
        // First a descriptor table of its own (until then it is the parent's): with only
        // 0, 1 and 2 copied when the kernel can, else all of it.
        let small_table = child.proc_fds
            && libc::syscall(
                libc::SYS_close_range,
                3u32,
                u32::MAX,
                libc::CLOSE_RANGE_UNSHARE,
            ) == 0;
        if small_table {
            let flags = [libc::O_RDONLY, libc::O_WRONLY, libc::O_WRONLY];
            for (target, (path, flags)) in child.reopen.iter().zip(flags).enumerate() {
                let fd = libc::open(*path, flags | libc::O_CLOEXEC);
                if fd < 0 || libc::dup2(fd, target as libc::c_int) < 0 {
                    fail(errno());
                }
                libc::close(fd);
            }
        } else {
            if libc::unshare(libc::CLONE_FILES) != 0 {
                fail(errno());
            }
            for (target, fd) in child.stdio.iter().enumerate() {
                if libc::dup2(*fd, target as libc::c_int) < 0 {
                    fail(errno());
                }
            }
        }
        // The parent's handlers must not run here: back to the defaults (the signal
        // table is the child's own copy: no CLONE_SIGHAND).
        for signal in 1..=libc::SIGRTMAX() {
            let mut action = std::mem::zeroed::<libc::sigaction>();
            if libc::sigaction(signal, std::ptr::null(), &mut action) == 0
                && action.sa_sigaction != libc::SIG_DFL
                && action.sa_sigaction != libc::SIG_IGN
            {
                let mut default = std::mem::zeroed::<libc::sigaction>();
                default.sa_sigaction = libc::SIG_DFL;
                libc::sigaction(signal, &default, std::ptr::null_mut());
            }
        }
        if libc::setpgid(0, 0) != 0 {
            fail(errno());
        }
        if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
            fail(errno());
        }
        // The parent may have died between clone and prctl: then nobody would kill us.
        if libc::getppid() != child.parent {
            fail(libc::ESRCH);
        }
        if let Some(cpus) = &child.cpus
            && nix::sched::sched_setaffinity(Pid::from_raw(0), cpus).is_err()
        {
            fail(errno());
        }
        if !child.cwd.is_null() && libc::chdir(child.cwd) != 0 {
            fail(errno());
        }
        libc::pthread_sigmask(libc::SIG_SETMASK, &child.mask, std::ptr::null_mut());
        libc::execve(child.program, child.argv, child.envp);
        fail(errno())
    }
}

/// The file `launch.program` names: a path as given, a bare name looked up in `PATH`.
fn resolve(launch: &Launch) -> std::io::Result<std::path::PathBuf> {
    use std::os::unix::ffi::OsStrExt;
    let program = std::path::Path::new(&launch.program);
    if launch.program.as_bytes().contains(&b'/') {
        return Ok(program.to_path_buf());
    }
    let path = launch
        .env
        .iter()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| std::ffi::OsString::from(v))
        .or_else(|| std::env::var_os("PATH"))
        .unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
    let mut denied = false;
    for dir in std::env::split_paths(&path) {
        let candidate = dir.join(program);
        match nix::unistd::access(&candidate, nix::unistd::AccessFlags::X_OK) {
            Ok(()) if candidate.is_file() => return Ok(candidate),
            Err(nix::errno::Errno::EACCES) => denied = true,
            _ => {}
        }
    }
    Err(std::io::Error::from_raw_os_error(if denied {
        libc::EACCES
    } else {
        libc::ENOENT
    }))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::io::Read;

    use super::*;

    fn sh(script: &str) -> Launch {
        Launch {
            program: "sh".into(),
            args: vec!["-c".into(), script.into(), "leader".into()],
            env: vec![
                ("FOO".into(), "bar baz".into()),
                ("PATH".into(), "/usr/bin:/bin".into()),
            ],
            cwd: None,
            cpus: None,
        }
    }

    /// Everything the child wrote to stdout and stderr, and how it ended.
    fn output(spawned: Spawned) -> (String, String, nix::sys::wait::WaitStatus) {
        let mut out = String::new();
        std::fs::File::from(spawned.stdout)
            .read_to_string(&mut out)
            .unwrap();
        let mut err = String::new();
        std::fs::File::from(spawned.stderr)
            .read_to_string(&mut err)
            .unwrap();
        let status = nix::sys::wait::waitpid(spawned.pid, None).unwrap();
        (out, err, status)
    }

    #[test]
    fn a_leader_gets_its_argv_environment_directory_group_and_cpus() {
        let dir = tempfile::tempdir().unwrap();
        let mut launch = sh(concat!(
            "echo \"$0|$FOO|$(pwd)\"; ",
            "cut -d' ' -f5 /proc/$$/stat; ",
            "grep -E '^Cpus_allowed_list' /proc/$$/status; ",
            "echo to-stderr >&2; ",
            "echo fds; ls /proc/$$/fd; echo end; ",
            "read -r line || echo stdin-empty"
        ));
        launch.cwd = Some(dir.path().to_path_buf());
        let mut cpus = CpuSet::new();
        cpus.set(0).unwrap();
        launch.cpus = Some(cpus);
        // dup() leaves out close-on-exec: such a descriptor must not reach the child either.
        let inheritable = nix::unistd::dup(std::fs::File::open("/dev/null").unwrap()).unwrap();
        let spawned = spawn(&launch).unwrap();
        drop(inheritable);
        let pid = spawned.pid.as_raw();
        let (out, err, status) = output(spawned);
        let lines: Vec<&str> = out.lines().collect();
        let cwd = dir.path().canonicalize().unwrap();
        assert_eq!(
            lines[0],
            format!("leader|bar baz|{}", cwd.display()),
            "{out}"
        );
        assert_eq!(lines[1], pid.to_string(), "its own process group: {out}");
        assert!(out.contains("Cpus_allowed_list:\t0\n"), "{out}");
        assert_eq!(lines.last(), Some(&"stdin-empty"), "{out}");
        assert_eq!(err, "to-stderr\n");
        // Nothing of this process's but the pipes (a descriptor without close-on-exec
        // included), and stdin is /dev/null.
        assert!(out.contains("\nfds\n0\n1\n2\nend\n"), "{out}");
        assert_eq!(
            status,
            nix::sys::wait::WaitStatus::Exited(Pid::from_raw(pid), 0)
        );
    }

    #[test]
    fn a_leader_starts_with_no_signal_blocked() {
        // The program itself reads its mask: a shell's own mask changes while it waits for
        // the commands it runs.
        let launch = Launch {
            program: "grep".into(),
            args: vec!["^SigBlk".into(), "/proc/self/status".into()],
            env: vec![("PATH".into(), "/usr/bin:/bin".into())],
            cwd: None,
            cpus: None,
        };
        let (out, _, _) = output(spawn(&launch).unwrap());
        assert_eq!(out, "SigBlk:\t0000000000000000\n");
    }

    #[test]
    fn a_leader_dies_with_the_thread_that_started_it() {
        let launch = sh("exec sleep 30");
        let spawned = std::thread::spawn(move || spawn(&launch).unwrap())
            .join()
            .unwrap();
        let pid = spawned.pid;
        let (_, _, status) = output(spawned);
        assert_eq!(
            status,
            nix::sys::wait::WaitStatus::Signaled(pid, Signal::SIGKILL, false)
        );
    }

    #[test]
    fn a_program_that_cannot_start_is_its_error() {
        let dir = tempfile::tempdir().unwrap();
        let plain = dir.path().join("plain");
        std::fs::write(&plain, "not a program").unwrap();
        let cases = [
            (
                std::ffi::OsString::from("/nonexistent/program"),
                libc::ENOENT,
            ),
            ("no-such-program-anywhere".into(), libc::ENOENT),
            (plain.into_os_string(), libc::EACCES),
        ];
        for (program, errno) in cases {
            let launch = Launch {
                program: program.clone(),
                ..sh("")
            };
            let err = spawn(&launch).unwrap_err();
            assert_eq!(err.raw_os_error(), Some(errno), "{program:?}: {err}");
        }
        let mut missing_dir = sh("true");
        missing_dir.cwd = Some(dir.path().join("gone"));
        let err = spawn(&missing_dir).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ENOENT), "{err}");
        let nul = Launch {
            env: vec![("A".into(), "x\0y".into())],
            ..sh("true")
        };
        assert_eq!(
            spawn(&nul).unwrap_err().kind(),
            std::io::ErrorKind::InvalidInput
        );
    }
}
