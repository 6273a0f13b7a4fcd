//! Lambda responses mapped back to HTTP: AWS's rules, round trips through
//! `aws_lambda_events`, and typed errors for malformed responses.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use aws_lambda_events::apigw::{ApiGatewayProxyResponse, ApiGatewayV2httpResponse};
use aws_lambda_events::encodings::Body;
use esb_events::{Error, map_response_v1, map_response_v2};
use http::{HeaderMap, HeaderValue};
use serde_json::json;

fn values<'a>(response: &'a http::Response<bytes::Bytes>, name: &str) -> Vec<&'a str> {
    response
        .headers()
        .get_all(name)
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect()
}

#[test]
fn v1_headers_and_multi_value_headers_are_merged_as_aws_does() {
    let payload = json!({
        "statusCode": 201,
        "headers": {"content-type": "text/plain", "x-both": "from-headers", "x-num": 7},
        "multiValueHeaders": {"set-cookie": ["a=1", "b=2"], "X-Both": ["m1", "m2"]},
        "body": "created",
    });
    let response = map_response_v1(payload.to_string().as_bytes()).unwrap();
    assert_eq!(response.status(), 201);
    assert_eq!(values(&response, "content-type"), ["text/plain"]);
    assert_eq!(values(&response, "set-cookie"), ["a=1", "b=2"]);
    // A name in both: only the multiValueHeaders values.
    assert_eq!(values(&response, "x-both"), ["m1", "m2"]);
    assert_eq!(values(&response, "x-num"), ["7"]);
    assert_eq!(response.body().as_ref(), b"created");
}

#[test]
fn base64_bodies_are_decoded_and_missing_bodies_are_empty() {
    let response =
        map_response_v1(br#"{"statusCode":200,"body":"iVBORw0KGgo=","isBase64Encoded":true}"#)
            .unwrap();
    assert_eq!(response.body().as_ref(), b"\x89PNG\r\n\x1a\n");
    let response = map_response_v1(br#"{"statusCode":"204"}"#).unwrap();
    assert_eq!(response.status(), 204);
    assert!(response.body().is_empty());
    let response =
        map_response_v2(br#"{"statusCode":200,"body":null,"isBase64Encoded":false}"#).unwrap();
    assert!(response.body().is_empty());
}

#[test]
fn v2_cookies_become_set_cookie_headers() {
    let payload = json!({
        "statusCode": 200,
        "headers": {"content-type": "application/json"},
        "cookies": ["session=abc; HttpOnly", "theme=dark"],
        "body": "{}",
    });
    let response = map_response_v2(payload.to_string().as_bytes()).unwrap();
    assert_eq!(
        values(&response, "set-cookie"),
        ["session=abc; HttpOnly", "theme=dark"]
    );
    assert_eq!(values(&response, "content-type"), ["application/json"]);
}

#[test]
fn v2_infers_200_json_when_there_is_no_status_code() {
    for payload in [
        r#"{"message":"hi"}"#,
        r#""just a string""#,
        "[1,2,3]",
        "42",
        "null",
    ] {
        let response = map_response_v2(payload.as_bytes()).unwrap();
        assert_eq!(response.status(), 200, "{payload}");
        assert_eq!(
            values(&response, "content-type"),
            ["application/json"],
            "{payload}"
        );
        assert_eq!(response.body().as_ref(), payload.as_bytes(), "{payload}");
    }
}

#[test]
fn malformed_responses_are_typed_errors() {
    let malformed = |result: Result<_, Error>, field: &str| match result {
        Err(Error::Malformed { field: f, .. }) => assert_eq!(f, field),
        other => panic!("expected a malformed {field}, got {other:?}"),
    };
    assert!(matches!(
        map_response_v1(b"not json"),
        Err(Error::NotJson(_))
    ));
    assert!(matches!(
        map_response_v2(b"{\"statusCode\":"),
        Err(Error::NotJson(_))
    ));
    assert!(matches!(map_response_v1(b""), Err(Error::NotJson(_))));
    malformed(map_response_v1(br#"{"body":"x"}"#), "statusCode");
    malformed(map_response_v1(br#""text""#), "statusCode");
    malformed(map_response_v1(br#"{"statusCode":"abc"}"#), "statusCode");
    malformed(map_response_v1(br#"{"statusCode":99}"#), "statusCode");
    malformed(map_response_v1(br#"{"statusCode":600}"#), "statusCode");
    malformed(map_response_v1(br#"{"statusCode":-1}"#), "statusCode");
    malformed(map_response_v2(br#"{"statusCode":200.5}"#), "statusCode");
    malformed(
        map_response_v1(br#"{"statusCode":200,"body":{"a":1}}"#),
        "body",
    );
    malformed(
        map_response_v1(br#"{"statusCode":200,"headers":{"bad name":"x"}}"#),
        "headers.bad name",
    );
    malformed(
        map_response_v1(br#"{"statusCode":200,"headers":{"x":"a\nb"}}"#),
        "headers.x",
    );
    malformed(
        map_response_v1(br#"{"statusCode":200,"headers":["x"]}"#),
        "headers",
    );
    malformed(
        map_response_v1(br#"{"statusCode":200,"multiValueHeaders":{"x":[{"a":1}]}}"#),
        "multiValueHeaders.x",
    );
    malformed(
        map_response_v1(br#"{"statusCode":200,"isBase64Encoded":"yes"}"#),
        "isBase64Encoded",
    );
    malformed(
        map_response_v2(br#"{"statusCode":200,"cookies":[1]}"#),
        "cookies[0]",
    );
    malformed(
        map_response_v2(br#"{"statusCode":200,"cookies":"a=1"}"#),
        "cookies",
    );
    let error =
        map_response_v1(br#"{"statusCode":200,"body":"***","isBase64Encoded":true}"#).unwrap_err();
    assert!(matches!(error, Error::Base64(_)));
    assert!(
        error
            .to_string()
            .starts_with("malformed Lambda proxy response: body: invalid base64")
    );
}

#[test]
fn responses_serialized_by_aws_lambda_events_round_trip() {
    let mut headers = HeaderMap::new();
    headers.insert("content-type", HeaderValue::from_static("image/png"));
    let mut multi = HeaderMap::new();
    multi.append("x-tag", HeaderValue::from_static("a"));
    multi.append("x-tag", HeaderValue::from_static("b"));
    let mut v1 = ApiGatewayProxyResponse::default();
    v1.status_code = 418;
    v1.headers = headers.clone();
    v1.multi_value_headers = multi;
    v1.body = Some(Body::Binary(vec![0, 159, 146, 150]));
    v1.is_base64_encoded = true;
    let response = map_response_v1(&serde_json::to_vec(&v1).unwrap()).unwrap();
    assert_eq!(response.status(), 418);
    assert_eq!(values(&response, "content-type"), ["image/png"]);
    assert_eq!(values(&response, "x-tag"), ["a", "b"]);
    assert_eq!(response.body().as_ref(), [0, 159, 146, 150]);

    let mut v2 = ApiGatewayV2httpResponse::default();
    v2.status_code = 302;
    v2.headers
        .insert("location", HeaderValue::from_static("/next"));
    v2.cookies = vec!["a=1".into(), "b=2; Secure".into()];
    v2.body = Some(Body::Text("moved".into()));
    let response = map_response_v2(&serde_json::to_vec(&v2).unwrap()).unwrap();
    assert_eq!(response.status(), 302);
    assert_eq!(values(&response, "location"), ["/next"]);
    assert_eq!(values(&response, "set-cookie"), ["a=1", "b=2; Secure"]);
    assert_eq!(response.body().as_ref(), b"moved");
}
