//! SAM `Auth.Authorizers`, `DefaultAuthorizer`, per-event `Auth.Authorizer`, `Cors` and
//! `CorsConfiguration`, read into authorizers and routes.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use esb_router::{
    ApiKind, Auth, AuthorizerType, Config, Error, IdentitySource, PayloadFormat, Router,
};

const TEMPLATE: &str = r#"
Transform: AWS::Serverless-2016-10-31
Globals:
  Api:
    Cors:
      AllowOrigin: "'https://app.example.com'"
      AllowHeaders: "'Content-Type,Authorization'"
      MaxAge: "'600'"
      AllowCredentials: true
Resources:
  Auth:
    Type: AWS::Serverless::Function
    Properties: { PackageType: Image, ImageUri: "auth:1", FunctionName: auth-fn }
  App:
    Type: AWS::Serverless::Function
    Properties:
      PackageType: Image
      ImageUri: "app:1"
      Events:
        Token: { Type: Api, Properties: { Path: /token, Method: get, RestApiId: !Ref MyApi } }
        Open:
          Type: Api
          Properties: { Path: /open, Method: get, RestApiId: !Ref MyApi, Auth: { Authorizer: NONE } }
        Req:
          Type: Api
          Properties: { Path: /req, Method: get, RestApiId: !Ref MyApi, Auth: { Authorizer: ReqAuth } }
        Implicit: { Type: Api, Properties: { Path: /implicit, Method: get } }
        Http: { Type: HttpApi, Properties: { Path: /http, Method: get, ApiId: !Ref MyHttp } }
  MyApi:
    Type: AWS::Serverless::Api
    Properties:
      StageName: Prod
      Auth:
        DefaultAuthorizer: TokenAuth
        Authorizers:
          TokenAuth:
            FunctionArn: !GetAtt Auth.Arn
            Identity: { Header: X-Token, ReauthorizeEvery: 60, ValidationExpression: "^Bearer .+" }
          ReqAuth:
            FunctionArn: { "Fn::GetAtt": [Auth, Arn] }
            FunctionPayloadType: REQUEST
            Identity: { Headers: [Authorization], QueryStrings: [tenant] }
  MyHttp:
    Type: AWS::Serverless::HttpApi
    Properties:
      CorsConfiguration:
        AllowOrigins: ["*"]
        AllowMethods: [GET, POST]
        ExposeHeaders: [x-total]
      Auth:
        DefaultAuthorizer: Simple
        Authorizers:
          Simple:
            FunctionArn: !GetAtt Auth.Arn
            AuthorizerPayloadFormatVersion: "2.0"
            EnableSimpleResponses: true
            Identity: { Headers: [Authorization] }
"#;

fn route<'c>(config: &'c Config, path: &str) -> &'c esb_router::RouteConfig {
    config
        .routes
        .iter()
        .find(|r| r.path.as_str() == path)
        .unwrap()
}

#[test]
fn authorizers_and_cors_come_from_the_apis_of_a_template() {
    let config = Config::from_sam_str(TEMPLATE, &|_| None).unwrap();
    let token = &config.authorizers["MyApi/TokenAuth"];
    assert_eq!(token.function, "auth-fn");
    assert_eq!(token.authorizer_type, AuthorizerType::Token);
    assert_eq!(token.api, ApiKind::Rest);
    assert_eq!(
        token.identity_sources,
        [IdentitySource::Header("x-token".into())]
    );
    assert_eq!(token.ttl, Duration::from_secs(60));
    assert_eq!(token.validation_expression.as_deref(), Some("^Bearer .+"));

    let request = &config.authorizers["MyApi/ReqAuth"];
    assert_eq!(request.authorizer_type, AuthorizerType::Request);
    assert_eq!(
        request.identity_sources,
        [
            IdentitySource::Header("authorization".into()),
            IdentitySource::Query("tenant".into())
        ]
    );
    assert_eq!(
        request.ttl,
        Duration::from_secs(300),
        "ReauthorizeEvery defaults to 300"
    );

    let simple = &config.authorizers["MyHttp/Simple"];
    assert_eq!(simple.api, ApiKind::Http);
    assert_eq!(simple.payload_format, PayloadFormat::V2);
    assert!(simple.simple_responses);

    assert_eq!(
        route(&config, "/token").auth,
        Auth::Lambda("MyApi/TokenAuth".into())
    );
    assert_eq!(route(&config, "/open").auth, Auth::None);
    assert_eq!(
        route(&config, "/req").auth,
        Auth::Lambda("MyApi/ReqAuth".into())
    );
    assert_eq!(
        route(&config, "/implicit").auth,
        Auth::None,
        "the implicit API has no authorizer: open, as on API Gateway"
    );
    assert_eq!(
        route(&config, "/http").auth,
        Auth::Lambda("MyHttp/Simple".into())
    );

    // Globals.Api.Cors reaches MyApi and the implicit API; MyHttp has its own.
    let rest = route(&config, "/token").cors.clone().unwrap();
    assert_eq!(rest.api, ApiKind::Rest);
    assert_eq!(rest.allow_origins, ["https://app.example.com"]);
    assert_eq!(rest.allow_headers, ["Content-Type", "Authorization"]);
    assert_eq!(rest.max_age, Some(600));
    assert!(rest.allow_credentials);
    assert_eq!(route(&config, "/implicit").cors, Some(rest));
    let http = route(&config, "/http").cors.clone().unwrap();
    assert_eq!(http.api, ApiKind::Http);
    assert_eq!(http.allow_methods, ["GET", "POST"]);
    assert_eq!(http.expose_headers, ["x-total"]);

    let router = Router::new(&config).unwrap();
    let found = router.select(&http::Method::GET, "/token").unwrap();
    assert_eq!(found.auth, Auth::Lambda("MyApi/TokenAuth".into()));
    assert!(found.cors.is_some());
}

