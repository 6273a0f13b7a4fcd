//! Lambda proxy responses mapped back to HTTP responses.

use base64::Engine;
use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderName, HeaderValue, SET_COOKIE};
use http::{HeaderMap, Response, StatusCode};
use std::borrow::Cow;

use crate::Error;
use crate::json::{Json, members};

/// Maps a REST API (v1) proxy response to an HTTP response.
///
/// `statusCode` is required (a number, or a string holding one, 100..=599); `headers` and
/// `multiValueHeaders` are merged, a name in `multiValueHeaders` taking only those values;
/// `body` is a string (or absent / null for none), base64-decoded when `isBase64Encoded`.
pub fn map_response_v1(payload: &[u8]) -> Result<Response<Bytes>, Error> {
    let value = Json::parse(payload).map_err(Error::NotJson)?;
    if !matches!(value, Json::Object(_)) {
        return Err(Error::malformed(
            "statusCode",
            "the response is not a JSON object with a statusCode",
        ));
    }
    structured(value, true, false)
}

/// Maps an HTTP API (v2) response to an HTTP response.
///
/// A JSON object with `statusCode` is read like a v1 response plus `cookies` (each one a
/// `Set-Cookie` header; `multiValueHeaders` is not part of v2 and is ignored). Any other
/// JSON value is the body itself: status 200, `content-type: application/json`, as API
/// Gateway infers it.
pub fn map_response_v2(payload: &[u8]) -> Result<Response<Bytes>, Error> {
    let value = Json::parse(payload).map_err(Error::NotJson)?;
    match value {
        Json::Object(_) if value.get("statusCode").is_some() => structured(value, false, true),
        _ => {
            let mut response = Response::new(Bytes::copy_from_slice(payload));
            response
                .headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            Ok(response)
        }
    }
}

/// Reads a proxy response object (`object` is a [`Json::Object`]).
fn structured(
    object: Json<'_>,
    multi_value: bool,
    cookies: bool,
) -> Result<Response<Bytes>, Error> {
    let status = status_code(object.get("statusCode"))?;
    let mut headers = HeaderMap::new();
    if multi_value {
        match object.get("multiValueHeaders") {
            None | Some(Json::Null) => {}
            Some(Json::Object(multi)) => {
                for (name, values) in members(multi) {
                    let field = || format!("multiValueHeaders.{name}");
                    let header = header_name(name, field)?;
                    match values {
                        Json::Null => {}
                        Json::Array(values) => {
                            for value in values {
                                if let Some(value) = header_value(value, field)? {
                                    headers.append(header.clone(), value);
                                }
                            }
                        }
                        single => {
                            if let Some(value) = header_value(single, field)? {
                                headers.append(header, value);
                            }
                        }
                    }
                }
            }
            Some(_) => {
                return Err(Error::malformed(
                    "multiValueHeaders",
                    "expected an object of lists",
                ));
            }
        }
    }
    match object.get("headers") {
        None | Some(Json::Null) => {}
        Some(Json::Object(single)) => {
            for (name, value) in members(single) {
                let field = || format!("headers.{name}");
                let header = header_name(name, field)?;
                if headers.contains_key(&header) {
                    continue;
                }
                if let Some(value) = header_value(value, field)? {
                    headers.insert(header, value);
                }
            }
        }
        Some(_) => return Err(Error::malformed("headers", "expected an object")),
    }
    if cookies {
        match object.get("cookies") {
            None | Some(Json::Null) => {}
            Some(Json::Array(list)) => {
                for (i, cookie) in list.iter().enumerate() {
                    let field = || format!("cookies[{i}]");
                    let Json::String(cookie) = cookie else {
                        return Err(Error::malformed(field(), "expected a string"));
                    };
                    let value = HeaderValue::from_str(cookie)
                        .map_err(|_| Error::malformed(field(), "not a valid header value"))?;
                    headers.append(SET_COOKIE, value);
                }
            }
            Some(_) => return Err(Error::malformed("cookies", "expected a list of strings")),
        }
    }
    let base64 = match object.get("isBase64Encoded") {
        None | Some(Json::Null) => false,
        Some(Json::Bool(b)) => *b,
        Some(Json::String(s)) if s == "true" || s == "false" => s == "true",
        Some(_) => {
            return Err(Error::malformed(
                "isBase64Encoded",
                "expected true or false",
            ));
        }
    };
    let body = match take(object, "body") {
        None | Some(Json::Null) => Bytes::new(),
        Some(Json::String(body)) if base64 => Bytes::from(
            base64::engine::general_purpose::STANDARD
                .decode(body.as_bytes())
                .map_err(Error::Base64)?,
        ),
        Some(Json::String(Cow::Owned(body))) => Bytes::from(body.into_bytes()),
        Some(Json::String(Cow::Borrowed(body))) => Bytes::copy_from_slice(body.as_bytes()),
        Some(_) => return Err(Error::malformed("body", "expected a string")),
    };
    let mut response = Response::new(body);
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    Ok(response)
}

/// The member `name` of `object` (the last of that name), taken out of it.
fn take<'a>(object: Json<'a>, name: &str) -> Option<Json<'a>> {
    match object {
        Json::Object(members) => members
            .into_iter()
            .rev()
            .find_map(|(key, value)| (key == name).then_some(value)),
        _ => None,
    }
}

fn status_code(value: Option<&Json<'_>>) -> Result<StatusCode, Error> {
    let code = match value {
        None => return Err(Error::malformed("statusCode", "missing")),
        Some(Json::Number(n)) => n.as_u64(),
        Some(Json::String(s)) => s.trim().parse::<u64>().ok(),
        Some(_) => None,
    };
    code.and_then(|c| u16::try_from(c).ok())
        .filter(|c| (100..=599).contains(c))
        .and_then(|c| StatusCode::from_u16(c).ok())
        .ok_or_else(|| {
            Error::malformed(
                "statusCode",
                format!(
                    "{} is not an HTTP status code",
                    value.map_or_else(String::new, Json::text)
                ),
            )
        })
}

fn header_name(name: &str, field: impl Fn() -> String) -> Result<HeaderName, Error> {
    HeaderName::from_bytes(name.as_bytes())
        .map_err(|_| Error::malformed(field(), "not a valid header name"))
}

fn header_value(
    value: &Json<'_>,
    field: impl Fn() -> String,
) -> Result<Option<HeaderValue>, Error> {
    let value = match value {
        Json::Null => return Ok(None),
        Json::String(s) => HeaderValue::from_str(s),
        Json::Number(n) => HeaderValue::from_str(&n.to_string()),
        Json::Bool(b) => Ok(HeaderValue::from_static(if *b { "true" } else { "false" })),
        _ => {
            return Err(Error::malformed(
                field(),
                "expected a string, number or boolean",
            ));
        }
    };
    value
        .map(Some)
        .map_err(|_| Error::malformed(field(), "not a valid header value"))
}
