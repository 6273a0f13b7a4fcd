//! functions.yml + routing.yml parsing and validation never panic, and a config that loads
//! always builds a router.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    // The input holds both files, separated by a NUL; a missing separator means no routes.
    let (functions, routing) = text.split_once('\0').unwrap_or((text, ""));
    let env = |name: &str| (name.len() % 2 == 0).then(|| format!("v-{name}"));
    if let Ok(config) = esb_router::Config::from_yaml_str(functions, routing, &env) {
        let router = esb_router::Router::new(&config).expect("a loaded config builds a router");
        for route in &config.routes {
            let _ = router.select(&http::Method::GET, route.path.as_str());
        }
    }
});
