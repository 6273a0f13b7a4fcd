//! Properties of the matcher over generated templates and paths.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use esb_router::{Config, FunctionConfig, PathTemplate, RouteConfig, RouteMethod, Router, Segment};
use http::Method;
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use proptest::prelude::*;

/// A template segment and the raw value a request puts there.
#[derive(Clone, Debug)]
enum Part {
    Literal(String),
    Param(String),
    Greedy(Vec<String>),
}

fn literal() -> impl Strategy<Value = String> {
    "[a-z0-9_.~-]{1,8}"
}

/// Any non-empty text, including '/', '%', spaces and non-ASCII.
fn value() -> impl Strategy<Value = String> {
    ".{1,6}".prop_filter("non-empty", |s| !s.is_empty())
}

fn parts() -> impl Strategy<Value = Vec<Part>> {
    let middle = prop_oneof![
        literal().prop_map(Part::Literal),
        value().prop_map(Part::Param),
    ];
    (
        prop::collection::vec(middle, 0..6),
        prop::option::of(prop::collection::vec(value(), 1..4)),
    )
        .prop_map(|(mut parts, greedy)| {
            parts.extend(greedy.map(Part::Greedy));
            parts
        })
}

fn template_and_path(parts: &[Part]) -> (String, String) {
    let mut template = String::new();
    let mut path = String::new();
    for (i, part) in parts.iter().enumerate() {
        template.push('/');
        path.push('/');
        match part {
            Part::Literal(l) => {
                template.push_str(l);
                path.push_str(l);
            }
            Part::Param(v) => {
                template.push_str(&format!("{{p{i}}}"));
                path.push_str(&utf8_percent_encode(v, NON_ALPHANUMERIC).to_string());
            }
            Part::Greedy(values) => {
                template.push_str(&format!("{{p{i}+}}"));
                let encoded: Vec<String> = values
                    .iter()
                    .map(|v| utf8_percent_encode(v, NON_ALPHANUMERIC).to_string())
                    .collect();
                path.push_str(&encoded.join("/"));
            }
        }
    }
    if template.is_empty() {
        template.push('/');
        path.push('/');
    }
    (template, path)
}

fn router(templates: &[(&str, &str)]) -> Router {
    let mut config = Config::default();
    for (template, function) in templates {
        let mut f = FunctionConfig::new(*function);
        f.command = Some(vec!["x".into()]);
        config.functions.insert((*function).to_owned(), f);
        config.routes.push(RouteConfig::new(
            PathTemplate::parse(template).unwrap(),
            RouteMethod::Method(Method::GET),
            *function,
        ));
    }
    Router::new(&config).unwrap()
}

proptest! {
    /// A path generated from a template matches it, and gives back every parameter's value.
    #[test]
    fn generated_path_matches_its_template(parts in parts()) {
        let (template, path) = template_and_path(&parts);
        let r = router(&[(&template, "f")]);
        let m = r.select(&Method::GET, &path).unwrap();
        prop_assert_eq!(&*m.resource, template.as_str());
        for (i, part) in parts.iter().enumerate() {
            let name = format!("p{i}");
            match part {
                Part::Literal(_) => prop_assert!(!m.path_parameters.contains_key(&name)),
                Part::Param(v) => prop_assert_eq!(&m.path_parameters[&name], v),
                Part::Greedy(values) => prop_assert_eq!(&m.path_parameters[&name], &values.join("/")),
            }
        }
    }

    /// With a literal, a parameter and a greedy template competing for the same position,
    /// the literal wins on its own text, the parameter on any other single segment, and the
    /// greedy template on anything longer.
    #[test]
    fn precedence_holds(prefix in prop::collection::vec(literal(), 0..3), lit in literal(), other in value(), extra in value()) {
        prop_assume!(other != lit);
        let base: String = prefix.iter().map(|p| format!("/{p}")).collect();
        let r = router(&[
            (&format!("{base}/{{proxy+}}"), "greedy"),
            (&format!("{base}/{{id}}"), "param"),
            (&format!("{base}/{lit}"), "literal"),
        ]);
        let enc = |s: &str| utf8_percent_encode(s, NON_ALPHANUMERIC).to_string();
        prop_assert_eq!(&*r.select(&Method::GET, &format!("{base}/{lit}")).unwrap().function, "literal");
        let m = r.select(&Method::GET, &format!("{base}/{}", enc(&other))).unwrap();
        prop_assert_eq!(&*m.function, "param");
        prop_assert_eq!(&m.path_parameters["id"], &other);
        let m = r.select(&Method::GET, &format!("{base}/{lit}/{}", enc(&extra))).unwrap();
        prop_assert_eq!(&*m.function, "greedy");
        prop_assert_eq!(&m.path_parameters["proxy"], &format!("{lit}/{extra}"));
    }

    /// Parsing a template and printing it is a fixed point.
    #[test]
    fn template_round_trips(parts in parts()) {
        let (template, _) = template_and_path(&parts);
        let parsed = PathTemplate::parse(&template).unwrap();
        prop_assert_eq!(parsed.as_str(), template.as_str());
        prop_assert_eq!(PathTemplate::parse(parsed.as_str()).unwrap(), parsed.clone());
        let greedy = parsed.segments().iter().filter(|s| matches!(s, Segment::Greedy(_))).count();
        prop_assert!(greedy <= 1);
    }
}
