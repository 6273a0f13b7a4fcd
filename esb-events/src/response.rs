//! Lambda proxy responses mapped back to HTTP responses.

use base64::Engine;
use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderName, HeaderValue, SET_COOKIE};
use http::{HeaderMap, Response, StatusCode};
use serde_json::{Map, Value};

use crate::Error;

/// Maps a REST API (v1) proxy response to an HTTP response.
///
/// `statusCode` is required (a number, or a string holding one, 100..=599); `headers` and
/// `multiValueHeaders` are merged, a name in `multiValueHeaders` taking only those values;
/// `body` is a string (or absent / null for none), base64-decoded when `isBase64Encoded`.
pub fn map_response_v1(payload: &[u8]) -> Result<Response<Bytes>, Error> {
    let value: Value = serde_json::from_slice(payload).map_err(Error::NotJson)?;
    let Value::Object(object) = value else {
        return Err(Error::malformed(
            "statusCode",
            "the response is not a JSON object with a statusCode",
        ));
    };
    structured(&object, true, false)
}

/// Maps an HTTP API (v2) response to an HTTP response.
///
/// A JSON object with `statusCode` is read like a v1 response plus `cookies` (each one a
/// `Set-Cookie` header; `multiValueHeaders` is not part of v2 and is ignored). Any other
/// JSON value is the body itself: status 200, `content-type: application/json`, as API
/// Gateway infers it.
pub fn map_response_v2(payload: &[u8]) -> Result<Response<Bytes>, Error> {
    let value: Value = serde_json::from_slice(payload).map_err(Error::NotJson)?;
    match value {
        Value::Object(object) if object.contains_key("statusCode") => {
            structured(&object, false, true)
        }
        _ => {
            let mut response = Response::new(Bytes::copy_from_slice(payload));
            response
                .headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            Ok(response)
        }
    }
}

fn structured(
    object: &Map<String, Value>,
    multi_value: bool,
    cookies: bool,
) -> Result<Response<Bytes>, Error> {
    let status = status_code(object.get("statusCode"))?;
    let mut headers = HeaderMap::new();
    if multi_value {
        match object.get("multiValueHeaders") {
            None | Some(Value::Null) => {}
            Some(Value::Object(multi)) => {
                for (name, values) in multi {
                    let field = || format!("multiValueHeaders.{name}");
                    let header = header_name(name, field)?;
                    match values {
                        Value::Null => {}
                        Value::Array(values) => {
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
        None | Some(Value::Null) => {}
        Some(Value::Object(single)) => {
            for (name, value) in single {
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
            None | Some(Value::Null) => {}
            Some(Value::Array(list)) => {
                for (i, cookie) in list.iter().enumerate() {
                    let field = || format!("cookies[{i}]");
                    let Value::String(cookie) = cookie else {
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
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) if s == "true" || s == "false" => s == "true",
        Some(_) => {
            return Err(Error::malformed(
                "isBase64Encoded",
                "expected true or false",
            ));
        }
    };
    let body = match object.get("body") {
        None | Some(Value::Null) => Bytes::new(),
        Some(Value::String(body)) if base64 => Bytes::from(
            base64::engine::general_purpose::STANDARD
                .decode(body)
                .map_err(Error::Base64)?,
        ),
        Some(Value::String(body)) => Bytes::copy_from_slice(body.as_bytes()),
        Some(_) => return Err(Error::malformed("body", "expected a string")),
    };
    let mut response = Response::new(body);
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    Ok(response)
}

fn status_code(value: Option<&Value>) -> Result<StatusCode, Error> {
    let code = match value {
        None => return Err(Error::malformed("statusCode", "missing")),
        Some(Value::Number(n)) => n.as_u64(),
        Some(Value::String(s)) => s.trim().parse::<u64>().ok(),
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
                    value.map_or_else(String::new, Value::to_string)
                ),
            )
        })
}

fn header_name(name: &str, field: impl Fn() -> String) -> Result<HeaderName, Error> {
    HeaderName::from_bytes(name.as_bytes())
        .map_err(|_| Error::malformed(field(), "not a valid header name"))
}

fn header_value(value: &Value, field: impl Fn() -> String) -> Result<Option<HeaderValue>, Error> {
    let text = match value {
        Value::Null => return Ok(None),
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        _ => {
            return Err(Error::malformed(
                field(),
                "expected a string, number or boolean",
            ));
        }
    };
    HeaderValue::from_str(&text)
        .map(Some)
        .map_err(|_| Error::malformed(field(), "not a valid header value"))
}
