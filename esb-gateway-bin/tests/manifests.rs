//! deploy/kubernetes: every manifest parses into the Kubernetes API types with no field
//! dropped (a typo fails), images name the binaries at this version, the containers' args are
//! the binaries' real flags (each binary runs with them, on loopback), container ports match
//! the listen flags, references (Secrets, ConfigMap, Service selectors, named ports) resolve,
//! probes answer 200 on the running binaries, and the metrics the autoscaling manifests name
//! are exported.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use esb_testfn::ports::free_port;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, Container, Namespace, PodSpec, Secret, Service};
use k8s_openapi::api::scheduling::v1::PriorityClass;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/kubernetes")
}

/// Every object of every manifest, typed.
#[derive(Default)]
struct Objects {
    namespaces: Vec<Namespace>,
    secrets: Vec<Secret>,
    config_maps: Vec<ConfigMap>,
    services: Vec<Service>,
    daemon_sets: Vec<DaemonSet>,
    deployments: Vec<Deployment>,
    stateful_sets: Vec<StatefulSet>,
    hpas: Vec<HorizontalPodAutoscaler>,
    priority_classes: Vec<PriorityClass>,
}

/// The first place where `typed` (what the API types kept) differs from `original`.
fn first_difference(path: &str, original: &Value, typed: &Value) -> Option<String> {
    match (original, typed) {
        (Value::Object(a), Value::Object(b)) => {
            for (key, value) in a {
                let here = format!("{path}.{key}");
                match b.get(key) {
                    None => return Some(format!("{here}: not a field of the API type")),
                    Some(kept) => {
                        if let Some(diff) = first_difference(&here, value, kept) {
                            return Some(diff);
                        }
                    }
                }
            }
            b.keys()
                .find(|key| !a.contains_key(*key))
                .map(|key| format!("{path}.{key}: added by the API type"))
        }
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => a
            .iter()
            .zip(b)
            .enumerate()
            .find_map(|(i, (x, y))| first_difference(&format!("{path}[{i}]"), x, y)),
        _ if original == typed => None,
        _ => Some(format!("{path}: {original} became {typed}")),
    }
}

/// Parses `value` as `T`, and fails when the API type dropped or changed anything.
fn typed<T: DeserializeOwned + serde::Serialize>(file: &str, value: &Value) -> T {
    let object: T = serde_json::from_value(value.clone())
        .unwrap_or_else(|err| panic!("{file}: not a valid {}: {err}", value["kind"]));
    let back = serde_json::to_value(&object).unwrap();
    if let Some(diff) = first_difference("", value, &back) {
        panic!(
            "{file} ({} {}): {diff}",
            value["kind"], value["metadata"]["name"]
        );
    }
    object
}

fn yaml_documents(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap();
    serde_norway::Deserializer::from_str(&text)
        .map(|doc| {
            let value = serde_norway::Value::deserialize(doc)
                .unwrap_or_else(|err| panic!("{}: {err}", path.display()));
            serde_json::to_value(value).unwrap()
        })
        .filter(|value| !value.is_null())
        .collect()
}

fn load(file: &str, objects: &mut Objects) {
    for value in yaml_documents(&dir().join(file)) {
        match (value["apiVersion"].as_str(), value["kind"].as_str()) {
            (Some("v1"), Some("Namespace")) => objects.namespaces.push(typed(file, &value)),
            (Some("v1"), Some("Secret")) => objects.secrets.push(typed(file, &value)),
            (Some("v1"), Some("ConfigMap")) => objects.config_maps.push(typed(file, &value)),
            (Some("v1"), Some("Service")) => objects.services.push(typed(file, &value)),
            (Some("apps/v1"), Some("DaemonSet")) => objects.daemon_sets.push(typed(file, &value)),
            (Some("apps/v1"), Some("Deployment")) => {
                objects.deployments.push(typed(file, &value));
            }
            (Some("apps/v1"), Some("StatefulSet")) => {
                objects.stateful_sets.push(typed(file, &value));
            }
            (Some("autoscaling/v2"), Some("HorizontalPodAutoscaler")) => {
                objects.hpas.push(typed(file, &value));
            }
            (Some("scheduling.k8s.io/v1"), Some("PriorityClass")) => {
                objects.priority_classes.push(typed(file, &value));
            }
            (api, kind) => panic!("{file}: unexpected object {api:?} {kind:?}"),
        }
    }
}

