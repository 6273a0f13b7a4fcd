//! Reading an AWS SAM `template.yaml` directly.

use std::path::{Path, PathBuf};

use serde_norway::{Mapping, Value};

use crate::error::{Problem, Report};
use crate::fields::{
    Partial, SAM_PACKAGE, TIMEOUT, build_route, check_alias, check_function_name, check_routes,
    read_count, read_environment, read_event_age, read_memory, read_payload_format,
    read_retry_attempts, read_seconds,
};
use crate::files::read;
use crate::resources::{RESOURCE_TYPES, ResourceReader};
use crate::sam_api::{Apis, FunctionNames};
use crate::subst::Env;
use crate::yaml::{self, Empty, Intrinsic, key_text, mapping, text_value, value_debug};
use crate::{ApiKind, Config, Error, PayloadFormat, ScheduleConfig};

impl Config {
    /// Reads the `AWS::Serverless::Function` resources of a SAM template and their `Api` /
    /// `HttpApi` / `Schedule` / `ScheduleV2` events.
    ///
    /// - name: `FunctionName` when it resolves to a string, else the logical id;
    /// - zip functions (the default `PackageType`): `Runtime`, `Handler`, `CodeUri` (relative
    ///   to the template's directory, as in `sam build`'s output) and `Layers` (`!Ref`s to
    ///   `AWS::Serverless::LayerVersion`s with a local `ContentUri`; layer ARNs are warnings);
    /// - image functions: `ImageUri`, else `<logical id in lowercase>:<Metadata.DockerTag>` as
    ///   `sam build` tags it, and `ImageConfig`;
    /// - `Timeout`, `MemorySize`, `Environment.Variables`, `ReservedConcurrentExecutions` (max
    ///   capacity) and `ProvisionedConcurrencyConfig.ProvisionedConcurrentExecutions` (min
    ///   capacity), `EventInvokeConfig` (`MaximumRetryAttempts`, `MaximumEventAgeInSeconds`),
    ///   `AutoPublishAlias` (an alias the function can be invoked through), each
    ///   falling back to `Globals.Function`;
    /// - events of type `Api` become payload 1.0 routes, `HttpApi` 2.0 routes (or their
    ///   `PayloadFormatVersion`), open unless an authorizer applies; `Schedule` /
    ///   `ScheduleV2` become [`crate::ScheduleConfig`]s.
    ///
    /// CloudFormation functions are tolerated: `!Ref P` / `!Sub` resolve from `env(P)`, then from
    /// the parameter's `Default` (a parameter with neither is a problem); `!Ref` / `!GetAtt`
    /// of a table or bucket ([`Config::resources`]) give its name and ARN (region from
    /// `env("AWS_REGION")`, account from `env("AWS_ACCOUNT_ID")`, else
    /// [`crate::DEFAULT_REGION`] / [`crate::DEFAULT_ACCOUNT_ID`], as `AWS::Region` /
    /// `AWS::AccountId`); a `!Ref` to another resource gives its logical id (as `sam local`
    /// does); an environment variable that cannot be resolved (another `!GetAtt`) is left out.
    /// What is not run (other properties, event types and resources) is listed in
    /// [`Config::warnings`].
    pub fn from_sam_template(
        path: impl AsRef<Path>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, Error> {
        let path = path.as_ref();
        let text = read(path)?;
        let base = path.parent().unwrap_or(Path::new(""));
        parse_sam(base, &path.display().to_string(), &text, env)
    }

    /// Like [`Config::from_sam_template`], from the template's text.
    pub fn from_sam_str(
        template: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, Error> {
        parse_sam(Path::new(""), "template.yaml", template, env)
    }
}

struct Resolver<'a> {
    /// Parameters referenced that have neither a value nor a `Default`.
    unresolved: std::cell::RefCell<std::collections::BTreeSet<String>>,
    env: Env<'a>,
    parameters: Option<&'a Mapping>,
    resources: Option<&'a Mapping>,
    /// The tables and buckets of the template, which `!Ref` and `!GetAtt` resolve to.
    created: crate::Resources,
}

impl Resolver<'_> {
    /// Resolves a scalar or a `Ref` / `Fn::GetAtt` / `Fn::Sub` to text, or `None` when it
    /// cannot.
    fn resolve(&self, value: &Value) -> Option<String> {
        match yaml::intrinsic(value) {
            Some(Intrinsic::Ref(name)) => self.reference(name.as_str()?),
            Some(Intrinsic::GetAtt(att)) => self.attribute(att),
            Some(Intrinsic::Sub(template)) => self.sub(template),
            None => text_value(value),
        }
    }

