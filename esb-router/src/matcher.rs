//! The route matcher: a pure, synchronous function of a method and a path.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

use http::Method;
use percent_encoding::percent_decode_str;

use crate::fields::check_routes;
use crate::template::Segment;
use crate::{Auth, Config, CorsConfig, Error, PayloadFormat, RouteMethod};

/// Selects the route of a request, with API Gateway's precedence.
///
/// - At each segment a literal beats `{param}`, which beats `{proxy+}`, whatever the file
///   order; when the more specific branch fails deeper down, the next one is tried.
/// - A route with a method beats an `ANY` route on the same template; `ANY` takes every method.
/// - Literal segments are compared after percent-decoding; path parameters are percent-decoded
///   (`%2F` stays a `/` inside one parameter).
/// - `{param}` takes one non-empty segment; `{proxy+}` takes one or more, slashes included.
/// - Trailing slash: a single trailing slash is ignored for matching (`/items/` matches
///   `/items`), but a greedy parameter keeps it in its value (`/files/a/` gives `proxy = "a/"`).
///   Empty segments (`//`) match nothing but a greedy parameter.
#[derive(Clone, Debug, Default)]
pub struct Router {
    root: Node,
    routes: Vec<Route>,
}

#[derive(Clone, Debug)]
struct Route {
    function: Arc<str>,
    resource: Arc<str>,
    route_key: Arc<str>,
    segments: Vec<Segment>,
    payload_format: PayloadFormat,
    auth: Auth,
    cors: Option<Arc<CorsConfig>>,
}

/// FNV-1a: literal segments are short, and SipHash's setup would dominate a lookup.
#[derive(Clone, Copy, Debug)]
struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
}

#[derive(Clone, Debug, Default)]
struct Node {
    literals: HashMap<Box<str>, Node, BuildHasherDefault<Fnv>>,
    param: Option<Box<Node>>,
    greedy: Option<Endpoint>,
    endpoint: Option<Endpoint>,
}

/// Routes ending at one template: by method, and the `ANY` route.
#[derive(Clone, Debug, Default)]
struct Endpoint {
    methods: Vec<(Method, usize)>,
    any: Option<usize>,
}

impl Endpoint {
    fn select(&self, method: &Method) -> Option<usize> {
        self.methods
            .iter()
            .find(|(m, _)| m == method)
            .map(|(_, i)| *i)
            .or(self.any)
    }
}

/// The selected route and what was captured from the path.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Match {
    /// The function to invoke.
    pub function: Arc<str>,
    /// The route's path template (`resource` in v1 events).
    pub resource: Arc<str>,
    /// `METHOD /template`, with `ANY` for an `ANY` route (`routeKey` in v2 events).
    pub route_key: Arc<str>,
    /// Percent-decoded path parameters by name.
    pub path_parameters: BTreeMap<String, String>,
    /// The event format: the route's, else the function's.
    pub payload_format: PayloadFormat,
    /// How the route authorizes requests.
    pub auth: Auth,
    /// The CORS of the route's API, if it has one.
    pub cors: Option<Arc<CorsConfig>>,
}

/// Why no route was selected.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum NoRoute {
    /// No template matches the path (404).
    NotFound,
    /// Templates match the path, but none for this method (405).
    MethodNotAllowed {
        /// The methods that would be accepted on this path, sorted.
        allowed: Vec<Method>,
    },
}

