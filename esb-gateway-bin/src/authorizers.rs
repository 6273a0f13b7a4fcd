//! Lambda authorizers as API Gateway runs them: the identity a request must carry, the event
//! each kind of authorizer receives, the answer it must give (an IAM policy or a simple
//! response), the policy check against the method ARN, and answers cached by identity.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use esb_router::{ApiKind, AuthorizerConfig, AuthorizerType, IdentitySource, PayloadFormat};
use http::request::Parts;
use percent_encoding::percent_decode_str;
use serde_json::{Map, Value};

use crate::error::RequestError;

/// What a Lambda authorizer allowed a request with; the event layer passes it on as
/// `requestContext.authorizer` (v1) or `requestContext.authorizer.lambda` (v2).
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct LambdaAuthorization {
    pub context: Map<String, Value>,
}

/// Most answers kept at once; when full, expired ones go, then all.
const CACHE_CAPACITY: usize = 10_000;

/// The configured authorizers and the cache of their answers.
pub(crate) struct Authorizers {
    configs: BTreeMap<String, AuthorizerConfig>,
    /// TOKEN authorizers' validation expressions, anchored to the whole token.
    validations: HashMap<String, regex::Regex>,
    region: String,
    cache: Mutex<HashMap<(String, Vec<String>), Cached>>,
}

struct Cached {
    expires: Instant,
    answer: Arc<Answer>,
}

/// An authorizer function's answer, checked.
#[derive(Debug, PartialEq)]
pub(crate) struct Answer {
    decision: Decision,
    /// `context`, with `principalId` when the answer gave one.
    context: Map<String, Value>,
}

/// What an answer says of one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    Allow,
    /// No statement allows it (or a simple response said no).
    Deny,
    /// A Deny statement matches it.
    ExplicitDeny,
}

#[derive(Debug, PartialEq)]
enum Decision {
    /// A simple response's `isAuthorized`.
    Simple(bool),
    /// An IAM policy's statements.
    Policy(Vec<Statement>),
}

#[derive(Debug, PartialEq)]
struct Statement {
    allow: bool,
    actions: Vec<String>,
    resources: Vec<String>,
}

/// One authorization to make: the authorizer, the request's identity and method ARN.
pub(crate) struct Pending<'a> {
    pub config: &'a AuthorizerConfig,
    /// The identity values, in the order of the identity sources (the cache key).
    pub identity: Vec<String>,
    /// `arn:aws:execute-api:{region}:{account}:{api}/{stage}/{METHOD}/{path}`.
    pub method_arn: String,
}