#[test]
fn a_bad_authorizer_or_cors_is_named() {
    let bad = TEMPLATE
        .replace(
            "FunctionArn: !GetAtt Auth.Arn\n            Identity",
            "FunctionArn: !GetAtt Nothing.Arn\n            Identity",
        )
        .replace(
            "AllowOrigin: \"'https://app.example.com'\"",
            "AllowOrigin: https://app.example.com",
        );
    let Err(Error::Invalid(problems)) = Config::from_sam_str(&bad, &|_| None) else {
        panic!("expected problems");
    };
    let text: Vec<String> = problems.iter().map(ToString::to_string).collect();
    assert!(
        text.iter()
            .any(|p| p.contains("Resources.MyApi: Auth.Authorizers.TokenAuth.FunctionArn")),
        "{text:?}"
    );
    assert!(
        text.iter()
            .any(|p| p.contains("Cors.AllowOrigin") && p.contains("quoted")),
        "{text:?}"
    );
}

#[test]
fn routing_yml_reads_authorizers_and_cors_and_checks_their_names() {
    let functions = "functions: { f: { command: [f] }, a: { command: [a] } }";
    let routing = r#"
authorizers:
  mine: { function: a, type: request, identity_sources: ["$request.querystring.key"], ttl: 0 }
cors: { allow_origins: ["https://x.example"], max_age: 5 }
routes:
  - { path: /a, method: GET, function: f, auth: mine }
  - { path: /b, method: GET, function: f, auth: none }
  - { path: /c, method: GET, function: f }
"#;
    let config = Config::from_yaml_str(functions, routing, &|_| None).unwrap();
    assert_eq!(config.routes[0].auth, Auth::Lambda("mine".into()));
    assert_eq!(config.routes[1].auth, Auth::None);
    assert_eq!(config.routes[2].auth, Auth::Jwt);
    assert_eq!(config.authorizers["mine"].ttl, Duration::ZERO);
    assert_eq!(config.routes[2].cors.as_ref().unwrap().max_age, Some(5));

    let unknown = routing.replace("auth: mine", "auth: theirs");
    let Err(Error::Invalid(problems)) = Config::from_yaml_str(functions, &unknown, &|_| None)
    else {
        panic!("expected problems");
    };
    assert!(
        problems[0]
            .to_string()
            .contains("unknown authorizer \"theirs\""),
        "{problems:?}"
    );

    let token_http = routing.replace("type: request", "type: token, api: http");
    assert!(Config::from_yaml_str(functions, &token_http, &|_| None).is_err());
    let bad_regex = r#"
authorizers: { mine: { function: a, validation_expression: "([a-z" } }
"#;
    let Err(Error::Invalid(problems)) = Config::from_yaml_str(functions, bad_regex, &|_| None)
    else {
        panic!("expected problems");
    };
    assert!(
        problems[0]
            .to_string()
            .contains("authorizers.mine: validation_expression"),
        "{problems:?}"
    );
    let cached_without_identity = r#"
authorizers: { mine: { function: a, type: request, ttl: 30 } }
"#;
    assert!(Config::from_yaml_str(functions, cached_without_identity, &|_| None).is_err());
}