    /// The name a `!Ref` / `Ref` that did not resolve refers to.
    fn unresolved(&self, value: &Value) -> Option<String> {
        match yaml::intrinsic(value) {
            Some(Intrinsic::Ref(name)) => name.as_str().map(str::to_owned),
            _ => None,
        }
    }

    /// `!GetAtt X.Attr` of a table or bucket of the template.
    fn attribute(&self, value: &Value) -> Option<String> {
        let (name, attribute) = crate::resources::get_att_parts(value)?;
        self.created.attribute(&name, &attribute)
    }

    fn reference(&self, name: &str) -> Option<String> {
        if let Some(created) = self.created.reference(name) {
            return Some(created.to_owned());
        }
        if let Some((resource, attribute)) = name.split_once('.') {
            return self.created.attribute(resource, attribute);
        }
        if let Some(value) = (self.env)(name) {
            return Some(value);
        }
        if let Some(parameter) = self.parameters.and_then(|p| p.get(name)) {
            let default = parameter.get("Default").and_then(text_value);
            if default.is_none() {
                self.unresolved.borrow_mut().insert(name.to_owned());
            }
            return default;
        }
        match name {
            "AWS::Region" => {
                return Some(
                    (self.env)("AWS_REGION").unwrap_or_else(|| crate::DEFAULT_REGION.to_owned()),
                );
            }
            // The account of the functions' and resources' ARNs.
            "AWS::AccountId" => {
                return Some(
                    (self.env)("AWS_ACCOUNT_ID")
                        .unwrap_or_else(|| crate::DEFAULT_ACCOUNT_ID.to_owned()),
                );
            }
            "AWS::Partition" => return Some("aws".to_owned()),
            "AWS::URLSuffix" => return Some("amazonaws.com".to_owned()),
            _ => {}
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
        let logical = match yaml::intrinsic(value) {
            Some(Intrinsic::GetAtt(att)) => crate::resources::get_att_parts(att)
                .filter(|(_, attribute)| attribute == "Arn")
                .map(|(logical, _)| logical),
            _ => {
                let arn = self.resolve(value)?;
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

fn parse_sam(base: &Path, file: &str, text: &str, env: Env<'_>) -> Result<Config, Error> {
    let mut problems = Vec::new();
    let mut warnings = Vec::new();
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
    let mut resolver = Resolver {
        unresolved: Default::default(),
        env,
        parameters: section("Parameters"),
        resources: section("Resources"),
        created: crate::Resources::default(),
    };
    if let Some(resources) = resolver.resources {
        let resolve = |value: &Value| resolver.resolve(value);
        let mut reader = ResourceReader {
            report: &mut report,
            warnings: &mut warnings,
            resolve: &resolve,
            section: "Resources",
            region: env("AWS_REGION").unwrap_or_else(|| crate::DEFAULT_REGION.to_owned()),
            account: env("AWS_ACCOUNT_ID").unwrap_or_else(|| crate::DEFAULT_ACCOUNT_ID.to_owned()),
            resources: crate::Resources::default(),
        };
        for (key, resource) in resources {
            reader.resource(&key_text(key), resource);
        }
        let created = reader.finish();
        resolver.created = created;
    }
    let globals = section("Globals")
        .and_then(|g| g.get("Function"))
        .and_then(|f| mapping(f, &mut report, "Globals.Function", ""))
        .map(|f| {
            let mut context = Context {
                resolver: &resolver,
                report: &mut report,
                warnings: &mut warnings,
                base,
            };
            read_sam_function(f, &mut context, "Globals.Function")
        })
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
        warnings,
        schedules: Vec::new(),
        base,
        config: Config::default(),
        labels: Vec::new(),
        apis,
    };
    for (key, resource) in resources {
        let logical_id = key_text(key);
        match resource.get("Type").and_then(Value::as_str) {
            Some("AWS::Serverless::Function") => reader.function(&logical_id, resource),
            // Read where functions and events use them.
            Some(
                "AWS::Serverless::LayerVersion"
                | "AWS::Serverless::Api"
                | "AWS::Serverless::HttpApi",
            ) => {}
            // Read before the functions, created at start.
            Some(kind) if RESOURCE_TYPES.contains(&kind) => {}
            other => reader.warnings.push(Problem::new(
                file,
                format!("Resources.{logical_id}"),
                "Type",
                format!(
                    "{} is not created: ESB runs functions, their layers and APIs",
                    other.unwrap_or("(none)")
                ),
            )),
        }
    }
    let SamReader {
        mut config,
        labels,
        apis,
        warnings,
        ..
    } = reader;
    config.authorizers = apis.authorizers;
    config.resources = resolver.created.clone();
    config.warnings = warnings;
    for name in resolver.unresolved.borrow().iter() {
        problems.push(Problem::new(
            file,
            format!("Parameters.{name}"),
            "",
            "has no Default and no value: give it one with a parameter override",
        ));
    }
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
    /// What the template asks for and ESB does not do.
    warnings: Vec<Problem>,
    /// The schedules of the function being read.
    schedules: Vec<ScheduleConfig>,
    /// The template's directory: `CodeUri` and `ContentUri` are relative to it.
    base: &'t Path,
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

        let mut context = Context {
            resolver: self.resolver,
            report: &mut self.report,
            warnings: &mut self.warnings,
            base: self.base,
        };
        for key in properties.keys().map(key_text) {
            if !FUNCTION_PROPERTIES.contains(&key.as_str()) {
                context.warn(&item, &key, "not run: ESB does not apply this property");
            }
        }
        let mut partial = read_sam_function(properties, &mut context, &item);
        let image = self.image(logical_id, resource, properties, &item);
        let is_image = image.is_some()
            || properties
                .get("PackageType")
                .and_then(|p| self.resolver.resolve(p))
                .as_deref()
                == Some("Image");
        partial.image = image;
        if let Some(events) = properties
            .get("Events")
            .and_then(|e| mapping(e, &mut self.report, &item, "Events"))
        {
            for (event_key, event) in events {
                let label = format!("{item}.Events.{}", key_text(event_key));
                self.event(&name, &label, event);
            }
        }
        let mut partial = partial.under(&self.globals);
        partial.schedules = std::mem::take(&mut self.schedules);
        if is_image {
            // Globals' Runtime, Handler, CodeUri and Layers are for zip functions.
            partial = partial.without_package();
        }
        if let Some(function) = partial.finish(name.clone(), &mut self.report, &item, &SAM_PACKAGE)
        {
            self.config.functions.insert(name, function);
        }
    }

    /// The function's image when it is `PackageType: Image`: `ImageUri`, else the tag
    /// `sam build` gives it.
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
        match package_type.as_deref() {
            Some("Image") => {}
            None | Some("Zip") => return None,
            Some(other) => {
                self.report.push(
                    item,
                    "PackageType",
                    format!("{other:?} is not Zip or Image"),
                );
                return None;
            }
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
        if image.is_none() {
            self.report.push(
                item,
                "ImageUri",
                "missing, and no Metadata.DockerTag to name the built image",
            );
        }
        image
    }

    /// Reads a `Schedule` / `ScheduleV2` event into a schedule of the function being read.
    fn schedule(&mut self, function: &str, label: &str, kind: &str, event: &Value) {
        let empty = Mapping::new();
        let props = match event.get("Properties") {
            Some(p) => mapping(p, &mut self.report, label, "Properties").unwrap_or(&empty),
            None => &empty,
        };
        let resolve = |key: &str| props.get(key).and_then(|v| self.resolver.resolve(v));
        let field = if kind == "Schedule" {
            "Schedule"
        } else {
            "ScheduleExpression"
        };
        let Some(text) = resolve(field) else {
            self.report.push(
                label,
                field,
                "missing: a schedule needs rate(...) or cron(...)",
            );
            return;
        };
        let expression = match text.parse() {
            Ok(expression) => expression,
            Err(reason) => {
                self.report.push(label, field, reason);
                return;
            }
        };
        let event_key = label.rsplit('.').next().unwrap_or(label);
        let name = resolve("Name").unwrap_or_else(|| format!("{function}-{event_key}"));
        let mut schedule = ScheduleConfig::new(name, expression);
        if let Some(enabled) = props.get("Enabled") {
            // `false`, and YAML 1.1's `False` / `FALSE` that templates use.
            schedule.enabled = enabled.as_bool().unwrap_or(true)
                && !self
                    .resolver
                    .resolve(enabled)
                    .is_some_and(|text| text.eq_ignore_ascii_case("false"));
        }
        if let Some(state) = resolve("State") {
            schedule.enabled = !state.eq_ignore_ascii_case("DISABLED");
        }
        schedule.input = props.get("Input").and_then(|input| match input {
            Value::String(text) => Some(text.clone()),
            other => self.resolver.resolve(other),
        });
        if let Some(zone) = resolve("ScheduleExpressionTimezone")
            && zone != "UTC"
            && zone != "Etc/UTC"
        {
            self.warnings.push(Problem::new(
                self.report.file,
                label,
                "ScheduleExpressionTimezone",
                format!("{zone} is not applied: schedules run in UTC"),
            ));
        }
        self.schedules.push(schedule);
    }

    /// Adds the route of one `Api` / `HttpApi` event of `function`; other events are skipped.
    fn event(&mut self, function: &str, label: &str, event: &Value) {
        let event_type = event.get("Type").and_then(Value::as_str);
        if let Some(kind @ ("Schedule" | "ScheduleV2")) = event_type {
            self.schedule(function, label, kind, event);
            return;
        }
        let (payload_format, kind, api_field) = match event_type {
            Some("Api") => (PayloadFormat::V1, ApiKind::Rest, "RestApiId"),
            Some("HttpApi") => (PayloadFormat::V2, ApiKind::Http, "ApiId"),
            other => {
                let kind = other.unwrap_or("(none)");
                self.warnings.push(Problem::new(
                    self.report.file,
                    label,
                    "Type",
                    format!(
                        "{kind} events are not run: only Api, HttpApi, Schedule and ScheduleV2 \
                         events are"
                    ),
                ));
                return;
            }
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

/// The function properties ESB reads; any other is listed as a warning.
const FUNCTION_PROPERTIES: &[&str] = &[
    "FunctionName",
    "Runtime",
    "Handler",
    "CodeUri",
    "Layers",
    "Architectures",
    "PackageType",
    "ImageUri",
    "ImageConfig",
    "Timeout",
    "MemorySize",
    "Environment",
    "ReservedConcurrentExecutions",
    "ProvisionedConcurrencyConfig",
    "AutoPublishAlias",
    "EventInvokeConfig",
    "Events",
    "Description",
];

/// What reading one function's properties needs besides them.
struct Context<'c, 'r> {
    resolver: &'c Resolver<'c>,
    report: &'c mut Report<'r>,
    warnings: &'c mut Vec<Problem>,
    base: &'c Path,
}

impl Context<'_, '_> {
    /// Lists something the template asks for that ESB does not do.
    fn warn(&mut self, item: &str, field: &str, message: impl Into<String>) {
        self.warnings
            .push(Problem::new(self.report.file, item, field, message));
    }
}

fn read_sam_function(props: &Mapping, context: &mut Context<'_, '_>, item: &str) -> Partial {
    let resolver = context.resolver;
    read_package(props, context, item).under(&read_limits(props, resolver, context.report, item))
}

/// Runtime, Handler, CodeUri, Layers, Architectures, ImageConfig.
fn read_package(props: &Mapping, context: &mut Context<'_, '_>, item: &str) -> Partial {
    let resolver = context.resolver;
    let mut p = Partial::default();
    let resolved = |key: &str| props.get(key).map(|v| (v, resolver.resolve(v)));
    if let Some((value, text)) = resolved("Runtime") {
        p.runtime = text;
        if p.runtime.is_none() {
            context.report.push(
                item,
                "Runtime",
                format!("{} does not resolve to a runtime name", value_debug(value)),
            );
        }
    }
    if let Some((_, text)) = resolved("Handler") {
        p.handler = text;
    }
    if let Some((value, text)) = resolved("CodeUri") {
        p.code_invalid = !matches!(&text, Some(uri) if !uri.starts_with("s3://"));
        match text {
            Some(uri) if uri.starts_with("s3://") => context.report.push(
                item,
                "CodeUri",
                format!("{uri:?}: code in S3 cannot be run here; point CodeUri at a local directory or .zip"),
            ),
            Some(uri) => p.code = Some(context.base.join(uri)),
            None => context.report.push(
                item,
                "CodeUri",
                format!("{}: code in S3 cannot be run here; point CodeUri at a local directory or .zip", value_debug(value)),
            ),
        }
    }
    if let Some(layers) = props.get("Layers") {
        p.layers = Some(read_layers(layers, context, item));
    }
    if let Some(Value::Sequence(archs)) = props.get("Architectures") {
        let host = match std::env::consts::ARCH {
            "aarch64" => "arm64",
            other => other,
        };
        for arch in archs.iter().filter_map(|a| resolver.resolve(a)) {
            if arch != host {
                context.warn(
                    item,
                    "Architectures",
                    format!("{arch} is not this host's architecture ({host}): native code built for {arch} will not run"),
                );
            }
        }
    }
    if let Some(config) = props.get("ImageConfig")
        && let Some(config) = mapping(config, context.report, item, "ImageConfig")
    {
        let list = |key: &str| -> Option<Vec<String>> {
            match config.get(key)? {
                Value::Sequence(items) => items.iter().map(|i| resolver.resolve(i)).collect(),
                other => resolver.resolve(other).map(|s| vec![s]),
            }
        };
        p.image_config.entry_point = list("EntryPoint");
        p.image_config.command = list("Command");
        p.image_config.working_directory = config
            .get("WorkingDirectory")
            .and_then(|w| resolver.resolve(w));
    }
    p
}

/// A function's `Layers`: local `AWS::Serverless::LayerVersion` resources (their
/// `ContentUri`); a layer ARN is listed as a warning and left out.
fn read_layers(value: &Value, context: &mut Context<'_, '_>, item: &str) -> Vec<PathBuf> {
    let Value::Sequence(layers) = value else {
        context
            .report
            .push(item, "Layers", "expected a list of layers");
        return Vec::new();
    };
    let mut paths = Vec::new();
    for (i, layer) in layers.iter().enumerate() {
        let field = format!("Layers[{i}]");
        let Some(name) = context.resolver.resolve(layer) else {
            let message = match context.resolver.unresolved(layer) {
                Some(name) => format!(
                    "{name:?} is no AWS::Serverless::LayerVersion of this template, nor a parameter"
                ),
                None => format!("{} does not resolve to a layer", value_debug(layer)),
            };
            context.report.push(item, &field, message);
            continue;
        };
        if name.starts_with("arn:") {
            context.warn(
                item,
                &field,
                format!("layer {name} is not run: only layers of this template (AWS::Serverless::LayerVersion with a local ContentUri) are merged"),
            );
            continue;
        }
        let resource = context
            .resolver
            .resources
            .and_then(|r| r.get(name.as_str()));
        let kind = resource.and_then(|r| r.get("Type")).and_then(Value::as_str);
        let content = resource
            .and_then(|r| r.get("Properties"))
            .and_then(|p| p.get("ContentUri"))
            .and_then(|c| context.resolver.resolve(c));
        match (kind, content) {
            (Some("AWS::Serverless::LayerVersion"), Some(uri)) if !uri.starts_with("s3://") => {
                paths.push(context.base.join(uri));
            }
            (Some("AWS::Serverless::LayerVersion"), _) => context.report.push(
                item,
                &field,
                format!("layer {name}: its ContentUri is not a local directory or .zip"),
            ),
            _ => context.report.push(
                item,
                &field,
                format!(
                    "{name:?} is no AWS::Serverless::LayerVersion of this template, nor a layer ARN"
                ),
            ),
        }
    }
    paths
}

/// Timeout, memory, concurrency, aliases, async settings and environment.
fn read_limits(
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
