//! `--watch`: follows the code directories of zip functions and, once a change has settled
//! (unchanged for one more poll), retires the function's sandboxes so that the next request
//! runs the new code: idle ones are replaced at once, busy ones after their invocation.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use esb_pool::Pool;
use esb_router::Config;
use tokio::task::JoinHandle;

/// How often the watched trees are looked at.
pub const DEFAULT_POLL: Duration = Duration::from_millis(100);

/// The code directories of `config`'s zip functions, by function.
pub fn code_dirs(config: &Config) -> Vec<(String, PathBuf)> {
    config
        .functions
        .values()
        .filter_map(|f| {
            let package = f.package.as_ref()?;
            package
                .code
                .is_dir()
                .then(|| (f.name.clone(), package.code.clone()))
        })
        .collect()
}

/// Follows `targets` (function, code directory) every `poll` and retires a function's
/// sandboxes in `pool` once a change to its code has settled.
pub fn spawn(pool: Pool, targets: Vec<(String, PathBuf)>, poll: Duration) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut seen: Vec<Option<u64>> = targets.iter().map(|(_, dir)| fingerprint(dir)).collect();
        let mut pending = vec![false; targets.len()];
        let mut tick = tokio::time::interval(poll);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            for (i, (function, dir)) in targets.iter().enumerate() {
                let now = fingerprint(dir);
                if now != seen[i] {
                    seen[i] = now;
                    pending[i] = true;
                } else if pending[i] {
                    pending[i] = false;
                    match pool.retire(function) {
                        Ok(idle) => tracing::info!(
                            function = %function,
                            code = %dir.display(),
                            idle_replaced = idle,
                            "code changed: the next request runs the new code"
                        ),
                        Err(err) => {
                            tracing::warn!(function = %function, error = %err, "cannot retire sandboxes")
                        }
                    }
                }
            }
        }
    })
}

/// A digest of the names, sizes and modification times under `dir` (Python's and Node's
/// caches left out, as the functions write them), or `None` when it cannot be read.
fn fingerprint(dir: &Path) -> Option<u64> {
    use std::hash::Hasher;
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    walk(dir, &mut hasher).ok()?;
    Some(hasher.finish())
}

fn walk(dir: &Path, hasher: &mut impl std::hash::Hasher) -> std::io::Result<()> {
    use std::hash::Hash;
    let mut entries: Vec<_> = std::fs::read_dir(dir)?.collect::<std::io::Result<_>>()?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let name = entry.file_name();
        if name == "__pycache__" || name.to_string_lossy().ends_with(".pyc") {
            continue;
        }
        let meta = entry.metadata()?;
        name.hash(hasher);
        if meta.is_dir() {
            walk(&entry.path(), hasher)?;
        } else {
            meta.len().hash(hasher);
            meta.modified()
                .unwrap_or(SystemTime::UNIX_EPOCH)
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or_default()
                .hash(hasher);
        }
    }
    Ok(())
}

/// Follows the configuration `files` every `poll`; once a change has settled, calls
/// `changed` (which reloads what it can and reports the rest).
pub fn spawn_config_watch(
    files: Vec<PathBuf>,
    poll: Duration,
    changed: impl Fn() + Send + 'static,
) -> JoinHandle<()> {
    let stamp = move |files: &[PathBuf]| -> Vec<Option<(u64, SystemTime)>> {
        files
            .iter()
            .map(|f| {
                let meta = std::fs::metadata(f).ok()?;
                Some((meta.len(), meta.modified().ok()?))
            })
            .collect()
    };
    tokio::spawn(async move {
        let mut seen = stamp(&files);
        let mut pending = false;
        let mut tick = tokio::time::interval(poll);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let now = stamp(&files);
            if now != seen {
                seen = now;
                pending = true;
            } else if pending {
                pending = false;
                changed();
            }
        }
    })
}
