//! Loading functions.yml, routing.yml and SAM templates from fixture files.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use esb_router::{
    Auth, Config, Error, EventInvoke, InvokeMode, PayloadFormat, Problem, RouteMethod, Scaling,
};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let vars: BTreeMap<String, String> = vars
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    move |name| vars.get(name).cloned()
}

fn problems(result: Result<Config, Error>) -> Vec<Problem> {
    match result {
        Err(Error::Invalid(problems)) => problems,
        other => panic!("expected validation problems, got {other:?}"),
    }
}

/// Finds the problem about `item` and `field`, or fails listing all of them.
fn find<'p>(problems: &'p [Problem], item: &str, field: &str) -> &'p Problem {
    problems
        .iter()
        .find(|p| p.item.starts_with(item) && p.field == field)
        .unwrap_or_else(|| panic!("no problem for {item} / {field} in:\n{problems:#?}"))
}

/// The routes as `(method, path, function, auth, payload format)`, the method shown by `method`.
fn route_rows<M>(
    config: &Config,
    method: impl Fn(&RouteMethod) -> M,
) -> Vec<(M, String, &str, Auth, Option<PayloadFormat>)> {
    config
        .routes
        .iter()
        .map(|r| {
            (
                method(&r.method),
                r.path.as_str().to_owned(),
                r.function.as_str(),
                r.auth.clone(),
                r.payload_format,
            )
        })
        .collect()
}

#[test]
fn loads_functions_and_routes_with_defaults_merged() {
    let config = Config::load(
        fixture("functions.yml"),
        fixture("routing.yml"),
        &env(&[("LOG_LEVEL", "info"), ("REGISTRY", "127.0.0.1:5000")]),
    )
    .unwrap();

    let echo = &config.functions["lambda-echo"];
    assert_eq!(echo.name, "lambda-echo");
    assert_eq!(
        echo.image.as_deref(),
        Some("127.0.0.1:5000/lambda-echo:latest")
    );
    assert_eq!(
        echo.command,
        Some(vec![
            "./target/release/echo-fn".to_owned(),
            "--quiet".to_owned()
        ])
    );
    assert_eq!(echo.timeout, Duration::from_secs(30));
    assert_eq!(echo.memory_size, 256);
    assert_eq!(echo.invoke, InvokeMode::RuntimeApi);
    assert_eq!(echo.payload_format, PayloadFormat::V1);
    // The function's own environment wins over the defaults, which fill the rest.
    assert_eq!(
        echo.environment,
        BTreeMap::from([
            ("KEY".to_owned(), "value".to_owned()),
            ("LOG_LEVEL".to_owned(), "debug".to_owned()),
            ("REGION".to_owned(), "ap-northeast-1".to_owned()),
        ])
    );
    // defaults.scaling is merged field by field under the function's scaling.
    assert_eq!(
        echo.scaling,
        Scaling::default()
            .max_capacity(1)
            .min_capacity(1)
            .idle_timeout(Duration::from_secs(120))
            .acquire_timeout(Duration::from_millis(2500))
    );

    let items = &config.functions["items"];
    assert_eq!(items.command, Some(vec!["./items-fn".to_owned()]));
    assert_eq!(items.image, None);
    assert_eq!(items.invoke, InvokeMode::Rie);
    assert_eq!(items.payload_format, PayloadFormat::V2);
    assert_eq!(items.environment["LOG_LEVEL"], "info");
    assert_eq!(items.scaling.max_capacity, Some(4));
    // Unset in both files: the pool's default (0) applies.
    assert_eq!(items.scaling.min_capacity, None);

    // AWS Lambda's defaults where nothing is said.
    let files = &config.functions["files"];
    assert_eq!(files.timeout, Duration::from_secs(3));
    assert_eq!(files.memory_size, 128);

    let routes = route_rows(&config, RouteMethod::to_string);
    assert_eq!(
        routes,
        [
            (
                "POST".into(),
                "/api/echo".into(),
                "lambda-echo",
                Auth::Jwt,
                None
            ),
            (
                "ANY".into(),
                "/items/{id}".into(),
                "items",
                Auth::Jwt,
                Some(PayloadFormat::V1)
            ),
            ("GET".into(), "/items".into(), "items", Auth::Jwt, None),
            (
                "GET".into(),
                "/files/{proxy+}".into(),
                "files",
                Auth::None,
                None
            ),
        ]
    );
}

#[test]
fn unset_variable_is_an_error_naming_it_and_its_line() {
    let problems = problems(Config::load(
        fixture("functions.yml"),
        fixture("routing.yml"),
        &env(&[("REGISTRY", "r")]),
    ));
    assert_eq!(problems.len(), 1, "{problems:#?}");
    let text = problems[0].to_string();
    assert!(
        text.contains("functions.yml: line 4: environment variable LOG_LEVEL is not set"),
        "{text}"
    );
}

