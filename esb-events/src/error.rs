//! The one error type of this crate.

/// Why an event could not be built or a Lambda response could not be mapped.
///
/// Every variant but [`Error::Serialize`] is a malformed function response: the gateway
/// answers 502, as API Gateway does.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The event could not be serialized.
    #[error("cannot serialize the event: {0}")]
    Serialize(#[source] serde_json::Error),
    /// The function's response is not JSON.
    #[error("malformed Lambda proxy response: not JSON: {0}")]
    NotJson(#[source] serde_json::Error),
    /// A field of the function's response has the wrong type or value.
    #[error("malformed Lambda proxy response: {field}: {reason}")]
    Malformed {
        /// The field at fault (`statusCode`, `headers.x-id`, `body`).
        field: String,
        /// What is wrong.
        reason: String,
    },
    /// `isBase64Encoded` is true but the body is not valid base64.
    #[error("malformed Lambda proxy response: body: invalid base64: {0}")]
    Base64(#[source] base64::DecodeError),
}

impl Error {
    pub(crate) fn malformed(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::Malformed {
            field: field.into(),
            reason: reason.into(),
        }
    }
}