/// kustomization.yaml, with only the fields these manifests use (a typo fails).
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Kustomization {
    api_version: String,
    kind: String,
    namespace: String,
    resources: Vec<String>,
    images: Vec<KustomizeImage>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct KustomizeImage {
    name: String,
    new_tag: String,
}

/// The value after `flag` in `args`.
fn flag<'a>(args: &'a [String], name: &str) -> Option<&'a str> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(String::as_str)
}

fn set_flag(args: &mut [String], name: &str, value: &str) {
    let i = args
        .iter()
        .position(|a| a == name)
        .unwrap_or_else(|| panic!("no {name} in {args:?}"));
    args[i + 1] = value.to_owned();
}

fn port_of(addr: &str) -> i32 {
    addr.rsplit_once(':').unwrap().1.parse().unwrap()
}

/// The container port named `name`.
fn named_port(container: &Container, name: &str) -> i32 {
    container
        .ports
        .iter()
        .flatten()
        .find(|p| p.name.as_deref() == Some(name))
        .unwrap_or_else(|| panic!("container {} has no port {name}", container.name))
        .container_port
}

fn probe_port(container: &Container, port: &IntOrString) -> i32 {
    match port {
        IntOrString::Int(port) => *port,
        IntOrString::String(name) => named_port(container, name),
    }
}

/// The probes' paths and ports (readiness, liveness).
fn probes(container: &Container) -> Vec<(String, i32)> {
    [&container.readiness_probe, &container.liveness_probe]
        .into_iter()
        .map(|probe| {
            let get = probe
                .as_ref()
                .and_then(|p| p.http_get.as_ref())
                .unwrap_or_else(|| panic!("container {} needs httpGet probes", container.name));
            (get.path.clone().unwrap(), probe_port(container, &get.port))
        })
        .collect()
}

fn the_container(spec: &PodSpec) -> &Container {
    assert_eq!(spec.containers.len(), 1);
    &spec.containers[0]
}

/// `mountPath -> local directory`: what the binaries see in the pod, on this machine.
struct Mounts {
    root: tempfile::TempDir,
    map: Vec<(String, PathBuf)>,
}

impl Mounts {
    fn new(container: &Container) -> Self {
        let root = tempfile::tempdir().unwrap();
        let map = container
            .volume_mounts
            .iter()
            .flatten()
            .map(|m| {
                let local = root.path().join(&m.name);
                std::fs::create_dir_all(&local).unwrap();
                (m.mount_path.clone(), local)
            })
            .collect();
        Self { root, map }
    }

    /// The mount of volume `name`.
    fn volume(&self, name: &str) -> PathBuf {
        self.root.path().join(name)
    }

    /// `path` with its mount replaced by the local directory (unchanged outside mounts).
    fn rewrite(&self, path: &str) -> String {
        for (mount, local) in &self.map {
            if let Some(rest) = path.strip_prefix(mount.as_str()) {
                return format!("{}{rest}", local.display());
            }
        }
        path.to_owned()
    }

    fn rewrite_all(&self, args: &mut [String]) {
        for arg in args.iter_mut() {
            if arg.starts_with('/') {
                *arg = self.rewrite(arg);
            }
        }
    }
}

/// The env of a container as the pod gets it: Secret keys from the Secret templates, the pod
/// name from the downward API.
fn pod_env(container: &Container, objects: &Objects, pod_name: &str) -> Vec<(String, String)> {
    container
        .env
        .iter()
        .flatten()
        .map(|var| {
            let value = if let Some(value) = &var.value {
                value.clone()
            } else {
                let from = var.value_from.as_ref().unwrap();
                if let Some(key) = &from.secret_key_ref {
                    secret_value(objects, &key.name, &key.key)
                } else if let Some(field) = &from.field_ref {
                    assert_eq!(field.field_path, "metadata.name", "{}", var.name);
                    pod_name.to_owned()
                } else {
                    panic!("env {}: unexpected source", var.name);
                }
            };
            (var.name.clone(), value)
        })
        .collect()
}

fn secret(objects: &Objects, name: &str) -> BTreeMap<String, String> {
    objects
        .secrets
        .iter()
        .find(|s| s.metadata.name.as_deref() == Some(name))
        .unwrap_or_else(|| panic!("no Secret {name} in secret.example.yaml"))
        .string_data
        .clone()
        .unwrap_or_default()
}

fn secret_value(objects: &Objects, name: &str, key: &str) -> String {
    secret(objects, name)
        .get(key)
        .unwrap_or_else(|| panic!("Secret {name} has no key {key}"))
        .clone()
}

