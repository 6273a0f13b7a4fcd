//! The JSON status endpoints, as the earlier ESB had them: `GET /functions`, `/routes`,
//! `/metrics/pools` and `/metrics/containers`.

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::UNIX_EPOCH;

use esb_pool::Pool;
use esb_runtime::Runtime;
use http::{Method, Request, Response, StatusCode};
use serde_json::{Value, json};
use tower::Service;

use crate::config::GatewayConfig;
use crate::endpoints::{json, only};
use crate::error::RequestError;
use crate::layers::{Body, BoxFuture};

/// Which status a request asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Page {
    Functions,
    Routes,
    Pools,
    Containers,
}

impl Page {
    /// The page at `path`, if it is one.
    pub(crate) fn at(path: &str) -> Option<Self> {
        Some(match path {
            "/functions" => Page::Functions,
            "/routes" => Page::Routes,
            "/metrics/pools" => Page::Pools,
            "/metrics/containers" => Page::Containers,
            _ => return None,
        })
    }
}

/// Answers the status pages.
#[derive(Clone)]
pub(crate) struct Status {
    functions: Arc<String>,
    routes: Arc<String>,
    pool: Pool,
}

impl Status {
    /// The status of the functions and routes of `config`, pooled in `pool` (over the runtimes
    /// it has at each request: agents found later by DNS included, drained ones left out).
    pub(crate) fn new(config: &GatewayConfig, pool: Pool) -> Self {
        let functions: Vec<Value> = config
            .functions
            .functions
            .values()
            .map(|f| {
                let scaling = crate::pool_config(f);
                json!({
                    "name": f.name,
                    "image": f.image,
                    "command": f.command,
                    "timeout": f.timeout.as_secs_f64(),
                    "memory_size": f.memory_size,
                    "invoke": f.invoke.as_str(),
                    "payload_format": f.payload_format.to_string(),
                    // Names only: values may be secrets.
                    "environment": f.environment.keys().collect::<Vec<_>>(),
                    "aliases": f.aliases,
                    "scaling": {
                        "min_capacity": scaling.min_capacity,
                        "max_capacity": scaling.max_capacity,
                        "idle_timeout": scaling.idle_timeout.as_secs_f64(),
                        "acquire_timeout": scaling.acquire_timeout.as_secs_f64(),
                    },
                })
            })
            .collect();
        let routes: Vec<Value> = config
            .functions
            .routes
            .iter()
            .map(|r| {
                let auth = match &r.auth {
                    esb_router::Auth::Jwt => "jwt".to_owned(),
                    esb_router::Auth::None => "none".to_owned(),
                    esb_router::Auth::Lambda(name) => format!("lambda:{name}"),
                    #[allow(unreachable_patterns)]
                    _ => "other".to_owned(),
                };
                json!({
                    "path": r.path.to_string(),
                    "method": r.method.to_string(),
                    "function": r.function,
                    "auth": auth,
                    "payload_format": r.payload_format.map(|p| p.to_string()),
                    "cors": r.cors.is_some(),
                })
            })
            .collect();
        Self {
            functions: Arc::new(json!({ "functions": functions }).to_string()),
            routes: Arc::new(json!({ "routes": routes }).to_string()),
            pool,
        }
    }

    fn pools(&self) -> String {
        let pools: Vec<Value> = self
            .pool
            .functions()
            .into_iter()
            .filter_map(|name| {
                let stats = self.pool.stats(&name).ok()?;
                let config = self.pool.function_config(&name).ok()?;
                Some(json!({
                    "function": name,
                    "total": stats.total(),
                    "idle": stats.idle,
                    "paused": stats.paused,
                    "busy": stats.busy,
                    "creating": stats.creating,
                    "destroying": stats.destroying,
                    "waiting": stats.waiting,
                    "min_capacity": config.min_capacity,
                    "max_capacity": config.max_capacity,
                    "breaker": format!("{:?}", stats.breaker).to_lowercase(),
                }))
            })
            .collect();
        json!({ "pools": pools }).to_string()
    }

    /// The pool's runtimes now, with their index: drained ones (draining, no sandbox left)
    /// are left out.
    fn runtimes(pool: &Pool) -> Vec<(usize, Arc<dyn Runtime>)> {
        pool.runtimes()
            .into_iter()
            .filter(|r| !(r.draining && r.sandboxes == 0))
            .filter_map(|r| Some((r.index, pool.runtime(r.index)?)))
            .collect()
    }

    async fn containers(runtimes: Vec<(usize, Arc<dyn Runtime>)>) -> String {
        let mut containers = Vec::new();
        let mut errors = Vec::new();
        for (index, runtime) in runtimes {
            let backend = runtime.capabilities().backend;
            let name = runtime.name();
            let listed = match runtime.list().await {
                Ok(listed) => listed,
                Err(err) => {
                    errors.push(
                        json!({ "runtime": index, "name": name, "backend": backend, "error": err.to_string() }),
                    );
                    continue;
                }
            };
            for info in listed {
                let metrics = runtime.metrics(&info.id).await.ok();
                let created = info
                    .created_at
                    .duration_since(UNIX_EPOCH)
                    .map_or(0.0, |d| d.as_secs_f64());
                containers.push(json!({
                    "id": info.id.as_str(),
                    "function": info.function_name,
                    "state": format!("{:?}", info.state).to_lowercase(),
                    "created_at": created,
                    "runtime": index,
                    "runtime_name": name,
                    "backend": backend,
                    "memory_current_bytes": metrics.as_ref().map(|m| m.memory_current_bytes),
                    "memory_max_bytes": metrics.as_ref().map(|m| m.memory_max_bytes),
                    "cpu_usage_ns": metrics.as_ref().map(|m| m.cpu_usage_ns),
                    "pids": metrics.as_ref().map(|m| m.pids),
                }));
            }
        }
        json!({ "containers": containers, "errors": errors }).to_string()
    }

    /// The service answering `page`.
    pub(crate) fn page(&self, page: Page) -> StatusPage {
        StatusPage {
            status: self.clone(),
            page,
        }
    }
}

/// One status page as a service.
pub(crate) struct StatusPage {
    status: Status,
    page: Page,
}

impl<B> Service<Request<B>> for StatusPage {
    type Response = Response<Body>;
    type Error = RequestError;
    type Future = BoxFuture<Result<Response<Body>, RequestError>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        if let Err(err) = only(&req, &[Method::GET]) {
            return Box::pin(async move { Err(err) });
        }
        let status = &self.status;
        match self.page {
            Page::Functions => {
                let body = status.functions.as_str().to_owned();
                Box::pin(async move { Ok(json(StatusCode::OK, body)) })
            }
            Page::Routes => {
                let body = status.routes.as_str().to_owned();
                Box::pin(async move { Ok(json(StatusCode::OK, body)) })
            }
            Page::Pools => {
                let body = status.pools();
                Box::pin(async move { Ok(json(StatusCode::OK, body)) })
            }
            Page::Containers => {
                let runtimes = Status::runtimes(&status.pool);
                Box::pin(
                    async move { Ok(json(StatusCode::OK, Status::containers(runtimes).await)) },
                )
            }
        }
    }
}
