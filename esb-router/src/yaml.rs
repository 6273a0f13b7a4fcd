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
    let found = match value {
        Value::Null => None,
        other => text_value(other),
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
    let found = numeric(value, Number::as_f64).filter(|n| n.is_finite());
    expect(found, value, report, item, field, "a number")
}

/// A whole number, written as one or as a string.
pub(crate) fn integer(
    value: &Value,
    report: &mut Report<'_>,
    item: &str,
    field: &str,
) -> Option<i64> {
    let found = numeric(value, Number::as_i64);
    expect(found, value, report, item, field, "a whole number")
}

/// A YAML number read by `read`, or a string that parses as one.
fn numeric<T: FromStr>(value: &Value, read: fn(&Number) -> Option<T>) -> Option<T> {
    match value {
        Value::Number(n) => read(n),
        Value::String(s) => s.trim().parse().ok(),
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
}
