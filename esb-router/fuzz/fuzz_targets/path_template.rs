//! Path template parsing never panics, printing a parsed template is a fixed point, and
//! matching any path against it never panics.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    // Template, then a NUL, then a request path to match against it.
    let (template, path) = text.split_once('\0').unwrap_or((text, text));
    let Ok(parsed) = esb_router::PathTemplate::parse(template) else { return };
    let again = esb_router::PathTemplate::parse(parsed.as_str()).expect("a printed template parses");
    assert_eq!(again, parsed);

    let mut function = esb_router::FunctionConfig::new("f");
    function.command = Some(vec!["f".into()]);
    let mut config = esb_router::Config::default();
    config.functions.insert("f".into(), function);
    config.routes.push(
        esb_router::RouteConfig::new(parsed, esb_router::RouteMethod::Any, "f")
            .auth(esb_router::Auth::None),
    );
    let router = esb_router::Router::new(&config).expect("one route builds a router");
    let _ = router.select(&http::Method::GET, path);
});
