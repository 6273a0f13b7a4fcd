//! Images: pulled from OCI registries or imported from an archive into containerd's content
//! store, recorded as images, and unpacked into snapshots named by their chain ids.

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use containerd_client::services::v1::diff_client::DiffClient;
use containerd_client::services::v1::snapshots::snapshots_client::SnapshotsClient;
use containerd_client::services::v1::snapshots::{
    CommitSnapshotRequest, PrepareSnapshotRequest, RemoveSnapshotRequest, StatSnapshotRequest,
};
use containerd_client::services::v1::{
    ApplyRequest, CreateImageRequest, DeleteRequest as DeleteLeaseRequest, GetImageRequest, Image,
    Info, InfoRequest, ReadContentRequest, UpdateImageRequest,
    UpdateRequest as UpdateContentRequest, WriteAction, WriteContentRequest,
};
use containerd_client::tonic::Code;
use containerd_client::tonic::transport::Channel;
use containerd_client::types::Descriptor;
use futures::StreamExt;
use oci_client::Reference;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::secrets::RegistryAuth;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::sync::Mutex;

use super::client::{Ctr, status_error};
use super::oci::{ImageConfig, ImageRunConfig};
use crate::Error;

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
const DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar";
const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
/// Size of the pieces blobs are written to the content store in.
const CHUNK: usize = 1 << 20;

/// Credentials for one registry.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RegistryCredentials {
    /// HTTP basic authentication.
    Basic {
        /// User name.
        username: String,
        /// Password.
        password: String,
    },
    /// A bearer token.
    Bearer(String),
}

impl std::fmt::Debug for RegistryCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Basic { username, .. } => write!(f, "Basic({username}, ***)"),
            Self::Bearer(_) => f.write_str("Bearer(***)"),
        }
    }
}

/// How images are fetched.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct RegistryConfig {
    /// Registries (`host:port`) spoken to over plain HTTP; every other one uses HTTPS.
    pub insecure: Vec<String>,
    /// Credentials by registry (`host:port`); anonymous elsewhere.
    pub credentials: BTreeMap<String, RegistryCredentials>,
}

impl RegistryConfig {
    /// Sets the registries (`host:port`) spoken to over plain HTTP.
    pub fn insecure<I, S>(mut self, registries: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.insecure = registries.into_iter().map(Into::into).collect();
        self
    }

    /// Adds the credentials of one registry (`host:port`).
    pub fn credentials(
        mut self,
        registry: impl Into<String>,
        credentials: RegistryCredentials,
    ) -> Self {
        self.credentials.insert(registry.into(), credentials);
        self
    }
}

