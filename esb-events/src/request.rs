//! What v1 and v2 events share: the route, the context, and serializers over the request.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use chrono::{Datelike, NaiveDate};
use http::HeaderMap;
use percent_encoding::percent_decode_str;
use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Serialize, Serializer};
use serde_json::{Map, Value};

/// The selected route, as the router found it.
#[derive(Clone, Copy, Debug)]
pub struct RouteInfo<'a> {
    /// The path template (`/items/{id}`): `resource` and `resourcePath` in v1.
    pub resource: &'a str,
    /// `METHOD /template` (`ANY /items/{id}` for an `ANY` route): `routeKey` in v2.
    pub route_key: &'a str,
    /// Percent-decoded path parameters.
    pub path_parameters: &'a BTreeMap<String, String>,
}

/// What the gateway knows about a request beyond its HTTP message.
///
/// Made by [`EventContext::new`]; set the fields that differ from its defaults.
#[derive(Clone, Copy, Debug)]
#[non_exhaustive]
pub struct EventContext<'a> {
    /// The request id (`requestContext.requestId`, also `x-amzn-RequestId`).
    pub request_id: &'a str,
    /// The client's address.
    pub source_ip: &'a str,
    /// The v1 stage (v2 events always say `$default`).
    pub stage: &'a str,
    /// `requestContext.apiId`.
    pub api_id: &'a str,
    /// `requestContext.accountId`.
    pub account_id: &'a str,
    /// `requestContext.domainName`; `None` takes the `Host` header.
    pub domain_name: Option<&'a str>,
    /// When the request arrived.
    pub request_time: SystemTime,
    /// Content types whose bodies are sent base64-encoded (`image/png`, `image/*`, `*/*`).
    pub binary_media_types: &'a [String],
    /// `stageVariables`, if any.
    pub stage_variables: Option<&'a BTreeMap<String, String>>,
    /// Claims of the verified JWT; they reach `requestContext.authorizer`.
    pub claims: Option<&'a Map<String, Value>>,
    /// Scopes of the verified JWT (v2 `authorizer.jwt.scopes`).
    pub scopes: Option<&'a [String]>,
    /// What a Lambda authorizer allowed the request with (its `context`, with `principalId`
    /// when it gave one): `requestContext.authorizer` in v1, `requestContext.authorizer.lambda`
    /// in v2.
    pub lambda_authorizer: Option<&'a Map<String, Value>>,
}

impl<'a> EventContext<'a> {
    /// A context with the defaults: stage `$default` (the gateway's paths carry no stage
    /// prefix), api id `esb-local`, account `123456789012`, domain from `Host`, no binary
    /// media types, no stage variables, no JWT.
    pub fn new(request_id: &'a str, source_ip: &'a str, request_time: SystemTime) -> Self {
        Self {
            request_id,
            source_ip,
            stage: "$default",
            api_id: "esb-local",
            account_id: "123456789012",
            domain_name: None,
            request_time,
            binary_media_types: &[],
            stage_variables: None,
            claims: None,
            scopes: None,
            lambda_authorizer: None,
        }
    }

    pub(crate) fn domain(&self, headers: &'a HeaderMap) -> &'a str {
        self.domain_name
            .or_else(|| {
                headers
                    .get(http::header::HOST)
                    .and_then(|h| h.to_str().ok())
            })
            .unwrap_or("localhost")
    }
}

/// What both formats take alike from a request: its body as the event carries it, when it
/// arrived, and the domain it was sent to.
pub(crate) struct Common<'a> {
    /// The body, base64-encoded when binary; `None` when empty.
    pub(crate) body: Option<Cow<'a, str>>,
    /// Whether `body` is base64-encoded.
    pub(crate) is_base64_encoded: bool,
    /// The raw body's length, to size the event.
    pub(crate) body_len: usize,
    /// `requestTime` (v1) or `time` (v2).
    pub(crate) time: String,
    /// `requestTimeEpoch` (v1) or `timeEpoch` (v2).
    pub(crate) time_epoch: i64,
    /// `requestContext.domainName`.
    pub(crate) domain_name: &'a str,
}

impl<'a> Common<'a> {
    pub(crate) fn new(
        req: &'a http::request::Parts,
        body: &'a [u8],
        ctx: &EventContext<'a>,
    ) -> Self {
        let body_len = body.len();
        let (body, is_base64_encoded) = encode_body(&req.headers, body, ctx.binary_media_types);
        let (time, time_epoch) = request_time(ctx.request_time);
        Self {
            body,
            is_base64_encoded,
            body_len,
            time,
            time_epoch,
            domain_name: ctx.domain(&req.headers),
        }
    }
}