#[test]
fn every_problem_is_reported_at_once_with_file_item_and_field() {
    let problems = problems(Config::load(
        fixture("bad_functions.yml"),
        fixture("bad_routing.yml"),
        &env(&[]),
    ));
    let text: Vec<String> = problems.iter().map(ToString::to_string).collect();

    let p = find(&problems, "line 18", "");
    assert!(p.message.contains("UNSET_SECRET"), "{p}");
    assert!(p.file.ends_with("bad_functions.yml"));
    assert!(
        find(&problems, "defaults", "scaling.max_capacity")
            .message
            .contains("at least 1")
    );
    assert!(
        find(&problems, "functions.no-code", "timeout")
            .message
            .contains("outside 1..=900")
    );
    assert!(
        find(&problems, "functions.no-code", "")
            .message
            .contains("image")
    );
    assert!(
        find(&problems, "functions.too-big", "memory_size")
            .message
            .contains("outside 128..=10240")
    );
    assert!(
        find(&problems, "functions.too-big", "timeout")
            .message
            .contains("901")
    );
    assert!(
        find(&problems, "functions.inverted", "scaling.min_capacity")
            .message
            .contains("above max_capacity 2")
    );
    assert!(
        find(&problems, "functions.inverted", "scaling.idle_timeout")
            .message
            .contains("above 0")
    );
    assert!(
        find(&problems, "functions.inverted", "invoke")
            .message
            .contains("grpc")
    );
    assert!(
        find(&problems, "functions.inverted", "payload_format")
            .message
            .contains("3.0")
    );
    assert!(
        find(&problems, "functions.inverted", "memroy_size")
            .message
            .contains("unknown field")
    );
    assert!(
        find(&problems, "functions.bad name!", "")
            .message
            .contains("function names")
    );

    let p = find(&problems, "routes[0]", "function");
    assert!(
        p.message.contains("ghost") && p.file.ends_with("bad_routing.yml"),
        "{p}"
    );
    assert!(
        find(&problems, "routes[2]", "")
            .message
            .contains("duplicate route")
    );
    assert!(
        find(&problems, "routes[3]", "path")
            .message
            .contains("last segment")
    );
    assert!(
        find(&problems, "routes[4]", "path")
            .message
            .contains("start with '/'")
    );
    assert!(
        find(&problems, "routes[5]", "method")
            .message
            .contains("FETCH")
    );
    assert!(
        find(&problems, "routes[6]", "auth")
            .message
            .contains("basic")
    );
    assert!(
        find(&problems, "routes[7]", "method")
            .message
            .contains("missing")
    );

    let error = Error::Invalid(problems.clone()).to_string();
    assert!(error.starts_with(&format!(
        "invalid configuration ({} problems):",
        problems.len()
    )));
    for line in text {
        assert!(error.contains(&line));
    }
}

#[test]
fn yaml_syntax_errors_and_missing_files_name_the_file() {
    let problems = problems(Config::from_yaml_str(
        "functions: [unclosed",
        "routes: []",
        &env(&[]),
    ));
    assert_eq!(problems[0].file, "functions.yml");
    assert!(problems[0].message.starts_with("invalid YAML"));

    match Config::load(fixture("nope.yml"), fixture("routing.yml"), &env(&[])) {
        Err(Error::Read { path, .. }) => assert!(path.ends_with("nope.yml")),
        other => panic!("expected a read error, got {other:?}"),
    }
}

