//! Route matching against 1,000 routes.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::Duration;

use criterion::{Bencher, Criterion, criterion_group, criterion_main};
use esb_router::{Auth, Config, FunctionConfig, PathTemplate, RouteConfig, RouteMethod, Router};
use http::Method;
use nix::time::{ClockId, clock_gettime};

/// 1,000 routes over 100 services: literals, parameters, nested parameters and a greedy catch-all.
fn thousand_routes() -> Config {
    let mut functions = BTreeMap::new();
    let mut routes = Vec::new();
    for service in 0..100 {
        let name = format!("fn-{service}");
        let mut function = FunctionConfig::new(&name);
        function.command = Some(vec!["./fn".into()]);
        functions.insert(name.clone(), function);
        let templates = [
            ("GET", format!("/svc{service}/items")),
            ("POST", format!("/svc{service}/items")),
            ("GET", format!("/svc{service}/items/{{id}}")),
            ("PUT", format!("/svc{service}/items/{{id}}")),
            ("DELETE", format!("/svc{service}/items/{{id}}")),
            ("GET", format!("/svc{service}/items/{{id}}/parts")),
            ("GET", format!("/svc{service}/items/{{id}}/parts/{{part}}")),
            (
                "GET",
                format!("/svc{service}/users/{{user}}/orders/{{order}}"),
            ),
            ("GET", format!("/svc{service}/health")),
            ("ANY", format!("/svc{service}/files/{{proxy+}}")),
        ];
        for (method, path) in templates {
            routes.push(
                RouteConfig::new(
                    PathTemplate::parse(&path).unwrap(),
                    method.parse::<RouteMethod>().unwrap(),
                    &name,
                )
                .auth(Auth::Jwt),
            );
        }
    }
    Config::new(functions, routes)
}

/// Times `f` by the benchmarking thread's CPU time (`CLOCK_THREAD_CPUTIME_ID`), so that other
/// processes on a shared machine do not inflate the figures; `ESB_BENCH_WALL=1` uses wall time.
fn timed<R>(b: &mut Bencher<'_>, mut f: impl FnMut() -> R) {
    fn now() -> Option<Duration> {
        clock_gettime(ClockId::CLOCK_THREAD_CPUTIME_ID)
            .ok()
            .map(Duration::from)
    }
    if std::env::var_os("ESB_BENCH_WALL").is_some() || now().is_none() {
        b.iter(f);
        return;
    }
    b.iter_custom(|iters| {
        let start = now().unwrap();
        for _ in 0..iters {
            black_box(f());
        }
        now().unwrap() - start
    });
}

fn bench(c: &mut Criterion) {
    let config = thousand_routes();
    let router = Router::new(&config).unwrap();
    assert_eq!(router.len(), 1000);
    let mut group = c.benchmark_group("select_1000_routes");
    let cases = [
        ("literal", Method::GET, "/svc57/health"),
        ("param", Method::GET, "/svc57/items/12345"),
        ("two_params", Method::GET, "/svc57/users/u-1/orders/o%2F9"),
        ("greedy", Method::POST, "/svc57/files/a/b/c.txt"),
        ("not_found", Method::GET, "/nowhere/at/all"),
        ("method_not_allowed", Method::PATCH, "/svc57/items/1"),
    ];
    for (name, method, path) in cases {
        group.bench_function(name, |b| {
            timed(b, || router.select(black_box(&method), black_box(path)))
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