/// `requestContext`: the head both formats share (account, API, the format's own
/// `authorizer`, domain), then the format's own fields `R`, in that order.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct RequestContext<'a, A, R> {
    account_id: &'a str,
    api_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    authorizer: Option<A>,
    domain_name: &'a str,
    domain_prefix: &'a str,
    #[serde(flatten)]
    rest: R,
}

impl<'a, A, R> RequestContext<'a, A, R> {
    pub(crate) fn new(
        ctx: &EventContext<'a>,
        domain_name: &'a str,
        authorizer: Option<A>,
        rest: R,
    ) -> Self {
        Self {
            account_id: ctx.account_id,
            api_id: ctx.api_id,
            authorizer,
            domain_name,
            domain_prefix: domain_prefix(domain_name),
            rest,
        }
    }
}

/// The verified JWT: `requestContext.authorizer` in v1, `requestContext.authorizer.jwt` in v2.
#[derive(Serialize)]
pub(crate) struct Jwt<'a> {
    claims: Claims<'a>,
    scopes: Option<&'a [String]>,
}

impl<'a> Jwt<'a> {
    /// The context's JWT, if the request carried one.
    pub(crate) fn of(ctx: &EventContext<'a>) -> Option<Self> {
        ctx.claims.map(|claims| Self {
            claims: Claims(claims),
            scopes: ctx.scopes,
        })
    }
}

/// v1 `requestContext.authorizer`: a Lambda authorizer's context as it is, or the JWT's
/// claims, with `cognito:username` also at the top as the earlier ESB placed it.
pub(crate) enum V1Authorizer<'a> {
    Jwt(Jwt<'a>),
    Lambda(&'a Map<String, Value>),
}

impl<'a> V1Authorizer<'a> {
    pub(crate) fn of(ctx: &EventContext<'a>) -> Option<Self> {
        match ctx.lambda_authorizer {
            Some(context) => Some(Self::Lambda(context)),
            None => Jwt::of(ctx).map(Self::Jwt),
        }
    }
}

impl Serialize for V1Authorizer<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Lambda(context) => context.serialize(serializer),
            Self::Jwt(jwt) => {
                let username = jwt.claims.0.get("cognito:username");
                let mut map = serializer.serialize_map(None)?;
                map.serialize_entry("claims", &jwt.claims)?;
                map.serialize_entry("scopes", &jwt.scopes)?;
                if let Some(username) = username {
                    map.serialize_entry("cognito:username", &claim_text(username))?;
                }
                map.end()
            }
        }
    }
}

/// v2 `requestContext.authorizer`: `{"jwt": ..}` or `{"lambda": ..}`.
#[derive(Serialize)]
pub(crate) enum V2Authorizer<'a> {
    #[serde(rename = "jwt")]
    Jwt(Jwt<'a>),
    #[serde(rename = "lambda")]
    Lambda(&'a Map<String, Value>),
}

impl<'a> V2Authorizer<'a> {
    pub(crate) fn of(ctx: &EventContext<'a>) -> Option<Self> {
        match ctx.lambda_authorizer {
            Some(context) => Some(Self::Lambda(context)),
            None => Jwt::of(ctx).map(Self::Jwt),
        }
    }
}

/// `domainPrefix`: the first label of the domain name.
fn domain_prefix(domain: &str) -> &str {
    domain.split(['.', ':']).next().unwrap_or(domain)
}

pub(crate) fn header_str(value: &http::HeaderValue) -> Cow<'_, str> {
    match value.to_str() {
        Ok(s) => Cow::Borrowed(s),
        Err(_) => String::from_utf8_lossy(value.as_bytes()),
    }
}

pub(crate) fn user_agent(headers: &HeaderMap) -> Option<Cow<'_, str>> {
    headers.get(http::header::USER_AGENT).map(header_str)
}

/// The body as the event carries it, and whether it is base64-encoded.
///
/// Binary when the content type is one of the binary media types, or when it is not UTF-8.
fn encode_body<'b>(
    headers: &HeaderMap,
    body: &'b [u8],
    binary_media_types: &[String],
) -> (Option<Cow<'b, str>>, bool) {
    if body.is_empty() {
        return (None, false);
    }
    let binary_type = !binary_media_types.is_empty()
        && headers
            .get(http::header::CONTENT_TYPE)
            .is_some_and(|ct| is_binary_media_type(&header_str(ct), binary_media_types));
    if !binary_type && let Ok(text) = std::str::from_utf8(body) {
        return (Some(Cow::Borrowed(text)), false);
    }
    (
        Some(Cow::Owned(
            base64::engine::general_purpose::STANDARD.encode(body),
        )),
        true,
    )
}

