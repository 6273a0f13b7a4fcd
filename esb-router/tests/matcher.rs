//! The route matcher: precedence, methods, decoding, greedy parameters, trailing slashes.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use esb_router::{Auth, Config, Error, Match, NoRoute, PayloadFormat, Router};
use http::Method;

fn router(routes: &[(&str, &str, &str)]) -> Router {
    let mut routing = String::from("routes:\n");
    for (method, path, function) in routes {
        routing.push_str(&format!(
            "  - {{ path: \"{path}\", method: {method}, function: {function} }}\n"
        ));
    }
    let functions = "functions:\n  a: { command: [a] }\n  b: { command: [b], payload_format: \"2.0\" }\n  c: { command: [c] }\n";
    let config = Config::from_yaml_str(functions, &routing, &|_| None).unwrap();
    Router::new(&config).unwrap()
}

fn select(router: &Router, method: Method, path: &str) -> Match {
    router
        .select(&method, path)
        .unwrap_or_else(|e| panic!("{method} {path}: {e:?}"))
}

fn params(m: &Match) -> Vec<(&str, &str)> {
    m.path_parameters
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect()
}

#[test]
fn literal_beats_param_beats_greedy_whatever_the_file_order() {
    let r = router(&[
        ("GET", "/items/{proxy+}", "c"),
        ("GET", "/items/{id}", "b"),
        ("GET", "/items/special", "a"),
    ]);
    assert_eq!(&*select(&r, Method::GET, "/items/special").function, "a");
    let m = select(&r, Method::GET, "/items/42");
    assert_eq!((&*m.function, &*m.resource), ("b", "/items/{id}"));
    assert_eq!(params(&m), [("id", "42")]);
    let m = select(&r, Method::GET, "/items/42/parts/7");
    assert_eq!((&*m.function, &*m.resource), ("c", "/items/{proxy+}"));
    assert_eq!(params(&m), [("proxy", "42/parts/7")]);
}

#[test]
fn a_failed_specific_branch_falls_back_to_a_less_specific_one() {
    let r = router(&[
        ("GET", "/a/b/c", "a"),
        ("GET", "/a/{x}/d", "b"),
        ("GET", "/{proxy+}", "c"),
    ]);
    assert_eq!(&*select(&r, Method::GET, "/a/b/c").function, "a");
    let m = select(&r, Method::GET, "/a/b/d");
    assert_eq!(&*m.function, "b");
    assert_eq!(params(&m), [("x", "b")]);
    assert_eq!(&*select(&r, Method::GET, "/a/b/e").function, "c");
}

#[test]
fn any_matches_every_method_and_a_specific_method_wins() {
    let r = router(&[("ANY", "/items/{id}", "a"), ("DELETE", "/items/{id}", "b")]);
    for method in [
        Method::GET,
        Method::POST,
        Method::PUT,
        Method::PATCH,
        Method::OPTIONS,
    ] {
        let m = select(&r, method, "/items/1");
        assert_eq!((&*m.function, &*m.route_key), ("a", "ANY /items/{id}"));
    }
    let m = select(&r, Method::DELETE, "/items/1");
    assert_eq!((&*m.function, &*m.route_key), ("b", "DELETE /items/{id}"));
}

#[test]
fn method_mismatch_is_405_with_allowed_methods_and_no_path_is_404() {
    let r = router(&[
        ("GET", "/items/{id}", "a"),
        ("PUT", "/items/{id}", "a"),
        ("POST", "/items/new", "b"),
    ]);
    assert_eq!(
        r.select(&Method::DELETE, "/items/new"),
        Err(NoRoute::MethodNotAllowed {
            allowed: vec![Method::GET, Method::POST, Method::PUT]
        })
    );
    // The method exists on a less specific template: that one is selected.
    assert_eq!(&*select(&r, Method::GET, "/items/new").function, "a");
    assert_eq!(r.select(&Method::GET, "/items"), Err(NoRoute::NotFound));
    assert_eq!(r.select(&Method::GET, "/other/1"), Err(NoRoute::NotFound));
    assert_eq!(
        r.select(&Method::GET, "/items/1/more"),
        Err(NoRoute::NotFound)
    );
}

