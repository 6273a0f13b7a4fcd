//! Zip functions (`runtime` + `handler` + `code` + `layers`) in SAM templates, in the output
//! of `sam build`, and in `functions.yml`.

#![allow(clippy::unwrap_used)]

use std::path::Path;

use esb_router::{Config, Error};

/// A SAM project as `sam init` lays it out: two functions, a local layer.
fn project(dir: &Path) {
    for sub in ["hello_world", "users", "layers/common/python"] {
        std::fs::create_dir_all(dir.join(sub)).unwrap();
    }
    std::fs::write(
        dir.join("hello_world/app.py"),
        "def lambda_handler(e, c): return e\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("users/index.js"),
        "exports.handler = async (e) => e;\n",
    )
    .unwrap();
    std::fs::write(dir.join("layers/common/python/common.py"), "X = 1\n").unwrap();
}

const TEMPLATE: &str = r#"
AWSTemplateFormatVersion: '2010-09-09'
Transform: AWS::Serverless-2016-10-31
Globals:
  Function:
    Runtime: python3.12
    Handler: app.lambda_handler
    Timeout: 10
    Architectures: [x86_64]
    Layers: [!Ref CommonLayer]
Resources:
  HelloWorldFunction:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: hello_world/
      Events:
        Hello: { Type: Api, Properties: { Path: /hello, Method: get, Auth: { Authorizer: NONE } } }
  UsersFunction:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: users
      Runtime: nodejs20.x
      Handler: index.handler
      Layers:
        - !Ref CommonLayer
        - arn:aws:lambda:us-east-1:123456789012:layer:shared-utils:3
  ImageFunction:
    Type: AWS::Serverless::Function
    Properties:
      PackageType: Image
      ImageUri: "img:1"
      ImageConfig:
        EntryPoint: ["/lambda-entrypoint.sh"]
        Command: ["app.handler"]
        WorkingDirectory: /var/task
  CommonLayer:
    Type: AWS::Serverless::LayerVersion
    Properties:
      LayerName: common
      ContentUri: layers/common
      CompatibleRuntimes: [python3.12]
"#;

#[test]
fn zip_functions_take_runtime_handler_code_and_layers_with_globals() {
    let tmp = tempfile::tempdir().unwrap();
    project(tmp.path());
    let path = tmp.path().join("template.yaml");
    std::fs::write(&path, TEMPLATE).unwrap();
    let config = Config::from_sam_template(&path, &|_| None).unwrap();

    let hello = &config.functions["HelloWorldFunction"];
    let package = hello.package.as_ref().unwrap();
    assert_eq!(package.runtime, "python3.12");
    assert_eq!(package.handler, "app.lambda_handler");
    assert_eq!(package.code, tmp.path().join("hello_world/"));
    assert_eq!(package.layers, vec![tmp.path().join("layers/common")]);
    assert_eq!(hello.timeout.as_secs(), 10);
    assert!(hello.image.is_none() && hello.command.is_none());

    let users = config.functions["UsersFunction"].package.as_ref().unwrap();
    assert_eq!(
        (users.runtime.as_str(), users.handler.as_str()),
        ("nodejs20.x", "index.handler")
    );
    // The layer ARN is left out, and said so once.
    assert_eq!(users.layers, vec![tmp.path().join("layers/common")]);
    let arn: Vec<String> = config.warnings.iter().map(ToString::to_string).collect();
    assert_eq!(arn.len(), 1, "{arn:?}");
    assert!(arn[0].contains("Resources.UsersFunction: Layers[1]: layer arn:aws:lambda:us-east-1:123456789012:layer:shared-utils:3 is not run"), "{arn:?}");

    // Globals' Runtime/Handler/Layers do not turn an image function into a zip one.
    let image = &config.functions["ImageFunction"];
    assert!(image.package.is_none());
    assert_eq!(image.image.as_deref(), Some("img:1"));
    assert_eq!(
        image.image_config.entry_point.as_deref(),
        Some(&["/lambda-entrypoint.sh".to_owned()][..])
    );
    assert_eq!(
        image.image_config.command.as_deref(),
        Some(&["app.handler".to_owned()][..])
    );
    assert_eq!(
        image.image_config.working_directory.as_deref(),
        Some("/var/task")
    );
}