fn is_binary_media_type(content_type: &str, binary_media_types: &[String]) -> bool {
    let essence = content_type.split(';').next().unwrap_or("").trim();
    let (kind, _) = essence.split_once('/').unwrap_or((essence, ""));
    binary_media_types.iter().any(|pattern| {
        let pattern = pattern.trim();
        pattern == "*/*"
            || pattern.eq_ignore_ascii_case(essence)
            || pattern
                .strip_suffix("/*")
                .is_some_and(|p| p.eq_ignore_ascii_case(kind))
    })
}

/// Query parameters percent-decoded (`+` is kept, as API Gateway does), grouped by name in
/// name order, values in request order.
pub(crate) struct Query<'a> {
    pairs: Vec<Pair<'a>>,
}

/// A decoded `name=value` pair.
type Pair<'a> = (Cow<'a, str>, Cow<'a, str>);

impl<'a> Query<'a> {
    pub(crate) fn parse(raw: &'a str) -> Self {
        let mut pairs: Vec<_> = raw
            .split('&')
            .filter(|pair| !pair.is_empty())
            .map(|pair| {
                let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
                (decode(name), decode(value))
            })
            .collect();
        pairs.sort_by(|a, b| a.0.cmp(&b.0));
        Self { pairs }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }

    fn groups(&self) -> impl Iterator<Item = (&str, &[Pair<'a>])> {
        self.pairs
            .chunk_by(|a, b| a.0 == b.0)
            .map(|group| (group[0].0.as_ref(), group))
    }

    fn count(&self) -> usize {
        self.groups().count()
    }
}

fn decode(raw: &str) -> Cow<'_, str> {
    if raw.contains('%') {
        percent_decode_str(raw).decode_utf8_lossy()
    } else {
        Cow::Borrowed(raw)
    }
}

/// How several values of one query parameter or header are serialized.
#[derive(Clone, Copy)]
pub(crate) enum Values {
    /// The last value (v1 `headers`, `queryStringParameters`).
    Last,
    /// All values as a list (v1 `multiValue*`).
    List,
    /// All values joined with commas (v2).
    Joined,
}

/// Serializes query parameters.
pub(crate) struct QueryMap<'q, 'a>(pub(crate) &'q Query<'a>, pub(crate) Values);

impl Serialize for QueryMap<'_, '_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.count()))?;
        for (name, group) in self.0.groups() {
            let values = || group.iter().map(|(_, v)| v.as_ref());
            map.serialize_entry(name, &ValueList(values, self.1))?;
        }
        map.end()
    }
}

/// Serializes headers; `skip_cookie` leaves `cookie` out (v2 carries it in `cookies`).
pub(crate) struct Headers<'h> {
    pub(crate) headers: &'h HeaderMap,
    pub(crate) values: Values,
    pub(crate) skip_cookie: bool,
}

impl Serialize for Headers<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.headers.keys_len()))?;
        // `HeaderMap::iter` yields the values of one name one after another: group them,
        // hashing a name again only when it has several values.
        let mut iter = self.headers.iter().peekable();
        while let Some((name, first)) = iter.next() {
            let mut last = first;
            let mut several = false;
            while let Some((_, value)) = iter.next_if(|(next, _)| *next == name) {
                last = value;
                several = true;
            }
            if self.skip_cookie && name == http::header::COOKIE {
                continue;
            }
            match (self.values, several) {
                (Values::Last, _) | (Values::Joined, false) => {
                    map.serialize_entry(name.as_str(), &header_str(last))?
                }
                (kind, _) => {
                    let values = || self.headers.get_all(name).iter().map(header_str);
                    map.serialize_entry(name.as_str(), &ValueList(values, kind))?
                }
            }
        }
        map.end()
    }
}

/// A list of values, from a function that iterates them.
struct ValueList<F>(F, Values);

