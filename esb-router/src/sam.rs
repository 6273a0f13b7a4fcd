//! Reading an AWS SAM `template.yaml` directly.

use std::path::Path;

use serde_norway::{Mapping, Value};

use crate::error::Report;
use crate::fields::{
    Partial, TIMEOUT, build_route, check_alias, check_function_name, check_routes, read_count,
    read_environment, read_event_age, read_memory, read_payload_format, read_retry_attempts,
    read_seconds,
};
use crate::files::read;
use crate::sam_api::{Apis, FunctionNames};
use crate::subst::Env;
use crate::yaml::{self, Empty, key_text, mapping, text_value};
use crate::{ApiKind, Config, Error, PayloadFormat};

impl Config {
    /// Reads the `AWS::Serverless::Function` resources of a SAM template and their `Api` /
    /// `HttpApi` events.
    ///
    /// - name: `FunctionName` when it resolves to a string, else the logical id;
    /// - image: `ImageUri`, else `<logical id in lowercase>:<Metadata.DockerTag>` as `sam build`
    ///   tags it; only `PackageType: Image` functions are accepted;
    /// - `Timeout`, `MemorySize`, `Environment.Variables`, `ReservedConcurrentExecutions` (max
    ///   capacity) and `ProvisionedConcurrencyConfig.ProvisionedConcurrentExecutions` (min
    ///   capacity), `EventInvokeConfig` (`MaximumRetryAttempts`, `MaximumEventAgeInSeconds`),
    ///   `AutoPublishAlias` (an alias the function can be invoked through), each
    ///   falling back to `Globals.Function`;
    /// - events of type `Api` become payload 1.0 routes, `HttpApi` 2.0 routes (or their
    ///   `PayloadFormatVersion`); `Auth.Authorizer: NONE` makes a route `auth: none`.
    ///
    /// CloudFormation functions are tolerated: `!Ref P` / `!Sub` resolve from `env(P)`, then from
    /// the parameter's `Default`; a `!Ref` to a resource gives its logical id (as `sam local`
    /// does); an environment variable that cannot be resolved (`!GetAtt`) is left out.
    pub fn from_sam_template(
        path: impl AsRef<Path>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, Error> {
        let path = path.as_ref();
        let text = read(path)?;
        parse_sam(&path.display().to_string(), &text, env)
    }

    /// Like [`Config::from_sam_template`], from the template's text.
    pub fn from_sam_str(
        template: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, Error> {
        parse_sam("template.yaml", template, env)
    }
}

struct Resolver<'a> {
    env: Env<'a>,
    parameters: Option<&'a Mapping>,
    resources: Option<&'a Mapping>,
}

impl Resolver<'_> {
    /// Resolves a scalar or a `Ref` / `Fn::Sub` to text, or `None` when it cannot.
    fn resolve(&self, value: &Value) -> Option<String> {
        match value {
            Value::Tagged(tagged) => match tagged.tag.to_string().as_str() {
                "!Ref" => self.reference(tagged.value.as_str()?),
                "!Sub" => self.sub(&tagged.value),
                _ => None,
            },
            Value::Mapping(map) if map.len() == 1 => {
                if let Some(name) = map.get("Ref") {
                    self.reference(name.as_str()?)
                } else {
                    self.sub(map.get("Fn::Sub")?)
                }
            }
            other => text_value(other),
        }
    }

    fn reference(&self, name: &str) -> Option<String> {
        if let Some(value) = (self.env)(name) {
            return Some(value);
        }
        if let Some(parameter) = self.parameters.and_then(|p| p.get(name)) {
            return parameter.get("Default").and_then(text_value);
        }
        if name == "AWS::Region" {
            return (self.env)("AWS_REGION");
        }
        self.resources
            .filter(|r| r.contains_key(name))
            .map(|_| name.to_owned())
    }

    fn sub(&self, value: &Value) -> Option<String> {
        let template = match value {
            Value::String(s) => s.as_str(),
            Value::Sequence(items) => items.first()?.as_str()?,
            _ => return None,
        };
        let mut out = String::with_capacity(template.len());
        let mut rest = template;
        while let Some(start) = rest.find("${") {
            out.push_str(&rest[..start]);
            let after = &rest[start + 2..];
            let end = after.find('}')?;
            out.push_str(&self.reference(&after[..end])?);
            rest = &after[end + 1..];
        }
        out.push_str(rest);
        Some(out)
    }
}

