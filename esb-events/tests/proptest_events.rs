//! Properties: any request's event reads back the same through aws_lambda_events, and no
//! function response, however malformed, makes the mapper panic.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::time::SystemTime;

use aws_lambda_events::apigw::{ApiGatewayProxyRequest, ApiGatewayV2httpRequest};
use base64::Engine;
use esb_events::{EventContext, RouteInfo, build_v1, build_v2, map_response_v1, map_response_v2};
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use proptest::prelude::*;

fn header_value() -> impl Strategy<Value = String> {
    "[ -~]{0,12}".prop_map(|s| s.trim().to_owned())
}

proptest! {
    #[test]
    fn events_carry_every_header_query_value_and_body_byte(
        headers in prop::collection::vec(("x-[a-z]{1,6}", header_value()), 0..6),
        query in prop::collection::vec(("[a-z]{1,4}", ".{0,6}"), 0..6),
        body in prop::collection::vec(any::<u8>(), 0..64),
    ) {
        let raw_query: Vec<String> = query
            .iter()
            .map(|(k, v)| format!("{k}={}", utf8_percent_encode(v, NON_ALPHANUMERIC)))
            .collect();
        let uri = if raw_query.is_empty() { "/p".to_owned() } else { format!("/p?{}", raw_query.join("&")) };
        let mut builder = http::Request::post(uri.as_str());
        for (name, value) in &headers {
            builder = builder.header(name.as_str(), value.as_str());
        }
        let (parts, ()) = builder.body(()).unwrap().into_parts();
        let params = BTreeMap::new();
        let route = RouteInfo { resource: "/p", route_key: "POST /p", path_parameters: &params };
        let ctx = EventContext::new("id", "127.0.0.1", SystemTime::now());

        let v1: ApiGatewayProxyRequest = serde_json::from_slice(&build_v1(&parts, &body, &route, &ctx).unwrap()).unwrap();
        let v2: ApiGatewayV2httpRequest = serde_json::from_slice(&build_v2(&parts, &body, &route, &ctx).unwrap()).unwrap();
        for (name, _) in &headers {
            let expected: Vec<&str> = headers.iter().filter(|(n, _)| n == name).map(|(_, v)| v.as_str()).collect();
            let got: Vec<&str> = v1.multi_value_headers.get_all(name.as_str()).iter().map(|v| v.to_str().unwrap()).collect();
            prop_assert_eq!(got, expected);
        }
        for (name, _) in &query {
            let expected: Vec<&str> = query.iter().filter(|(n, _)| n == name).map(|(_, v)| v.as_str()).collect();
            prop_assert_eq!(v1.multi_value_query_string_parameters.all(name), Some(expected.clone()));
            prop_assert_eq!(v1.query_string_parameters.first(name), expected.last().copied());
        }
        for (event_body, base64) in [(v1.body, v1.is_base64_encoded), (v2.body, v2.is_base64_encoded)] {
            let decoded = match event_body {
                None => Vec::new(),
                Some(b) if base64 => base64::engine::general_purpose::STANDARD.decode(b).unwrap(),
                Some(b) => b.into_bytes(),
            };
            prop_assert_eq!(&decoded, &body);
        }
    }

    #[test]
    fn mapping_arbitrary_bytes_never_panics(payload in prop::collection::vec(any::<u8>(), 0..128)) {
        let _ = map_response_v1(&payload);
        let _ = map_response_v2(&payload);
    }

    #[test]
    fn mapping_arbitrary_json_never_panics(
        status in prop_oneof![any::<i64>().prop_map(serde_json::Value::from), ".{0,4}".prop_map(serde_json::Value::from)],
        header in ".{0,8}",
        value in ".{0,8}",
        body in ".{0,16}",
        base64 in any::<bool>(),
    ) {
        let payload = serde_json::json!({
            "statusCode": status,
            "headers": { header.clone(): value.clone() },
            "multiValueHeaders": { header: [value.clone()] },
            "cookies": [value],
            "body": body,
            "isBase64Encoded": base64,
        });
        let bytes = payload.to_string().into_bytes();
        let _ = map_response_v1(&bytes);
        let _ = map_response_v2(&bytes);
    }
}
