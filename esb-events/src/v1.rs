//! API Gateway REST API (payload 1.0) proxy events.

use std::borrow::Cow;
use std::collections::BTreeMap;

use bytes::Bytes;
use serde::Serialize;

use crate::Error;
use crate::request::{
    Common, EventContext, Headers, Query, QueryMap, RequestContext, RouteInfo, V1Authorizer,
    Values, user_agent,
};

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Event<'a> {
    resource: &'a str,
    path: &'a str,
    http_method: &'a str,
    headers: Option<Headers<'a>>,
    multi_value_headers: Option<Headers<'a>>,
    query_string_parameters: Option<QueryMap<'a, 'a>>,
    multi_value_query_string_parameters: Option<QueryMap<'a, 'a>>,
    path_parameters: Option<&'a BTreeMap<String, String>>,
    stage_variables: Option<&'a BTreeMap<String, String>>,
    request_context: RequestContext<'a, V1Authorizer<'a>, Context<'a>>,
    body: Option<Cow<'a, str>>,
    is_base64_encoded: bool,
}

/// The v1 fields of `requestContext`, after the shared head.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Context<'a> {
    extended_request_id: &'a str,
    http_method: &'a str,
    identity: Identity<'a>,
    path: &'a str,
    protocol: &'a str,
    request_id: &'a str,
    request_time: String,
    request_time_epoch: i64,
    resource_path: &'a str,
    stage: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Identity<'a> {
    access_key: Option<&'a str>,
    account_id: Option<&'a str>,
    caller: Option<&'a str>,
    cognito_authentication_provider: Option<&'a str>,
    cognito_authentication_type: Option<&'a str>,
    cognito_identity_id: Option<&'a str>,
    cognito_identity_pool_id: Option<&'a str>,
    principal_org_id: Option<&'a str>,
    source_ip: &'a str,
    user: Option<&'a str>,
    user_agent: Option<Cow<'a, str>>,
    user_arn: Option<&'a str>,
}

/// Builds the REST API (v1) proxy event of a request, as JSON.
///
/// `headers` holds the last value of each header and `multiValueHeaders` all of them, in
/// order; the query string likewise (both `null` when there is none, as AWS sends them);
/// `pathParameters` and `stageVariables` are `null` when empty; `body` is `null` when empty
/// and base64-encoded when binary (see [`EventContext::binary_media_types`]).
pub fn build_v1(
    req: &http::request::Parts,
    body: &[u8],
    route: &RouteInfo<'_>,
    ctx: &EventContext<'_>,
) -> Result<Bytes, Error> {
    let path = req.uri.path();
    let method = req.method.as_str();
    let query = Query::parse(req.uri.query().unwrap_or(""));
    let query = (!query.is_empty()).then_some(&query);
    let has_headers = !req.headers.is_empty();
    let headers = |values| {
        has_headers.then_some(Headers {
            headers: &req.headers,
            values,
            skip_cookie: false,
        })
    };
    let common = Common::new(req, body, ctx);
    let event = Event {
        resource: route.resource,
        path,
        http_method: method,
        headers: headers(Values::Last),
        multi_value_headers: headers(Values::List),
        query_string_parameters: query.map(|q| QueryMap(q, Values::Last)),
        multi_value_query_string_parameters: query.map(|q| QueryMap(q, Values::List)),
        path_parameters: (!route.path_parameters.is_empty()).then_some(route.path_parameters),
        stage_variables: ctx.stage_variables.filter(|v| !v.is_empty()),
        request_context: RequestContext::new(
            ctx,
            common.domain_name,
            V1Authorizer::of(ctx),
            Context {
                extended_request_id: ctx.request_id,
                http_method: method,
                identity: Identity {
                    access_key: None,
                    account_id: None,
                    caller: None,
                    cognito_authentication_provider: None,
                    cognito_authentication_type: None,
                    cognito_identity_id: None,
                    cognito_identity_pool_id: None,
                    principal_org_id: None,
                    source_ip: ctx.source_ip,
                    user: None,
                    user_agent: user_agent(&req.headers),
                    user_arn: None,
                },
                path,
                protocol: protocol(req.version),
                request_id: ctx.request_id,
                request_time: common.time,
                request_time_epoch: common.time_epoch,
                resource_path: route.resource,
                stage: ctx.stage,
            },
        ),
        body: common.body,
        is_base64_encoded: common.is_base64_encoded,
    };
    to_bytes(&event, common.body_len)
}

pub(crate) fn protocol(version: http::Version) -> &'static str {
    match version {
        http::Version::HTTP_09 => "HTTP/0.9",
        http::Version::HTTP_10 => "HTTP/1.0",
        http::Version::HTTP_2 => "HTTP/2.0",
        http::Version::HTTP_3 => "HTTP/3.0",
        _ => "HTTP/1.1",
    }
}

pub(crate) fn to_bytes(event: &impl Serialize, body_len: usize) -> Result<Bytes, Error> {
    // Room for the envelope and a body that grows by a third when escaped or base64-encoded.
    let mut out = Vec::with_capacity(2048 + body_len + body_len / 3);
    serde_json::to_writer(&mut out, event).map_err(Error::Serialize)?;
    Ok(Bytes::from(out))
}
