//! The YAML layer of the loaders: parsing a document and reading untyped values.

use std::str::FromStr;

use serde_norway::{Mapping, Number, Value};

use crate::error::Report;

/// Whether an empty document is read as an empty mapping.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Empty {
    /// An empty document is an empty mapping (`functions.yml`, `routing.yml`).
    Allowed,
    /// An empty document is reported like any other non-mapping (SAM templates).
    Rejected,
}

/// Parses `text` into its top-level mapping, reporting a syntax error (with its line and
/// column, and as the problem's source) or a document that is not a mapping.
pub(crate) fn root(text: &str, empty: Empty, report: &mut Report<'_>) -> Option<Mapping> {
    match serde_norway::from_str::<Value>(text) {
        Ok(Value::Mapping(root)) => Some(root),
        Ok(Value::Null) if empty == Empty::Allowed => Some(Mapping::new()),
        Ok(_) => {
            report.push("", "", "expected a mapping at the top level");
            None
        }
        Err(e) => {
            report.push_cause(format!("invalid YAML: {e}"), e);
            None
        }
    }
}

pub(crate) fn mapping<'v>(
    value: &'v Value,
    report: &mut Report<'_>,
    item: &str,
    field: &str,
) -> Option<&'v Mapping> {
    match value {
        Value::Tagged(tagged) => mapping(&tagged.value, report, item, field),
        _ => expect(value.as_mapping(), value, report, item, field, "a mapping"),
    }
}

/// A scalar as text: strings as they are, numbers and booleans printed, null as empty.
pub(crate) fn text_value(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Null => Some(String::new()),
        _ => None,
    }
}

/// A scalar as text (see [`text_value`]), reporting anything else, null included.
pub(crate) fn text(
    value: &Value,
    report: &mut Report<'_>,
    item: &str,
    field: &str,
) -> Option<String> {
    resolved_text(value, &text_value, report, item, field)
}

/// What `resolve` makes of `value` (a scalar, or an intrinsic function it resolves) as
/// text, reporting anything else, null included.
pub(crate) fn resolved_text(
    value: &Value,
    resolve: &dyn Fn(&Value) -> Option<String>,
    report: &mut Report<'_>,
    item: &str,
    field: &str,
) -> Option<String> {
    let found = match value {
        Value::Null => None,
        other => resolve(other),
    };
    expect(found, value, report, item, field, "a string")
}

/// A finite number, written as one or as a string.
pub(crate) fn number(
    value: &Value,
    report: &mut Report<'_>,
    item: &str,
    field: &str,
) -> Option<f64> {
    let found = numeric(value, Number::as_f64, &text_value).filter(|n| n.is_finite());
    expect(found, value, report, item, field, "a number")
}

/// A whole number, written as one or as a string.
pub(crate) fn integer(
    value: &Value,
    report: &mut Report<'_>,
    item: &str,
    field: &str,
) -> Option<i64> {
    let found = numeric(value, Number::as_i64, &text_value);
    expect(found, value, report, item, field, "a whole number")
}

/// A whole number of zero or more, written as one or as text `resolve` makes of `value`
/// (a string, or an intrinsic function it resolves).
pub(crate) fn resolved_unsigned(
    value: &Value,
    resolve: &dyn Fn(&Value) -> Option<String>,
    report: &mut Report<'_>,
    item: &str,
    field: &str,
) -> Option<u64> {
    let found = numeric(value, Number::as_u64, resolve);
    expect(found, value, report, item, field, "a whole number")
}

/// A list (a tagged value is not one), reporting anything else and reading it as empty.
pub(crate) fn list<'v>(
    value: &'v Value,
    report: &mut Report<'_>,
    item: &str,
    field: &str,
) -> &'v [Value] {
    let found = match value {
        Value::Sequence(items) => Some(items.as_slice()),
        _ => None,
    };
    expect(found, value, report, item, field, "a list").unwrap_or_default()
}

/// A mapping as written (a tagged value is not one), reporting anything else.
pub(crate) fn plain_mapping<'v>(
    value: &'v Value,
    report: &mut Report<'_>,
    item: &str,
    field: &str,
) -> Option<&'v Mapping> {
    let found = match value {
        Value::Mapping(map) => Some(map),
        _ => None,
    };
    expect(found, value, report, item, field, "a mapping")
}

/// A YAML number read by `read`, or text `resolve` makes of anything else that parses as
/// one.
fn numeric<T: FromStr>(
    value: &Value,
    read: fn(&Number) -> Option<T>,
    resolve: &dyn Fn(&Value) -> Option<String>,
) -> Option<T> {
    match value {
        Value::Number(n) => read(n),
        other => resolve(other).and_then(|text| text.trim().parse().ok()),
    }
}

