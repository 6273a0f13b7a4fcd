//! The companion services' flags and variables, over `functions.yml`'s `services`.

use clap::Args;
use esb_router::{Endpoint, EndpointError, ServiceConfig, Services};

/// S3 and DynamoDB endpoints and keys; each flag given wins over the same field of
/// `functions.yml`'s `services` (a template has no `services`: only these set them).
#[derive(Clone, Default, Args)]
pub struct ServiceArgs {
    /// URL of the S3-compatible store functions use (services.s3.endpoint).
    #[arg(long, env = "ESB_S3_ENDPOINT", hide_env_values = true)]
    pub s3_endpoint: Option<String>,

    /// Access key id of the S3 store (services.s3.access_key).
    #[arg(long, env = "ESB_S3_ACCESS_KEY")]
    pub s3_access_key: Option<String>,

    /// Secret key of the S3 store (services.s3.secret_key).
    #[arg(long, env = "ESB_S3_SECRET_KEY", hide_env_values = true)]
    pub s3_secret_key: Option<String>,

    /// Region of the S3 store, when not the functions' own (services.s3.region).
    #[arg(long, env = "ESB_S3_REGION")]
    pub s3_region: Option<String>,

    /// URL of the DynamoDB-compatible database functions use (services.dynamodb.endpoint).
    #[arg(long, env = "ESB_DYNAMODB_ENDPOINT", hide_env_values = true)]
    pub dynamodb_endpoint: Option<String>,

    /// Access key id of the DynamoDB database (services.dynamodb.access_key).
    #[arg(long, env = "ESB_DYNAMODB_ACCESS_KEY")]
    pub dynamodb_access_key: Option<String>,

    /// Secret key of the DynamoDB database (services.dynamodb.secret_key).
    #[arg(long, env = "ESB_DYNAMODB_SECRET_KEY", hide_env_values = true)]
    pub dynamodb_secret_key: Option<String>,

    /// Region of the DynamoDB database, when not the functions' own (services.dynamodb.region).
    #[arg(long, env = "ESB_DYNAMODB_REGION")]
    pub dynamodb_region: Option<String>,

    /// The gateway's URL as functions reach it (AWS_ENDPOINT_URL_LAMBDA,
    /// GATEWAY_INTERNAL_URL) [default: the address it listens on, 127.0.0.1 for an
    /// unspecified one].
    #[arg(long, env = "ESB_GATEWAY_INTERNAL_URL", hide_env_values = true)]
    pub gateway_internal_url: Option<String>,
}

impl std::fmt::Debug for ServiceArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let hidden = |secret: &Option<String>| secret.as_ref().map(|_| "<redacted>");
        // A URL with `user:password@` (refused when applied) is shown without them.
        let url = |text: &Option<String>| {
            text.as_ref()
                .map(|text| match Endpoint::parse(text.trim()) {
                    Err(EndpointError::Credentials(redacted)) => redacted,
                    _ => text.clone(),
                })
        };
        f.debug_struct("ServiceArgs")
            .field("s3_endpoint", &url(&self.s3_endpoint))
            .field("s3_access_key", &self.s3_access_key)
            .field("s3_secret_key", &hidden(&self.s3_secret_key))
            .field("s3_region", &self.s3_region)
            .field("dynamodb_endpoint", &url(&self.dynamodb_endpoint))
            .field("dynamodb_access_key", &self.dynamodb_access_key)
            .field("dynamodb_secret_key", &hidden(&self.dynamodb_secret_key))
            .field("dynamodb_region", &self.dynamodb_region)
            .field("gateway_internal_url", &url(&self.gateway_internal_url))
            .finish()
    }
}

/// One service's flags.
struct Flags<'a> {
    name: &'static str,
    endpoint: &'a Option<String>,
    access_key: &'a Option<String>,
    secret_key: &'a Option<String>,
    region: &'a Option<String>,
}

impl ServiceArgs {
    /// `file`'s services with every flag given put over the field it names.
    pub fn apply(&self, mut file: Services) -> anyhow::Result<Services> {
        let s3 = Flags {
            name: "s3",
            endpoint: &self.s3_endpoint,
            access_key: &self.s3_access_key,
            secret_key: &self.s3_secret_key,
            region: &self.s3_region,
        };
        let dynamodb = Flags {
            name: "dynamodb",
            endpoint: &self.dynamodb_endpoint,
            access_key: &self.dynamodb_access_key,
            secret_key: &self.dynamodb_secret_key,
            region: &self.dynamodb_region,
        };
        file.s3 = s3.apply(file.s3.take())?;
        file.dynamodb = dynamodb.apply(file.dynamodb.take())?;
        Ok(file)
    }