/// An image ready to make sandboxes from.
#[derive(Clone, Debug)]
pub(crate) struct ReadyImage {
    /// The chain id of its top layer: the parent of each sandbox's snapshot.
    pub(crate) chain_id: String,
    /// Entrypoint, command, environment and working directory.
    pub(crate) run: ImageRunConfig,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Desc {
    #[serde(rename = "mediaType")]
    media_type: String,
    digest: String,
    size: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    platform: Option<Platform>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    annotations: Option<BTreeMap<String, String>>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Platform {
    architecture: String,
    os: String,
}

#[derive(Debug, Deserialize)]
struct Manifest {
    config: Desc,
    layers: Vec<Desc>,
}

#[derive(Debug, Deserialize)]
struct Index {
    manifests: Vec<Desc>,
}

impl Desc {
    fn to_containerd(&self) -> Descriptor {
        Descriptor {
            media_type: self.media_type.clone(),
            digest: self.digest.clone(),
            size: self.size,
            annotations: HashMap::new(),
        }
    }
}

/// The image store of one containerd namespace.
pub(crate) struct Images {
    ctr: Ctr,
    registries: RegistryConfig,
    oci: oci_client::Client,
    snapshotter: String,
    ready: Mutex<HashMap<String, Arc<Mutex<Option<ReadyImage>>>>>,
}

impl std::fmt::Debug for Images {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Images")
            .field("registries", &self.registries)
            .field("snapshotter", &self.snapshotter)
            .finish_non_exhaustive()
    }
}

fn sha256(data: &[u8]) -> String {
    format!("sha256:{:x}", Sha256::digest(data))
}

/// Chain ids of a layer stack: `chain(0) = diff(0)`, `chain(n) = sha256(chain(n-1) + " " + diff(n))`.
pub(crate) fn chain_ids(diff_ids: &[String]) -> Vec<String> {
    let mut chain: Vec<String> = Vec::with_capacity(diff_ids.len());
    for diff in diff_ids {
        let next = match chain.last() {
            None => diff.clone(),
            Some(parent) => sha256(format!("{parent} {diff}").as_bytes()),
        };
        chain.push(next);
    }
    chain
}

/// `architecture` of this machine as OCI names it.
fn oci_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

fn expire_label() -> (String, String) {
    let at = SystemTime::now() + Duration::from_secs(3600);
    let secs = at
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    (
        "containerd.io/gc.expire".to_owned(),
        rfc3339(i64::try_from(secs).unwrap_or(i64::MAX)),
    )
}

/// `YYYY-MM-DDTHH:MM:SSZ` of a unix time.
pub(crate) fn rfc3339(secs: i64) -> String {
    chrono::DateTime::from_timestamp(secs, 0)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

impl Images {
    pub(crate) fn new(ctr: Ctr, registries: RegistryConfig, snapshotter: String) -> Self {
        crate::ensure_crypto_provider();
        let oci = oci_client::Client::new(ClientConfig {
            protocol: ClientProtocol::HttpsExcept(registries.insecure.clone()),
            ..ClientConfig::default()
        });
        Self {
            ctr,
            registries,
            oci,
            snapshotter,
            ready: Mutex::new(HashMap::new()),
        }
    }

    /// Creates a lease that expires by itself if this process dies before deleting it.
    pub(crate) async fn lease(&self, purpose: &str) -> crate::Result<String> {
        let id = format!("esb-{purpose}-{}", uuid::Uuid::new_v4().simple());
        let request = containerd_client::services::v1::CreateRequest {
            id: id.clone(),
            labels: HashMap::from([expire_label()]),
        };
        let mut leases = containerd_client::services::v1::leases_client::LeasesClient::new(
            self.ctr.channel.clone(),
        );
        leases
            .create(self.ctr.req(request))
            .await
            .map_err(|s| status_error("create lease", &id, s))?;
        Ok(id)
    }

    /// Deletes a lease; what it held is kept only if something else references it.
    pub(crate) async fn release(&self, lease: &str) {
        let mut leases = containerd_client::services::v1::leases_client::LeasesClient::new(
            self.ctr.channel.clone(),
        );
        let request = DeleteLeaseRequest {
            id: lease.to_owned(),
            sync: false,
        };
        if let Err(status) = leases.delete(self.ctr.req(request)).await {
            tracing::warn!(lease, %status, "cannot delete lease");
        }
    }

    /// The image named `name`, pulled and unpacked unless that was done before.
    pub(crate) async fn ensure(&self, name: &str) -> crate::Result<ReadyImage> {
        let slot = self
            .ready
            .lock()
            .await
            .entry(name.to_owned())
            .or_default()
            .clone();
        let mut slot = slot.lock().await;
        if let Some(ready) = slot.as_ref() {
            return Ok(ready.clone());
        }
        let lease = self.lease("image").await?;
        let result = async {
            let target = match self.record(name).await? {
                Some(target) => target,
                None => self.pull(name, &lease).await?,
            };
            self.unpack(name, &target, &lease).await
        }
        .await;
        self.release(&lease).await;
        let ready = result?;
        *slot = Some(ready.clone());
        Ok(ready)
    }

    /// Imports an OCI layout or `docker save` archive and records its image as `name`.
    pub(crate) async fn import(&self, archive: &Path, name: &str) -> crate::Result<ReadyImage> {
        let path = archive.to_path_buf();
        let files = tokio::task::spawn_blocking(move || read_archive(&path))
            .await
            .map_err(|err| Error::Other {
                operation: "archive reader".into(),
                source: err.into(),
            })??;
        let lease = self.lease("import").await?;
        let result = async {
            let target = self.import_files(archive, &files, &lease).await?;
            self.create_record(name, &target).await?;
            self.unpack(name, &target, &lease).await
        }
        .await;
        self.release(&lease).await;
        let ready = result?;
        *self
            .ready
            .lock()
            .await
            .entry(name.to_owned())
            .or_default()
            .lock()
            .await = Some(ready.clone());
        Ok(ready)
    }

    async fn import_files(
        &self,
        archive: &Path,
        files: &HashMap<String, Bytes>,
        lease: &str,
    ) -> crate::Result<Desc> {
        let bad = |reason: String| {
            Error::Backend(format!("image archive {}: {reason}", archive.display()))
        };
        if let Some(index) = files.get("index.json") {
            // OCI image layout: blobs/<alg>/<hex>.
            let blob = |digest: &str| -> crate::Result<Bytes> {
                files
                    .get(&format!("blobs/{}", digest.replacen(':', "/", 1)))
                    .cloned()
                    .ok_or_else(|| bad(format!("blob {digest} is missing")))
            };
            let mut target = pick_manifest(index, "index.json").map_err(bad)?;
            while target.media_type == OCI_INDEX || target.media_type == DOCKER_LIST {
                target = pick_manifest(&blob(&target.digest)?, &target.digest).map_err(bad)?;
            }
            let manifest_bytes = blob(&target.digest)?;
            let manifest: Manifest = serde_json::from_slice(&manifest_bytes)
                .map_err(|err| bad(format!("manifest {}: {err}", target.digest)))?;
            for desc in std::iter::once(&manifest.config).chain(&manifest.layers) {
                self.write_bytes(desc, blob(&desc.digest)?, HashMap::new(), lease)
                    .await?;
            }
            self.write_bytes(&target, manifest_bytes, manifest_labels(&manifest), lease)
                .await?;
            Ok(target)
        } else if let Some(list) = files.get("manifest.json") {
            // `docker save`: manifest.json names the config and layer files.
            #[derive(Deserialize)]
            #[serde(rename_all = "PascalCase")]
            struct Entry {
                config: String,
                layers: Vec<String>,
            }
            let entries: Vec<Entry> =
                serde_json::from_slice(list).map_err(|err| bad(format!("manifest.json: {err}")))?;
            let entry = entries
                .first()
                .ok_or_else(|| bad("manifest.json lists no image".into()))?;
            let file = |name: &str| {
                files
                    .get(name.trim_start_matches("./"))
                    .cloned()
                    .ok_or_else(|| bad(format!("{name} is missing")))
            };
            let config = file(&entry.config)?;
            let config_desc = Desc {
                media_type: DOCKER_CONFIG.into(),
                digest: sha256(&config),
                size: i64::try_from(config.len()).unwrap_or(i64::MAX),
                platform: None,
                annotations: None,
            };
            self.write_bytes(&config_desc, config, HashMap::new(), lease)
                .await?;
            let mut layers = Vec::new();
            for name in &entry.layers {
                let data = file(name)?;
                let desc = Desc {
                    media_type: if data.starts_with(&[0x1f, 0x8b]) {
                        DOCKER_LAYER_GZIP
                    } else {
                        DOCKER_LAYER
                    }
                    .into(),
                    digest: sha256(&data),
                    size: i64::try_from(data.len()).unwrap_or(i64::MAX),
                    platform: None,
                    annotations: None,
                };
                self.write_bytes(&desc, data, HashMap::new(), lease).await?;
                layers.push(desc);
            }
            let manifest = serde_json::json!({
                "schemaVersion": 2,
                "mediaType": DOCKER_MANIFEST,
                "config": config_desc,
                "layers": layers,
            });
            let bytes = Bytes::from(manifest.to_string());
            let target = Desc {
                media_type: DOCKER_MANIFEST.into(),
                digest: sha256(&bytes),
                size: i64::try_from(bytes.len()).unwrap_or(i64::MAX),
                platform: None,
                annotations: None,
            };
            let parsed = Manifest {
                config: config_desc,
                layers,
            };
            self.write_bytes(&target, bytes, manifest_labels(&parsed), lease)
                .await?;
            Ok(target)
        } else {
            Err(bad(
                "neither index.json (OCI layout) nor manifest.json (docker save) found".into(),
            ))
        }
    }

    fn auth(&self, reference: &Reference) -> RegistryAuth {
        match self
            .registries
            .credentials
            .get(reference.resolve_registry())
        {
            Some(RegistryCredentials::Basic { username, password }) => {
                RegistryAuth::Basic(username.clone(), password.clone())
            }
            Some(RegistryCredentials::Bearer(token)) => RegistryAuth::Bearer(token.clone()),
            None => RegistryAuth::Anonymous,
        }
    }

    /// The manifest descriptor of an image record, if containerd has one.
    async fn record(&self, name: &str) -> crate::Result<Option<Desc>> {
        let mut images = containerd_client::services::v1::images_client::ImagesClient::new(
            self.ctr.channel.clone(),
        );
        let request = GetImageRequest {
            name: name.to_owned(),
        };
        match images.get(self.ctr.req(request)).await {
            Ok(response) => Ok(response
                .into_inner()
                .image
                .and_then(|image| image.target)
                .map(|t| Desc {
                    media_type: t.media_type,
                    digest: t.digest,
                    size: t.size,
                    platform: None,
                    annotations: None,
                })),
            Err(status) if status.code() == Code::NotFound => Ok(None),
            Err(status) => Err(status_error("get image", name, status)),
        }
    }

    async fn create_record(&self, name: &str, target: &Desc) -> crate::Result<()> {
        let mut images = containerd_client::services::v1::images_client::ImagesClient::new(
            self.ctr.channel.clone(),
        );
        let image = Image {
            name: name.to_owned(),
            labels: HashMap::new(),
            target: Some(target.to_containerd()),
            created_at: None,
            updated_at: None,
        };
        let request = CreateImageRequest {
            image: Some(image.clone()),
            source_date_epoch: None,
        };
        match images.create(self.ctr.req(request)).await {
            Ok(_) => Ok(()),
            Err(status) if status.code() == Code::AlreadyExists => {
                let request = UpdateImageRequest {
                    image: Some(image),
                    update_mask: None,
                    source_date_epoch: None,
                };
                images
                    .update(self.ctr.req(request))
                    .await
                    .map(|_| ())
                    .map_err(|s| status_error("update image", name, s))
            }
            Err(status) => Err(status_error("create image", name, status)),
        }
    }

    /// Pulls `name` from its registry into the content store and records it.
    async fn pull(&self, name: &str, lease: &str) -> crate::Result<Desc> {
        let reference = super::reference::parse(name).map_err(|err| Error::Other {
            operation: format!("image reference {name:?} is not valid"),
            source: err.into(),
        })?;
        let auth = self.auth(&reference);
        let registry_error = |what: &str, err: oci_client::errors::OciDistributionError| -> Error {
            Error::Other {
                operation: format!("pulling {name}: {what}"),
                source: err.into(),
            }
        };
        let accepted = [OCI_MANIFEST, DOCKER_MANIFEST, OCI_INDEX, DOCKER_LIST];
        tracing::info!(image = name, "pulling image");
        let (mut bytes, mut digest) = self
            .oci
            .pull_manifest_raw(&reference, &auth, &accepted)
            .await
            .map_err(|err| registry_error("manifest", err))?;
        let mut media_type = media_type_of(&bytes);
        while media_type == OCI_INDEX || media_type == DOCKER_LIST {
            let chosen = pick_manifest(&bytes, name)
                .map_err(|reason| Error::Backend(format!("pulling {name}: {reason}")))?;
            let by_digest = Reference::with_digest(
                reference.registry().to_owned(),
                reference.repository().to_owned(),
                chosen.digest.clone(),
            );
            (bytes, digest) = self
                .oci
                .pull_manifest_raw(&by_digest, &auth, &accepted)
                .await
                .map_err(|err| registry_error("platform manifest", err))?;
            media_type = chosen.media_type;
        }
        let manifest: Manifest = serde_json::from_slice(&bytes).map_err(|source| Error::Json {
            document: format!("pulling {name}: manifest"),
            source,
        })?;
        for (i, desc) in std::iter::once(&manifest.config)
            .chain(&manifest.layers)
            .enumerate()
        {
            if self.has_blob(&desc.digest).await? {
                tracing::info!(image = name, digest = %desc.digest, "blob already present");
                continue;
            }
            let stream = self
                .oci
                .pull_blob_stream(&reference, desc.digest.as_str())
                .await
                .map_err(|err| registry_error(&format!("blob {}", desc.digest), err))?;
            self.write_blob(desc, stream.stream, HashMap::new(), lease)
                .await?;
            tracing::info!(
                image = name,
                blob = i,
                of = manifest.layers.len() + 1,
                digest = %desc.digest,
                size = desc.size,
                "pulled blob"
            );
        }
        let target = Desc {
            media_type: if media_type.is_empty() {
                OCI_MANIFEST.into()
            } else {
                media_type
            },
            size: i64::try_from(bytes.len()).unwrap_or(i64::MAX),
            digest,
            platform: None,
            annotations: None,
        };
        self.write_bytes(&target, bytes, manifest_labels(&manifest), lease)
            .await?;
        self.create_record(name, &target).await?;
        tracing::info!(image = name, digest = %target.digest, "pulled image");
        Ok(target)
    }

    async fn has_blob(&self, digest: &str) -> crate::Result<bool> {
        let mut content = containerd_client::services::v1::content_client::ContentClient::new(
            self.ctr.channel.clone(),
        );
        let request = InfoRequest {
            digest: digest.to_owned(),
        };
        match content.info(self.ctr.req(request)).await {
            Ok(_) => Ok(true),
            Err(status) if status.code() == Code::NotFound => Ok(false),
            Err(status) => Err(status_error("content info", digest, status)),
        }
    }

    async fn read_blob(&self, digest: &str) -> crate::Result<Bytes> {
        let mut content = containerd_client::services::v1::content_client::ContentClient::new(
            self.ctr.channel.clone(),
        );
        let request = ReadContentRequest {
            digest: digest.to_owned(),
            offset: 0,
            size: 0,
        };
        let mut stream = content
            .read(self.ctr.req(request))
            .await
            .map_err(|s| status_error("read content", digest, s))?
            .into_inner();
        let mut data = Vec::new();
        while let Some(piece) = stream.next().await {
            let piece = piece.map_err(|s| status_error("read content", digest, s))?;
            data.extend_from_slice(&piece.data);
        }
        Ok(Bytes::from(data))
    }

    async fn write_bytes(
        &self,
        desc: &Desc,
        data: Bytes,
        labels: HashMap<String, String>,
        lease: &str,
    ) -> crate::Result<()> {
        if self.has_blob(&desc.digest).await? {
            return self.label_blob(&desc.digest, labels).await;
        }
        let stream = futures::stream::once(async move { Ok::<_, std::io::Error>(data) });
        self.write_blob(desc, stream.boxed(), labels, lease).await
    }

    /// Adds labels to a blob already in the content store.
    async fn label_blob(&self, digest: &str, labels: HashMap<String, String>) -> crate::Result<()> {
        if labels.is_empty() {
            return Ok(());
        }
        let mut content = containerd_client::services::v1::content_client::ContentClient::new(
            self.ctr.channel.clone(),
        );
        let paths = labels.keys().map(|k| format!("labels.{k}")).collect();
        let request = UpdateContentRequest {
            info: Some(Info {
                digest: digest.to_owned(),
                labels,
                ..Info::default()
            }),
            update_mask: Some(prost_types::FieldMask { paths }),
        };
        content
            .update(self.ctr.req(request))
            .await
            .map(|_| ())
            .map_err(|s| status_error("label content", digest, s))
    }

    /// Streams one blob into the content store and commits it under its digest.
    async fn write_blob(
        &self,
        desc: &Desc,
        mut source: futures::stream::BoxStream<'static, std::io::Result<Bytes>>,
        labels: HashMap<String, String>,
        lease: &str,
    ) -> crate::Result<()> {
        let reference = format!("esb-{}-{}", desc.digest, uuid::Uuid::new_v4().simple());
        let (tx, rx) = tokio::sync::mpsc::channel::<WriteContentRequest>(4);
        let producer = {
            let reference = reference.clone();
            let digest = desc.digest.clone();
            let total = desc.size;
            tokio::spawn(async move {
                let mut offset = 0i64;
                while let Some(chunk) = source.next().await {
                    let chunk = chunk.map_err(|err| Error::Other {
                        operation: format!("downloading blob {digest}"),
                        source: err.into(),
                    })?;
                    for piece in chunk.chunks(CHUNK) {
                        let request = WriteContentRequest {
                            action: WriteAction::Write as i32,
                            r#ref: reference.clone(),
                            total,
                            expected: digest.clone(),
                            offset,
                            data: piece.to_vec(),
                            labels: HashMap::new(),
                        };
                        offset += i64::try_from(piece.len()).unwrap_or(i64::MAX);
                        if tx.send(request).await.is_err() {
                            return Err(Error::Backend(format!(
                                "containerd stopped reading blob {digest}"
                            )));
                        }
                    }
                }
                let commit = WriteContentRequest {
                    action: WriteAction::Commit as i32,
                    r#ref: reference,
                    total,
                    expected: digest.clone(),
                    offset,
                    data: Vec::new(),
                    labels,
                };
                tx.send(commit).await.map_err(|_| {
                    Error::Backend(format!("containerd stopped reading blob {digest}"))
                })
            })
        };
        let mut content = containerd_client::services::v1::content_client::ContentClient::new(
            self.ctr.channel.clone(),
        );
        let written = async {
            let mut responses = content
                .write(
                    self.ctr
                        .leased(tokio_stream::wrappers::ReceiverStream::new(rx), lease),
                )
                .await?
                .into_inner();
            while responses.message().await?.is_some() {}
            Ok::<_, containerd_client::tonic::Status>(())
        }
        .await;
        let produced = producer.await.map_err(|err| Error::Other {
            operation: "blob writer".into(),
            source: err.into(),
        })?;
        match written {
            Err(status) if status.code() == Code::AlreadyExists => Ok(()),
            Err(status) => Err(status_error("write content", &desc.digest, status)),
            Ok(()) => produced,
        }
    }

    /// Unpacks the layers of the image whose manifest is `target` into committed snapshots.
    async fn unpack(&self, name: &str, target: &Desc, lease: &str) -> crate::Result<ReadyImage> {
        let (manifest, config) = self.read_documents(name, target).await?;
        let chain = chain_ids(&config.rootfs.diff_ids);
        let mut parent = String::new();
        for (layer, chain_id) in manifest.layers.iter().zip(&chain) {
            if !self.has_snapshot(chain_id).await {
                self.unpack_layer(name, layer, chain_id, &parent, lease)
                    .await?;
                tracing::info!(image = name, layer = %layer.digest, chain_id, "unpacked layer");
            }
            parent.clone_from(chain_id);
        }
        if parent.is_empty() {
            return Err(Error::Backend(format!("image {name} has no layers")));
        }
        // Keeps the unpacked snapshots alive as long as the image's config is.
        self.label_blob(
            &manifest.config.digest,
            HashMap::from([(
                format!("containerd.io/gc.ref.snapshot.{}", self.snapshotter),
                parent.clone(),
            )]),
        )
        .await?;
        Ok(ReadyImage {
            chain_id: parent,
            run: config.config.unwrap_or_default(),
        })
    }

    /// The manifest `target` points to and the image config it names, which must describe
    /// as many layers as the manifest lists.
    async fn read_documents(
        &self,
        name: &str,
        target: &Desc,
    ) -> crate::Result<(Manifest, ImageConfig)> {
        let manifest_bytes = self.read_blob(&target.digest).await?;
        let manifest: Manifest =
            serde_json::from_slice(&manifest_bytes).map_err(|err| Error::Json {
                document: format!("image {name}: manifest {}", target.digest),
                source: err,
            })?;
        let config_bytes = self.read_blob(&manifest.config.digest).await?;
        let config: ImageConfig =
            serde_json::from_slice(&config_bytes).map_err(|err| Error::Json {
                document: format!("image {name}: config {}", manifest.config.digest),
                source: err,
            })?;
        if config.rootfs.diff_ids.len() != manifest.layers.len() {
            return Err(Error::Backend(format!(
                "image {name}: {} layers but {} diff ids",
                manifest.layers.len(),
                config.rootfs.diff_ids.len()
            )));
        }
        Ok((manifest, config))
    }

    fn snapshots(&self) -> SnapshotsClient<Channel> {
        SnapshotsClient::new(self.ctr.channel.clone())
    }

    /// True when the snapshot of this chain id exists already (unpacked before).
    async fn has_snapshot(&self, chain_id: &str) -> bool {
        let stat = StatSnapshotRequest {
            snapshotter: self.snapshotter.clone(),
            key: chain_id.to_owned(),
        };
        self.snapshots().stat(self.ctr.req(stat)).await.is_ok()
    }

    /// Applies one layer on the snapshot `parent` and commits the result as `chain_id`;
    /// another unpack that committed it first is fine.
    async fn unpack_layer(
        &self,
        name: &str,
        layer: &Desc,
        chain_id: &str,
        parent: &str,
        lease: &str,
    ) -> crate::Result<()> {
        let mut snapshots = self.snapshots();
        let key = format!("esb-extract-{}-{chain_id}", uuid::Uuid::new_v4().simple());
        let prepare = PrepareSnapshotRequest {
            snapshotter: self.snapshotter.clone(),
            key: key.clone(),
            parent: parent.to_owned(),
            labels: HashMap::new(),
        };
        let mounts = snapshots
            .prepare(self.ctr.leased(prepare, lease))
            .await
            .map_err(|s| status_error("prepare snapshot", &key, s))?
            .into_inner()
            .mounts;
        let apply = ApplyRequest {
            diff: Some(layer.to_containerd()),
            mounts,
            payloads: HashMap::new(),
            sync_fs: false,
        };
        let mut diff = DiffClient::new(self.ctr.channel.clone());
        let committed = match diff.apply(self.ctr.leased(apply, lease)).await {
            Ok(_) => {
                let commit = CommitSnapshotRequest {
                    snapshotter: self.snapshotter.clone(),
                    name: chain_id.to_owned(),
                    key: key.clone(),
                    labels: HashMap::new(),
                };
                snapshots.commit(self.ctr.leased(commit, lease)).await
            }
            Err(status) => Err(status),
        };
        let Err(status) = committed else {
            return Ok(());
        };
        let remove = RemoveSnapshotRequest {
            snapshotter: self.snapshotter.clone(),
            key,
        };
        let _ = snapshots.remove(self.ctr.req(remove)).await;
        if status.code() == Code::AlreadyExists {
            return Ok(());
        }
        Err(status_error(
            "unpack layer",
            &format!("{} of {name}", layer.digest),
            status,
        ))
    }
}

/// Labels that make containerd's GC keep a manifest's config and layers.
fn manifest_labels(manifest: &Manifest) -> HashMap<String, String> {
    let mut labels = HashMap::from([(
        "containerd.io/gc.ref.content.config".to_owned(),
        manifest.config.digest.clone(),
    )]);
    for (i, layer) in manifest.layers.iter().enumerate() {
        labels.insert(
            format!("containerd.io/gc.ref.content.l.{i}"),
            layer.digest.clone(),
        );
    }
    labels
}

fn media_type_of(manifest: &[u8]) -> String {
    #[derive(Deserialize)]
    struct Probe {
        #[serde(rename = "mediaType", default)]
        media_type: String,
        #[serde(default)]
        manifests: Option<serde_json::Value>,
    }
    match serde_json::from_slice::<Probe>(manifest) {
        Ok(probe) if !probe.media_type.is_empty() => probe.media_type,
        Ok(probe) if probe.manifests.is_some() => OCI_INDEX.into(),
        _ => OCI_MANIFEST.into(),
    }
}

/// The manifest of this machine's platform in an index (the only one if it names none).
fn pick_manifest(index: &[u8], what: &str) -> Result<Desc, String> {
    let index: Index =
        serde_json::from_slice(index).map_err(|err| format!("index {what}: {err}"))?;
    let count = index.manifests.len();
    let mut fallback = None;
    for desc in index.manifests {
        match &desc.platform {
            Some(p) if p.os == "linux" && p.architecture == oci_arch() => return Ok(desc),
            None if count == 1 || fallback.is_none() => fallback = Some(desc),
            _ => {}
        }
    }
    fallback.ok_or_else(|| format!("index {what} has no linux/{} manifest", oci_arch()))
}

/// Every regular file of a tar archive, by normalized path.
fn read_archive(path: &PathBuf) -> crate::Result<HashMap<String, Bytes>> {
    let named = |err: std::io::Error| {
        Error::Io(std::io::Error::new(
            err.kind(),
            format!("image archive {}: {err}", path.display()),
        ))
    };
    let file = std::fs::File::open(path).map_err(named)?;
    let mut archive = tar::Archive::new(std::io::BufReader::new(file));
    let mut files = HashMap::new();
    for entry in archive.entries().map_err(named)? {
        let mut entry = entry.map_err(named)?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let name = entry
            .path()
            .map_err(named)?
            .to_string_lossy()
            .trim_start_matches("./")
            .to_owned();
        let mut data = Vec::with_capacity(usize::try_from(entry.size()).unwrap_or(0));
        entry.read_to_end(&mut data).map_err(named)?;
        files.insert(name, Bytes::from(data));
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_ids_follow_the_oci_rule() {
        let diffs = vec!["sha256:a".to_owned(), "sha256:b".to_owned()];
        let chain = chain_ids(&diffs);
        assert_eq!(chain[0], "sha256:a");
        assert_eq!(chain[1], sha256(b"sha256:a sha256:b"));
    }

    #[test]
    fn rfc3339_formats_unix_time() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_704_067_200 + 3661), "2024-01-01T01:01:01Z");
    }

    #[test]
    fn indexes_resolve_to_this_platform() {
        let index = serde_json::json!({"manifests": [
            {"mediaType": OCI_MANIFEST, "digest": "sha256:arm", "size": 1,
             "platform": {"os": "linux", "architecture": "riscv"}},
            {"mediaType": OCI_MANIFEST, "digest": "sha256:here", "size": 1,
             "platform": {"os": "linux", "architecture": oci_arch()}},
        ]});
        let picked = pick_manifest(index.to_string().as_bytes(), "test").map(|d| d.digest);
        assert_eq!(picked, Ok("sha256:here".to_owned()));
    }
}