impl Authorizers {
    pub fn new(configs: BTreeMap<String, AuthorizerConfig>, region: &str) -> Self {
        // The router checked every expression when it loaded them.
        let validations = configs
            .values()
            .filter_map(|c| {
                let expression = c.validation_expression.as_ref()?;
                let anchored = regex::Regex::new(&format!("^(?:{expression})$")).ok()?;
                Some((c.name.clone(), anchored))
            })
            .collect();
        Self {
            configs,
            validations,
            region: region.to_owned(),
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// The authorization a request to `found` needs: 401 when an identity source is missing.
    pub fn pending(&self, name: &str, parts: &Parts) -> Result<Pending<'_>, RequestError> {
        let config = self
            .configs
            .get(name)
            .ok_or_else(|| RequestError::AuthorizerFailed {
                authorizer: name.to_owned(),
                reason: "is not configured".into(),
            })?;
        let mut identity = Vec::with_capacity(config.identity_sources.len());
        for source in &config.identity_sources {
            match identity_value(source, parts) {
                Some(value) => identity.push(value),
                None => return Err(RequestError::Unauthorized("an identity source is missing")),
            }
        }
        if let (Some(validation), [token]) = (self.validations.get(name), identity.as_slice())
            && !validation.is_match(token)
        {
            return Err(RequestError::Unauthorized(
                "the token does not match the authorizer's validation expression",
            ));
        }
        let path = parts.uri.path().trim_start_matches('/');
        let method_arn = format!(
            "arn:aws:execute-api:{}:{}:{}/{}/{}/{}",
            self.region,
            ACCOUNT_ID,
            API_ID,
            STAGE,
            parts.method.as_str(),
            path
        );
        Ok(Pending {
            config,
            identity,
            method_arn,
        })
    }

    /// A cached answer for this identity, if one is still fresh.
    pub fn cached(&self, pending: &Pending<'_>) -> Option<Arc<Answer>> {
        if pending.config.ttl.is_zero() {
            return None;
        }
        let cache = self.cache.lock().ok()?;
        let key = (pending.config.name.clone(), pending.identity.clone());
        cache
            .get(&key)
            .filter(|cached| cached.expires > Instant::now())
            .map(|cached| Arc::clone(&cached.answer))
    }

    /// Keeps `answer` for this identity for the authorizer's TTL.
    pub fn remember(&self, pending: &Pending<'_>, answer: Arc<Answer>) {
        let ttl: Duration = pending.config.ttl;
        if ttl.is_zero() {
            return;
        }
        let Ok(mut cache) = self.cache.lock() else {
            return;
        };
        let now = Instant::now();
        if cache.len() >= CACHE_CAPACITY {
            cache.retain(|_, cached| cached.expires > now);
            if cache.len() >= CACHE_CAPACITY {
                cache.clear();
            }
        }
        cache.insert(
            (pending.config.name.clone(), pending.identity.clone()),
            Cached {
                expires: now + ttl,
                answer,
            },
        );
    }
}

/// The account, API id and stage of method ARNs, as the events carry them.
const ACCOUNT_ID: &str = "123456789012";
const API_ID: &str = "esb-local";
const STAGE: &str = "$default";

/// The value of one identity source in the request, `None` when absent or empty.
fn identity_value(source: &IdentitySource, parts: &Parts) -> Option<String> {
    let value = match source {
        IdentitySource::Header(name) => {
            let values: Vec<&str> = parts
                .headers
                .get_all(name.as_str())
                .iter()
                .filter_map(|v| v.to_str().ok())
                .collect();
            values.join(",")
        }
        IdentitySource::Query(name) => parts
            .uri
            .query()
            .unwrap_or("")
            .split('&')
            .filter_map(|pair| pair.split_once('=').or(Some((pair, ""))))
            .filter(|(key, _)| percent_decode_str(key).decode_utf8_lossy() == name.as_str())
            .map(|(_, value)| {
                percent_decode_str(&value.replace('+', " "))
                    .decode_utf8_lossy()
                    .into_owned()
            })
            .find(|value| !value.is_empty())
            .unwrap_or_default(),
        // A kind of source this gateway does not know is never present.
        _ => String::new(),
    };
    (!value.trim().is_empty()).then_some(value)
}

/// The event the authorizer function receives. `request_event` builds the request's own
/// API Gateway event in a payload format (for REQUEST authorizers).
pub(crate) fn event(
    pending: &Pending<'_>,
    request_event: impl FnOnce(PayloadFormat) -> Result<bytes::Bytes, RequestError>,
) -> Result<bytes::Bytes, RequestError> {
    let config = pending.config;
    if config.authorizer_type == AuthorizerType::Token {
        let token = pending.identity.first().cloned().unwrap_or_default();
        let event = serde_json::json!({
            "type": "TOKEN",
            "authorizationToken": token,
            "methodArn": pending.method_arn,
        });
        return Ok(bytes::Bytes::from(event.to_string()));
    }
    let format = match config.api {
        ApiKind::Http => config.payload_format,
        _ => PayloadFormat::V1,
    };
    let built = request_event(format)?;
    let mut event: Map<String, Value> =
        serde_json::from_slice(&built).map_err(|source| RequestError::AuthorizerFailed {
            authorizer: config.name.clone(),
            reason: format!("cannot build its event: {source}"),
        })?;
    event.remove("body");
    event.remove("isBase64Encoded");
    let joined = pending.identity.join(",");
    let mut head = Map::new();
    match (config.api, format) {
        (ApiKind::Http, PayloadFormat::V2) => {
            head.insert("version".into(), "2.0".into());
            head.insert("type".into(), "REQUEST".into());
            head.insert("routeArn".into(), pending.method_arn.clone().into());
            head.insert(
                "identitySource".into(),
                Value::from(pending.identity.clone()),
            );
        }
        (ApiKind::Http, _) => {
            head.insert("version".into(), "1.0".into());
            head.insert("type".into(), "REQUEST".into());
            head.insert("methodArn".into(), pending.method_arn.clone().into());
            head.insert("identitySource".into(), joined.clone().into());
            head.insert("authorizationToken".into(), joined.into());
        }
        _ => {
            head.insert("type".into(), "REQUEST".into());
            head.insert("methodArn".into(), pending.method_arn.clone().into());
        }
    }
    for (key, value) in event {
        head.entry(key).or_insert(value);
    }
    Ok(bytes::Bytes::from(Value::Object(head).to_string()))
}

/// Checks an authorizer function's answer: a simple response for HTTP API 2.0 authorizers
/// with simple responses, else an IAM policy with a `principalId`.
pub(crate) fn parse_answer(config: &AuthorizerConfig, payload: &[u8]) -> Result<Answer, String> {
    let answer: Map<String, Value> = match serde_json::from_slice(payload) {
        Ok(Value::Object(map)) => map,
        Ok(_) => return Err("the answer is not a JSON object".into()),
        Err(err) => return Err(format!("the answer is not JSON: {err}")),
    };
    let mut context = match answer.get("context") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(context)) => context.clone(),
        Some(_) => return Err("context is not an object".into()),
    };
    if config.api == ApiKind::Rest {
        // REST APIs pass only strings, numbers and booleans, all as strings.
        for (key, value) in &mut context {
            let text = match value {
                Value::String(_) => continue,
                Value::Number(n) => n.to_string(),
                Value::Bool(b) => b.to_string(),
                _ => return Err(format!("context.{key} is not a string, number or boolean")),
            };
            *value = Value::String(text);
        }
    }
    if config.simple_responses {
        return match answer.get("isAuthorized") {
            Some(Value::Bool(allowed)) => Ok(Answer {
                decision: Decision::Simple(*allowed),
                context,
            }),
            _ => Err("isAuthorized is missing or not a boolean".into()),
        };
    }
    let principal = match answer.get("principalId") {
        Some(Value::String(principal)) => principal.clone(),
        _ => return Err("principalId is missing or not a string".into()),
    };
    let statements = answer
        .get("policyDocument")
        .and_then(|doc| doc.get("Statement"))
        .ok_or("policyDocument.Statement is missing")?;
    let statements = match statements {
        Value::Array(items) => items.iter().collect::<Vec<_>>(),
        Value::Object(_) => vec![statements],
        _ => return Err("policyDocument.Statement is not a list".into()),
    };
    let mut policy = Vec::with_capacity(statements.len());
    for statement in statements {
        let allow = match statement.get("Effect").and_then(Value::as_str) {
            Some(effect) if effect.eq_ignore_ascii_case("Allow") => true,
            Some(effect) if effect.eq_ignore_ascii_case("Deny") => false,
            _ => return Err("a statement's Effect is not Allow or Deny".into()),
        };
        let list = |field: &str| -> Result<Vec<String>, String> {
            match statement.get(field) {
                Some(Value::String(one)) => Ok(vec![one.clone()]),
                Some(Value::Array(items)) => items
                    .iter()
                    .map(|v| {
                        v.as_str()
                            .map(str::to_owned)
                            .ok_or_else(|| format!("a statement's {field} is not text"))
                    })
                    .collect(),
                _ => Err(format!("a statement's {field} is missing")),
            }
        };
        policy.push(Statement {
            allow,
            actions: list("Action")?,
            resources: list("Resource")?,
        });
    }
    context.insert("principalId".into(), Value::String(principal));
    Ok(Answer {
        decision: Decision::Policy(policy),
        context,
    })
}