#[test]
fn the_output_of_sam_build_loads() {
    // `sam build` copies each function's code and each layer into .aws-sam/build/<LogicalId>
    // and writes a template whose CodeUri / ContentUri name those directories.
    let tmp = tempfile::tempdir().unwrap();
    let build = tmp.path().join(".aws-sam/build");
    std::fs::create_dir_all(build.join("HelloWorldFunction")).unwrap();
    std::fs::create_dir_all(build.join("CommonLayer/python")).unwrap();
    std::fs::write(build.join("HelloWorldFunction/app.py"), "").unwrap();
    std::fs::write(
        build.join("template.yaml"),
        r#"
AWSTemplateFormatVersion: '2010-09-09'
Transform: AWS::Serverless-2016-10-31
Resources:
  HelloWorldFunction:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: HelloWorldFunction
      Handler: app.lambda_handler
      Runtime: python3.12
      Layers: [{ Ref: CommonLayer }]
    Metadata: { SamResourceId: HelloWorldFunction }
  CommonLayer:
    Type: AWS::Serverless::LayerVersion
    Properties: { ContentUri: CommonLayer, LayerName: common }
    Metadata: { BuildMethod: python3.12, SamResourceId: CommonLayer }
"#,
    )
    .unwrap();
    let config = Config::from_sam_template(build.join("template.yaml"), &|_| None).unwrap();
    let package = config.functions["HelloWorldFunction"]
        .package
        .clone()
        .unwrap();
    assert_eq!(package.code, build.join("HelloWorldFunction"));
    assert_eq!(package.layers, vec![build.join("CommonLayer")]);
}

fn problems(result: Result<Config, Error>) -> Vec<String> {
    match result {
        Err(Error::Invalid(problems)) => problems.iter().map(ToString::to_string).collect(),
        other => panic!("expected problems, got {other:?}"),
    }
}

#[test]
fn bad_zip_functions_are_named_one_line_each() {
    let tmp = tempfile::tempdir().unwrap();
    project(tmp.path());
    let path = tmp.path().join("template.yaml");
    std::fs::write(
        &path,
        r#"
Resources:
  Java:
    Type: AWS::Serverless::Function
    Properties: { CodeUri: hello_world, Handler: a.B, Runtime: java21 }
  Missing:
    Type: AWS::Serverless::Function
    Properties: { CodeUri: nowhere, Handler: app.h, Runtime: python3.12 }
  NoHandler:
    Type: AWS::Serverless::Function
    Properties: { CodeUri: hello_world, Runtime: python3.12 }
  S3:
    Type: AWS::Serverless::Function
    Properties: { CodeUri: { Bucket: b, Key: k }, Handler: app.h, Runtime: python3.12 }
  BadLayer:
    Type: AWS::Serverless::Function
    Properties: { CodeUri: hello_world, Handler: app.h, Runtime: python3.12, Layers: [!Ref Nope] }
"#,
    )
    .unwrap();
    let found = problems(Config::from_sam_template(&path, &|_| None));
    let file = path.display().to_string();
    let expect = [
        format!("{file}: Resources.Java: Runtime: \"java21\" is not a runtime ESB runs"),
        format!(
            "{file}: Resources.Missing: CodeUri: {} does not exist",
            tmp.path().join("nowhere").display()
        ),
        format!("{file}: Resources.NoHandler: Handler: missing: a zip function needs a handler"),
        format!("{file}: Resources.S3: CodeUri: "),
        format!(
            "{file}: Resources.BadLayer: Layers[0]: \"Nope\" is no AWS::Serverless::LayerVersion"
        ),
    ];
    for expected in &expect {
        assert!(
            found.iter().any(|p| p.starts_with(expected.as_str())),
            "{expected}\nin {found:#?}"
        );
    }
    assert!(found.iter().all(|p| !p.contains('\n')), "{found:#?}");
}

#[test]
fn functions_yml_reads_zip_functions_relative_to_its_directory() {
    let tmp = tempfile::tempdir().unwrap();
    project(tmp.path());
    std::fs::write(
        tmp.path().join("functions.yml"),
        r#"
defaults:
  layers: [./layers/common]
functions:
  hello-py:
    runtime: python3.12
    handler: app.lambda_handler
    code: ./hello_world
  users:
    runtime: nodejs20.x
    handler: index.handler
    code: users
    layers: []
"#,
    )
    .unwrap();
    std::fs::write(tmp.path().join("routing.yml"), "routes: []\n").unwrap();
    let config = Config::load(
        tmp.path().join("functions.yml"),
        tmp.path().join("routing.yml"),
        &|_| None,
    )
    .unwrap();
    let hello = config.functions["hello-py"].package.clone().unwrap();
    assert_eq!(hello.code, tmp.path().join("./hello_world"));
    assert_eq!(hello.layers, vec![tmp.path().join("./layers/common")]);
    assert!(
        config.functions["users"]
            .package
            .as_ref()
            .unwrap()
            .layers
            .is_empty()
    );

    let both = Config::from_yaml_str(
        "functions:\n  f: { command: [x], runtime: python3.12, handler: a.b, code: /tmp }\n  g: { handler: a.b }\n",
        "routes: []\n",
        &|_| None,
    );
    let found = problems(both);
    assert!(found.contains(&"functions.yml: functions.f: runtime: a function is an image, a command, or runtime + handler + code, not several".to_owned()), "{found:#?}");
    assert!(
        found.contains(
            &"functions.yml: functions.g: runtime: missing: a zip function needs a runtime"
                .to_owned()
        ),
        "{found:#?}"
    );
    assert!(
        found.contains(
            &"functions.yml: functions.g: code: missing: a zip function needs its code".to_owned()
        ),
        "{found:#?}"
    );
}
