//! `functions.yml`, `routing.yml` and SAM template loading, and the API Gateway route matcher.
//!
//! ```
//! use esb_router::{Config, NoRoute, Router};
//!
//! let functions = r#"
//! defaults:
//!   environment: { LOG_LEVEL: "${LOG_LEVEL:-info}" }
//! functions:
//!   items: { command: ["./items-fn"], timeout: 10 }
//! "#;
//! let routing = r#"
//! routes:
//!   - { path: "/items/{id}", method: GET, function: items }
//!   - { path: "/items/new", method: POST, function: items, auth: none }
//! "#;
//! let config = Config::from_yaml_str(functions, routing, &|_| None)?;
//! assert_eq!(config.functions["items"].environment["LOG_LEVEL"], "info");
//!
//! let router = Router::new(&config)?;
//! let found = router.select(&http::Method::GET, "/items/a%20b").unwrap();
//! assert_eq!(&*found.resource, "/items/{id}");
//! assert_eq!(found.path_parameters["id"], "a b");
//! assert!(matches!(
//!     router.select(&http::Method::DELETE, "/items/new"),
//!     Err(NoRoute::MethodNotAllowed { .. })
//! ));
//! # Ok::<(), esb_router::Error>(())
//! ```
//!
//! Libraries never read the process environment: `${VAR}` substitution and SAM `!Ref`
//! parameters are resolved through the lookup the caller passes in, such as
//! `&|name| std::env::var(name).ok()`.
//!
//! # Defaults
//!
//! As AWS Lambda: timeout 3 s (1..=900), memory 128 MB (128..=10240), payload format 1.0,
//! invoke mode `runtime-api`. Scaling keeps only what the files say ([`Scaling`] fields are
//! `None` otherwise); the pool's defaults (`esb_pool::FunctionPoolConfig::new`) fill the rest.
//! Routes need a JWT unless they say `auth: none` or name a Lambda authorizer of
//! `routing.yml`'s `authorizers` ([`AuthorizerConfig`]); a `cors` section gives every route
//! a [`CorsConfig`]. SAM templates give both per API (`Auth.Authorizers`, `Cors`,
//! `CorsConfiguration`).
//! In `functions.yml`, `defaults` may set `environment` and `scaling` (merged key by key
//! under each function's) and `timeout`, `memory_size`, `invoke`, `payload_format`,
//! `event_invoke` (merged field by field).
//!
//! Aliases: `aliases: [live]` in `functions.yml`, `AutoPublishAlias: live` in SAM
//! ([`FunctionConfig::aliases`]); names of 1 to 128 letters, digits, `-` or `_`, not only
//! digits.
//!
//! Asynchronous invocations ([`EventInvoke`], Lambda's defaults: 2 retries, 6 hours):
//! `event_invoke: { maximum_retry_attempts: 1, maximum_event_age: 120 }` in `functions.yml`
//! (seconds), `EventInvokeConfig: { MaximumRetryAttempts: 1, MaximumEventAgeInSeconds: 120 }`
//! in a SAM function or `Globals.Function`; out-of-range values (0..=2, 60..=21600) are
//! problems naming the field.
//!
//! # Fuzzing
//!
//! `fuzz/` holds cargo-fuzz targets for configuration and path template parsing; see
//! `fuzz/README.md`.

mod config;
mod error;
mod fields;
mod files;
mod matcher;
mod resources;
mod sam;
mod sam_api;
mod schedule;
mod services;
mod subst;
mod template;
mod yaml;

pub use config::{
    ApiKind, Auth, AuthorizerConfig, AuthorizerType, Config, CorsConfig, DEFAULT_AUTHORIZER_TTL,
    DEFAULT_MEMORY_SIZE, DEFAULT_TIMEOUT, EventInvoke, FunctionConfig, IdentitySource, ImageConfig,
    MAXIMUM_EVENT_AGE_RANGE_SECS, MAXIMUM_RETRY_ATTEMPTS_RANGE, MEMORY_SIZE_RANGE, PayloadFormat,
    RouteConfig, RouteMethod, Scaling, ScheduleConfig, TIMEOUT_RANGE_SECS, ZipPackage,
};
pub use error::{Error, Problem};
/// How invocations reach a function's sandbox: the runtime's own type, re-exported.
pub use esb_runtime::InvokeMode;
pub use matcher::{Match, NoRoute, Router};
pub use resources::{
    AttributeDefinition, BillingMode, BucketResource, CorsRule, DEFAULT_ACCOUNT_ID, DEFAULT_REGION,
    KeyElement, KeyType, LifecycleRule, Resources, SecondaryIndex, StreamViewType, TableResource,
    Throughput,
};
pub use schedule::{Cron, ScheduleExpression};
pub use services::{
    DEFAULT_HEALTH_INTERVAL, DEFAULT_HEALTH_TIMEOUT, Endpoint, EndpointError, HealthCheck,
    ServiceConfig, Services,
};
pub use template::{PathTemplate, Segment};