impl<F, I, V> Serialize for ValueList<F>
where
    F: Fn() -> I,
    I: Iterator<Item = V>,
    V: AsRef<str>,
{
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.1 {
            Values::Last => match (self.0)().last() {
                Some(v) => serializer.serialize_str(v.as_ref()),
                None => serializer.serialize_none(),
            },
            Values::List => {
                let mut seq = serializer.serialize_seq(None)?;
                for v in (self.0)() {
                    seq.serialize_element(v.as_ref())?;
                }
                seq.end()
            }
            Values::Joined => {
                let mut values = (self.0)();
                let first = values.next();
                match (first, values.next()) {
                    (None, _) => serializer.serialize_str(""),
                    (Some(only), None) => serializer.serialize_str(only.as_ref()),
                    (Some(first), Some(second)) => {
                        let mut joined = String::from(first.as_ref());
                        for v in std::iter::once(second).chain(values) {
                            joined.push(',');
                            joined.push_str(v.as_ref());
                        }
                        serializer.serialize_str(&joined)
                    }
                }
            }
        }
    }
}

/// JWT claims as API Gateway passes them: every value a string; arrays as `[a b]`.
pub(crate) struct Claims<'c>(pub(crate) &'c Map<String, Value>);

impl Serialize for Claims<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (name, value) in self.0 {
            map.serialize_entry(name, &claim_text(value))?;
        }
        map.end()
    }
}

fn claim_text(value: &Value) -> Cow<'_, str> {
    match value {
        Value::String(s) => Cow::Borrowed(s),
        Value::Array(items) => {
            let items: Vec<Cow<'_, str>> = items.iter().map(claim_text).collect();
            Cow::Owned(format!("[{}]", items.join(" ")))
        }
        other => Cow::Owned(other.to_string()),
    }
}

/// `requestTime` (`23/Nov/2026:08:11:14 +0000`) and `requestTimeEpoch` (milliseconds).
///
/// On every request: chrono gives the calendar date, the time of day is plain arithmetic
/// (cheaper than converting to a `DateTime` and reading it back).
fn request_time(time: SystemTime) -> (String, i64) {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    /// Days from 0001-01-01 (chrono's day 1) to 1970-01-01.
    const UNIX_EPOCH_FROM_CE: i32 = 719_163;
    let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let epoch_ms = i64::try_from(since.as_millis()).unwrap_or(i64::MAX);
    let secs = since.as_secs();
    let rem = secs % 86_400;
    let date = i32::try_from(secs / 86_400)
        .ok()
        .and_then(|days| NaiveDate::from_num_days_from_ce_opt(days + UNIX_EPOCH_FROM_CE))
        .unwrap_or_default();
    let text = format!(
        "{:02}/{}/{}:{:02}:{:02}:{:02} +0000",
        date.day(),
        MONTHS[date.month0() as usize],
        date.year(),
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    );
    (text, epoch_ms)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn request_time_is_formatted_like_api_gateway() {
        let t = UNIX_EPOCH + Duration::from_millis(1_583_348_638_390);
        assert_eq!(
            request_time(t),
            ("04/Mar/2020:19:03:58 +0000".to_owned(), 1_583_348_638_390)
        );
        assert_eq!(request_time(UNIX_EPOCH).0, "01/Jan/1970:00:00:00 +0000");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(request_time(leap).0, "29/Feb/2000:00:00:00 +0000");
    }

    #[test]
    fn binary_media_types_match_exactly_or_by_wildcard() {
        let types = [
            "image/png".to_owned(),
            "application/octet-*".to_owned(),
            "audio/*".to_owned(),
        ];
        assert!(is_binary_media_type("image/png", &types));
        assert!(is_binary_media_type("IMAGE/PNG; q=1", &types));
        assert!(is_binary_media_type("audio/ogg", &types));
        assert!(!is_binary_media_type("image/jpeg", &types));
        assert!(!is_binary_media_type("application/json", &types));
        assert!(is_binary_media_type("text/plain", &["*/*".to_owned()]));
    }

    #[test]
    fn bodies_are_base64_when_binary_or_not_utf8() {
        let mut headers = HeaderMap::new();
        assert_eq!(encode_body(&headers, b"", &[]), (None, false));
        assert_eq!(
            encode_body(&headers, b"hi", &[]),
            (Some("hi".into()), false)
        );
        assert_eq!(
            encode_body(&headers, &[0xff, 0x00], &[]),
            (Some("/wA=".into()), true)
        );
        headers.insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("image/png"),
        );
        assert_eq!(
            encode_body(&headers, b"hi", &["image/png".to_owned()]),
            (Some("aGk=".into()), true)
        );
    }

    #[test]
    fn claims_become_strings() {
        let claims: Map<String, Value> =
            serde_json::from_str(r#"{"sub":"u1","exp":17,"admin":true,"groups":["a","b"]}"#)
                .unwrap();
        let json = serde_json::to_value(Claims(&claims)).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"sub":"u1","exp":"17","admin":"true","groups":"[a b]"})
        );
    }
}
