//! The OCI runtime spec of a sandbox, from the image config and the Lambda settings.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::{Value, json};

/// What a sandbox takes from its image's config.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct ImageRunConfig {
    #[serde(default)]
    pub(crate) entrypoint: Option<Vec<String>>,
    #[serde(default)]
    pub(crate) cmd: Option<Vec<String>>,
    #[serde(default)]
    pub(crate) env: Option<Vec<String>>,
    #[serde(default)]
    pub(crate) working_dir: Option<String>,
    #[serde(default)]
    pub(crate) user: Option<String>,
}

/// The parts of an OCI image config ESB reads.
#[derive(Clone, Debug, Default, Deserialize)]
pub(crate) struct ImageConfig {
    #[serde(default)]
    pub(crate) config: Option<ImageRunConfig>,
    pub(crate) rootfs: RootFs,
}

/// `rootfs` of an image config.
#[derive(Clone, Debug, Default, Deserialize)]
pub(crate) struct RootFs {
    pub(crate) diff_ids: Vec<String>,
}

/// Resource limits and identity of one sandbox's container.
#[derive(Clone, Debug)]
pub(crate) struct SpecInput<'a> {
    pub(crate) args: Vec<String>,
    pub(crate) env: BTreeMap<String, String>,
    pub(crate) cwd: String,
    pub(crate) user: Option<&'a str>,
    pub(crate) hostname: &'a str,
    pub(crate) memory_bytes: u64,
    pub(crate) cpu_quota_us: Option<u64>,
    pub(crate) cpu_shares: u64,
    pub(crate) pids: u32,
    pub(crate) tmp_size_mb: u32,
    pub(crate) cgroups_path: &'a str,
    pub(crate) netns_path: &'a str,
    pub(crate) mounts: &'a [crate::BindMount],
}

/// Capabilities every sandbox keeps: containerd's defaults, none added.
const CAPABILITIES: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// CFS period used with the quota.
pub(crate) const CPU_PERIOD_US: u64 = 100_000;

/// `uid[:gid]` from the image's `User` when numeric; anything else runs as root.
fn user_ids(user: Option<&str>) -> (u32, u32) {
    let Some(user) = user.filter(|u| !u.is_empty()) else {
        return (0, 0);
    };
    let (uid, gid) = user.split_once(':').unwrap_or((user, user));
    match (uid.parse(), gid.parse()) {
        (Ok(uid), Ok(gid)) => (uid, gid),
        (Ok(uid), Err(_)) => (uid, uid),
        _ => (0, 0),
    }
}

