//! A function's pool settings: what its configuration states, over the pool's defaults.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use esb_gateway::pool_config;
use esb_router::{Config, InvokeMode};

fn function(functions_yml: &str) -> esb_router::FunctionConfig {
    let config = Config::from_yaml_str(functions_yml, "routes: []", &|_| None).unwrap();
    config.functions["f"].clone()
}

#[test]
fn unset_scaling_takes_the_pool_defaults() {
    let config = pool_config(&function("functions: { f: { command: [./f] } }"));
    // The numbers the router's own defaults held before the pool became their one home.
    assert_eq!(config.max_capacity, 10);
    assert_eq!(config.min_capacity, 0);
    assert_eq!(config.idle_timeout, Duration::from_secs(300));
    assert_eq!(config.acquire_timeout, Duration::from_secs(5));
    assert_eq!(config.spec.invoke_mode, InvokeMode::RuntimeApi);
}

#[test]
fn stated_scaling_wins_field_by_field() {
    let config = pool_config(&function(
        "defaults: { scaling: { idle_timeout: 30 } }\n\
         functions: { f: { image: img, invoke: rie, scaling: { max_capacity: 3, acquire_timeout: 0.5 } } }",
    ));
    assert_eq!(config.max_capacity, 3);
    assert_eq!(config.min_capacity, 0);
    assert_eq!(config.idle_timeout, Duration::from_secs(30));
    assert_eq!(config.acquire_timeout, Duration::from_millis(500));
    assert_eq!(config.spec.invoke_mode, InvokeMode::Rie);
}

#[test]
fn check_rejects_a_min_capacity_over_the_default_max() {
    let yml = "functions: { f: { command: [./f], scaling: { min_capacity: 11 } } }";
    let functions = Config::from_yaml_str(yml, "routes: []", &|_| None).unwrap();
    let config = esb_gateway::GatewayConfig::new(functions, "127.0.0.1:0".parse().unwrap());
    let problems = config.validate(None).unwrap_err();
    let fields: Vec<&str> = problems.0.iter().map(|p| p.field.as_str()).collect();
    assert_eq!(fields, ["functions.f.scaling.min_capacity"]);
    assert!(problems.0[0].message.contains("over max_capacity 10"));
}

#[test]
fn breaker_settings_come_from_scaling_field_by_field() {
    let config = pool_config(&function("functions: { f: { command: [./f] } }"));
    assert_eq!(config.breaker, None, "unset: the pool's breaker applies");

    let config = pool_config(&function(
        "defaults: { scaling: { breaker_open_time: 7.5 } }\n\
         functions: { f: { command: [./f], scaling: { breaker_threshold: 0 } } }",
    ));
    let breaker = config.breaker.unwrap();
    assert_eq!(breaker.failure_threshold, 0);
    assert_eq!(breaker.recovery_time, Duration::from_millis(7500));

    let config = pool_config(&function(
        "functions: { f: { command: [./f], scaling: { breaker_threshold: 4 } } }",
    ));
    let breaker = config.breaker.unwrap();
    assert_eq!(breaker.failure_threshold, 4);
    assert_eq!(breaker.recovery_time, esb_pool::DEFAULT_RECOVERY_TIME);
}

#[test]
fn a_bad_breaker_setting_names_its_field() {
    let yml = "functions: { f: { command: [./f], scaling: { breaker_open_time: 0 } } }";
    let err = Config::from_yaml_str(yml, "routes: []", &|_| None).unwrap_err();
    assert!(
        err.to_string().contains("scaling.breaker_open_time"),
        "{err}"
    );
}
