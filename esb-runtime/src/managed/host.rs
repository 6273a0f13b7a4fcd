//! The code/layer cache and the bootstrap of a zip function on this host.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;

use sha2::{Digest, Sha256};

use super::ManagedRuntime;
use crate::{Error, Result};

/// Where a zip function's code and layers are cached and which host programs run them.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct ManagedConfig {
    /// Extracted `.zip` packages and merged layers go here.
    pub cache_dir: PathBuf,
    /// The interpreter of a runtime, by identifier (`python3.12` -> `/usr/bin/python3`);
    /// by default `python3.x` then `python3` (Python), `node` (Node.js) from `host_path`.
    pub interpreters: BTreeMap<String, PathBuf>,
    /// Node's runtime interface client (`node_modules/.bin/aws-lambda-ric`); by default
    /// `aws-lambda-ric` from `host_path`.
    pub node_ric: Option<PathBuf>,
    /// The host's `PATH`: where programs are looked up, and the start of the functions'
    /// `PATH`.
    pub host_path: String,
    /// The base image of a runtime on a backend of images, by identifier
    /// (`python3.12` -> `127.0.0.1:5000/lambda/python:3.12`); by default AWS's
    /// `public.ecr.aws/lambda/<language>:<version>`.
    pub images: BTreeMap<String, String>,
}

impl ManagedConfig {
    /// A cache in `cache_dir`, programs looked up on `host_path`.
    pub fn new(cache_dir: impl Into<PathBuf>, host_path: impl Into<String>) -> Self {
        Self {
            cache_dir: cache_dir.into(),
            host_path: host_path.into(),
            ..Self::default()
        }
    }

    /// Runs `runtime` (an identifier such as `python3.12`) with `program`.
    pub fn interpreter(mut self, runtime: impl Into<String>, program: impl Into<PathBuf>) -> Self {
        self.interpreters.insert(runtime.into(), program.into());
        self
    }

    /// Runs `runtime` (an identifier such as `python3.12`) from the base image `image` on a
    /// backend of images.
    pub fn image(mut self, runtime: impl Into<String>, image: impl Into<String>) -> Self {
        self.images.insert(runtime.into(), image.into());
        self
    }

    /// Sets Node's runtime interface client.
    pub fn node_ric(mut self, ric: impl Into<PathBuf>) -> Self {
        self.node_ric = Some(ric.into());
        self
    }
}

/// A zip function as its configuration states it.
#[derive(Clone, Copy, Debug)]
#[non_exhaustive]
pub struct ZipFunction<'a> {
    /// The function's name (for errors).
    pub name: &'a str,
    /// The runtime identifier.
    pub runtime: &'a str,
    /// The handler (`_HANDLER`).
    pub handler: &'a str,
    /// The code: a directory or a `.zip`.
    pub code: &'a Path,
    /// Layers, merged in order.
    pub layers: &'a [PathBuf],
}

impl<'a> ZipFunction<'a> {
    /// A function `name` of `runtime` + `handler` + `code`, with `layers`.
    pub fn new(
        name: &'a str,
        runtime: &'a str,
        handler: &'a str,
        code: &'a Path,
        layers: &'a [PathBuf],
    ) -> Self {
        Self {
            name,
            runtime,
            handler,
            code,
            layers,
        }
    }
}

/// How to start a zip function: its command line and Lambda's runtime environment.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Bootstrap {
    /// The command line (the interpreter and the runtime client, or `bootstrap`).
    pub command: Vec<String>,
    /// `_HANDLER`, `LAMBDA_TASK_ROOT` (also the working directory), `LAMBDA_RUNTIME_DIR`,
    /// `AWS_EXECUTION_ENV`, `PATH`, `LD_LIBRARY_PATH`, `PYTHONPATH` / `NODE_PATH`.
    pub env: BTreeMap<String, String>,
    /// The code directory (`/var/task`).
    pub task_root: PathBuf,
    /// The merged layers (`/opt`), when the function has layers.
    pub opt: Option<PathBuf>,
}

