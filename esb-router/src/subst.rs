//! `${VAR}` and `${VAR:-default}` substitution in configuration text.

use crate::error::Report;

/// Looks up a variable by name; `None` when it is unset.
pub(crate) type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

/// Replaces every `${VAR}` / `${VAR:-default}` in `text` outside YAML comments.
///
/// An unset variable without a default is reported (with its line) and replaced by nothing.
/// `${VAR:-default}` takes the default when `VAR` is unset or empty, as a shell does.
/// Text that is not a well-formed reference (`${1x}`, an unclosed `${`) is kept as written.
pub(crate) fn substitute(text: &str, env: Env<'_>, report: &mut Report<'_>) -> String {
    if !text.contains("${") {
        return text.to_owned();
    }
    let mut out = String::with_capacity(text.len());
    for (index, line) in text.split_inclusive('\n').enumerate() {
        let (content, comment) = split_comment(line);
        substitute_line(content, index + 1, env, report, &mut out);
        out.push_str(comment);
    }
    out
}

fn substitute_line(
    line: &str,
    number: usize,
    env: Env<'_>,
    report: &mut Report<'_>,
    out: &mut String,
) {
    let mut rest = line;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else {
            out.push_str(&rest[start..]);
            return;
        };
        let inner = &after[..end];
        let (name, default) = match inner.split_once(":-") {
            Some((name, default)) => (name, Some(default)),
            None => (inner, None),
        };
        if !is_variable_name(name) {
            out.push_str(&rest[start..start + 2 + end + 1]);
        } else {
            match (env(name), default) {
                (Some(value), Some(default)) if value.is_empty() => out.push_str(default),
                (Some(value), _) => out.push_str(&value),
                (None, Some(default)) => out.push_str(default),
                (None, None) => report.push(
                    &format!("line {number}"),
                    "",
                    format!("environment variable {name} is not set (write ${{{name}:-default}} to give a default)"),
                ),
            }
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
}

/// Splits a line into its content and its trailing YAML comment (`#` after whitespace, outside quotes).
fn split_comment(line: &str) -> (&str, &str) {
    let bytes = line.as_bytes();
    let mut quote: Option<u8> = None;
    for (i, &b) in bytes.iter().enumerate() {
        match quote {
            Some(q) if b == q => quote = None,
            Some(_) => {}
            None => match b {
                b'"' | b'\'' => quote = Some(b),
                b'#' if i == 0 || bytes[i - 1].is_ascii_whitespace() => return line.split_at(i),
                _ => {}
            },
        }
    }
    (line, "")
}

fn is_variable_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c == '_' || c.is_ascii_alphabetic())
        && chars.all(|c| c == '_' || c.is_ascii_alphanumeric())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Problem;

    fn run(text: &str, vars: &[(&str, &str)]) -> (String, Vec<Problem>) {
        let lookup = |name: &str| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| (*v).to_owned())
        };
        let mut problems = Vec::new();
        let out = substitute(
            text,
            &lookup,
            &mut Report {
                file: "functions.yml",
                problems: &mut problems,
            },
        );
        (out, problems)
    }

    #[test]
    fn substitutes_set_variables_and_defaults() {
        let (out, problems) = run(
            "a: \"${A}\"\nb: ${B:-fallback}\nc: ${C:-x}-${A}\n",
            &[("A", "one"), ("C", "")],
        );
        assert!(problems.is_empty());
        assert_eq!(out, "a: \"one\"\nb: fallback\nc: x-one\n");
    }

    #[test]
    fn unset_variables_are_all_reported_with_their_lines() {
        let (_, problems) = run("a: ${MISSING}\nb: ok\nc: ${OTHER}\n", &[]);
        let text: Vec<String> = problems.iter().map(ToString::to_string).collect();
        assert_eq!(text.len(), 2);
        assert!(
            text[0].starts_with("functions.yml: line 1: environment variable MISSING is not set")
        );
        assert!(
            text[1].starts_with("functions.yml: line 3: environment variable OTHER is not set")
        );
    }

    #[test]
    fn comments_and_malformed_references_are_left_alone() {
        let (out, problems) = run(
            "# ${IN_COMMENT}\na: \"x # ${A}\" # ${ALSO_COMMENT}\nb: ${1x} ${open\n",
            &[("A", "v")],
        );
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(
            out,
            "# ${IN_COMMENT}\na: \"x # v\" # ${ALSO_COMMENT}\nb: ${1x} ${open\n"
        );
    }
}
