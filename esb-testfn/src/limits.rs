//! Open-file limits in tests: a binary started under `ulimit`, and the limits a process ended
//! up with.

use std::fs::File;
use std::path::Path;
use std::process::{Command, Stdio};

/// `command` started by `sh` under `ulimit <limit>` (`-n 256` for both limits, `-Sn 256` for
/// the soft one alone), with `command`'s program, arguments and environment, its standard
/// output discarded and its standard error written to the file `stderr` (created). `sh`
/// `exec`s the program, so the child's pid is the program's.
pub fn under_ulimit(limit: &str, command: &Command, stderr: &Path) -> std::io::Result<Command> {
    let mut limited = Command::new("sh");
    limited
        .arg("-c")
        .arg(format!("ulimit {limit} && exec \"$0\" \"$@\""))
        .arg(command.get_program())
        .args(command.get_args())
        .stdout(Stdio::null())
        .stderr(File::create(stderr)?);
    for (key, value) in command.get_envs() {
        match value {
            Some(value) => limited.env(key, value),
            None => limited.env_remove(key),
        };
    }
    Ok(limited)
}

/// The soft and hard open-file limits of process `pid` (`/proc/<pid>/limits`; `unlimited`
/// is `u64::MAX`).
pub fn open_file_limits(pid: u32) -> std::io::Result<(u64, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/limits"))?;
    let parse = |value: &str| match value {
        "unlimited" => Some(u64::MAX),
        number => number.parse().ok(),
    };
    text.lines()
        .find_map(|line| {
            let mut values = line.strip_prefix("Max open files")?.split_whitespace();
            Some((parse(values.next()?)?, parse(values.next()?)?))
        })
        .ok_or_else(|| {
            std::io::Error::other(format!("/proc/{pid}/limits: no \"Max open files\" line"))
        })
}

/// This process's hard open-file limit when it is above `soft`, so that a child started
/// under `ulimit -Sn <soft>` has a higher limit to raise its own to; otherwise `None`, with
/// the reason printed (a test that needs it is skipped).
pub fn hard_limit_above(soft: u64) -> Option<u64> {
    match open_file_limits(std::process::id()) {
        Ok((_, hard)) if hard > soft => Some(hard),
        Ok((_, hard)) => {
            eprintln!("skipped: the hard open-file limit ({hard}) is not above {soft}");
            None
        }
        Err(err) => {
            eprintln!("skipped: cannot read this process's open-file limits: {err}");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_soft_limit_set_by_ulimit_is_what_the_process_has() {
        let mut sleep = Command::new("sleep");
        sleep.arg("30");
        let mut child = under_ulimit("-Sn 77", &sleep, Path::new("/dev/null"))
            .unwrap()
            .spawn()
            .unwrap();
        let (own_soft, own_hard) = open_file_limits(std::process::id()).unwrap();
        let mut limits = (own_soft, own_hard);
        for _ in 0..100 {
            limits = open_file_limits(child.id()).unwrap();
            if limits.0 == 77 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        assert_eq!(limits, (77, own_hard));
    }
}
