//! Cold start, resume and warm invoke figures of the containerd backend, beside raw
//! containerd create+start of the same image. Needs root and containerd (`.ci/containerd.sh`).
//!
//! ```text
//! eval "$(.ci/containerd.sh)"
//! cargo run --release -p esb-runtime --features containerd --example containerd_bench -- 30
//! ```
#![allow(clippy::expect_used, clippy::unwrap_used, missing_docs)]

#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use containerd_client::services::v1::container::Runtime as ContainerRuntime;
use containerd_client::services::v1::containers_client::ContainersClient;
use containerd_client::services::v1::snapshots::snapshots_client::SnapshotsClient;
use containerd_client::services::v1::snapshots::{PrepareSnapshotRequest, RemoveSnapshotRequest};
use containerd_client::services::v1::tasks_client::TasksClient;
use containerd_client::services::v1::{
    Container, CreateContainerRequest, CreateTaskRequest, DeleteContainerRequest,
    DeleteTaskRequest, KillRequest, StartRequest, WaitRequest,
};
use containerd_client::tonic::Request;
use esb_runtime::containerd::{ContainerdRuntime, Freezer};
use esb_runtime::logs::NullLogSink;
use esb_runtime::{InvokeRequest, Runtime, SandboxSpec};
use serde_json::json;

fn percentile(samples: &mut [Duration], p: f64) -> Duration {
    samples.sort();
    let rank = ((p / 100.0) * samples.len() as f64).ceil() as usize;
    samples[rank.clamp(1, samples.len()) - 1]
}

fn report(name: &str, samples: &mut [Duration]) -> Duration {
    let p50 = percentile(samples, 50.0);
    let p99 = percentile(samples, 99.0);
    println!(
        "{name:<34} n={:<4} p50 {:>9.3} ms   p99 {:>9.3} ms",
        samples.len(),
        p50.as_secs_f64() * 1e3,
        p99.as_secs_f64() * 1e3
    );
    p50
}

fn req<T>(namespace: &str, message: T) -> Request<T> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert("containerd-namespace", namespace.parse().unwrap());
    request
}

