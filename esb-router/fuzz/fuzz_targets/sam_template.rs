//! SAM template reading never panics, whatever the YAML and CloudFormation tags.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(config) = esb_router::Config::from_sam_str(text, &|_| None) {
        esb_router::Router::new(&config).expect("a loaded template builds a router");
    }
});
