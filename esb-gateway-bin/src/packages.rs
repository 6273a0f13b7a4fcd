//! Zip functions (`runtime` + `handler` + `code`) turned into what a backend starts.

use esb_router::Config;
use esb_runtime::Capabilities;
use esb_runtime::managed::{Managed, ZipFunction};

use crate::error::{Problem, Problems};

/// Variables of Lambda's bootstrap that a function's own `environment` cannot replace
/// (Lambda reserves them).
const RESERVED: [&str; 4] = [
    "_HANDLER",
    "LAMBDA_TASK_ROOT",
    "LAMBDA_RUNTIME_DIR",
    "AWS_EXECUTION_ENV",
];

/// Prepares every zip function of `config` for `backend` (`None`: remote agents, which
/// run them as this host's process backend would): extracts code, merges layers, checks
/// the runtime's interpreter and client, and sets the function's command and Lambda's
/// bootstrap environment under its own.
///
/// A function whose runtime cannot run here is a problem naming it, its runtime and how to
/// install what is missing, at start-up rather than at its first request.
pub fn prepare(
    config: &mut Config,
    managed: &Managed,
    backend: Option<&Capabilities>,
) -> Result<(), Problems> {
    let mut problems = Vec::new();
    for function in config.functions.values_mut() {
        let Some(package) = function.package.clone() else {
            continue;
        };
        let field = format!("functions.{}", function.name);
        if backend.is_some_and(|b| b.images) {
            problems.push(Problem::new(
                field,
                format!(
                    "zip functions ({}) run on the process backend; the {} backend runs images",
                    package.runtime,
                    backend.map_or("", |b| b.backend)
                ),
            ));
            continue;
        }
        let zip = ZipFunction::new(
            &function.name,
            &package.runtime,
            &package.handler,
            &package.code,
            &package.layers,
        );
        match managed.prepare(&zip) {
            Ok(bootstrap) => {
                let mut env = bootstrap.env;
                for (key, value) in std::mem::take(&mut function.environment) {
                    if !RESERVED.contains(&key.as_str()) {
                        env.insert(key, value);
                    }
                }
                function.environment = env;
                function.command = Some(bootstrap.command);
            }
            Err(esb_runtime::Error::ManagedRuntime { reason, .. }) => {
                problems.push(Problem::new(
                    format!("{field}.runtime"),
                    format!("{}: {reason}", package.runtime),
                ));
            }
            Err(err) => problems.push(Problem::new(field, err.to_string())),
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(Problems(problems))
    }
}
