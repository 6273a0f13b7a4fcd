//! Bearer-token check of every call.

use std::sync::Arc;

use tonic::service::Interceptor;
use tonic::{Request, Status};

/// Rejects calls whose `authorization` metadata is not `Bearer <token>` (UNAUTHENTICATED).
#[derive(Clone)]
pub struct BearerAuth {
    /// `Bearer <token>`, or `None` when authentication is disabled.
    expected: Option<Arc<[u8]>>,
}

impl std::fmt::Debug for BearerAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BearerAuth")
            .field("enabled", &self.expected.is_some())
            .finish()
    }
}

impl BearerAuth {
    /// Requires this token.
    pub fn token(token: &str) -> Self {
        Self {
            expected: Some(format!("Bearer {token}").into_bytes().into()),
        }
    }

    /// Lets every call through.
    pub fn disabled() -> Self {
        Self { expected: None }
    }
}

impl Interceptor for BearerAuth {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        let Some(expected) = &self.expected else {
            return Ok(request);
        };
        match request.metadata().get("authorization") {
            Some(given) if constant_time_eq(given.as_bytes(), expected) => Ok(request),
            Some(_) => Err(Status::unauthenticated("invalid bearer token")),
            None => Err(Status::unauthenticated("missing bearer token")),
        }
    }
}

/// Compares two byte strings in time that depends only on their lengths.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(auth: &BearerAuth, header: Option<&str>) -> Result<(), tonic::Code> {
        let mut request = Request::new(());
        if let Some(value) = header {
            request.metadata_mut().insert(
                "authorization",
                value.parse().map_err(|_| tonic::Code::Internal)?,
            );
        }
        auth.clone().call(request).map(drop).map_err(|s| s.code())
    }

    #[test]
    fn only_the_exact_bearer_token_passes() {
        let auth = BearerAuth::token("s3cret");
        assert_eq!(call(&auth, Some("Bearer s3cret")), Ok(()));
        assert_eq!(
            call(&auth, Some("Bearer s3cre")),
            Err(tonic::Code::Unauthenticated)
        );
        assert_eq!(
            call(&auth, Some("Bearer s3cretX")),
            Err(tonic::Code::Unauthenticated)
        );
        assert_eq!(
            call(&auth, Some("s3cret")),
            Err(tonic::Code::Unauthenticated)
        );
        assert_eq!(call(&auth, None), Err(tonic::Code::Unauthenticated));
        assert_eq!(call(&BearerAuth::disabled(), None), Ok(()));
    }

    #[test]
    fn constant_time_eq_compares_contents_and_length() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
        assert!(constant_time_eq(b"", b""));
    }
}
