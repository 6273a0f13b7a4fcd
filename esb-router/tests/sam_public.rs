//! Templates in the shape of public SAM applications (Globals, Parameters, `!Ref`, `!Sub`,
//! `!GetAtt` in Outputs, HttpApi + Api, SimpleTable, Schedule) load; what ESB does not run
//! is listed once as a warning; an unresolved parameter is named.

#![allow(clippy::unwrap_used)]

use esb_router::{Auth, Config, Error};

const TEMPLATE: &str = r#"
AWSTemplateFormatVersion: '2010-09-09'
Transform: AWS::Serverless-2016-10-31
Description: sam-app
Parameters:
  Stage: { Type: String, Default: dev }
  TableName: { Type: String }
Globals:
  Function:
    Timeout: 3
    Runtime: python3.12
    Tracing: Active
    Environment:
      Variables:
        STAGE: !Ref Stage
        TABLE: !Ref TableName
        QUEUE_URL: !Sub "https://sqs.${AWS::Region}.amazonaws.com/${Stage}-queue"
Resources:
  HelloWorldFunction:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: ./
      Handler: app.lambda_handler
      Policies: [{ DynamoDBCrudPolicy: { TableName: !Ref ItemsTable } }]
      Events:
        HelloWorld: { Type: Api, Properties: { Path: /hello, Method: get } }
        HelloHttp: { Type: HttpApi, Properties: { Path: /hello2, Method: get } }
        Nightly: { Type: Schedule, Properties: { Schedule: "cron(0 3 * * ? *)" } }
        Queue: { Type: SQS, Properties: { Queue: !GetAtt Queue.Arn } }
  ItemsTable:
    Type: AWS::Serverless::SimpleTable
    Properties: { PrimaryKey: { Name: id, Type: String } }
  Queue:
    Type: AWS::SQS::Queue
Outputs:
  HelloWorldApi:
    Value: !Sub "https://${ServerlessRestApi}.execute-api.${AWS::Region}.amazonaws.com/Prod/hello/"
  HelloWorldFunctionArn:
    Value: !GetAtt HelloWorldFunction.Arn
"#;

#[test]
fn a_public_shaped_template_loads_and_lists_what_is_not_run() {
    let env = |name: &str| match name {
        "TableName" => Some("items".to_owned()),
        "AWS_REGION" => Some("eu-west-1".to_owned()),
        _ => None,
    };
    let config = Config::from_sam_str(TEMPLATE, &env).unwrap();
    let hello = &config.functions["HelloWorldFunction"];
    assert_eq!(hello.environment["STAGE"], "dev");
    assert_eq!(hello.environment["TABLE"], "items");
    assert_eq!(
        hello.environment["QUEUE_URL"],
        "https://sqs.eu-west-1.amazonaws.com/dev-queue"
    );
    // Events without Auth are open, as on API Gateway.
    for route in &config.routes {
        assert_eq!(route.auth, Auth::None, "{}", route.path);
    }
    assert_eq!(config.routes.len(), 2);

    let warnings: Vec<String> = config.warnings.iter().map(ToString::to_string).collect();
    for expected in [
        "template.yaml: Resources.HelloWorldFunction: Policies: not run",
        "template.yaml: Resources.HelloWorldFunction.Events.Queue: Type: SQS events are not run",
        "template.yaml: Resources.Queue: Type: AWS::SQS::Queue is not created",
        "template.yaml: Resources.ItemsTable: Type: AWS::Serverless::SimpleTable is not created",
    ] {
        assert!(
            warnings.iter().filter(|w| w.starts_with(expected)).count() == 1,
            "{expected} once in {warnings:#?}"
        );
    }
    assert!(warnings.iter().all(|w| !w.contains('\n')));
}

#[test]
fn an_unresolved_parameter_is_named() {
    let Err(Error::Invalid(problems)) = Config::from_sam_str(TEMPLATE, &|_| None) else {
        panic!("TableName has no value");
    };
    let problems: Vec<String> = problems.iter().map(ToString::to_string).collect();
    assert_eq!(
        problems,
        [
            "template.yaml: Parameters.TableName: has no Default and no value: give it one with a parameter override"
        ]
    );
}
