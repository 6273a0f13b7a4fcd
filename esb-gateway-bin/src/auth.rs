//! Bearer JWTs (HS256): issuing them at the auth endpoint and checking them on routes.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::HeaderMap;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::Deserialize;
use serde_json::{Map, Value};
use subtle::ConstantTimeEq;

use crate::config::AuthConfig;
use crate::error::RequestError;

/// A verified token's claims and scopes.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Identity {
    pub claims: Map<String, Value>,
    pub scopes: Vec<String>,
}

/// Keys and credentials, prepared once.
pub(crate) struct Authenticator {
    decoding: Option<DecodingKey>,
    encoding: Option<EncodingKey>,
    validation: Validation,
    login: Option<Login>,
    ttl: Duration,
}

struct Login {
    api_key: String,
    user: String,
    password: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct AuthRequest {
    auth_parameters: AuthParameters,
}

#[derive(Deserialize)]
struct AuthParameters {
    #[serde(rename = "USERNAME")]
    username: String,
    #[serde(rename = "PASSWORD")]
    password: String,
}

/// Compares secrets in time independent of where they differ.
fn same_secret(given: &str, expected: &str) -> bool {
    given.as_bytes().ct_eq(expected.as_bytes()).into()
}

impl Authenticator {
    pub fn new(config: &AuthConfig) -> Self {
        let secret = config.jwt_secret.as_deref().map(str::as_bytes);
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 5;
        // A token is not valid before its `nbf`, as API Gateway's JWT authorizers check it.
        validation.validate_nbf = true;
        let login = match (&config.api_key, &config.user, &config.password) {
            (Some(api_key), Some(user), Some(password)) => Some(Login {
                api_key: api_key.clone(),
                user: user.clone(),
                password: password.clone(),
            }),
            _ => None,
        };
        Self {
            decoding: secret.map(DecodingKey::from_secret),
            encoding: secret.map(EncodingKey::from_secret),
            validation,
            login,
            ttl: config.token_ttl,
        }
    }

    /// True when the auth endpoint is configured.
    pub fn issues_tokens(&self) -> bool {
        self.login.is_some() && self.encoding.is_some()
    }

    /// Checks `Authorization: Bearer <jwt>`.
    pub fn verify(&self, headers: &HeaderMap) -> Result<Identity, RequestError> {
        let Some(key) = &self.decoding else {
            return Err(RequestError::Unauthorized("no JWT secret is configured"));
        };
        let header = headers
            .get(http::header::AUTHORIZATION)
            .ok_or(RequestError::Unauthorized("no Authorization header"))?;
        let token = header
            .to_str()
            .ok()
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(str::trim)
            .ok_or(RequestError::Unauthorized(
                "Authorization is not a Bearer token",
            ))?;
        let data = jsonwebtoken::decode::<Map<String, Value>>(token, key, &self.validation)
            .map_err(RequestError::InvalidToken)?;
        let claims = data.claims;
        let scopes = ["scope", "scp"]
            .iter()
            .find_map(|name| claims.get(*name))
            .map(|value| match value {
                Value::String(s) => s.split_whitespace().map(str::to_owned).collect(),
                Value::Array(items) => items
                    .iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect(),
                _ => Vec::new(),
            })
            .unwrap_or_default();
        Ok(Identity { claims, scopes })
    }

