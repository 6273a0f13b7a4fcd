//! Creating the configuration's tables and buckets in the configured DynamoDB and S3 at
//! start: idempotent (a table or bucket that exists is left as is, and logged), signed
//! with SigV4 (the `aws-sigv4` crate), bounded in time.
//!
//! Tables: `DescribeTable`, then `CreateTable` when absent, then `DescribeTable` until the
//! table is `ACTIVE`. Buckets (path-style): `HeadBucket`, then `CreateBucket`,
//! `PutBucketLifecycleConfiguration` and `PutBucketCors` (with `Content-MD5`) when absent.

mod client;
mod dynamodb;
mod s3;

use std::fmt;
use std::time::Duration;

use esb_router::{Resources, Services};

use client::{Client, Service};

/// How long a service that cannot be reached is retried, and a new table may take to
/// become ACTIVE, unless configured.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// Where and as whom one service is called. The secret never appears in `Debug`.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Target {
    /// `http(s)://host:port` (no trailing `/`).
    pub endpoint: String,
    /// The region requests are signed for.
    pub region: String,
    /// The access key id requests are signed with.
    pub access_key: String,
    /// Its secret.
    pub secret_key: String,
}

impl Target {
    /// A service at `endpoint`, signed for `region` with these keys.
    pub fn new(
        endpoint: impl Into<String>,
        region: impl Into<String>,
        access_key: impl Into<String>,
        secret_key: impl Into<String>,
    ) -> Self {
        let endpoint: String = endpoint.into();
        Self {
            endpoint: endpoint.trim_end_matches('/').to_owned(),
            region: region.into(),
            access_key: access_key.into(),
            secret_key: secret_key.into(),
        }
    }
}

impl fmt::Debug for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Target")
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("access_key", &self.access_key)
            .field("secret_key", &"<redacted>")
            .finish()
    }
}

/// The services resources are created in.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Targets {
    /// Where tables are created.
    pub dynamodb: Option<Target>,
    /// Where buckets are created.
    pub s3: Option<Target>,
    /// How long an unreachable service is retried, and a new table may take to be ACTIVE.
    pub timeout: Duration,
}