impl Router {
    /// Builds the matcher from the routes of `config`.
    ///
    /// Fails when a route names a function `config` does not have, or two routes have the
    /// same method and template shape (`/a/{x}` and `/a/{y}` are the same shape).
    pub fn new(config: &Config) -> Result<Self, Error> {
        let labels: Vec<String> = config
            .routes
            .iter()
            .map(|r| format!("{} {}", r.method, r.path))
            .collect();
        let mut problems = Vec::new();
        check_routes(config, &labels, "routes", &mut problems);
        if !problems.is_empty() {
            return Err(Error::Invalid(problems));
        }
        let mut router = Router::default();
        for route in &config.routes {
            let Some(function) = config.functions.get(&route.function) else {
                continue;
            };
            let index = router.routes.len();
            let resource: Arc<str> = Arc::from(route.path.as_str());
            router.routes.push(Route {
                function: Arc::from(function.name.as_str()),
                route_key: Arc::from(format!("{} {}", route.method, resource)),
                resource,
                segments: route.path.segments().to_vec(),
                payload_format: route.payload_format.unwrap_or(function.payload_format),
                auth: route.auth.clone(),
                cors: route.cors.clone(),
            });
            let mut node = &mut router.root;
            let mut endpoint = None;
            for segment in route.path.segments() {
                match segment {
                    Segment::Literal(literal) => {
                        node = node.literals.entry(literal.as_str().into()).or_default();
                    }
                    Segment::Param(_) => node = node.param.get_or_insert_with(Box::default),
                    Segment::Greedy(_) => {
                        endpoint = Some(node.greedy.get_or_insert_with(Endpoint::default))
                    }
                }
            }
            let endpoint = match endpoint {
                Some(endpoint) => endpoint,
                None => node.endpoint.get_or_insert_with(Endpoint::default),
            };
            match &route.method {
                RouteMethod::Any => endpoint.any = Some(index),
                RouteMethod::Method(m) => endpoint.methods.push((m.clone(), index)),
            }
        }
        Ok(router)
    }

    /// The number of routes.
    pub fn len(&self) -> usize {
        self.routes.len()
    }

    /// Whether there are no routes.
    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    /// Selects the route for `method` and `path` (the path alone, without the query string).
    pub fn select(&self, method: &Method, path: &str) -> Result<Match, NoRoute> {
        let Some(rest) = path.strip_prefix('/') else {
            return Err(NoRoute::NotFound);
        };
        let mut search = Search {
            method,
            allowed: Vec::new(),
        };
        match search.node(&self.root, rest) {
            Some(index) => Ok(self.build(&self.routes[index], rest)),
            None if search.allowed.is_empty() => Err(NoRoute::NotFound),
            None => {
                let mut allowed = search.allowed;
                allowed.sort_by(|a, b| a.as_str().cmp(b.as_str()));
                allowed.dedup();
                Err(NoRoute::MethodNotAllowed { allowed })
            }
        }
    }

    /// Builds the match of `route`, whose template is known to match `rest`.
    fn build(&self, route: &Route, mut rest: &str) -> Match {
        let mut path_parameters = BTreeMap::new();
        for segment in &route.segments {
            let (value, next) = rest.split_once('/').unwrap_or((rest, ""));
            match segment {
                Segment::Literal(_) => {}
                Segment::Param(name) => {
                    path_parameters.insert(name.clone(), decode(value).into_owned());
                }
                Segment::Greedy(name) => {
                    path_parameters.insert(name.clone(), decode(rest).into_owned());
                }
            }
            rest = next;
        }
        Match {
            function: route.function.clone(),
            resource: route.resource.clone(),
            route_key: route.route_key.clone(),
            path_parameters,
            payload_format: route.payload_format,
            auth: route.auth.clone(),
            cors: route.cors.clone(),
        }
    }
}

struct Search<'m> {
    method: &'m Method,
    allowed: Vec<Method>,
}

impl Search<'_> {
    /// Depth-first in precedence order: literal, then `{param}`, then `{proxy+}`.
    fn node(&mut self, node: &Node, rest: &str) -> Option<usize> {
        if rest.is_empty() {
            return self.endpoint(node.endpoint.as_ref());
        }
        let (segment, next) = rest.split_once('/').unwrap_or((rest, ""));
        if !node.literals.is_empty()
            && let Some(child) = node.literals.get(decode(segment).as_ref())
            && let Some(found) = self.node(child, next)
        {
            return Some(found);
        }
        if let Some(child) = &node.param
            && !segment.is_empty()
            && let Some(found) = self.node(child, next)
        {
            return Some(found);
        }
        if rest != "/" {
            return self.endpoint(node.greedy.as_ref());
        }
        None
    }

    fn endpoint(&mut self, endpoint: Option<&Endpoint>) -> Option<usize> {
        let endpoint = endpoint?;
        let found = endpoint.select(self.method);
        if found.is_none() {
            self.allowed
                .extend(endpoint.methods.iter().map(|(m, _)| m.clone()));
        }
        found
    }
}

fn decode(raw: &str) -> Cow<'_, str> {
    if raw.contains('%') {
        percent_decode_str(raw).decode_utf8_lossy()
    } else {
        Cow::Borrowed(raw)
    }
}