impl Answer {
    /// Whether the answer allows `method_arn`: a simple response as it says; a policy as IAM
    /// reads it (an explicit Deny wins, else an Allow must match).
    pub fn verdict(&self, method_arn: &str) -> Verdict {
        match &self.decision {
            Decision::Simple(true) => Verdict::Allow,
            Decision::Simple(false) => Verdict::Deny,
            Decision::Policy(statements) => {
                let applies = |s: &&Statement| {
                    s.actions
                        .iter()
                        .any(|a| wildcard_match(&a.to_ascii_lowercase(), "execute-api:invoke"))
                        && s.resources.iter().any(|r| wildcard_match(r, method_arn))
                };
                let matching: Vec<&Statement> = statements.iter().filter(applies).collect();
                if matching.iter().any(|s| !s.allow) {
                    Verdict::ExplicitDeny
                } else if matching.iter().any(|s| s.allow) {
                    Verdict::Allow
                } else {
                    Verdict::Deny
                }
            }
        }
    }

    /// Whether the answer allows `method_arn`.
    #[cfg(test)]
    fn allows(&self, method_arn: &str) -> bool {
        self.verdict(method_arn) == Verdict::Allow
    }

    /// What the integration receives.
    pub fn authorization(&self) -> LambdaAuthorization {
        LambdaAuthorization {
            context: self.context.clone(),
        }
    }
}