#[test]
fn sam_template_functions_and_events() {
    let config = Config::from_sam_template(
        fixture("template.yaml"),
        &env(&[("Registry", "registry.local")]),
    )
    .unwrap();

    assert_eq!(
        config.functions.keys().collect::<Vec<_>>(),
        ["BuiltFunction", "hello-dev"]
    );
    let hello = &config.functions["hello-dev"];
    assert_eq!(hello.image.as_deref(), Some("registry.local/hello:latest"));
    assert_eq!(hello.timeout, Duration::from_secs(60));
    assert_eq!(hello.memory_size, 512);
    assert_eq!(hello.scaling.max_capacity, Some(3));
    assert_eq!(hello.scaling.min_capacity, Some(1));
    assert_eq!(
        hello.environment,
        BTreeMap::from([
            ("GREETING".to_owned(), "hi".to_owned()),
            ("SHARED".to_owned(), "from-globals".to_owned()),
            ("STAGE".to_owned(), "dev".to_owned()),
            (
                "TABLE_ARN".to_owned(),
                "arn:aws:dynamodb:us-east-1:000000000000:table/dev-items".to_owned()
            ),
            ("TABLE_NAME".to_owned(), "dev-items".to_owned()),
        ])
    );

    let built = &config.functions["BuiltFunction"];
    assert_eq!(built.image.as_deref(), Some("builtfunction:python3.12-v1"));
    assert_eq!(built.timeout, Duration::from_secs(15));
    assert_eq!(built.scaling, Scaling::default());

    let routes = route_rows(&config, RouteMethod::clone);
    assert_eq!(
        routes,
        [
            (
                RouteMethod::Method(http::Method::GET),
                "/hello".into(),
                "hello-dev",
                Auth::None,
                Some(PayloadFormat::V1)
            ),
            (
                RouteMethod::Any,
                "/hello/{name}".into(),
                "hello-dev",
                Auth::None,
                Some(PayloadFormat::V2)
            ),
            (
                RouteMethod::Method(http::Method::POST),
                "/legacy".into(),
                "BuiltFunction",
                Auth::None,
                Some(PayloadFormat::V1)
            ),
        ]
    );
}

#[test]
fn sam_template_validation_names_resources() {
    let template = r#"
Resources:
  Zip:
    Type: AWS::Serverless::Function
    Properties: { CodeUri: ./no-such-dir, Handler: app.handler, Runtime: python3.12, MemorySize: 64 }
  Img:
    Type: AWS::Serverless::Function
    Properties:
      PackageType: Image
      ImageUri: img
      ReservedConcurrentExecutions: 0
      Events:
        E: { Type: Api, Properties: { Path: "/x/{a}{b}", Method: get } }
"#;
    let problems = problems(Config::from_sam_str(template, &env(&[])));
    // Zip functions run (issue 11); their code must exist.
    assert!(
        find(&problems, "Resources.Zip", "CodeUri")
            .message
            .contains("does not exist")
    );
    assert!(
        find(&problems, "Resources.Zip", "MemorySize")
            .message
            .contains("64 MB")
    );
    assert!(
        find(&problems, "Resources.Img", "ReservedConcurrentExecutions")
            .message
            .contains("at least 1")
    );
    assert!(
        find(&problems, "Resources.Img.Events.E", "path")
            .message
            .contains("bad path template")
    );
}

#[test]
fn event_invoke_config_from_functions_yml_with_defaults_and_lambdas_own() {
    let functions = r#"
defaults:
  event_invoke: { maximum_event_age: 3600 }
functions:
  once: { command: [f], event_invoke: { maximum_retry_attempts: 0, maximum_event_age: 120 } }
  aged: { command: [f], event_invoke: { maximum_retry_attempts: 1 } }
  plain: { command: [f] }
"#;
    let config = Config::from_yaml_str(functions, "", &env(&[])).unwrap();
    let settings = |name: &str| {
        let e = config.functions[name].event_invoke;
        (e.maximum_retry_attempts, e.maximum_event_age)
    };
    assert_eq!(settings("once"), (0, Duration::from_secs(120)));
    assert_eq!(settings("aged"), (1, Duration::from_secs(3600)));
    assert_eq!(settings("plain"), (2, Duration::from_secs(3600)));
    let lambda =
        Config::from_yaml_str("functions: { f: { command: [f] } }", "", &env(&[])).unwrap();
    assert_eq!(lambda.functions["f"].event_invoke, EventInvoke::default());
    assert_eq!(
        EventInvoke::default(),
        EventInvoke::default()
            .maximum_retry_attempts(2)
            .maximum_event_age(Duration::from_secs(6 * 3600))
    );
}

