//! API Gateway HTTP API (payload 2.0) events.

use std::borrow::Cow;
use std::collections::BTreeMap;

use bytes::Bytes;
use serde::Serialize;

use crate::Error;
use crate::request::{
    Common, EventContext, Headers, Query, QueryMap, RequestContext, RouteInfo, V2Authorizer,
    Values, user_agent,
};
use crate::v1::{protocol, to_bytes};

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Event<'a> {
    version: &'static str,
    route_key: &'a str,
    raw_path: &'a str,
    raw_query_string: &'a str,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    cookies: Vec<&'a str>,
    headers: Headers<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    query_string_parameters: Option<QueryMap<'a, 'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    path_parameters: Option<&'a BTreeMap<String, String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stage_variables: Option<&'a BTreeMap<String, String>>,
    request_context: RequestContext<'a, V2Authorizer<'a>, Context<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    body: Option<Cow<'a, str>>,
    is_base64_encoded: bool,
}

/// The v2 fields of `requestContext`, after the shared head.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Context<'a> {
    http: Http<'a>,
    request_id: &'a str,
    route_key: &'a str,
    stage: &'static str,
    time: String,
    time_epoch: i64,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Http<'a> {
    method: &'a str,
    path: &'a str,
    protocol: &'static str,
    source_ip: &'a str,
    user_agent: Option<Cow<'a, str>>,
}

/// Builds the HTTP API (v2) event of a request, as JSON.
///
/// Repeated headers and query parameters are joined with commas; `Cookie` headers become
/// `cookies`; the stage is `$default`; keys AWS leaves out when empty (`cookies`,
/// `queryStringParameters`, `pathParameters`, `stageVariables`, `body`) are left out.
pub fn build_v2(
    req: &http::request::Parts,
    body: &[u8],
    route: &RouteInfo<'_>,
    ctx: &EventContext<'_>,
) -> Result<Bytes, Error> {
    let path = req.uri.path();
    let raw_query = req.uri.query().unwrap_or("");
    let query = Query::parse(raw_query);
    let cookies: Vec<&str> = req
        .headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .collect();
    let common = Common::new(req, body, ctx);
    let event = Event {
        version: "2.0",
        route_key: route.route_key,
        raw_path: path,
        raw_query_string: raw_query,
        cookies,
        headers: Headers {
            headers: &req.headers,
            values: Values::Joined,
            skip_cookie: true,
        },
        query_string_parameters: (!query.is_empty()).then_some(QueryMap(&query, Values::Joined)),
        path_parameters: (!route.path_parameters.is_empty()).then_some(route.path_parameters),
        stage_variables: ctx.stage_variables.filter(|v| !v.is_empty()),
        request_context: RequestContext::new(
            ctx,
            common.domain_name,
            V2Authorizer::of(ctx),
            Context {
                http: Http {
                    method: req.method.as_str(),
                    path,
                    protocol: protocol(req.version),
                    source_ip: ctx.source_ip,
                    user_agent: user_agent(&req.headers),
                },
                request_id: ctx.request_id,
                route_key: route.route_key,
                stage: "$default",
                time: common.time,
                time_epoch: common.time_epoch,
            },
        ),
        body: common.body,
        is_base64_encoded: common.is_base64_encoded,
    };
    to_bytes(&event, common.body_len)
}