#[test]
fn path_parameters_and_literals_are_percent_decoded() {
    let r = router(&[
        ("GET", "/files/{name}", "a"),
        ("GET", "/café", "b"),
        ("GET", "/g/{p+}", "c"),
    ]);
    assert_eq!(
        params(&select(&r, Method::GET, "/files/a%20b%2Fc")),
        [("name", "a b/c")]
    );
    assert_eq!(
        params(&select(&r, Method::GET, "/files/%E3%81%82")),
        [("name", "あ")]
    );
    assert_eq!(&*select(&r, Method::GET, "/caf%C3%A9").function, "b");
    assert_eq!(
        params(&select(&r, Method::GET, "/g/x%2Fy/z%3F")),
        [("p", "x/y/z?")]
    );
}

#[test]
fn greedy_needs_at_least_one_segment_and_keeps_a_trailing_slash() {
    let r = router(&[("GET", "/files/{proxy+}", "a")]);
    assert_eq!(r.select(&Method::GET, "/files"), Err(NoRoute::NotFound));
    assert_eq!(r.select(&Method::GET, "/files/"), Err(NoRoute::NotFound));
    assert_eq!(
        params(&select(&r, Method::GET, "/files/a/")),
        [("proxy", "a/")]
    );
    assert_eq!(
        params(&select(&r, Method::GET, "/files/a//b")),
        [("proxy", "a//b")]
    );
}

#[test]
fn a_trailing_slash_is_ignored_and_empty_segments_match_nothing() {
    let r = router(&[
        ("GET", "/", "a"),
        ("GET", "/items", "b"),
        ("GET", "/items/{id}/parts", "c"),
    ]);
    assert_eq!(&*select(&r, Method::GET, "/").function, "a");
    assert_eq!(&*select(&r, Method::GET, "/items").function, "b");
    assert_eq!(&*select(&r, Method::GET, "/items/").function, "b");
    assert_eq!(&*select(&r, Method::GET, "/items/1/parts/").function, "c");
    assert_eq!(
        r.select(&Method::GET, "/items//parts"),
        Err(NoRoute::NotFound)
    );
    assert_eq!(r.select(&Method::GET, "/items//"), Err(NoRoute::NotFound));
}

#[test]
fn payload_format_comes_from_the_route_else_the_function_and_auth_from_the_route() {
    let functions = "functions:\n  v2fn: { command: [x], payload_format: \"2.0\" }\n";
    let routing = r#"
routes:
  - { path: "/default", method: GET, function: v2fn }
  - { path: "/override", method: GET, function: v2fn, payload_format: "1.0", auth: none }
"#;
    let r = Router::new(&Config::from_yaml_str(functions, routing, &|_| None).unwrap()).unwrap();
    let m = select(&r, Method::GET, "/default");
    assert_eq!((m.payload_format, m.auth), (PayloadFormat::V2, Auth::Jwt));
    let m = select(&r, Method::GET, "/override");
    assert_eq!((m.payload_format, m.auth), (PayloadFormat::V1, Auth::None));
}

#[test]
fn router_rejects_hand_built_configs_with_unknown_functions_or_duplicates() {
    let mut config = Config::from_yaml_str(
        "functions:\n  a: { command: [a] }\n",
        "routes:\n  - { path: \"/x/{id}\", method: GET, function: a }\n",
        &|_| None,
    )
    .unwrap();
    let mut duplicate = config.routes[0].clone();
    duplicate.path = "/x/{other}".parse().unwrap();
    config.routes.push(duplicate);
    let mut ghost = config.routes[0].clone();
    ghost.function = "ghost".into();
    ghost.path = "/y".parse().unwrap();
    config.routes.push(ghost);
    match Router::new(&config) {
        Err(Error::Invalid(problems)) => {
            let text: Vec<String> = problems.iter().map(ToString::to_string).collect();
            assert_eq!(text.len(), 2, "{text:#?}");
            assert!(text[0].contains("duplicate route"));
            assert!(text[1].contains("unknown function \"ghost\""));
        }
        other => panic!("expected problems, got {other:?}"),
    }
}
