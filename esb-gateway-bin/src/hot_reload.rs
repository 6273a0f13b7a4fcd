//! `--watch`: follows the code and layers of zip functions (directories or `.zip` files)
//! and, once a change has settled (unchanged for one more poll), prepares the function again
//! and replaces its sandboxes so that the next request runs the new code: idle ones at once,
//! busy ones after their invocation.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use std::sync::Arc;

use esb_pool::Pool;
use esb_router::{Config, FunctionConfig};
use esb_runtime::managed::Managed;
use tokio::task::JoinHandle;

/// How often the watched trees are looked at.
pub const DEFAULT_POLL: Duration = Duration::from_millis(100);

/// One zip function as configured (before [`crate::packages::prepare`]) and the paths it
/// is made from: its code and its layers.
#[derive(Clone, Debug)]
pub struct Target {
    function: FunctionConfig,
    paths: Vec<PathBuf>,
}

/// The zip functions of `config` (as loaded, not yet prepared) and their code and layers.
pub fn targets(config: &Config) -> Vec<Target> {
    config
        .functions
        .values()
        .filter_map(|f| {
            let package = f.package.as_ref()?;
            let mut paths = vec![package.code.clone()];
            paths.extend(package.layers.iter().cloned());
            Some(Target {
                function: f.clone(),
                paths,
            })
        })
        .collect()
}

/// Follows `targets` every `poll`; once a change to a function's code or layers has settled
/// (unchanged for one more poll), prepares it again with `managed` (a `.zip` is extracted
/// anew, layers merged anew) and makes `pool` replace its sandboxes: idle ones at once,
/// busy ones after their invocation.
pub fn spawn(
    pool: Pool,
    targets: Vec<Target>,
    managed: Arc<Managed>,
    poll: Duration,
) -> JoinHandle<()> {
    spawn_for(pool, targets, managed, poll, None)
}

/// [`spawn`] for the backend `backend` (`None`: the process backend or remote agents); on
/// a backend of images the functions are prepared again as [`crate::packages::prepare`]
/// prepares them there (base image, mounted code and layers).
pub fn spawn_for(
    pool: Pool,
    targets: Vec<Target>,
    managed: Arc<Managed>,
    poll: Duration,
    backend: Option<esb_runtime::Capabilities>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut seen: Vec<Option<u64>> = targets.iter().map(|t| fingerprint(&t.paths)).collect();
        let mut pending = vec![false; targets.len()];
        let mut tick = tokio::time::interval(poll);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            for (i, target) in targets.iter().enumerate() {
                let now = fingerprint(&target.paths);
                if now != seen[i] {
                    seen[i] = now;
                    pending[i] = true;
                } else if pending[i] {
                    pending[i] = false;
                    reload(&pool, target, &managed, backend.as_ref());
                }
            }
        }
    })
}

/// Prepares `target` again and hands its new spec to the pool.
fn reload(
    pool: &Pool,
    target: &Target,
    managed: &Managed,
    backend: Option<&esb_runtime::Capabilities>,
) {
    let name = &target.function.name;
    let mut config = Config::default();
    config
        .functions
        .insert(name.clone(), target.function.clone());
    if let Err(problems) = crate::packages::prepare(&mut config, managed, backend) {
        tracing::error!(function = %name, "code changed but cannot be prepared; the running sandboxes keep serving:\n{problems}");
        return;
    }
    let Some(function) = config.functions.get(name) else {
        return;
    };
    match pool.replace_spec(crate::pool_config(function).spec) {
        Ok(idle) => tracing::info!(
            function = %name,
            idle_replaced = idle,
            "code changed: the next request runs the new code"
        ),
        Err(err) => tracing::warn!(function = %name, error = %err, "cannot replace sandboxes"),
    }
}

/// A digest of `paths`: for a file its size and modification time, for a directory those
/// of everything under it (Python's bytecode caches left out).
fn fingerprint(paths: &[PathBuf]) -> Option<u64> {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    for path in paths {
        let meta = std::fs::metadata(path).ok()?;
        path.hash(&mut hasher);
        if meta.is_dir() {
            walk(path, &mut hasher).ok()?;
        } else {
            stamp(&meta, &mut hasher);
        }
    }
    Some(hasher.finish())
}

fn stamp(meta: &std::fs::Metadata, hasher: &mut impl std::hash::Hasher) {
    use std::hash::Hash;
    meta.len().hash(hasher);
    meta.modified()
        .unwrap_or(SystemTime::UNIX_EPOCH)
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .hash(hasher);
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
            stamp(&meta, hasher);
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