/// The runtime spec document (JSON), as containerd stores it in the container record.
pub(crate) fn runtime_spec(input: &SpecInput<'_>) -> Value {
    let (uid, gid) = user_ids(input.user);
    let env: Vec<String> = input.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let mut cpu = json!({ "shares": input.cpu_shares });
    if let Some(quota) = input.cpu_quota_us {
        cpu["quota"] = json!(quota);
        cpu["period"] = json!(CPU_PERIOD_US);
    }
    let mut spec = json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": false,
            "user": { "uid": uid, "gid": gid },
            "args": input.args,
            "env": env,
            "cwd": input.cwd,
            "capabilities": {
                "bounding": CAPABILITIES,
                "effective": CAPABILITIES,
                "permitted": CAPABILITIES,
            },
            "rlimits": [{ "type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024 }],
            "noNewPrivileges": true,
        },
        "root": { "path": "rootfs", "readonly": true },
        "hostname": input.hostname,
        "mounts": [
            { "destination": "/proc", "type": "proc", "source": "proc",
              "options": ["nosuid", "noexec", "nodev"] },
            { "destination": "/dev", "type": "tmpfs", "source": "tmpfs",
              "options": ["nosuid", "strictatime", "mode=755", "size=65536k"] },
            { "destination": "/dev/pts", "type": "devpts", "source": "devpts",
              "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"] },
            { "destination": "/dev/shm", "type": "tmpfs", "source": "shm",
              "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"] },
            { "destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
              "options": ["nosuid", "noexec", "nodev"] },
            { "destination": "/sys", "type": "sysfs", "source": "sysfs",
              "options": ["nosuid", "noexec", "nodev", "ro"] },
            { "destination": "/tmp", "type": "tmpfs", "source": "tmpfs",
              "options": ["nosuid", "nodev", "mode=1777", format!("size={}m", input.tmp_size_mb)] },
        ],
        "linux": {
            "resources": {
                "devices": [{ "allow": false, "access": "rwm" }],
                // swap = limit: memory+swap may not exceed the limit, so no swap is used.
                "memory": { "limit": input.memory_bytes, "swap": input.memory_bytes },
                "cpu": cpu,
                "pids": { "limit": input.pids },
            },
            "cgroupsPath": input.cgroups_path,
            "namespaces": [
                { "type": "pid" },
                { "type": "ipc" },
                { "type": "uts" },
                { "type": "mount" },
                { "type": "network", "path": input.netns_path },
            ],
            "maskedPaths": [
                "/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
                "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/sys/firmware",
                "/proc/scsi",
            ],
            "readonlyPaths": [
                "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger",
            ],
        },
    });
    if let Some(mounts) = spec["mounts"].as_array_mut() {
        for mount in input.mounts {
            let mut options = vec!["rbind", "nosuid", "nodev"];
            if mount.read_only {
                options.push("ro");
            }
            mounts.push(json!({
                "destination": mount.destination,
                "type": "bind",
                "source": mount.source.display().to_string(),
                "options": options,
            }));
        }
    }
    spec
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input() -> SpecInput<'static> {
        SpecInput {
            args: vec!["/var/runtime/bootstrap".into()],
            env: BTreeMap::from([("A".into(), "1".into())]),
            cwd: "/var/task".into(),
            user: Some("993:990"),
            hostname: "fn",
            memory_bytes: 128 << 20,
            cpu_quota_us: Some(50_000),
            cpu_shares: 74,
            pids: 64,
            tmp_size_mb: 512,
            cgroups_path: "/esb/esb-test/fn-1",
            netns_path: "/run/esb/netns/fn-1",
            mounts: &[],
        }
    }

    #[test]
    fn limits_and_isolation_are_in_the_spec() {
        let spec = runtime_spec(&input());
        assert_eq!(spec["root"]["readonly"], true);
        assert_eq!(spec["linux"]["resources"]["memory"]["limit"], 128u64 << 20);
        assert_eq!(spec["linux"]["resources"]["memory"]["swap"], 128u64 << 20);
        assert_eq!(spec["linux"]["resources"]["pids"]["limit"], 64);
        assert_eq!(spec["linux"]["resources"]["cpu"]["quota"], 50_000);
        assert_eq!(spec["process"]["user"]["uid"], 993);
        assert_eq!(spec["process"]["env"][0], "A=1");
        let tmp = spec["mounts"]
            .as_array()
            .and_then(|m| m.iter().find(|m| m["destination"] == "/tmp"))
            .cloned()
            .unwrap_or_default();
        assert_eq!(tmp["type"], "tmpfs");
        let net = spec["linux"]["namespaces"]
            .as_array()
            .and_then(|n| n.iter().find(|n| n["type"] == "network"))
            .cloned()
            .unwrap_or_default();
        assert_eq!(net["path"], "/run/esb/netns/fn-1");
        let caps = spec["process"]["capabilities"]["bounding"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        assert!(
            !caps
                .iter()
                .any(|c| c == "CAP_SYS_ADMIN" || c == "CAP_NET_ADMIN")
        );
    }

    #[test]
    fn bind_mounts_follow_the_system_mounts_read_only_when_asked() {
        let mounts = [crate::BindMount::read_only("/cache/code/ab", "/var/task")];
        let spec = runtime_spec(&SpecInput {
            mounts: &mounts,
            ..input()
        });
        let task = spec["mounts"]
            .as_array()
            .and_then(|m| m.last())
            .cloned()
            .unwrap_or_default();
        assert_eq!(task["destination"], "/var/task");
        assert_eq!(task["type"], "bind");
        assert_eq!(task["source"], "/cache/code/ab");
        assert!(
            task["options"]
                .as_array()
                .unwrap()
                .iter()
                .any(|o| o == "ro")
        );
    }

    #[test]
    fn non_numeric_users_run_as_root() {
        assert_eq!(user_ids(Some("sbx_user1051")), (0, 0));
        assert_eq!(user_ids(Some("1000")), (1000, 1000));
        assert_eq!(user_ids(None), (0, 0));
    }
}