impl FunctionNames for Resolver<'_> {
    /// `!GetAtt Fn.Arn`, `{"Fn::GetAtt": [Fn, Arn]}`, or a function ARN, as the function's name.
    fn function_name(&self, value: &Value) -> Option<String> {
        let get_att = |v: &Value| -> Option<String> {
            match v {
                Value::String(s) => s.strip_suffix(".Arn").map(str::to_owned),
                Value::Sequence(items) if items.len() == 2 && items[1].as_str() == Some("Arn") => {
                    items[0].as_str().map(str::to_owned)
                }
                _ => None,
            }
        };
        let logical = match value {
            Value::Tagged(tagged) if tagged.tag == "!GetAtt" => get_att(&tagged.value),
            Value::Mapping(map) if map.len() == 1 => map.get("Fn::GetAtt").and_then(get_att),
            other => {
                let arn = self.resolve(other)?;
                let name = arn.split(":function:").nth(1)?;
                return Some(name.split(':').next().unwrap_or(name).to_owned());
            }
        }?;
        let resource = self.resources?.get(logical.as_str())?;
        if resource.get("Type").and_then(Value::as_str) != Some("AWS::Serverless::Function") {
            return None;
        }
        Some(
            resource
                .get("Properties")
                .and_then(|p| p.get("FunctionName"))
                .and_then(|n| self.resolve(n))
                .unwrap_or(logical),
        )
    }
}

fn parse_sam(file: &str, text: &str, env: Env<'_>) -> Result<Config, Error> {
    let mut problems = Vec::new();
    let mut report = Report {
        file,
        problems: &mut problems,
    };
    let Some(root) = yaml::root(text, Empty::Rejected, &mut report) else {
        return Err(Error::Invalid(problems));
    };
    let section = |name: &str| match root.get(name) {
        Some(Value::Mapping(map)) => Some(map),
        _ => None,
    };
    let resolver = Resolver {
        env,
        parameters: section("Parameters"),
        resources: section("Resources"),
    };
    let globals = section("Globals")
        .and_then(|g| g.get("Function"))
        .and_then(|f| mapping(f, &mut report, "Globals.Function", ""))
        .map(|f| read_sam_function(f, &resolver, &mut report, "Globals.Function"))
        .unwrap_or_default();
    let Some(resources) = resolver.resources else {
        report.push("", "Resources", "missing: the template has no resources");
        return Err(Error::Invalid(problems));
    };

    let apis = Apis::read(section("Globals"), resources, &resolver, &mut report);
    let mut reader = SamReader {
        resolver: &resolver,
        globals,
        report,
        config: Config::default(),
        labels: Vec::new(),
        apis,
    };
    for (key, resource) in resources {
        if resource.get("Type").and_then(Value::as_str) == Some("AWS::Serverless::Function") {
            reader.function(&key_text(key), resource);
        }
    }
    let SamReader {
        mut config,
        labels,
        apis,
        ..
    } = reader;
    config.authorizers = apis.authorizers;
    check_routes(&config, &labels, file, &mut problems);
    if problems.is_empty() {
        Ok(config)
    } else {
        Err(Error::Invalid(problems))
    }
}

/// Reads the `AWS::Serverless::Function` resources one by one into a [`Config`].
struct SamReader<'t, 'p> {
    resolver: &'t Resolver<'t>,
    /// `Globals.Function`, under every function's own properties.
    globals: Partial,
    report: Report<'p>,
    config: Config,
    /// Each route's label for [`check_routes`], in the order of `config.routes`.
    labels: Vec<String>,
    /// The template's APIs: authorizers and CORS.
    apis: Apis,
}

impl SamReader<'_, '_> {
    /// Reads one function resource, its image and its API events.
    fn function(&mut self, logical_id: &str, resource: &Value) {
        let item = format!("Resources.{logical_id}");
        let empty = Mapping::new();
        let properties = match resource.get("Properties") {
            Some(p) => mapping(p, &mut self.report, &item, "Properties").unwrap_or(&empty),
            None => &empty,
        };
        let name = properties
            .get("FunctionName")
            .and_then(|n| self.resolver.resolve(n))
            .unwrap_or_else(|| logical_id.to_owned());
        check_function_name(&name, &mut self.report, &item);
        if self.config.functions.contains_key(&name) {
            self.report.push(
                &item,
                "FunctionName",
                format!("function {name:?} is defined twice"),
            );
            return;
        }

        let mut partial = read_sam_function(properties, self.resolver, &mut self.report, &item);
        partial.image = self.image(logical_id, resource, properties, &item);
        if let Some(events) = properties
            .get("Events")
            .and_then(|e| mapping(e, &mut self.report, &item, "Events"))
        {
            for (event_key, event) in events {
                let label = format!("{item}.Events.{}", key_text(event_key));
                self.event(&name, &label, event);
            }
        }
        if let Some(function) =
            partial
                .under(&self.globals)
                .finish(name.clone(), &mut self.report, &item)
        {
            self.config.functions.insert(name, function);
        }
    }

    /// The function's image: `ImageUri`, else the tag `sam build` gives it; only
    /// `PackageType: Image` functions are accepted.
    fn image(
        &mut self,
        logical_id: &str,
        resource: &Value,
        properties: &Mapping,
        item: &str,
    ) -> Option<String> {
        let package_type = properties
            .get("PackageType")
            .and_then(|p| self.resolver.resolve(p));
        if package_type.as_deref() != Some("Image") {
            self.report.push(
                item,
                "PackageType",
                "only PackageType: Image functions can run here",
            );
        }
        let image = properties
            .get("ImageUri")
            .and_then(|i| self.resolver.resolve(i))
            .or_else(|| {
                let tag = resource
                    .get("Metadata")?
                    .get("DockerTag")
                    .and_then(text_value)?;
                Some(format!("{}:{tag}", logical_id.to_ascii_lowercase()))
            });
        if image.is_none() && package_type.as_deref() == Some("Image") {
            self.report.push(
                item,
                "ImageUri",
                "missing, and no Metadata.DockerTag to name the built image",
            );
        }
        image
    }

