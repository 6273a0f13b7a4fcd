//! The one place the gateway's tower stack is put together, outermost first:
//!
//! ```text
//! request ids + trace -> access log -> response metrics -> [embedder layers]
//!   -> answer (errors become responses) -> dispatch
//!        /health | /metrics | auth endpoint | Invoke API -----------------------.
//!        routes: cors -> route -> authorize -> body limit -> event --------------+
//!                               (Lambda authorizers invoke through the same path)
//!                                      invocation metrics -> deadline -> invocation service (the pool)
//! ```

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use esb_pool::{Invocation, PoolResponse};
use esb_router::{FunctionConfig, Router};
use http::{Request, Response};
use hyper::body::Incoming;
use tower::{Layer, Service, ServiceBuilder};

use crate::auth::Authenticator;
use crate::authorizers::Authorizers;
use crate::config::{GatewayConfig, InvokeApiAccess};
use crate::dispatch::{Dispatch, Services};
use crate::endpoints::{Login, MetricsText};
use crate::error::RequestError;
use crate::event_queue::EventQueue;
use crate::invoke_api::{InvokeApi, InvokeApiConfig};
use crate::layers::Body;
use crate::layers::access_log::{AccessLog, AccessLogLayer};
use crate::layers::answer::{Answer, AnswerLayer};
use crate::layers::authorize::{Authorize, AuthorizeLayer};
use crate::layers::cors::{Cors, CorsLayer};
use crate::layers::deadline::{Deadline, DeadlineLayer};
use crate::layers::event::{Event, EventLayer};
use crate::layers::invocations::{CountInvocations, CountInvocationsLayer};
use crate::layers::limit::{BodyLimit, BodyLimitLayer};
use crate::layers::request_id::{RequestId, RequestIdLayer};
use crate::layers::responses::{CountResponses, CountResponsesLayer};
use crate::layers::route::{Route, RouteLayer};
use crate::metrics::GatewayMetrics;

/// The invocation service with its metrics and deadline.
pub(crate) type Invoker<S> = CountInvocations<Deadline<S>>;

/// The routed path, from route selection to the invocation.
pub(crate) type Routes<S> = Cors<Route<Authorize<BodyLimit<Event<Invoker<S>>>, Invoker<S>>>>;

/// The gateway's own services: reserved paths and routes, errors answered.
pub(crate) type Core<S> = Answer<Dispatch<InvokeApi<Invoker<S>>, Routes<S>>>;

/// The layers around the embedder's.
pub(crate) type Outer<T> = RequestId<AccessLog<CountResponses<T>>>;

/// The whole request's deadline: queue wait + function timeout + margin.
fn function_deadline(f: &FunctionConfig, config: &GatewayConfig) -> Duration {
    crate::pool_config(f).acquire_timeout + f.timeout + config.limits.timeout_margin
}

/// The gateway's services over `invocations` (the pool), with `layers` between the outer
/// layers and the core; `Event` invocations of the Invoke API go through `events`.
pub(crate) fn stack<S, L>(
    config: &GatewayConfig,
    router: Router,
    metrics: Arc<GatewayMetrics>,
    events: Arc<EventQueue>,
    status: crate::status::Status,
    invocations: S,
    layers: ServiceBuilder<L>,
) -> Outer<L::Service>
where
    S: Service<Invocation, Response = PoolResponse> + Clone + Send + 'static,
    S::Error: Into<RequestError>,
    S::Future: Send + 'static,
    L: Layer<Core<S>>,
    L::Service: Service<Request<Incoming>, Response = Response<Body>, Error = Infallible>,
{
    let functions = config.functions.functions.values();
    let invoker = ServiceBuilder::new()
        .layer(CountInvocationsLayer::new(Arc::clone(&metrics)))
        .layer(DeadlineLayer::new(
            functions
                .clone()
                .map(|f| (f.name.clone(), function_deadline(f, config))),
        ))
        .service(invocations);
    let auth = Arc::new(Authenticator::new(&config.auth));
    let router = Arc::new(router);
    let cors = config.functions.routes.iter().any(|r| r.cors.is_some());
    let routes = ServiceBuilder::new()
        .layer(CorsLayer::new(Arc::clone(&router), cors))
        .layer(RouteLayer::new(router))
        .layer(AuthorizeLayer::new(
            Arc::clone(&auth),
            Arc::new(Authorizers::new(
                config.functions.authorizers.clone(),
                &config.region,
            )),
            invoker.clone(),
        ))
        .layer(BodyLimitLayer::new(config.limits.max_body_bytes))
        .layer(EventLayer)
        .service(invoker.clone());
    let invoke_api = (config.invoke_api != InvokeApiAccess::Off).then(|| {
        let api = InvokeApiConfig {
            auth: Arc::clone(&auth),
            region: config.region.clone(),
            access: config.invoke_api,
            memory_mb: functions
                .clone()
                .map(|f| (f.name.clone(), f.memory_size))
                .collect(),
            aliases: functions
                .filter(|f| !f.aliases.is_empty())
                .map(|f| (f.name.clone(), f.aliases.clone()))
                .collect(),
            max_body_bytes: config.limits.max_body_bytes,
            events,
            log_tail: config.log_tail.clone(),
        };
        InvokeApi::new(api, invoker)
    });
    let login = Login::new(auth, config.limits.max_body_bytes)
        .map(|login| (config.auth.endpoint_path.clone(), login));
    let dispatch = Dispatch::new(Services {
        metrics: MetricsText::new(Arc::clone(&metrics)),
        status,
        login,
        invoke_api,
        routes,
    });
    ServiceBuilder::new()
        .layer(RequestIdLayer)
        .layer(AccessLogLayer)
        .layer(CountResponsesLayer::new(metrics))
        .service(layers.layer(AnswerLayer).service(dispatch))
}
