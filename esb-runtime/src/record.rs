//! A record on disk of the process sandboxes this process started, so that the next start
//! kills what a killed (SIGKILL) gateway or agent left behind: the members of their process
//! groups that `PR_SET_PDEATHSIG` does not reach (a function's own child processes).
//!
//! Layout: `<root>/<owner pid>-<owner start time>/<pgid>` holding the sandbox id, and
//! `starting-<sandbox id>` from just before its leader is started until its `<pgid>` entry is
//! written (the leader runs, and may start processes, before its starter learns its pid). An
//! owner directory whose process is gone is reaped: every process still in a recorded group
//! whose environment names that sandbox id is killed, and for a sandbox that was still
//! starting, every process whose environment names it; then the directory is removed. Several
//! gateways and agents can share a root; none touches a live owner's sandboxes.

use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// This process's record of its sandboxes.
#[derive(Debug)]
pub(crate) struct Record {
    dir: PathBuf,
}

impl Record {
    /// Reaps the records of owners that are gone under `root`, then opens this process's own.
    pub(crate) fn open(root: &Path) -> std::io::Result<(Self, usize)> {
        private_dir(root)?;
        let reaped = reap(root);
        let me = std::process::id();
        let start = start_time(me).ok_or_else(|| std::io::Error::other("no /proc/self/stat"))?;
        let dir = root.join(format!("{me}-{start}"));
        private_dir(&dir)?;
        Ok((Self { dir }, reaped))
    }

    /// Notes a sandbox whose leader is about to start, until [`Starting::started`] records
    /// its process group (or the start fails and the returned guard is dropped).
    pub(crate) fn starting(&self, id: &str) -> Starting<'_> {
        let path = self.dir.join(format!("{STARTING}{id}"));
        if let Err(err) = std::fs::File::create(&path) {
            tracing::warn!(dir = %self.dir.display(), error = %err, "cannot record a sandbox");
        }
        Starting {
            record: self,
            path,
            id: id.to_owned(),
        }
    }

    /// Notes a started sandbox: its process group and id.
    pub(crate) fn add(&self, pgid: Pid, id: &str) {
        let written = std::fs::File::create(self.dir.join(pgid.to_string()))
            .and_then(|mut file| file.write_all(id.as_bytes()));
        if let Err(err) = written {
            tracing::warn!(dir = %self.dir.display(), error = %err, "cannot record a sandbox");
        }
    }

    /// Forgets a sandbox whose group is gone.
    pub(crate) fn remove(&self, pgid: Pid) {
        let _ = std::fs::remove_file(self.dir.join(pgid.to_string()));
    }
}

/// The name prefix of a sandbox's entry while its leader starts.
const STARTING: &str = "starting-";

/// A sandbox being started, noted in the [`Record`] until it is dropped.
#[derive(Debug)]
pub(crate) struct Starting<'a> {
    record: &'a Record,
    path: PathBuf,
    id: String,
}

impl Starting<'_> {
    /// Notes the sandbox's process group; its "starting" entry goes once that is written.
    pub(crate) fn started(self, pgid: Pid) {
        self.record.add(pgid, &self.id);
    }
}

impl Drop for Starting<'_> {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