/// A CloudFormation intrinsic function ESB resolves, in its short (`!Ref X`) or long
/// (`{Ref: X}`) form, with its argument.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Intrinsic<'v> {
    /// `!Ref` / `Ref`.
    Ref(&'v Value),
    /// `!GetAtt` / `Fn::GetAtt`.
    GetAtt(&'v Value),
    /// `!Sub` / `Fn::Sub`.
    Sub(&'v Value),
}

/// The intrinsic function `value` is, if it is one of [`Intrinsic`]'s.
pub(crate) fn intrinsic(value: &Value) -> Option<Intrinsic<'_>> {
    let (name, argument) = match value {
        Value::Tagged(tagged) => {
            let tag = tagged.tag.to_string();
            let name = match tag.as_str() {
                "!Ref" => "Ref",
                "!GetAtt" => "Fn::GetAtt",
                "!Sub" => "Fn::Sub",
                _ => return None,
            };
            (name, &tagged.value)
        }
        Value::Mapping(map) if map.len() == 1 => {
            let (key, argument) = map.iter().next()?;
            (key.as_str()?, argument)
        }
        _ => return None,
    };
    match name {
        "Ref" => Some(Intrinsic::Ref(argument)),
        "Fn::GetAtt" => Some(Intrinsic::GetAtt(argument)),
        "Fn::Sub" => Some(Intrinsic::Sub(argument)),
        _ => None,
    }
}

/// `found`, after reporting `expected <what>, found <value>` when it is `None`.
fn expect<T>(
    found: Option<T>,
    value: &Value,
    report: &mut Report<'_>,
    item: &str,
    field: &str,
    what: &str,
) -> Option<T> {
    if found.is_none() {
        report.push(
            item,
            field,
            format!("expected {what}, found {}", value_debug(value)),
        );
    }
    found
}

pub(crate) fn key_text(key: &Value) -> String {
    text_value(key).unwrap_or_else(|| value_debug(key))
}

pub(crate) fn value_debug(value: &Value) -> String {
    match value {
        Value::Null => "nothing".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => format!("{s:?}"),
        Value::Sequence(_) => "a list".into(),
        Value::Mapping(_) => "a mapping".into(),
        Value::Tagged(t) => format!("a {} tag", t.tag),
    }
}

#[cfg(test)]
mod tests {
    use crate::{Config, Error};

    use super::*;

    #[test]
    fn yaml_syntax_errors_give_line_and_column() {
        let Err(Error::Invalid(problems)) =
            Config::from_yaml_str("functions:\n  f: [unclosed\n", "", &|_| None)
        else {
            panic!("expected a syntax error");
        };
        let message = &problems[0].message;
        assert!(message.starts_with("invalid YAML"), "{message}");
        assert!(message.contains("line 3 column 1"), "{message}");
        let cause = std::error::Error::source(&problems[0]).expect("the YAML error is kept");
        assert!(cause.to_string().contains("line 3 column 1"), "{cause}");
    }

    #[test]
    fn cloudformation_short_tags_are_kept() {
        let value: Value =
            serde_norway::from_str("a: !Ref P\nb: !GetAtt T.Arn\nc: !If [x, y, z]\n").unwrap();
        let tags: Vec<String> = value
            .as_mapping()
            .unwrap()
            .values()
            .map(|v| match v {
                Value::Tagged(t) => t.tag.to_string(),
                other => panic!("untagged {other:?}"),
            })
            .collect();
        assert_eq!(tags, ["!Ref", "!GetAtt", "!If"]);
    }

    #[test]
    fn intrinsics_are_read_in_short_and_long_form() {
        let value: Value = serde_norway::from_str(
            "- !Ref T\n- {Ref: T}\n- !GetAtt T.Arn\n- {\"Fn::GetAtt\": [T, Arn]}\n- !Sub x\n- {\"Fn::Sub\": x}\n- !If [a, b, c]\n- {Ref: T, Other: 1}\n- T\n",
        )
        .unwrap();
        let kinds: Vec<String> = value
            .as_sequence()
            .unwrap()
            .iter()
            .map(|v| match intrinsic(v) {
                Some(Intrinsic::Ref(a)) => format!("Ref {}", value_debug(a)),
                Some(Intrinsic::GetAtt(a)) => format!("GetAtt {}", value_debug(a)),
                Some(Intrinsic::Sub(a)) => format!("Sub {}", value_debug(a)),
                None => "none".into(),
            })
            .collect();
        assert_eq!(
            kinds,
            [
                "Ref \"T\"",
                "Ref \"T\"",
                "GetAtt \"T.Arn\"",
                "GetAtt a list",
                "Sub \"x\"",
                "Sub \"x\"",
                "none",
                "none",
                "none"
            ]
        );
    }
}