    /// The auth endpoint: `x-api-key` and `{"AuthParameters":{"USERNAME","PASSWORD"}}` in,
    /// `{"AuthenticationResult":{"IdToken": <jwt>}}` out.
    pub fn login(&self, headers: &HeaderMap, body: &[u8]) -> Result<Value, RequestError> {
        let (Some(login), Some(key)) = (&self.login, &self.encoding) else {
            return Err(RequestError::NoRoute);
        };
        let api_key = headers
            .get("x-api-key")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if !same_secret(api_key, &login.api_key) {
            return Err(RequestError::Unauthorized("wrong or missing x-api-key"));
        }
        let request: AuthRequest = serde_json::from_slice(body).map_err(RequestError::LoginBody)?;
        let params = request.auth_parameters;
        // Both comparisons always run, so timing does not tell which one failed.
        let user_ok = same_secret(&params.username, &login.user);
        let password_ok = same_secret(&params.password, &login.password);
        if !(user_ok & password_ok) {
            return Err(RequestError::Unauthorized("wrong user or password"));
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let claims = serde_json::json!({
            "sub": params.username,
            "username": params.username,
            "cognito:username": params.username,
            "token_use": "id",
            "iss": "esb-gateway",
            "iat": now,
            "exp": now + self.ttl.as_secs(),
        });
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, key)
            .map_err(RequestError::SignToken)?;
        Ok(serde_json::json!({ "AuthenticationResult": { "IdToken": token } }))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn config() -> AuthConfig {
        AuthConfig::default()
            .jwt_secret("0123456789abcdef0123456789abcdef")
            .login("key", "alice", "pw")
    }

    fn login_body(user: &str, password: &str) -> Vec<u8> {
        serde_json::json!({"AuthParameters": {"USERNAME": user, "PASSWORD": password}})
            .to_string()
            .into_bytes()
    }

    #[test]
    fn an_issued_token_verifies_and_carries_the_user() {
        let auth = Authenticator::new(&config());
        let mut headers = HeaderMap::new();
        headers.insert("x-api-key", "key".parse().unwrap());
        let answer = auth.login(&headers, &login_body("alice", "pw")).unwrap();
        let token = answer["AuthenticationResult"]["IdToken"].as_str().unwrap();
        let mut headers = HeaderMap::new();
        headers.insert(
            http::header::AUTHORIZATION,
            format!("Bearer {token}").parse().unwrap(),
        );
        let identity = auth.verify(&headers).unwrap();
        assert_eq!(identity.claims["sub"], "alice");
    }

    #[test]
    fn wrong_key_user_or_password_is_unauthorized() {
        let auth = Authenticator::new(&config());
        let mut good = HeaderMap::new();
        good.insert("x-api-key", "key".parse().unwrap());
        let mut bad = HeaderMap::new();
        bad.insert("x-api-key", "nope".parse().unwrap());
        for (headers, body) in [
            (&bad, login_body("alice", "pw")),
            (&HeaderMap::new(), login_body("alice", "pw")),
            (&good, login_body("bob", "pw")),
            (&good, login_body("alice", "pw2")),
        ] {
            assert!(matches!(
                auth.login(headers, &body),
                Err(RequestError::Unauthorized(_))
            ));
        }
    }

    /// `Authorization: Bearer` of a token with these claims, signed with the configured secret.
    fn bearer(claims: serde_json::Value) -> HeaderMap {
        let token = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(b"0123456789abcdef0123456789abcdef"),
        )
        .unwrap();
        let mut headers = HeaderMap::new();
        headers.insert(
            http::header::AUTHORIZATION,
            format!("Bearer {token}").parse().unwrap(),
        );
        headers
    }

    #[test]
    fn a_token_is_not_valid_before_its_nbf() {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let auth = Authenticator::new(&config());
        let early = bearer(serde_json::json!({"sub": "x", "exp": now + 3600, "nbf": now + 600}));
        match auth.verify(&early) {
            Err(RequestError::InvalidToken(err)) => assert_eq!(
                *err.kind(),
                jsonwebtoken::errors::ErrorKind::ImmatureSignature
            ),
            other => panic!("a token before its nbf was not refused: {other:?}"),
        }
        // Once `nbf` has passed (or within the leeway for clock skew), it is accepted.
        for nbf in [now - 60, now + 2] {
            let ready = bearer(serde_json::json!({"sub": "x", "exp": now + 3600, "nbf": nbf}));
            assert_eq!(auth.verify(&ready).unwrap().claims["sub"], "x", "nbf {nbf}");
        }
    }

    #[test]
    fn a_token_signed_with_another_secret_is_rejected() {
        let token = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &serde_json::json!({"sub": "x", "exp": u64::MAX / 2}),
            &EncodingKey::from_secret(b"another secret that is long enough!!"),
        )
        .unwrap();
        let mut headers = HeaderMap::new();
        headers.insert(
            http::header::AUTHORIZATION,
            format!("Bearer {token}").parse().unwrap(),
        );
        let auth = Authenticator::new(&config());
        assert!(matches!(
            auth.verify(&headers),
            Err(RequestError::InvalidToken(_))
        ));
    }
}