/// How to start a zip function on a backend of images, as SAM does: the runtime's base
/// image with the code at `/var/task` and the merged layers at `/opt`, both read-only.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ImageBootstrap {
    /// The runtime's base image.
    pub image: String,
    /// The command line: the image's `/var/runtime/bootstrap` (what its entrypoint runs
    /// when the Runtime API is set) or, on an OS-only runtime, the function's `bootstrap`.
    pub command: Vec<String>,
    /// `_HANDLER`, `LAMBDA_TASK_ROOT`, `LAMBDA_RUNTIME_DIR`, `AWS_EXECUTION_ENV`.
    pub env: BTreeMap<String, String>,
    /// The code (`/var/task`) and the merged layers (`/opt`, when there are layers).
    pub mounts: Vec<crate::BindMount>,
}

/// AWS's base image of a runtime identifier: `python3.12` -> `public.ecr.aws/lambda/python:3.12`,
/// `nodejs20.x` -> `public.ecr.aws/lambda/nodejs:20`, `provided.al2023` ->
/// `public.ecr.aws/lambda/provided:al2023`.
pub fn default_image(runtime: &str) -> Option<String> {
    let tag = match ManagedRuntime::parse(runtime)? {
        ManagedRuntime::Python { minor } => format!("python:3.{minor}"),
        ManagedRuntime::Node { major } => format!("nodejs:{major}"),
        ManagedRuntime::Provided => match runtime.strip_prefix("provided.") {
            Some(version) => format!("provided:{version}"),
            None => "provided:alami".to_owned(),
        },
    };
    Some(format!("public.ecr.aws/lambda/{tag}"))
}

/// Prepares zip functions: caches code and layers, finds interpreters and clients.
#[derive(Debug)]
pub struct Managed {
    config: ManagedConfig,
    /// Interpreter + client found per runtime identifier (checked once).
    clients: Mutex<HashMap<String, Client>>,
}

/// A runtime's interpreter and client as found on this host.
#[derive(Clone, Debug)]
struct Client {
    /// The argv before the handler.
    argv: Vec<String>,
    /// `LAMBDA_RUNTIME_DIR`: where the client lives.
    runtime_dir: PathBuf,
    /// Node: the `node_modules` that holds the client.
    node_modules: Option<PathBuf>,
}

impl Managed {
    /// A preparer with `config`.
    pub fn new(config: ManagedConfig) -> Self {
        Self {
            config,
            clients: Mutex::new(HashMap::new()),
        }
    }

    /// Prepares `function`: extracts its code and merges its layers (each once), checks
    /// that its runtime can run here, and says how to start it.
    pub fn prepare(&self, function: &ZipFunction<'_>) -> Result<Bootstrap> {
        let runtime = ManagedRuntime::parse(function.runtime).ok_or_else(|| {
            runtime_error(
                function,
                "not a runtime ESB runs (python3.x, nodejsNN.x, provided.al2, provided.al2023)"
                    .into(),
            )
        })?;
        let task_root = self.code_dir(function.name, function.code)?;
        let opt = self.merge_layers(function.name, function.layers)?;
        let text = |p: &Path| p.display().to_string();
        let (argv, runtime_dir, node_modules) = match runtime {
            ManagedRuntime::Provided => {
                let bootstrap = task_root.join("bootstrap");
                if !is_executable(&bootstrap) {
                    return Err(runtime_error(
                        function,
                        format!(
                            "{} is missing or not executable (a provided runtime starts the \
                             code's own bootstrap)",
                            bootstrap.display()
                        ),
                    ));
                }
                (vec![text(&bootstrap)], task_root.clone(), None)
            }
            _ => {
                let client = self.client(function, runtime)?;
                (client.argv, client.runtime_dir, client.node_modules)
            }
        };
        let mut command = argv;
        if !matches!(runtime, ManagedRuntime::Provided) {
            command.push(function.handler.to_owned());
        }

        let task = text(&task_root);
        let rt = text(&runtime_dir);
        let opt_text = opt.as_deref().map(text);
        let join = |parts: Vec<String>| parts.join(":");
        let mut env = BTreeMap::new();
        env.insert("_HANDLER".to_owned(), function.handler.to_owned());
        env.insert("LAMBDA_TASK_ROOT".to_owned(), task.clone());
        env.insert("LAMBDA_RUNTIME_DIR".to_owned(), rt.clone());
        if !matches!(runtime, ManagedRuntime::Provided) {
            // Lambda sets no AWS_EXECUTION_ENV on OS-only runtimes.
            env.insert(
                "AWS_EXECUTION_ENV".to_owned(),
                format!("AWS_Lambda_{}", function.runtime),
            );
        }
        // PATH: /usr/local/bin:/usr/bin/:/bin:/opt/bin on Lambda.
        let mut path = vec![self.config.host_path.clone()];
        // LD_LIBRARY_PATH: /var/lang/lib:/lib64:/usr/lib64:/var/runtime:/var/runtime/lib:
        // /var/task:/var/task/lib:/opt/lib on Lambda.
        let mut ld = vec![
            "/lib64".to_owned(),
            "/usr/lib64".to_owned(),
            rt.clone(),
            format!("{rt}/lib"),
            task.clone(),
            format!("{task}/lib"),
        ];
        if let Some(opt) = &opt_text {
            path.push(format!("{opt}/bin"));
            ld.push(format!("{opt}/lib"));
        }
        env.insert("PATH".to_owned(), join(path));
        env.insert("LD_LIBRARY_PATH".to_owned(), join(ld));
        match runtime {
            ManagedRuntime::Python { minor } => {
                // Lambda: PYTHONPATH=/var/runtime, and the layers' python/ and
                // python/lib/python3.x/site-packages on sys.path.
                let mut paths = Vec::new();
                if let Some(opt) = &opt_text {
                    paths.push(format!("{opt}/python/lib/python3.{minor}/site-packages"));
                    paths.push(format!("{opt}/python"));
                }
                paths.push(rt.clone());
                env.insert("PYTHONPATH".to_owned(), join(paths));
                // Lambda's code directory is read-only, so no bytecode is written there;
                // here it would also let an edit of the same size within one second run
                // the old bytecode.
                env.insert("PYTHONDONTWRITEBYTECODE".to_owned(), "1".to_owned());
            }
            ManagedRuntime::Node { major } => {
                // Lambda: /opt/nodejs/nodeNN/node_modules:/opt/nodejs/node_modules:
                // /var/runtime/node_modules.
                let mut paths = Vec::new();
                if let Some(opt) = &opt_text {
                    paths.push(format!("{opt}/nodejs/node{major}/node_modules"));
                    paths.push(format!("{opt}/nodejs/node_modules"));
                }
                if let Some(modules) = &node_modules {
                    paths.push(text(modules));
                }
                env.insert("NODE_PATH".to_owned(), join(paths));
            }
            ManagedRuntime::Provided => {}
        }
        Ok(Bootstrap {
            command,
            env,
            task_root,
            opt,
        })
    }