/// IAM's matching: `*` any run of characters, `?` one character.
fn wildcard_match(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn rest() -> AuthorizerConfig {
        AuthorizerConfig::new("a", "f")
    }

    const ARN: &str = "arn:aws:execute-api:us-east-1:123456789012:esb-local/$default/GET/items/1";

    fn policy(statements: Value) -> Vec<u8> {
        serde_json::json!({
            "principalId": "me",
            "policyDocument": {"Version": "2012-10-17", "Statement": statements},
            "context": {"n": 1, "ok": true, "s": "x"},
        })
        .to_string()
        .into_bytes()
    }

    #[test]
    fn wildcards_match_as_iam() {
        assert!(wildcard_match("*", "anything"));
        assert!(wildcard_match(
            "arn:aws:execute-api:*:*:esb-local/*/GET/*",
            ARN
        ));
        assert!(!wildcard_match(
            "arn:aws:execute-api:*:*:esb-local/*/POST/*",
            ARN
        ));
        assert!(wildcard_match("a?c", "abc"));
        assert!(!wildcard_match("a?c", "ac"));
    }

    #[test]
    fn an_explicit_deny_wins_and_an_allow_must_match() {
        let allow = |resource: &str| serde_json::json!({"Action": "execute-api:Invoke", "Effect": "Allow", "Resource": resource});
        let deny =
            serde_json::json!({"Action": "execute-api:*", "Effect": "Deny", "Resource": [ARN]});
        let answer = |statements| parse_answer(&rest(), &policy(statements)).unwrap();
        assert!(answer(serde_json::json!([allow(ARN)])).allows(ARN));
        assert!(answer(serde_json::json!([allow("arn:aws:execute-api:*")])).allows(ARN));
        assert!(!answer(serde_json::json!([allow("arn:other")])).allows(ARN));
        assert!(!answer(serde_json::json!([allow("*"), deny.clone()])).allows(ARN));
        assert_eq!(
            answer(serde_json::json!([allow("*"), deny])).verdict(ARN),
            Verdict::ExplicitDeny
        );
        assert_eq!(
            answer(serde_json::json!([allow("x")])).verdict(ARN),
            Verdict::Deny
        );
    }

    #[test]
    fn rest_context_values_become_strings_with_the_principal() {
        let answer = parse_answer(&rest(), &policy(serde_json::json!([]))).unwrap();
        let context = answer.authorization().context;
        assert_eq!(
            Value::Object(context),
            serde_json::json!({"n": "1", "ok": "true", "s": "x", "principalId": "me"})
        );
    }

    #[test]
    fn malformed_answers_are_errors() {
        for bad in [
            &b"not json"[..],
            b"[]",
            br#"{"policyDocument": {"Statement": []}}"#,
            br#"{"principalId": "me"}"#,
            br#"{"principalId": "me", "policyDocument": {"Statement": [{"Effect": "Maybe", "Action": "*", "Resource": "*"}]}}"#,
            br#"{"principalId": "me", "policyDocument": {"Statement": []}, "context": {"o": {}}}"#,
        ] {
            assert!(parse_answer(&rest(), bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }
}
