//! One signed HTTP request to a service: SigV4 (aws-sigv4), retried while the service
//! cannot be reached, up to a bound.

use std::time::{Duration, Instant, SystemTime};

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{
    PayloadChecksumKind, PercentEncodingMode, SignableBody, SignableRequest, SigningSettings,
    UriPathNormalizationMode, sign,
};
use aws_sigv4::sign::v4;

use super::{ProvisionError, Target};

/// Which service a client talks to: how it signs and how errors name it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Service {
    DynamoDb,
    S3,
}

impl Service {
    /// The name in errors and logs.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Service::DynamoDb => "DynamoDB",
            Service::S3 => "S3",
        }
    }

    /// The SigV4 signing name.
    fn signing_name(self) -> &'static str {
        match self {
            Service::DynamoDb => "dynamodb",
            Service::S3 => "s3",
        }
    }
}

/// A service's answer.
pub(crate) struct Answer {
    pub(crate) status: reqwest::StatusCode,
    pub(crate) body: bytes::Bytes,
}

/// Signs and sends requests to one service.
pub(crate) struct Client {
    http: reqwest::Client,
    target: Target,
    service: Service,
    /// How long a service that cannot be reached is retried.
    ready_timeout: Duration,
}

impl Client {
    pub(crate) fn new(
        target: Target,
        service: Service,
        ready_timeout: Duration,
    ) -> Result<Self, ProvisionError> {
        let http = reqwest::Client::builder()
            .connect_timeout(
                Duration::from_secs(2).min(ready_timeout.max(Duration::from_millis(100))),
            )
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(|source| ProvisionError::Client {
                service: service.label(),
                source,
            })?;
        Ok(Self {
            http,
            target,
            service,
            ready_timeout,
        })
    }

    pub(crate) fn service(&self) -> Service {
        self.service
    }

    pub(crate) fn endpoint(&self) -> &str {
        &self.target.endpoint
    }

    /// Sends `method path_and_query` with `headers` and `body`, signed; connection failures
    /// are retried until the ready timeout has passed.
    pub(crate) async fn send(
        &self,
        method: reqwest::Method,
        path_and_query: &str,
        headers: &[(&str, String)],
        body: Vec<u8>,
    ) -> Result<Answer, ProvisionError> {
        let url = format!("{}{path_and_query}", self.target.endpoint);
        let started = Instant::now();
        let mut pause = Duration::from_millis(100);
        loop {
            let request = self.signed(&method, &url, headers, &body)?;
            match self.http.execute(request).await {
                Ok(response) => {
                    let status = response.status();
                    let body = response.bytes().await.map_err(|source| self.io(source))?;
                    return Ok(Answer { status, body });
                }
                Err(source)
                    if (source.is_connect() || source.is_timeout())
                        && started.elapsed() + pause < self.ready_timeout =>
                {
                    tracing::debug!(service = self.service.label(), error = %source, "not reachable yet");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(1));
                }
                Err(source) if source.is_connect() || source.is_timeout() => {
                    return Err(ProvisionError::Unreachable {
                        service: self.service.label(),
                        endpoint: self.target.endpoint.clone(),
                        waited: started.elapsed(),
                        source,
                    });
                }
                Err(source) => return Err(self.io(source)),
            }
        }
    }

    fn io(&self, source: reqwest::Error) -> ProvisionError {
        ProvisionError::Http {
            service: self.service.label(),
            endpoint: self.target.endpoint.clone(),
            source,
        }
    }

    /// The request with SigV4's headers (`Authorization`, `X-Amz-Date`, and for S3
    /// `X-Amz-Content-Sha256`).
    fn signed(
        &self,
        method: &reqwest::Method,
        url: &str,
        headers: &[(&str, String)],
        body: &[u8],
    ) -> Result<reqwest::Request, ProvisionError> {
        let sign_error = |source: Box<dyn std::error::Error + Send + Sync>| ProvisionError::Sign {
            service: self.service.label(),
            source,
        };
        let identity = Credentials::new(
            &self.target.access_key,
            &self.target.secret_key,
            None,
            None,
            "esb-gateway",
        )
        .into();
        let mut settings = SigningSettings::default();
        if self.service == Service::S3 {
            settings.percent_encoding_mode = PercentEncodingMode::Single;
            settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
            settings.uri_path_normalization_mode = UriPathNormalizationMode::Disabled;
        }
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region(&self.target.region)
            .name(self.service.signing_name())
            .time(SystemTime::now())
            .settings(settings)
            .build()
            .map_err(|e| sign_error(Box::new(e)))?
            .into();
        let signable = SignableRequest::new(
            method.as_str(),
            url,
            headers.iter().map(|(k, v)| (*k, v.as_str())),
            SignableBody::Bytes(body),
        )
        .map_err(|e| sign_error(Box::new(e)))?;
        let (instructions, _signature) = sign(signable, &params)
            .map_err(|e| sign_error(Box::new(e)))?
            .into_parts();
        let mut request = http::Request::builder().method(method.clone()).uri(url);
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        let mut request = request
            .body(body.to_vec())
            .map_err(|e| sign_error(Box::new(e)))?;
        instructions.apply_to_request_http1x(&mut request);
        reqwest::Request::try_from(request).map_err(|e| sign_error(Box::new(e)))
    }
}