    /// Prepares `function` for a backend of images: extracts its code and merges its layers
    /// (each once) for the bind mounts, and names the runtime's base image. Nothing of the
    /// host's interpreters is needed.
    pub fn prepare_image(&self, function: &ZipFunction<'_>) -> Result<ImageBootstrap> {
        let runtime = ManagedRuntime::parse(function.runtime).ok_or_else(|| {
            runtime_error(
                function,
                "not a runtime ESB runs (python3.x, nodejsNN.x, provided.al2, provided.al2023)"
                    .into(),
            )
        })?;
        let image = match self.config.images.get(function.runtime) {
            Some(image) => image.clone(),
            None => default_image(function.runtime)
                .ok_or_else(|| runtime_error(function, "no base image is known for it".into()))?,
        };
        let task_root = self.code_dir(function.name, function.code)?;
        let opt = self.merge_layers(function.name, function.layers)?;
        let command = match runtime {
            ManagedRuntime::Provided => {
                // Lambda looks for the bootstrap in the code, then in the layers.
                let found = [
                    Some((task_root.join("bootstrap"), "/var/task/bootstrap")),
                    opt.as_ref()
                        .map(|opt| (opt.join("bootstrap"), "/opt/bootstrap")),
                ]
                .into_iter()
                .flatten()
                .find(|(host, _)| is_executable(host));
                match found {
                    Some((_, inside)) => vec![inside.to_owned()],
                    None => {
                        return Err(runtime_error(
                            function,
                            format!(
                                "{} is missing or not executable, and no layer has a bootstrap \
                                 (a provided runtime starts the code's own bootstrap)",
                                task_root.join("bootstrap").display()
                            ),
                        ));
                    }
                }
            }
            _ => vec!["/var/runtime/bootstrap".to_owned()],
        };
        let mut env = BTreeMap::new();
        env.insert("_HANDLER".to_owned(), function.handler.to_owned());
        env.insert("LAMBDA_TASK_ROOT".to_owned(), "/var/task".to_owned());
        env.insert("LAMBDA_RUNTIME_DIR".to_owned(), "/var/runtime".to_owned());
        if !matches!(runtime, ManagedRuntime::Provided) {
            env.insert(
                "AWS_EXECUTION_ENV".to_owned(),
                format!("AWS_Lambda_{}", function.runtime),
            );
        }
        let mut mounts = vec![crate::BindMount::read_only(task_root, "/var/task")];
        if let Some(opt) = opt {
            mounts.push(crate::BindMount::read_only(opt, "/opt"));
        }
        Ok(ImageBootstrap {
            image,
            command,
            env,
            mounts,
        })
    }