    /// The `--gateway-internal-url`, checked.
    pub fn internal_url(&self) -> anyhow::Result<Option<Endpoint>> {
        self.gateway_internal_url
            .as_deref()
            .map(|text| {
                Endpoint::parse(text)
                    .map_err(|err| anyhow::anyhow!("--gateway-internal-url: {err}"))
            })
            .transpose()
    }
}

impl Flags<'_> {
    fn apply(&self, service: Option<ServiceConfig>) -> anyhow::Result<Option<ServiceConfig>> {
        let name = self.name;
        let endpoint = self
            .endpoint
            .as_deref()
            .map(|text| {
                Endpoint::parse(text.trim())
                    .map_err(|err| anyhow::anyhow!("--{name}-endpoint: {err}"))
            })
            .transpose()?;
        let mut service = match (service, endpoint) {
            (Some(mut service), Some(endpoint)) => {
                service.endpoint = endpoint;
                service
            }
            (Some(service), None) => service,
            (None, Some(endpoint)) => ServiceConfig::new(endpoint),
            (None, None) => {
                if let Some(flag) = [
                    ("access-key", self.access_key),
                    ("secret-key", self.secret_key),
                    ("region", self.region),
                ]
                .into_iter()
                .find_map(|(flag, value)| value.as_ref().map(|_| flag))
                {
                    anyhow::bail!(
                        "--{name}-{flag} is given but no {name} service: give --{name}-endpoint (or services.{name} in functions.yml)"
                    );
                }
                return Ok(None);
            }
        };
        if let Some(key) = self.access_key {
            service.access_key = Some(key.clone());
        }
        if let Some(key) = self.secret_key {
            service.secret_key = Some(key.clone());
        }
        if let Some(region) = self.region {
            service.region = Some(region.clone());
        }
        if service.access_key.is_some() != service.secret_key.is_some() {
            anyhow::bail!(
                "{name} service: an access key needs its secret key and the other way round (--{name}-access-key, --{name}-secret-key)"
            );
        }
        Ok(Some(service))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_win_over_the_file_field_by_field() {
        let file = esb_router::Config::from_yaml_str(
            "functions:\n  f: { command: [./f] }\nservices:\n  s3: { endpoint: \"http://127.0.0.1:9000\", access_key: fa, secret_key: fs, region: eu-west-1 }\n",
            "",
            &|_| None,
        )
        .unwrap()
        .services;
        let args = ServiceArgs {
            s3_endpoint: Some("http://127.0.0.1:9100".into()),
            s3_secret_key: Some("flag-secret".into()),
            dynamodb_endpoint: Some("http://127.0.0.1:8001".into()),
            ..ServiceArgs::default()
        };
        let services = args.apply(file).unwrap();
        let s3 = services.s3.unwrap();
        assert_eq!(s3.endpoint.as_str(), "http://127.0.0.1:9100");
        assert_eq!(s3.access_key.as_deref(), Some("fa"));
        assert_eq!(s3.secret_key.as_deref(), Some("flag-secret"));
        assert_eq!(s3.region.as_deref(), Some("eu-west-1"));
        assert_eq!(
            services.dynamodb.unwrap().endpoint.as_str(),
            "http://127.0.0.1:8001"
        );
    }

    #[test]
    fn bad_flags_are_named() {
        let args = ServiceArgs {
            s3_endpoint: Some("9000".into()),
            ..ServiceArgs::default()
        };
        let err = args.apply(Services::default()).unwrap_err().to_string();
        assert!(err.starts_with("--s3-endpoint: "), "{err}");
        let args = ServiceArgs {
            dynamodb_secret_key: Some("very-secret".into()),
            ..ServiceArgs::default()
        };
        let err = args.apply(Services::default()).unwrap_err().to_string();
        assert!(err.contains("--dynamodb-secret-key"), "{err}");
        assert!(!err.contains("very-secret"), "{err}");
        let debug = format!("{args:?}");
        assert!(!debug.contains("very-secret"), "{debug}");
        let args = ServiceArgs {
            s3_endpoint: Some("http://user:url-secret@127.0.0.1:9000".into()),
            gateway_internal_url: Some("http://user:url-secret@127.0.0.1:8080".into()),
            ..ServiceArgs::default()
        };
        let debug = format!("{args:?}");
        assert!(!debug.contains("url-secret"), "{debug}");
        assert!(debug.contains("http://***@127.0.0.1:9000"), "{debug}");
        let err = args.apply(Services::default()).unwrap_err().to_string();
        assert!(!err.contains("url-secret"), "{err}");
        let err = args.internal_url().unwrap_err().to_string();
        assert!(err.starts_with("--gateway-internal-url: "), "{err}");
        assert!(!err.contains("url-secret"), "{err}");
    }
}