/// The binary's flags and environment variables, from its `--help`.
fn help(binary: &Path) -> String {
    let out = Command::new(binary).arg("--help").output().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap()
}

fn assert_env_known(help: &str, env: &[(String, String)], binary: &str) {
    for (name, _) in env {
        assert!(
            help.contains(&format!("[env: {name}=")) || help.contains(&format!("[env: {name}]")),
            "{binary} reads no environment variable {name}"
        );
    }
}

/// A child process and the file of its stderr.
struct Running(Child, PathBuf);

impl Running {
    /// Starts `binary` as the pod's container would run: `args`, `env`, its sandbox records
    /// and stderr under the mounts' root.
    fn start(binary: &Path, args: &[String], env: Vec<(String, String)>, mounts: &Mounts) -> Self {
        let log = mounts.root.path().join("stderr.log");
        let child = Command::new(binary)
            .args(args)
            .envs(env)
            .env("ESB_SANDBOX_RECORD_DIR", mounts.root.path().join("records"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Self(child, log)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits until `url` answers, then returns its status and body.
async fn get_when_up(url: &str, child: &mut Running) -> (u16, String) {
    for _ in 0..300 {
        if let Ok(response) = support::client().get(url).send().await {
            let status = response.status().as_u16();
            return (status, response.text().await.unwrap());
        }
        if let Some(status) = child.0.try_wait().unwrap() {
            let log = std::fs::read_to_string(&child.1).unwrap_or_default();
            panic!("{url}: the binary exited with {status}:\n{log}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{url} never answered");
}

/// The series names in Prometheus text.
fn series_names(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|line| !line.is_empty())
        .filter_map(|line| {
            let line = line
                .strip_prefix("# HELP ")
                .or_else(|| line.strip_prefix("# TYPE "))
                .unwrap_or(line);
            if line.starts_with('#') {
                return None;
            }
            let end = line.find(['{', ' ']).unwrap_or(line.len());
            Some(line[..end].to_owned())
        })
        .collect()
}

/// The `esb_*` series an expression names (recording rules' `esb:` names excluded).
fn named_series(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(start) = rest.find("esb_") {
        let before = rest[..start].chars().last();
        let tail = &rest[start..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        if !before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':') {
            names.insert(tail[..end].to_owned());
        }
        rest = &tail[end..];
    }
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kubernetes_manifests_parse_and_match_the_binaries() {
    // Every file: typed, no field dropped.
    let mut files: Vec<String> = std::fs::read_dir(dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|name| name.ends_with(".yaml"))
        .collect();
    files.sort();
    let mut objects = Objects::default();
    for file in files.iter().filter(|f| *f != "kustomization.yaml") {
        load(file, &mut objects);
    }

    // kustomization.yaml lists every manifest but the Secret templates, and the images.
    let kustomization: Kustomization =
        serde_norway::from_str(&std::fs::read_to_string(dir().join("kustomization.yaml")).unwrap())
            .unwrap();
    assert_eq!(kustomization.api_version, "kustomize.config.k8s.io/v1beta1");
    assert_eq!(kustomization.kind, "Kustomization");
    let listed: BTreeSet<&str> = kustomization.resources.iter().map(String::as_str).collect();
    let expected: BTreeSet<&str> = files
        .iter()
        .map(String::as_str)
        .filter(|f| *f != "kustomization.yaml" && *f != "secret.example.yaml")
        .collect();
    assert_eq!(listed, expected, "kustomization.yaml resources");

    // Names: one namespace, images ghcr.io/esb/<binary>:<version>.
    let namespace = objects.namespaces[0].metadata.name.clone().unwrap();
    assert_eq!(kustomization.namespace, namespace);
    assert_eq!(objects.daemon_sets.len(), 1);
    let agent_set = &objects.daemon_sets[0];
    // The gateways are a StatefulSet: a replaced pod keeps its name, hence its --gateway-id,
    // and adopts its predecessor's sandboxes.
    assert!(
        !objects
            .deployments
            .iter()
            .any(|d| d.metadata.name.as_deref() == Some("esb-gateway")),
        "esb-gateway must not be a Deployment (its pod names change on each replacement)"
    );
    let gateway_deploy = objects
        .stateful_sets
        .iter()
        .find(|d| d.metadata.name.as_deref() == Some("esb-gateway"))
        .expect("a StatefulSet esb-gateway");
    let gateway_spec = gateway_deploy.spec.as_ref().unwrap();
    assert_eq!(
        gateway_spec.pod_management_policy.as_deref(),
        Some("Parallel")
    );
    assert_eq!(
        gateway_spec
            .update_strategy
            .as_ref()
            .and_then(|u| u.type_.as_deref()),
        Some("RollingUpdate")
    );
    assert!(
        objects.services.iter().any(|s| s.metadata.name.as_deref()
            == Some(gateway_spec.service_name.as_deref().unwrap_or_default())),
        "the StatefulSet's serviceName names a Service of these manifests"
    );
    let gateway_id_env = gateway_spec.template.spec.as_ref().unwrap().containers[0]
        .env
        .iter()
        .flatten()
        .find(|e| e.name == "ESB_GATEWAY_ID")
        .expect("ESB_GATEWAY_ID");
    assert_eq!(
        gateway_id_env
            .value_from
            .as_ref()
            .and_then(|v| v.field_ref.as_ref())
            .map(|f| f.field_path.as_str()),
        Some("metadata.name"),
        "--gateway-id is the pod's (stable) name"
    );
    let agent_pod = agent_set
        .spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap();
    let gateway_pod = gateway_deploy
        .spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap();
    let agent = the_container(agent_pod);
    let gateway = the_container(gateway_pod);
    let version = env!("CARGO_PKG_VERSION");
    for (container, binary) in [(agent, "esb-agent"), (gateway, "esb-gateway")] {
        assert_eq!(
            container.image.as_deref(),
            Some(format!("ghcr.io/esb/{binary}:{version}").as_str())
        );
        assert_eq!(container.command.as_deref(), Some(&[binary.to_owned()][..]));
        assert!(
            kustomization
                .images
                .iter()
                .any(|i| i.name == format!("ghcr.io/esb/{binary}") && i.new_tag == version),
            "kustomization.yaml images: {binary}"
        );
    }
    for object in objects
        .services
        .iter()
        .map(|s| &s.metadata)
        .chain(objects.config_maps.iter().map(|c| &c.metadata))
        .chain(objects.secrets.iter().map(|s| &s.metadata))
        .chain(objects.deployments.iter().map(|d| &d.metadata))
        .chain(objects.stateful_sets.iter().map(|d| &d.metadata))
        .chain(objects.hpas.iter().map(|h| &h.metadata))
        .chain([&agent_set.metadata])
    {
        assert_eq!(object.namespace.as_deref(), Some(namespace.as_str()));
    }

    // The headless Service selects the agents and names their gRPC port; the gateways find
    // them through it.
    let agent_args = agent.args.clone().unwrap();
    let gateway_args = gateway.args.clone().unwrap();
    let pod_labels = |labels: &Option<BTreeMap<String, String>>| labels.clone().unwrap();
    let agent_labels = pod_labels(
        &agent_set
            .spec
            .as_ref()
            .unwrap()
            .template
            .metadata
            .as_ref()
            .unwrap()
            .labels,
    );
    let gateway_labels = pod_labels(
        &gateway_deploy
            .spec
            .as_ref()
            .unwrap()
            .template
            .metadata
            .as_ref()
            .unwrap()
            .labels,
    );
    let service = |name: &str| {
        objects
            .services
            .iter()
            .find(|s| s.metadata.name.as_deref() == Some(name))
            .unwrap_or_else(|| panic!("no Service {name}"))
            .spec
            .clone()
            .unwrap()
    };
    let headless = service("esb-agent");
    assert_eq!(headless.cluster_ip.as_deref(), Some("None"));
    for (key, value) in headless.selector.as_ref().unwrap() {
        assert_eq!(agent_labels.get(key), Some(value), "esb-agent selector");
    }
    let grpc = headless
        .ports
        .as_ref()
        .unwrap()
        .iter()
        .find(|p| p.name.as_deref() == Some("grpc"))
        .unwrap();
    assert_eq!(
        probe_port(agent, grpc.target_port.as_ref().unwrap()),
        port_of(flag(&agent_args, "--listen").unwrap())
    );
    assert_eq!(
        flag(&gateway_args, "--agents-dns"),
        Some(format!("esb-agent.{namespace}.svc.cluster.local:{}", grpc.port).as_str())
    );
    let front = service("esb-gateway");
    for (key, value) in front.selector.as_ref().unwrap() {
        assert_eq!(gateway_labels.get(key), Some(value), "esb-gateway selector");
    }
    for port in front.ports.as_ref().unwrap() {
        probe_port(gateway, port.target_port.as_ref().unwrap());
    }

    // Ports match the listen flags.
    assert_eq!(
        named_port(agent, "grpc"),
        port_of(flag(&agent_args, "--listen").unwrap())
    );
    assert_eq!(
        named_port(agent, "metrics"),
        port_of(flag(&agent_args, "--metrics-listen").unwrap())
    );
    assert_eq!(
        named_port(gateway, "http"),
        port_of(flag(&gateway_args, "--listen").unwrap())
    );

    // Grace periods cover the drain.
    let seconds =
        |args: &[String]| -> i64 { flag(args, "--shutdown-grace").unwrap().parse().unwrap() };
    let pre_stop = gateway
        .lifecycle
        .as_ref()
        .and_then(|l| l.pre_stop.as_ref())
        .and_then(|h| h.sleep.as_ref())
        .map_or(0, |s| s.seconds);
    assert!(
        gateway_pod.termination_grace_period_seconds.unwrap() > seconds(&gateway_args) + pre_stop
    );
    assert!(agent_pod.termination_grace_period_seconds.unwrap() > seconds(&agent_args));
    assert_eq!(gateway_deploy.spec.as_ref().unwrap().replicas, Some(2));

    // Volumes name existing Secrets (with the keys the args read) and the ConfigMap.
    for pod in [agent_pod, gateway_pod] {
        for volume in pod.volumes.iter().flatten() {
            if let Some(source) = &volume.secret {
                secret(&objects, source.secret_name.as_deref().unwrap());
            }
            if let Some(source) = &volume.config_map {
                assert!(
                    objects
                        .config_maps
                        .iter()
                        .any(|c| c.metadata.name.as_deref() == Some(source.name.as_str())),
                    "no ConfigMap {}",
                    source.name
                );
            }
        }
    }

    // The HPA scales a Deployment of these manifests.
    for hpa in &objects.hpas {
        let target = &hpa.spec.as_ref().unwrap().scale_target_ref;
        assert!(
            objects
                .deployments
                .iter()
                .any(|d| d.metadata.name.as_deref() == Some(target.name.as_str())),
            "HPA target {}",
            target.name
        );
    }

    // --- The binaries with these args and env, on loopback. ---
    let agent_binary = support::agent_binary();
    let gateway_binary = PathBuf::from(env!("CARGO_BIN_EXE_esb-gateway"));
    let agent_help = help(&agent_binary);
    let gateway_help = help(&gateway_binary);

    // The agent's volumes: TLS from the Secret (a real certificate here), the rest empty dirs.
    let agent_mounts = Mounts::new(agent);
    let tls_volume = agent_pod
        .volumes
        .iter()
        .flatten()
        .find(|v| v.secret.is_some())
        .unwrap();
    let tls_secret = secret(
        &objects,
        tls_volume
            .secret
            .as_ref()
            .unwrap()
            .secret_name
            .as_deref()
            .unwrap(),
    );
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(DnType::CommonName, "esb manifests test CA");
    let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec![
        format!("esb-agent.{namespace}.svc.cluster.local"),
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
    ])
    .unwrap()
    .signed_by(&key, &ca)
    .unwrap();
    for (name, pem) in [("tls.crt", cert.pem()), ("tls.key", key.serialize_pem())] {
        assert!(
            tls_secret.contains_key(name),
            "the agent TLS Secret has no {name}"
        );
        std::fs::write(agent_mounts.volume(&tls_volume.name).join(name), pem).unwrap();
    }
    let mut args = agent_args.clone();
    agent_mounts.rewrite_all(&mut args);
    for path in ["--tls-cert", "--tls-key"] {
        assert!(
            Path::new(flag(&args, path).unwrap()).exists(),
            "{path} is not in a mounted volume"
        );
    }
    // The process backend stands in for the node's containerd; every other flag is as deployed.
    set_flag(&mut args, "--runtime", "process");
    let agent_port = free_port().unwrap();
    let metrics_port = free_port().unwrap();
    set_flag(&mut args, "--listen", &format!("127.0.0.1:{agent_port}"));
    set_flag(
        &mut args,
        "--metrics-listen",
        &format!("127.0.0.1:{metrics_port}"),
    );
    let env = pod_env(agent, &objects, "esb-agent-x7k2p");
    assert_env_known(&agent_help, &env, "esb-agent");
    let mut agent_child = Running::start(&agent_binary, &args, env, &agent_mounts);
    let mut agent_metrics = String::new();
    for (path, port) in probes(agent) {
        assert_eq!(port, named_port(agent, "metrics"));
        let url = format!("http://127.0.0.1:{metrics_port}{path}");
        let (status, _) = get_when_up(&url, &mut agent_child).await;
        assert_eq!(status, 200, "agent probe {path}");
        let (status, text) = get_when_up(
            &format!("http://127.0.0.1:{metrics_port}/metrics"),
            &mut agent_child,
        )
        .await;
        assert_eq!(status, 200);
        agent_metrics = text;
    }

    // The gateway: the ConfigMap's files and the agent CA mounted, the agent found by name.
    let gateway_mounts = Mounts::new(gateway);
    for volume in gateway_pod.volumes.iter().flatten() {
        let local = gateway_mounts.volume(&volume.name);
        if let Some(source) = &volume.config_map {
            let map = objects
                .config_maps
                .iter()
                .find(|c| c.metadata.name.as_deref() == Some(source.name.as_str()))
                .unwrap();
            for (name, text) in map.data.iter().flatten() {
                std::fs::write(local.join(name), text).unwrap();
            }
        }
        if let Some(source) = &volume.secret {
            let name = source.secret_name.as_deref().unwrap();
            assert!(
                secret(&objects, name).contains_key("ca.crt"),
                "Secret {name}: ca.crt"
            );
            std::fs::write(local.join("ca.crt"), ca.pem()).unwrap();
        }
    }
    let mut args = gateway_args.clone();
    gateway_mounts.rewrite_all(&mut args);
    for path in ["--functions", "--routing", "--agent-ca"] {
        assert!(
            Path::new(flag(&args, path).unwrap()).exists(),
            "{path} is not in a mounted volume"
        );
    }
    let port = free_port().unwrap();
    set_flag(&mut args, "--listen", &format!("127.0.0.1:{port}"));
    // The headless Service's name resolves to the agents' Pod IPs; here `localhost` does.
    set_flag(
        &mut args,
        "--agents-dns",
        &format!("localhost:{agent_port}"),
    );
    let env = pod_env(gateway, &objects, "esb-gateway-0");
    assert_env_known(&gateway_help, &env, "esb-gateway");
    let checked = Command::new(&gateway_binary)
        .args(&args)
        .arg("--check")
        .envs(env.clone())
        .output()
        .unwrap();
    assert!(
        checked.status.success(),
        "esb-gateway --check with the manifest's args: {}",
        String::from_utf8_lossy(&checked.stderr)
    );
    let mut gateway_child = Running::start(&gateway_binary, &args, env, &gateway_mounts);
    for (path, probe) in probes(gateway) {
        assert_eq!(probe, named_port(gateway, "http"));
        let (status, _) = get_when_up(
            &format!("http://127.0.0.1:{port}{path}"),
            &mut gateway_child,
        )
        .await;
        assert_eq!(status, 200, "gateway probe {path}");
    }
    let (status, gateway_metrics) = get_when_up(
        &format!("http://127.0.0.1:{port}/metrics"),
        &mut gateway_child,
    )
    .await;
    assert_eq!(status, 200);
    // The gateway found the agent by DNS and reached it over TLS (its certificate checked
    // against the name) with the token: it is up in the gateway's view.
    assert!(
        gateway_metrics.contains(&format!(
            "esb_pool_agent_up{{agent=\"https://127.0.0.1:{agent_port}\"}} 1"
        )),
        "{gateway_metrics}"
    );

    // Every series the autoscaling manifests name is exported by a binary.
    let exported: BTreeSet<String> = series_names(&agent_metrics)
        .into_iter()
        .chain(series_names(&gateway_metrics))
        .collect();
    let mut named = BTreeSet::new();
    for hpa in &objects.hpas {
        for metric in hpa.spec.as_ref().unwrap().metrics.iter().flatten() {
            if let Some(external) = &metric.external {
                named.insert(external.metric.name.clone());
            }
        }
    }
    for map in &objects.config_maps {
        if map.metadata.name.as_deref() == Some("esb-prometheus-rules") {
            for text in map.data.iter().flatten().map(|(_, t)| t) {
                named.extend(named_series(text));
            }
        }
    }
    assert!(named.len() >= 4, "{named:?}");
    for name in &named {
        let base = name.strip_suffix("_bucket").unwrap_or(name);
        assert!(
            exported.contains(name.as_str()) || exported.contains(base),
            "{name} is not exported by esb-agent or esb-gateway"
        );
    }
}