impl Targets {
    /// The configured services, each signed for its own region (else `region`) with its own
    /// keys (else `credentials`, the functions' own).
    pub fn from_services(
        services: &Services,
        region: &str,
        credentials: &esb_runtime::FunctionCredentials,
    ) -> Self {
        let target = |service: &esb_router::ServiceConfig| {
            Target::new(
                service.endpoint.as_str(),
                service.region.as_deref().unwrap_or(region),
                service
                    .access_key
                    .as_deref()
                    .unwrap_or(&credentials.access_key_id),
                service
                    .secret_key
                    .as_deref()
                    .unwrap_or(&credentials.secret_access_key),
            )
        };
        Self {
            dynamodb: services.dynamodb.as_ref().map(target),
            s3: services.s3.as_ref().map(target),
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// Sets `timeout`.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }
}

/// What happened to one resource.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Outcome {
    /// `table` or `bucket`.
    pub kind: &'static str,
    /// Its logical id.
    pub logical_id: String,
    /// Its name in the service.
    pub name: String,
    /// `true` when created now, `false` when it existed and was left as is.
    pub created: bool,
}

/// Why a resource could not be created.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProvisionError {
    /// The configuration has tables (buckets) but no DynamoDB (S3) service to create them in.
    #[error("{kind} {names} cannot be created: no {service} service is configured")]
    NoService {
        /// `tables` / `buckets`.
        kind: &'static str,
        /// Their names.
        names: String,
        /// `DynamoDB` / `S3`.
        service: &'static str,
    },
    /// The service did not answer within the timeout.
    #[error("{service} at {endpoint} cannot be reached (tried for {waited:.1?}): {source}")]
    Unreachable {
        /// `DynamoDB` / `S3`.
        service: &'static str,
        /// Its URL.
        endpoint: String,
        /// How long it was tried.
        waited: Duration,
        /// The last connection error.
        #[source]
        source: reqwest::Error,
    },
    /// The service answered with an error.
    #[error("{0}")]
    Refused(Box<Refusal>),
    /// HeadBucket answered 403: the bucket is there, but not for these keys (or region).
    #[error(
        "S3 at {endpoint}: bucket {bucket:?} exists but is not accessible with the configured keys in region {region:?} (HeadBucket: HTTP 403)"
    )]
    BucketForbidden {
        /// S3's URL.
        endpoint: String,
        /// The bucket.
        bucket: String,
        /// The region the request was signed for.
        region: String,
    },
    /// A new table did not become ACTIVE in time.
    #[error("DynamoDB table {table:?} is still {status} after {waited:.1?}")]
    NotActive {
        /// The table.
        table: String,
        /// Its last status.
        status: String,
        /// How long it was waited for.
        waited: Duration,
    },
    /// A request failed mid-way.
    #[error("{service} at {endpoint}: {source}")]
    Http {
        /// `DynamoDB` / `S3`.
        service: &'static str,
        /// Its URL.
        endpoint: String,
        /// The error.
        #[source]
        source: reqwest::Error,
    },
    /// The HTTP client could not be built.
    #[error("{service}: cannot build an HTTP client: {source}")]
    Client {
        /// `DynamoDB` / `S3`.
        service: &'static str,
        /// The error.
        #[source]
        source: reqwest::Error,
    },
    /// A request could not be signed.
    #[error("{service}: cannot sign a request: {source}")]
    Sign {
        /// `DynamoDB` / `S3`.
        service: &'static str,
        /// The error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// An error answer of a service.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Refusal {
    /// `DynamoDB` / `S3`.
    pub service: &'static str,
    /// Its URL.
    pub endpoint: String,
    /// The API operation.
    pub operation: &'static str,
    /// The table or bucket.
    pub resource: String,
    /// The HTTP status.
    pub status: u16,
    /// The service's error code.
    pub code: String,
    /// The service's message.
    pub message: String,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} at {}: {} of {:?} failed: HTTP {} {}: {}",
            self.service,
            self.endpoint,
            self.operation,
            self.resource,
            self.status,
            self.code,
            self.message
        )
    }
}

/// Creates every table and bucket of `resources` that does not exist yet, in declaration
/// order, and logs each one's outcome.
pub async fn provision(
    resources: &Resources,
    targets: &Targets,
) -> Result<Vec<Outcome>, ProvisionError> {
    let mut outcomes = Vec::new();
    if !resources.tables.is_empty() {
        let Some(target) = &targets.dynamodb else {
            return Err(ProvisionError::NoService {
                kind: "tables",
                names: names(resources.tables.iter().map(|t| t.name.as_str())),
                service: "DynamoDB",
            });
        };
        let client = Client::new(target.clone(), Service::DynamoDb, targets.timeout)?;
        for table in &resources.tables {
            let outcome = dynamodb::ensure_table(&client, table, targets.timeout).await?;
            log(&outcome, &target.endpoint);
            outcomes.push(outcome);
        }
    }
    if !resources.buckets.is_empty() {
        let Some(target) = &targets.s3 else {
            return Err(ProvisionError::NoService {
                kind: "buckets",
                names: names(resources.buckets.iter().map(|b| b.name.as_str())),
                service: "S3",
            });
        };
        let client = Client::new(target.clone(), Service::S3, targets.timeout)?;
        for bucket in &resources.buckets {
            let outcome = s3::ensure_bucket(&client, bucket, &target.region).await?;
            log(&outcome, &target.endpoint);
            outcomes.push(outcome);
        }
    }
    Ok(outcomes)
}

fn names<'a>(names: impl Iterator<Item = &'a str>) -> String {
    names
        .map(|n| format!("{n:?}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn log(outcome: &Outcome, endpoint: &str) {
    if outcome.created {
        tracing::info!(resource = %outcome.logical_id, %endpoint, "{} {} created", outcome.kind, outcome.name);
    } else {
        tracing::info!(resource = %outcome.logical_id, %endpoint, "{} {} exists: left as is", outcome.kind, outcome.name);
    }
}