    /// The code directory: `code` itself, or the cached extraction of a `.zip`.
    fn code_dir(&self, function: &str, code: &Path) -> Result<PathBuf> {
        let package = |source| Error::Package {
            function: function.to_owned(),
            path: code.to_owned(),
            source,
        };
        let meta = std::fs::metadata(code).map_err(package)?;
        if meta.is_dir() {
            return code.canonicalize().map_err(package);
        }
        let bytes = std::fs::read(code).map_err(package)?;
        let dir = self
            .config
            .cache_dir
            .join("code")
            .join(hex(&Sha256::digest(&bytes)));
        if !dir.is_dir() {
            let tmp = temporary(&dir);
            extract(&bytes, &tmp).map_err(package)?;
            publish(&tmp, &dir).map_err(package)?;
        }
        Ok(dir)
    }

    /// The merged layers (`/opt`), cached under a digest of every layer's contents.
    fn merge_layers(&self, function: &str, layers: &[PathBuf]) -> Result<Option<PathBuf>> {
        if layers.is_empty() {
            return Ok(None);
        }
        let mut digest = Sha256::new();
        let mut contents = Vec::with_capacity(layers.len());
        for layer in layers {
            let package = |source| Error::Package {
                function: function.to_owned(),
                path: layer.clone(),
                source,
            };
            let content = if std::fs::metadata(layer).map_err(package)?.is_dir() {
                fingerprint(layer, &mut digest).map_err(package)?;
                Layer::Dir(layer.clone())
            } else {
                let bytes = std::fs::read(layer).map_err(package)?;
                digest.update(b"zip\0");
                digest.update(Sha256::digest(&bytes));
                Layer::Zip(bytes)
            };
            contents.push((layer, content));
        }
        let dir = self
            .config
            .cache_dir
            .join("opt")
            .join(hex(&digest.finalize()));
        if dir.is_dir() {
            return Ok(Some(dir));
        }
        let tmp = temporary(&dir);
        for (layer, content) in contents {
            let result = match content {
                Layer::Dir(src) => copy_tree(&src, &tmp),
                Layer::Zip(bytes) => extract(&bytes, &tmp),
            };
            if let Err(source) = result {
                let _ = std::fs::remove_dir_all(&tmp);
                return Err(Error::Package {
                    function: function.to_owned(),
                    path: layer.clone(),
                    source,
                });
            }
        }
        publish(&tmp, &dir).map_err(|source| Error::Package {
            function: function.to_owned(),
            path: dir.clone(),
            source,
        })?;
        Ok(Some(dir))
    }

    /// The interpreter and client of `runtime`, found once.
    fn client(&self, function: &ZipFunction<'_>, runtime: ManagedRuntime) -> Result<Client> {
        if let Some(client) = lock(&self.clients).get(function.runtime) {
            return Ok(client.clone());
        }
        let client = match runtime {
            ManagedRuntime::Python { minor } => self.python(function, minor)?,
            ManagedRuntime::Node { .. } => self.node(function)?,
            ManagedRuntime::Provided => unreachable_client(function)?,
        };
        lock(&self.clients).insert(function.runtime.to_owned(), client.clone());
        Ok(client)
    }

