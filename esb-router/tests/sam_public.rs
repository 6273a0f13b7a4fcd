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

/// The shape of `sam init`'s step-functions app: a state machine with a disabled schedule,
/// three zip functions and a SimpleTable.
const STEP_FUNCTIONS: &str = r#"
AWSTemplateFormatVersion: "2010-09-09"
Transform: AWS::Serverless-2016-10-31
Resources:
  StockTradingStateMachine:
    Type: AWS::Serverless::StateMachine
    Properties:
      DefinitionUri: statemachine/stock_trader.asl.json
      DefinitionSubstitutions:
        StockCheckerFunctionArn: !GetAtt StockCheckerFunction.Arn
        DDBPutItem: !Sub arn:${AWS::Partition}:states:::dynamodb:putItem
        DDBTable: !Ref TransactionTable
      Events:
        HourlyTradingSchedule:
          Type: Schedule
          Properties: { Enabled: False, Schedule: "rate(1 hour)" }
  StockCheckerFunction:
    Type: AWS::Serverless::Function
    Properties: { CodeUri: functions/stock_checker/, Handler: app.lambda_handler, Runtime: python3.12, Architectures: [x86_64] }
  StockSellerFunction:
    Type: AWS::Serverless::Function
    Properties: { CodeUri: functions/stock_seller/, Handler: app.lambda_handler, Runtime: python3.12 }
  TransactionTable:
    Type: AWS::Serverless::SimpleTable
    Properties:
      PrimaryKey: { Name: Id, Type: String }
Outputs:
  StockTradingStateMachineArn:
    Value: !Ref StockTradingStateMachine
  StockTradingStateMachineRoleArn:
    Value: !GetAtt StockTradingStateMachineRole.Arn
"#;

#[test]
fn the_step_functions_app_loads_its_functions_and_lists_the_rest() {
    let tmp = tempfile::tempdir().unwrap();
    for dir in ["functions/stock_checker", "functions/stock_seller"] {
        std::fs::create_dir_all(tmp.path().join(dir)).unwrap();
    }
    let path = tmp.path().join("template.yaml");
    std::fs::write(&path, STEP_FUNCTIONS).unwrap();
    let config = Config::from_sam_template(&path, &|_| None).unwrap();
    assert_eq!(config.functions.len(), 2);
    let checker = config.functions["StockCheckerFunction"]
        .package
        .as_ref()
        .unwrap();
    assert_eq!(checker.code, tmp.path().join("functions/stock_checker/"));
    let file = path.display().to_string();
    let warnings: Vec<String> = config.warnings.iter().map(ToString::to_string).collect();
    assert_eq!(
        warnings,
        [format!(
            "{file}: Resources.StockTradingStateMachine: Type: AWS::Serverless::StateMachine is not created: ESB runs functions, their layers and APIs"
        ),]
    );
}