/// Raw containerd: prepare a snapshot, create the container and its task, start it.
/// No network namespace path, no Runtime API, no log FIFOs: the floor ESB builds on.
async fn raw_create_start(
    channel: &containerd_client::tonic::transport::Channel,
    namespace: &str,
    chain_id: &str,
    id: &str,
) -> Duration {
    let spec = json!({
        "ociVersion": "1.0.2",
        "process": {"args": ["/var/runtime/bootstrap"], "env": ["AWS_LAMBDA_RUNTIME_API=127.0.0.1:9001"],
                    "cwd": "/", "user": {"uid": 0, "gid": 0}},
        "root": {"path": "rootfs", "readonly": true},
        "mounts": [{"destination": "/proc", "type": "proc", "source": "proc"},
                   {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs"}],
        "linux": {"namespaces": [{"type": "pid"}, {"type": "mount"}, {"type": "network"}],
                  "cgroupsPath": format!("/esb-bench/{id}")},
    });
    let started = Instant::now();
    // The container first: it holds the snapshot key, so GC cannot take the fresh snapshot.
    ContainersClient::new(channel.clone())
        .create(req(
            namespace,
            CreateContainerRequest {
                container: Some(Container {
                    id: id.into(),
                    runtime: Some(ContainerRuntime {
                        name: "io.containerd.runc.v2".into(),
                        options: None,
                    }),
                    spec: Some(prost_types::Any {
                        type_url: "types.containerd.io/opencontainers/runtime-spec/1/Spec".into(),
                        value: spec.to_string().into_bytes(),
                    }),
                    snapshotter: "overlayfs".into(),
                    snapshot_key: id.into(),
                    ..Container::default()
                }),
            },
        ))
        .await
        .unwrap();
    let mounts = SnapshotsClient::new(channel.clone())
        .prepare(req(
            namespace,
            PrepareSnapshotRequest {
                snapshotter: "overlayfs".into(),
                key: id.into(),
                parent: chain_id.into(),
                labels: HashMap::new(),
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .mounts;
    let mut tasks = TasksClient::new(channel.clone());
    tasks
        .create(req(
            namespace,
            CreateTaskRequest {
                container_id: id.into(),
                rootfs: mounts,
                ..CreateTaskRequest::default()
            },
        ))
        .await
        .unwrap();
    tasks
        .start(req(
            namespace,
            StartRequest {
                container_id: id.into(),
                exec_id: String::new(),
            },
        ))
        .await
        .unwrap();
    let elapsed = started.elapsed();
    let _ = tasks
        .kill(req(
            namespace,
            KillRequest {
                container_id: id.into(),
                exec_id: String::new(),
                signal: 9,
                all: true,
            },
        ))
        .await;
    let _ = tasks
        .wait(req(
            namespace,
            WaitRequest {
                container_id: id.into(),
                exec_id: String::new(),
            },
        ))
        .await;
    let _ = tasks
        .delete(req(
            namespace,
            DeleteTaskRequest {
                container_id: id.into(),
            },
        ))
        .await;
    let _ = SnapshotsClient::new(channel.clone())
        .remove(req(
            namespace,
            RemoveSnapshotRequest {
                snapshotter: "overlayfs".into(),
                key: id.into(),
            },
        ))
        .await;
    let _ = ContainersClient::new(channel.clone())
        .delete(req(namespace, DeleteContainerRequest { id: id.into() }))
        .await;
    elapsed
}

#[tokio::main]
async fn main() {
    let runs: usize = std::env::args()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(30)
        .max(20);
    let Some(address) = support::containerd() else {
        return;
    };
    let image = tokio::task::spawn_blocking(support::pushed_image)
        .await
        .unwrap();
    let env = support::unique_env("bench");
    let runtime =
        ContainerdRuntime::connect(support::config(&address, &env, Arc::new(NullLogSink)))
            .await
            .unwrap();
    runtime.pull_image(&image).await.unwrap();
    let spec = SandboxSpec::new("bench").image(image.clone());
    let event = json!({"bench": true}).to_string();

    // Warm the page cache and containerd's own caches once.
    let warm = runtime.create(spec.clone()).await.unwrap();
    runtime
        .invoke(&warm.id, InvokeRequest::new(event.clone()))
        .await
        .unwrap();
    runtime.destroy(&warm.id).await.unwrap();

    let mut cold = Vec::new();
    for _ in 0..runs {
        let started = Instant::now();
        let sandbox = runtime.create(spec.clone()).await.unwrap();
        runtime
            .invoke(&sandbox.id, InvokeRequest::new(event.clone()))
            .await
            .unwrap();
        cold.push(started.elapsed());
        runtime.destroy(&sandbox.id).await.unwrap();
    }

    let channel = containerd_client::connect(&address).await.unwrap();
    // The image has one layer: its chain id is its diff id (the uncompressed tar's digest).
    let chain_id = support::sha256(&support::test_image().layer_tar);
    let namespace = runtime.namespace().to_owned();
    let mut raw = Vec::new();
    for i in 0..runs {
        raw.push(
            raw_create_start(&channel, &namespace, &chain_id, &format!("raw-{env}-{i}")).await,
        );
    }

    let mut freezes = Vec::new();
    for (freezer, name) in [
        (Freezer::Cgroup, "cgroup freezer"),
        (Freezer::Tasks, "Tasks.Pause/Resume"),
    ] {
        let mut config = support::config(&address, &env, Arc::new(NullLogSink));
        config.freezer = freezer;
        let runtime = ContainerdRuntime::connect(config).await.unwrap();
        let sandbox = runtime.create(spec.clone()).await.unwrap();
        runtime
            .invoke(&sandbox.id, InvokeRequest::new(event.clone()))
            .await
            .unwrap();
        let mut resume = Vec::new();
        let mut pause = Vec::new();
        for _ in 0..runs {
            let started = Instant::now();
            runtime.pause(&sandbox.id).await.unwrap();
            pause.push(started.elapsed());
            let started = Instant::now();
            runtime.resume(&sandbox.id).await.unwrap();
            runtime
                .invoke(&sandbox.id, InvokeRequest::new(event.clone()))
                .await
                .unwrap();
            resume.push(started.elapsed());
        }
        runtime.destroy(&sandbox.id).await.unwrap();
        freezes.push((name, pause, resume));
    }

    let sandbox = runtime.create(spec.clone()).await.unwrap();
    let mut warm = Vec::new();
    let started = Instant::now();
    for _ in 0..runs * 10 {
        let t = Instant::now();
        runtime
            .invoke(&sandbox.id, InvokeRequest::new(event.clone()))
            .await
            .unwrap();
        warm.push(t.elapsed());
    }
    let rate = warm.len() as f64 / started.elapsed().as_secs_f64();
    runtime.destroy(&sandbox.id).await.unwrap();

    println!("containerd backend, image {image}, {runs} runs");
    let cold_p50 = report("cold: create + first invoke", &mut cold);
    let raw_p50 = report("raw containerd create+start", &mut raw);
    println!(
        "{:<34} {:.2}x",
        "cold p50 / raw p50",
        cold_p50.as_secs_f64() / raw_p50.as_secs_f64()
    );
    for (name, mut pause, mut resume) in freezes {
        report(&format!("pause ({name})"), &mut pause);
        report(&format!("resume ({name}) + invoke"), &mut resume);
    }
    report("warm invoke (in process)", &mut warm);
    println!("{:<34} {rate:.0}/s", "warm invokes, sequential");
}
