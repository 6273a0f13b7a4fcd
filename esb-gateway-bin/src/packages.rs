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
/// bootstrap environment under its own. On a backend of images (containerd) it runs as
/// SAM runs it instead: the runtime's base image, the code mounted at `/var/task` and the
/// layers at `/opt`.
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
        let zip = ZipFunction::new(
            &function.name,
            &package.runtime,
            &package.handler,
            &package.code,
            &package.layers,
        );
        // On a backend of images, as SAM runs them: the runtime's base image, code and
        // layers mounted; elsewhere the host's interpreter and runtime client.
        let prepared = if backend.is_some_and(|b| b.images) {
            managed
                .prepare_image(&zip)
                .map(|b| (b.env, b.command, Some(b.image), b.mounts))
        } else {
            managed
                .prepare(&zip)
                .map(|b| (b.env, b.command, None, Vec::new()))
        };
        match prepared {
            Ok((mut env, command, image, mounts)) => {
                for (key, value) in std::mem::take(&mut function.environment) {
                    if !RESERVED.contains(&key.as_str()) {
                        env.insert(key, value);
                    }
                }
                function.environment = env;
                function.command = Some(command);
                if image.is_some() {
                    function.image = image;
                    function.mounts = mounts;
                }
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

/// Applies a `sam local --env-vars` file: `{"Parameters": {..}, "<Function>": {..}}`.
/// `Parameters` reach every function, a function's own object (by function name) wins; as
/// SAM does, only variables the function declares are replaced. Returns what is wrong with
/// the file.
pub fn apply_env_vars(config: &mut Config, json: &str) -> Result<(), String> {
    type Vars = std::collections::BTreeMap<String, serde_json::Value>;
    let file: std::collections::BTreeMap<String, Vars> =
        serde_json::from_str(json).map_err(|err| {
            format!("expected {{\"Parameters\": {{..}}, \"FunctionName\": {{..}}}}: {err}")
        })?;
    for (key, vars) in &file {
        if key != "Parameters" && !config.functions.contains_key(key) {
            return Err(format!("{key:?} is no function of the configuration"));
        }
        for (name, value) in vars {
            if !(value.is_string() || value.is_number() || value.is_boolean()) {
                return Err(format!(
                    "{key}.{name}: expected a string, number or boolean"
                ));
            }
        }
    }
    let text = |value: &serde_json::Value| match value {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    for function in config.functions.values_mut() {
        let own = file.get(&function.name);
        for (name, value) in function.environment.iter_mut() {
            let new = own
                .and_then(|vars| vars.get(name))
                .or_else(|| file.get("Parameters").and_then(|vars| vars.get(name)));
            if let Some(new) = new {
                *value = text(new);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_vars_replace_declared_variables_parameters_first_then_the_functions_own() {
        let template = r#"
Resources:
  A:
    Type: AWS::Serverless::Function
    Properties:
      PackageType: Image
      ImageUri: a
      FunctionName: fa
      Environment: { Variables: { TABLE: t, STAGE: dev } }
  B:
    Type: AWS::Serverless::Function
    Properties: { PackageType: Image, ImageUri: b, Environment: { Variables: { TABLE: t } } }
"#;
        let mut config = Config::from_sam_str(template, &|_| None).unwrap();
        apply_env_vars(
            &mut config,
            r#"{"Parameters": {"TABLE": "shared", "UNDECLARED": "x"}, "fa": {"STAGE": "prod", "TABLE": 7}}"#,
        )
        .unwrap();
        let a = &config.functions["fa"].environment;
        assert_eq!((a["TABLE"].as_str(), a["STAGE"].as_str()), ("7", "prod"));
        let b = &config.functions["B"].environment;
        assert_eq!(b["TABLE"], "shared");
        assert!(!b.contains_key("UNDECLARED"));
        let err = apply_env_vars(&mut config, r#"{"Nope": {}}"#).unwrap_err();
        assert_eq!(err, "\"Nope\" is no function of the configuration");
        assert!(apply_env_vars(&mut config, "[]").is_err());
    }

    #[test]
    fn zip_functions_on_a_backend_of_images_run_from_the_runtimes_base_image() {
        let tmp = tempfile::tempdir().unwrap();
        let template = "Resources:\n  Fn:\n    Type: AWS::Serverless::Function\n    \
                        Properties: { Runtime: python3.12, Handler: app.h, CodeUri: . }\n  \
                        Bad:\n    Type: AWS::Serverless::Function\n    \
                        Properties: { Runtime: provided.al2023, Handler: x, CodeUri: . }\n";
        let path = tmp.path().join("template.yaml");
        std::fs::write(&path, template).unwrap();
        let mut config = Config::from_sam_template(&path, &|_| None).unwrap();
        let managed = Managed::new(esb_runtime::managed::ManagedConfig::new(
            tmp.path().join("cache"),
            "/nonexistent",
        ));
        let images = Capabilities::new("containerd").images(true);
        let problems = prepare(&mut config, &managed, Some(&images)).unwrap_err();
        assert_eq!(problems.0.len(), 1, "{problems}");
        assert!(
            problems
                .to_string()
                .contains("functions.Bad.runtime: provided.al2023: "),
            "{problems}"
        );
        let function = &config.functions["Fn"];
        assert_eq!(
            function.image.as_deref(),
            Some("public.ecr.aws/lambda/python:3.12")
        );
        assert_eq!(function.environment["_HANDLER"], "app.h");
        assert_eq!(function.mounts[0].destination, "/var/task");
    }
}