impl Drop for Record {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Creates `dir` readable by this user only, or checks that it is (and is this user's).
fn private_dir(dir: &Path) -> std::io::Result<()> {
    match std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
    {
        Ok(()) => {}
        Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(err) => return Err(err),
    }
    let meta = std::fs::metadata(dir)?;
    if meta.uid() != nix::unistd::getuid().as_raw() || meta.permissions().mode() & 0o077 != 0 {
        return Err(std::io::Error::other(format!(
            "{} is not a directory of this user only (mode 0700)",
            dir.display()
        )));
    }
    Ok(())
}

/// The start time of a process (field 22 of `/proc/<pid>/stat`), which tells a process from
/// a later one with the same pid.
fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(19)?
        .parse()
        .ok()
}

/// Kills what the owners that are gone under `root` left; returns how many processes.
fn reap(root: &Path) -> usize {
    let Ok(owners) = std::fs::read_dir(root) else {
        return 0;
    };
    let mut killed = 0;
    for owner in owners.filter_map(Result::ok) {
        let name = owner.file_name();
        let Some((pid, start)) = name.to_str().and_then(|n| n.split_once('-')) else {
            continue;
        };
        let (Ok(pid), Ok(start)) = (pid.parse::<u32>(), start.parse::<u64>()) else {
            continue;
        };
        if start_time(pid) == Some(start) {
            continue; // alive
        }
        let Ok(groups) = std::fs::read_dir(owner.path()) else {
            continue;
        };
        let mut starting = Vec::new();
        for entry in groups.filter_map(Result::ok) {
            let name = entry.file_name();
            let Some(name) = name.to_str() else {
                continue;
            };
            if let Some(id) = name.strip_prefix(STARTING) {
                starting.push(id.as_bytes().to_vec());
                continue;
            }
            let Ok(pgid) = name.parse::<i32>() else {
                continue;
            };
            let Ok(id) = std::fs::read(entry.path()) else {
                continue;
            };
            killed += kill_group_of(Pid::from_raw(pgid), &id);
        }
        killed += kill_naming(&starting);
        let _ = std::fs::remove_dir_all(owner.path());
    }
    if killed > 0 {
        tracing::warn!(
            killed,
            "killed processes of sandboxes left by a gateway or agent that did not stop cleanly"
        );
    }
    killed
}

/// Kills the members of group `pgid` whose environment names sandbox `id`.
fn kill_group_of(pgid: Pid, id: &[u8]) -> usize {
    if id.is_empty() {
        return 0;
    }
    let mut killed = 0;
    for pid in crate::process::group_members(pgid) {
        let Ok(environ) = std::fs::read(format!("/proc/{pid}/environ")) else {
            continue;
        };
        if environ.windows(id.len()).any(|w| w == id) && kill(pid, Signal::SIGKILL).is_ok() {
            killed += 1;
        }
    }
    killed
}

/// Kills every process whose environment names one of the sandbox `ids` (of those this
/// process may read: its user's, or all for root).
fn kill_naming(ids: &[Vec<u8>]) -> usize {
    let ids: Vec<&[u8]> = ids
        .iter()
        .map(Vec::as_slice)
        .filter(|id| !id.is_empty())
        .collect();
    if ids.is_empty() {
        return 0;
    }
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0;
    };
    let me = std::process::id();
    let mut killed = 0;
    for pid in entries.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok()) {
        if pid == me {
            continue;
        }
        // A process this one may not read (another user's) is not ours to kill.
        let Ok(environ) = std::fs::read(format!("/proc/{pid}/environ")) else {
            continue;
        };
        let named = ids
            .iter()
            .any(|id| environ.windows(id.len()).any(|w| w == *id));
        if named && kill(Pid::from_raw(pid.cast_signed()), Signal::SIGKILL).is_ok() {
            killed += 1;
        }
    }
    killed
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn a_live_owners_record_is_kept_and_a_dead_ones_is_reaped() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("records");
        let (record, reaped) = Record::open(&root).unwrap();
        assert_eq!(reaped, 0);
        record.add(Pid::from_raw(999_999), "some-sandbox");
        // A second owner in this process sees the first one alive.
        assert_eq!(reap(&root), 0);
        assert!(record.dir.join("999999").exists());
        // An owner that is gone (pid 1 never has that start time).
        let dead = root.join("1-1");
        std::fs::create_dir(&dead).unwrap();
        std::fs::write(dead.join("999998"), "gone").unwrap();
        assert_eq!(reap(&root), 0);
        assert!(!dead.exists());
        drop(record);
        assert_eq!(std::fs::read_dir(&root).unwrap().count(), 0);
    }

    /// A `sleep` whose environment names `id` (when given), killed and reaped on drop.
    struct Sleep(std::process::Child);

    impl Sleep {
        fn start(id: Option<&str>) -> Self {
            let mut command = std::process::Command::new("sleep");
            command.arg("60");
            if let Some(id) = id {
                command.env("ESB_TEST_SANDBOX", id);
            }
            let child = command.spawn().unwrap();
            // The environment shows in /proc a moment after the spawn returns (the exec is
            // still setting up the new program).
            if let Some(id) = id {
                let path = format!("/proc/{}/environ", child.id());
                for _ in 0..500 {
                    let environ = std::fs::read(&path).unwrap_or_default();
                    if environ.windows(id.len()).any(|w| w == id.as_bytes()) {
                        break;
                    }
                    std::thread::sleep(std::time::Duration::from_millis(2));
                }
            }
            Self(child)
        }

        /// Whether it is still running (a killed one is reaped here).
        fn running(&mut self) -> bool {
            for _ in 0..100 {
                if self.0.try_wait().unwrap().is_some() {
                    return false;
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            true
        }
    }

    impl Drop for Sleep {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    #[test]
    fn a_sandbox_still_starting_when_its_owner_died_is_found_by_its_id_anywhere() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("records");
        let id = format!("fn-{}", std::process::id());
        let mut named = Sleep::start(Some(&id));
        let mut other = Sleep::start(Some("fn-another"));
        let mut plain = Sleep::start(None);
        // An owner that is gone, killed while the leader of `id` was starting.
        let dead = root.join("1-1");
        std::fs::create_dir_all(&dead).unwrap();
        std::fs::write(dead.join(format!("{STARTING}{id}")), "").unwrap();
        assert_eq!(reap(&root), 1);
        assert!(!named.running(), "the process naming the sandbox survived");
        assert!(
            other.running() && plain.running(),
            "another process was killed"
        );
        assert!(!dead.exists());
    }

    #[test]
    fn a_starting_entry_lasts_until_the_process_group_is_written_or_the_start_fails() {
        let tmp = tempfile::tempdir().unwrap();
        let (record, _) = Record::open(&tmp.path().join("records")).unwrap();
        let entries = || {
            let mut names: Vec<String> = std::fs::read_dir(&record.dir)
                .unwrap()
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .collect();
            names.sort();
            names
        };
        let failed = record.starting("fn-failed");
        assert_eq!(entries(), ["starting-fn-failed"]);
        drop(failed);
        assert_eq!(entries(), Vec::<String>::new());
        record.starting("fn-ok").started(Pid::from_raw(999_997));
        assert_eq!(entries(), ["999997"]);
        assert_eq!(
            std::fs::read_to_string(record.dir.join("999997")).unwrap(),
            "fn-ok"
        );
    }
}