#[test]
fn event_invoke_out_of_range_names_the_field_in_both_formats() {
    let functions = r#"
functions:
  f:
    command: [f]
    event_invoke: { maximum_retry_attempts: 3, maximum_event_age: 59, retries: 1 }
  g: { command: [g], event_invoke: { maximum_event_age: 21601, maximum_retry_attempts: -1 } }
"#;
    let problems = problems(Config::from_yaml_str(functions, "", &env(&[])));
    assert_eq!(problems.len(), 5, "{problems:#?}");
    let p = find(
        &problems,
        "functions.f",
        "event_invoke.maximum_retry_attempts",
    );
    assert_eq!(
        p.to_string(),
        "functions.yml: functions.f: event_invoke.maximum_retry_attempts: 3 is outside 0..=2 retries"
    );
    assert_eq!(
        find(&problems, "functions.f", "event_invoke.maximum_event_age").message,
        "59 s is outside 60..=21600 seconds"
    );
    find(&problems, "functions.f", "event_invoke.retries");
    find(&problems, "functions.g", "event_invoke.maximum_event_age");
    find(
        &problems,
        "functions.g",
        "event_invoke.maximum_retry_attempts",
    );

    let template = r#"
Globals:
  Function:
    EventInvokeConfig: { MaximumEventAgeInSeconds: 21600 }
Resources:
  Bad:
    Type: AWS::Serverless::Function
    Properties:
      PackageType: Image
      ImageUri: bad:latest
      EventInvokeConfig: { MaximumRetryAttempts: 5, MaximumEventAgeInSeconds: 30 }
"#;
    let problems = crate::problems(Config::from_sam_str(template, &env(&[])));
    assert_eq!(problems.len(), 2, "{problems:#?}");
    assert_eq!(
        find(
            &problems,
            "Resources.Bad",
            "EventInvokeConfig.MaximumRetryAttempts"
        )
        .to_string(),
        "template.yaml: Resources.Bad: EventInvokeConfig.MaximumRetryAttempts: 5 is outside 0..=2 retries"
    );
    find(
        &problems,
        "Resources.Bad",
        "EventInvokeConfig.MaximumEventAgeInSeconds",
    );
}

#[test]
fn sam_event_invoke_config_with_globals_and_parameters() {
    let template = r#"
Parameters:
  Retries: { Type: Number, Default: 1 }
Globals:
  Function:
    EventInvokeConfig: { MaximumEventAgeInSeconds: 600 }
Resources:
  Once:
    Type: AWS::Serverless::Function
    Properties:
      PackageType: Image
      ImageUri: once:latest
      EventInvokeConfig:
        MaximumRetryAttempts: !Ref Retries
        DestinationConfig: { OnFailure: { Type: SQS } }
  Plain:
    Type: AWS::Serverless::Function
    Properties: { PackageType: Image, ImageUri: plain:latest }
"#;
    let config = Config::from_sam_str(template, &env(&[])).unwrap();
    let once = config.functions["Once"].event_invoke;
    assert_eq!(once.maximum_retry_attempts, 1);
    assert_eq!(once.maximum_event_age, Duration::from_secs(600));
    let plain = config.functions["Plain"].event_invoke;
    assert_eq!(plain.maximum_retry_attempts, 2);
    assert_eq!(plain.maximum_event_age, Duration::from_secs(600));
}

#[test]
fn aliases_from_functions_yml_and_sam_auto_publish_alias() {
    let functions = r#"
functions:
  live: { command: [f], aliases: [live, beta-2] }
  plain: { command: [f] }
"#;
    let config = Config::from_yaml_str(functions, "", &env(&[])).unwrap();
    assert_eq!(config.functions["live"].aliases, ["live", "beta-2"]);
    assert!(config.functions["plain"].aliases.is_empty());

    let template = r#"
Parameters:
  Stage: { Type: String, Default: prod }
Globals:
  Function:
    AutoPublishAlias: live
Resources:
  Global:
    Type: AWS::Serverless::Function
    Properties: { PackageType: Image, ImageUri: g:latest }
  Own:
    Type: AWS::Serverless::Function
    Properties: { PackageType: Image, ImageUri: o:latest, AutoPublishAlias: !Ref Stage }
"#;
    let config = Config::from_sam_str(template, &env(&[])).unwrap();
    assert_eq!(config.functions["Global"].aliases, ["live"]);
    assert_eq!(config.functions["Own"].aliases, ["prod"]);
}

#[test]
fn bad_alias_names_are_problems_naming_the_field() {
    let functions = r#"
functions:
  f: { command: [f], aliases: [ok, "12", "$LATEST", ok, ""] }
  g: { command: [g], aliases: live }
"#;
    let problems = problems(Config::from_yaml_str(functions, "", &env(&[])));
    assert_eq!(problems.len(), 5, "{problems:#?}");
    assert_eq!(
        find(&problems, "functions.f", "aliases[1]").to_string(),
        "functions.yml: functions.f: aliases[1]: \"12\" is not an alias name: 1 to 128 letters, digits, '-' or '_', not only digits"
    );
    find(&problems, "functions.f", "aliases[2]");
    assert_eq!(
        find(&problems, "functions.f", "aliases[3]").message,
        "alias \"ok\" is listed twice"
    );
    find(&problems, "functions.f", "aliases[4]");
    find(&problems, "functions.g", "aliases");

    let template = r#"
Resources:
  F:
    Type: AWS::Serverless::Function
    Properties: { PackageType: Image, ImageUri: f:latest, AutoPublishAlias: "a:b" }
"#;
    let problems = crate::problems(Config::from_sam_str(template, &env(&[])));
    find(&problems, "Resources.F", "AutoPublishAlias");
}