    /// Adds the route of one `Api` / `HttpApi` event of `function`; other events are skipped.
    fn event(&mut self, function: &str, label: &str, event: &Value) {
        let (payload_format, kind, api_field) = match event.get("Type").and_then(Value::as_str) {
            Some("Api") => (PayloadFormat::V1, ApiKind::Rest, "RestApiId"),
            Some("HttpApi") => (PayloadFormat::V2, ApiKind::Http, "ApiId"),
            _ => return,
        };
        let report = &mut self.report;
        let empty = Mapping::new();
        let props = match event.get("Properties") {
            Some(p) => mapping(p, report, label, "Properties").unwrap_or(&empty),
            None => &empty,
        };
        let payload_format = match props.get("PayloadFormatVersion") {
            Some(v) => read_payload_format(v, report, label, "PayloadFormatVersion"),
            None => Some(payload_format),
        };
        let authorizer = props
            .get("Auth")
            .and_then(|a| a.get("Authorizer"))
            .and_then(|a| self.resolver.resolve(a));
        let api_id = props.get(api_field).and_then(|a| self.resolver.resolve(a));
        let auth = self
            .apis
            .auth(kind, api_id.as_deref(), authorizer.as_deref());
        let cors = self.apis.cors(kind, api_id.as_deref());
        let path = props.get("Path").and_then(|p| self.resolver.resolve(p));
        let method = props.get("Method").and_then(|m| self.resolver.resolve(m));
        if path.is_none() {
            report.push(
                label,
                "Path",
                "missing (the HttpApi $default route is not supported: give a Path)",
            );
        }
        if method.is_none() {
            report.push(label, "Method", "missing");
        }
        if let Some(route) = build_route(
            path,
            method,
            Some(function.to_owned()),
            auth,
            payload_format,
            report,
            label,
        ) && payload_format.is_some()
        {
            let route = match cors {
                Some(cors) => route.cors(cors),
                None => route,
            };
            self.config.routes.push(route);
            self.labels.push(label.to_owned());
        }
    }
}

fn read_sam_function(
    props: &Mapping,
    resolver: &Resolver<'_>,
    report: &mut Report<'_>,
    item: &str,
) -> Partial {
    let mut p = Partial::default();
    let resolved = |key: &str| {
        props
            .get(key)
            .map(|v| resolver.resolve(v).map_or(v.clone(), Value::String))
    };
    if let Some(v) = resolved("Timeout") {
        p.timeout = read_seconds(&v, report, item, "Timeout", &TIMEOUT);
    }
    if let Some(v) = resolved("MemorySize") {
        p.memory_size = read_memory(&v, report, item, "MemorySize");
    }
    if let Some(v) = resolved("ReservedConcurrentExecutions") {
        p.scaling.max_capacity = read_count(&v, report, item, "ReservedConcurrentExecutions", 1);
    }
    if let Some(v) = props
        .get("ProvisionedConcurrencyConfig")
        .and_then(|c| c.get("ProvisionedConcurrentExecutions"))
    {
        let v = resolver.resolve(v).map_or(v.clone(), Value::String);
        p.scaling.min_capacity = read_count(
            &v,
            report,
            item,
            "ProvisionedConcurrencyConfig.ProvisionedConcurrentExecutions",
            0,
        );
    }
    if let Some(alias) = props.get("AutoPublishAlias") {
        let alias = resolver
            .resolve(alias)
            .unwrap_or_else(|| format!("{alias:?}"));
        p.aliases = check_alias(alias, report, item, "AutoPublishAlias").map(|alias| vec![alias]);
    }
    if let Some(config) = props.get("EventInvokeConfig")
        && let Some(config) = mapping(config, report, item, "EventInvokeConfig")
    {
        let field = |key: &str| {
            config
                .get(key)
                .map(|v| resolver.resolve(v).map_or(v.clone(), Value::String))
        };
        if let Some(v) = field("MaximumRetryAttempts") {
            p.event_invoke.maximum_retry_attempts =
                read_retry_attempts(&v, report, item, "EventInvokeConfig.MaximumRetryAttempts");
        }
        if let Some(v) = field("MaximumEventAgeInSeconds") {
            p.event_invoke.maximum_event_age = read_event_age(
                &v,
                report,
                item,
                "EventInvokeConfig.MaximumEventAgeInSeconds",
            );
        }
    }
    if let Some(vars) = props.get("Environment").and_then(|e| e.get("Variables"))
        && let Some(vars) = mapping(vars, report, item, "Environment.Variables")
    {
        let mut resolvable = Mapping::new();
        for (key, value) in vars {
            if let Some(text) = resolver.resolve(value) {
                resolvable.insert(key.clone(), Value::String(text));
            }
        }
        p.environment = read_environment(&resolvable, report, item, &text_value);
    }
    p
}