    /// `python3.x` (else `python3`) that can import awslambdaric.
    fn python(&self, function: &ZipFunction<'_>, minor: u32) -> Result<Client> {
        let candidates = match self.config.interpreters.get(function.runtime) {
            Some(program) => vec![program.clone()],
            None => vec![
                PathBuf::from(format!("python3.{minor}")),
                PathBuf::from("python3"),
            ],
        };
        let script = "import os, awslambdaric\nprint(os.path.dirname(os.path.dirname(awslambdaric.__file__)))";
        let mut tried = Vec::new();
        for program in &candidates {
            let Some(found) = self.find(program) else {
                tried.push(format!("{}: not found", program.display()));
                continue;
            };
            match Command::new(&found)
                .args(["-c", script])
                .env("PATH", &self.config.host_path)
                .stdin(Stdio::null())
                .output()
            {
                Ok(out) if out.status.success() => {
                    let site = String::from_utf8_lossy(&out.stdout).trim().to_owned();
                    return Ok(Client {
                        argv: vec![
                            found.display().to_string(),
                            "-m".into(),
                            "awslambdaric".into(),
                        ],
                        runtime_dir: PathBuf::from(site),
                        node_modules: None,
                    });
                }
                Ok(_) => tried.push(format!("{}: cannot import awslambdaric", found.display())),
                Err(err) => tried.push(format!("{}: {err}", found.display())),
            }
        }
        Err(runtime_error(
            function,
            format!(
                "no Python with awslambdaric ({}); install it with `pip install awslambdaric`",
                tried.join("; ")
            ),
        ))
    }

    /// `node` and aws-lambda-ric.
    fn node(&self, function: &ZipFunction<'_>) -> Result<Client> {
        let program = self
            .config
            .interpreters
            .get(function.runtime)
            .cloned()
            .unwrap_or_else(|| PathBuf::from("node"));
        let Some(node) = self.find(&program) else {
            return Err(runtime_error(
                function,
                format!(
                    "{} not found; install Node.js (apt-get install nodejs)",
                    program.display()
                ),
            ));
        };
        let ric = self
            .config
            .node_ric
            .clone()
            .or_else(|| self.find(Path::new("aws-lambda-ric")))
            .and_then(|ric| ric.canonicalize().ok());
        let Some(ric) = ric else {
            return Err(runtime_error(
                function,
                "aws-lambda-ric not found; install it with `npm install aws-lambda-ric` and \
                 name its node_modules/.bin/aws-lambda-ric"
                    .into(),
            ));
        };
        // .../node_modules/aws-lambda-ric/index.mjs: the package and its node_modules.
        let package = ric
            .ancestors()
            .find(|dir| dir.parent().and_then(Path::file_name) == Some("node_modules".as_ref()))
            .map(Path::to_path_buf);
        let runtime_dir = package
            .clone()
            .unwrap_or_else(|| ric.parent().unwrap_or(Path::new("/")).to_path_buf());
        Ok(Client {
            argv: vec![node.display().to_string(), ric.display().to_string()],
            runtime_dir,
            node_modules: package.and_then(|p| p.parent().map(Path::to_path_buf)),
        })
    }

    /// `program` as a path: itself when it names a directory, else looked up on the host's
    /// `PATH`; `None` when it is no executable file.
    fn find(&self, program: &Path) -> Option<PathBuf> {
        if program.components().count() > 1 {
            return is_executable(program).then(|| program.to_path_buf());
        }
        std::env::split_paths(&self.config.host_path)
            .map(|dir| dir.join(program))
            .find(|candidate| is_executable(candidate))
    }
}

