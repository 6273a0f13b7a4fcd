//! Schedules: SAM `Schedule` / `ScheduleV2` events and `functions.yml` `events`.

#![allow(clippy::unwrap_used)]

use esb_router::{Config, Error};

#[test]
fn sam_schedule_events_become_schedules() {
    let template = r#"
Resources:
  Job:
    Type: AWS::Serverless::Function
    Properties:
      PackageType: Image
      ImageUri: job
      Events:
        Every5: { Type: Schedule, Properties: { Schedule: rate(5 minutes) } }
        Hourly: { Type: Schedule, Properties: { Schedule: "rate(1 hour)", Enabled: False, Description: off } }
        Off: { Type: Schedule, Properties: { Schedule: "cron(0 3 * * ? *)", Enabled: false, Input: '{"k": 1}' } }
        V2:
          Type: ScheduleV2
          Properties: { ScheduleExpression: "cron(0/15 * ? * MON-FRI *)", State: DISABLED, Name: nightly, ScheduleExpressionTimezone: Europe/Paris }
"#;
    let config = Config::from_sam_str(template, &|_| None).unwrap();
    let schedules = &config.functions["Job"].schedules;
    let rows: Vec<(String, String, bool, Option<String>)> = schedules
        .iter()
        .map(|s| {
            (
                s.name.clone(),
                s.expression.to_string(),
                s.enabled,
                s.input.clone(),
            )
        })
        .collect();
    assert_eq!(
        rows,
        [
            ("Job-Every5".into(), "rate(5 minutes)".into(), true, None),
            ("Job-Hourly".into(), "rate(1 hour)".into(), false, None),
            (
                "Job-Off".into(),
                "cron(0 3 * * ? *)".into(),
                false,
                Some(r#"{"k": 1}"#.into())
            ),
            (
                "nightly".into(),
                "cron(0/15 * ? * MON-FRI *)".into(),
                false,
                None
            ),
        ]
    );
    let warnings: Vec<String> = config.warnings.iter().map(ToString::to_string).collect();
    assert_eq!(
        warnings,
        [
            "template.yaml: Resources.Job.Events.V2: ScheduleExpressionTimezone: Europe/Paris is not applied: schedules run in UTC"
        ]
    );
}

#[test]
fn functions_yml_events_take_schedules_and_bad_ones_are_named() {
    let functions = r#"
functions:
  job:
    command: [job]
    events:
      - schedule: "rate(5 minutes)"
      - { schedule: "rate(1 day)", enabled: false, input: { hello: world }, name: daily }
"#;
    let config = Config::from_yaml_str(functions, "routes: []\n", &|_| None).unwrap();
    let schedules = &config.functions["job"].schedules;
    assert_eq!(schedules.len(), 2);
    assert_eq!(schedules[0].name, "job-schedule-0");
    assert!(schedules[0].enabled);
    assert_eq!(schedules[1].name, "daily");
    assert!(!schedules[1].enabled);
    assert_eq!(schedules[1].input.as_deref(), Some(r#"{"hello":"world"}"#));

    let bad = "functions:\n  job:\n    command: [job]\n    events: [{ schedule: \"rate(5 minute)\" }, { cron: x }]\n";
    let Err(Error::Invalid(problems)) = Config::from_yaml_str(bad, "routes: []\n", &|_| None)
    else {
        panic!("bad schedules");
    };
    let problems: Vec<String> = problems.iter().map(ToString::to_string).collect();
    assert_eq!(
        problems,
        [
            "functions.yml: functions.job: events[0].schedule: rate(5 minute): a value of 1 takes a singular unit (minute), others a plural one (minutes)",
            "functions.yml: functions.job: events[1].cron: unknown field: expected schedule, enabled, input or name",
            "functions.yml: functions.job: events[1].schedule: missing: rate(...) or cron(...)",
        ]
    );
}