/// A layer's content, read once.
enum Layer {
    Dir(PathBuf),
    Zip(Vec<u8>),
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn unreachable_client(function: &ZipFunction<'_>) -> Result<Client> {
    Err(runtime_error(
        function,
        "a provided runtime has no client".into(),
    ))
}

fn runtime_error(function: &ZipFunction<'_>, reason: String) -> Error {
    Error::ManagedRuntime {
        function: function.name.to_owned(),
        runtime: function.runtime.to_owned(),
        reason,
    }
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A sibling of `dir` to build it in before it is renamed into place.
fn temporary(dir: &Path) -> PathBuf {
    let name = dir.file_name().map(|n| n.to_string_lossy().into_owned());
    dir.with_file_name(format!(
        ".{}.{}.{}",
        name.unwrap_or_default(),
        std::process::id(),
        uuid::Uuid::new_v4().simple()
    ))
}

/// Renames the finished `tmp` to `dir`; when another process got there first, keeps its.
fn publish(tmp: &Path, dir: &Path) -> std::io::Result<()> {
    match std::fs::rename(tmp, dir) {
        Ok(()) => Ok(()),
        Err(_) if dir.is_dir() => std::fs::remove_dir_all(tmp),
        Err(err) => {
            let _ = std::fs::remove_dir_all(tmp);
            Err(err)
        }
    }
}

/// Extracts a zip archive into `dir` (created), keeping Unix modes; entries that would land
/// outside `dir` are refused.
fn extract(bytes: &[u8], dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let mut archive =
        zip::ZipArchive::new(std::io::Cursor::new(bytes)).map_err(std::io::Error::other)?;
    archive.extract(dir).map_err(std::io::Error::other)
}

/// Copies the tree `src` into `dst`, replacing files `dst` already has.
fn copy_tree(src: &Path, dst: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dst)?;
    for entry in std::fs::read_dir(src)? {
        let entry = entry?;
        let kind = entry.file_type()?;
        let target = dst.join(entry.file_name());
        if kind.is_dir() {
            copy_tree(&entry.path(), &target)?;
        } else if kind.is_symlink() {
            let link = std::fs::read_link(entry.path())?;
            let _ = std::fs::remove_file(&target);
            std::os::unix::fs::symlink(link, &target)?;
        } else {
            if target.is_dir() {
                std::fs::remove_dir_all(&target)?;
            }
            std::fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}

/// Feeds the names, sizes and modification times of the tree `dir` to `digest`.
fn fingerprint(dir: &Path, digest: &mut Sha256) -> std::io::Result<()> {
    digest.update(b"dir\0");
    digest.update(dir.as_os_str().as_encoded_bytes());
    let mut entries: Vec<_> = std::fs::read_dir(dir)?.collect::<std::io::Result<_>>()?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let meta = entry.metadata()?;
        digest.update(entry.file_name().as_encoded_bytes());
        if meta.is_dir() {
            fingerprint(&entry.path(), digest)?;
        } else {
            digest.update(meta.len().to_le_bytes());
            let modified = meta
                .modified()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .unwrap_or_default();
            digest.update(modified.as_nanos().to_le_bytes());
        }
    }
    Ok(())
}

/// Reads at most `limit` bytes of `path` (for tests of small files).
#[cfg(test)]
fn read_small(path: &Path, limit: u64) -> std::io::Result<String> {
    use std::io::Read;
    let mut text = String::new();
    std::fs::File::open(path)?
        .take(limit)
        .read_to_string(&mut text)?;
    Ok(text)
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn zip_of(files: &[(&str, &str, u32)]) -> Vec<u8> {
        let mut out = std::io::Cursor::new(Vec::new());
        let mut writer = zip::ZipWriter::new(&mut out);
        for (name, body, mode) in files {
            let options = zip::write::SimpleFileOptions::default().unix_permissions(*mode);
            writer.start_file(*name, options).unwrap();
            writer.write_all(body.as_bytes()).unwrap();
        }
        writer.finish().unwrap();
        out.into_inner()
    }

    #[test]
    fn image_functions_get_the_base_image_and_read_only_code_and_layers() {
        assert_eq!(
            default_image("python3.12").as_deref(),
            Some("public.ecr.aws/lambda/python:3.12")
        );
        assert_eq!(
            default_image("nodejs20.x").as_deref(),
            Some("public.ecr.aws/lambda/nodejs:20")
        );
        assert_eq!(
            default_image("provided.al2023").as_deref(),
            Some("public.ecr.aws/lambda/provided:al2023")
        );
        let tmp = tempfile::tempdir().unwrap();
        let code = tmp.path().join("code");
        let layer = tmp.path().join("layer");
        std::fs::create_dir_all(&code).unwrap();
        std::fs::create_dir_all(&layer).unwrap();
        std::fs::write(layer.join("a.txt"), "a").unwrap();
        let managed = Managed::new(
            ManagedConfig::new(tmp.path().join("cache"), "").image("python3.12", "local/py:1"),
        );
        let layers = [layer];
        let zip = ZipFunction::new("f", "python3.12", "app.handler", &code, &layers);
        let boot = managed.prepare_image(&zip).unwrap();
        assert_eq!(boot.image, "local/py:1");
        assert_eq!(boot.command, ["/var/runtime/bootstrap"]);
        assert_eq!(boot.env["_HANDLER"], "app.handler");
        assert_eq!(boot.env["AWS_EXECUTION_ENV"], "AWS_Lambda_python3.12");
        assert_eq!(boot.mounts.len(), 2);
        assert_eq!(boot.mounts[0].source, code.canonicalize().unwrap());
        assert_eq!(boot.mounts[0].destination, "/var/task");
        assert_eq!(boot.mounts[1].destination, "/opt");
        assert!(boot.mounts.iter().all(|m| m.read_only));
        assert!(boot.mounts[1].source.join("a.txt").is_file());
        let provided = ZipFunction::new("g", "provided.al2023", "h", &code, &[]);
        let err = managed.prepare_image(&provided).unwrap_err().to_string();
        assert!(err.contains("bootstrap is missing"), "{err}");
    }

    #[test]
    fn a_zip_is_extracted_once_and_layers_merge_in_order() {
        let tmp = tempfile::tempdir().unwrap();
        let code = tmp.path().join("code.zip");
        std::fs::write(
            &code,
            zip_of(&[
                ("bootstrap", "#!/bin/sh\n", 0o755),
                ("lib/a.txt", "a", 0o644),
            ]),
        )
        .unwrap();
        let first = tmp.path().join("first");
        std::fs::create_dir_all(first.join("bin")).unwrap();
        std::fs::write(first.join("bin/tool"), "first").unwrap();
        std::fs::write(first.join("only-first"), "1").unwrap();
        let second = tmp.path().join("second.zip");
        std::fs::write(&second, zip_of(&[("bin/tool", "second", 0o644)])).unwrap();

        let managed = Managed::new(ManagedConfig::new(
            tmp.path().join("cache"),
            "/usr/bin:/bin",
        ));
        let layers = [first.clone(), second.clone()];
        let function = ZipFunction::new("f", "provided.al2023", "", &code, &layers);
        let boot = managed.prepare(&function).unwrap();
        assert_eq!(
            boot.command,
            vec![boot.task_root.join("bootstrap").display().to_string()]
        );
        assert!(boot.task_root.starts_with(tmp.path().join("cache/code")));
        assert_eq!(
            read_small(&boot.task_root.join("lib/a.txt"), 10).unwrap(),
            "a"
        );
        let opt = boot.opt.clone().unwrap();
        assert_eq!(read_small(&opt.join("bin/tool"), 10).unwrap(), "second");
        assert_eq!(read_small(&opt.join("only-first"), 10).unwrap(), "1");
        assert!(boot.env["PATH"].ends_with(&format!(":{}/bin", opt.display())));
        assert!(boot.env["LD_LIBRARY_PATH"].ends_with(&format!("{}/lib", opt.display())));
        assert_eq!(
            boot.env["LAMBDA_TASK_ROOT"],
            boot.task_root.display().to_string()
        );
        assert!(!boot.env.contains_key("AWS_EXECUTION_ENV"));

        // The same bytes again: the same directories, nothing extracted anew.
        std::fs::write(boot.task_root.join("marker"), "kept").unwrap();
        let again = managed.prepare(&function).unwrap();
        assert_eq!(again.task_root, boot.task_root);
        assert_eq!(again.opt, boot.opt);
        assert!(again.task_root.join("marker").exists());
    }

    #[test]
    fn a_missing_bootstrap_or_client_names_function_runtime_and_install() {
        let tmp = tempfile::tempdir().unwrap();
        let code = tmp.path().join("code");
        std::fs::create_dir_all(&code).unwrap();
        let managed = Managed::new(
            ManagedConfig::new(tmp.path().join("cache"), "/nonexistent")
                .node_ric(tmp.path().join("no-ric")),
        );
        let err = managed
            .prepare(&ZipFunction::new("f", "provided.al2", "", &code, &[]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("function f: runtime provided.al2:"), "{err}");
        assert!(err.contains("bootstrap"), "{err}");
        let err = managed
            .prepare(&ZipFunction::new(
                "g",
                "python3.12",
                "app.handler",
                &code,
                &[],
            ))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("function g: runtime python3.12:"), "{err}");
        assert!(err.contains("pip install awslambdaric"), "{err}");
        let err = managed
            .prepare(&ZipFunction::new(
                "h",
                "nodejs20.x",
                "index.handler",
                &code,
                &[],
            ))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("function h: runtime nodejs20.x:"), "{err}");
    }

    #[test]
    fn a_zip_entry_outside_the_code_dir_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let code = tmp.path().join("evil.zip");
        std::fs::write(&code, zip_of(&[("../escaped", "x", 0o644)])).unwrap();
        let managed = Managed::new(ManagedConfig::new(tmp.path().join("cache"), "/usr/bin"));
        let _ = managed.prepare(&ZipFunction::new("f", "provided", "", &code, &[]));
        assert!(!tmp.path().join("cache/code/escaped").exists());
        assert!(!tmp.path().join("cache/escaped").exists());
    }
}
