//! API Gateway path templates: `/items/{id}`, `/files/{proxy+}`.

use std::fmt;
use std::str::FromStr;

use crate::Error;

/// One segment of a [`PathTemplate`].
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Segment {
    /// A literal segment, matched exactly (after percent-decoding the request's segment).
    Literal(String),
    /// `{name}`: one non-empty segment.
    Param(String),
    /// `{name+}`: the rest of the path, one or more segments; only as the last segment.
    Greedy(String),
}

/// A parsed API Gateway resource path such as `/items/{id}` or `/files/{proxy+}`.
///
/// Rules (those of API Gateway): the template starts with `/`; segments are separated by
/// single slashes; a segment is either a literal or a whole `{name}` / `{name+}`; names are
/// made of ASCII letters, digits, `_`, `-` and `.` and are unique within the template; a
/// greedy `{name+}` may only be the last segment. A trailing slash is dropped (`/items/`
/// is the template `/items`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PathTemplate {
    text: String,
    segments: Vec<Segment>,
}

impl PathTemplate {
    /// Parses a template, naming what is wrong with it on failure.
    pub fn parse(template: &str) -> Result<Self, Error> {
        let fail = |reason: String| Error::Template {
            template: template.to_owned(),
            reason,
        };
        let Some(body) = template.strip_prefix('/') else {
            return Err(fail("must start with '/'".into()));
        };
        let body = body.strip_suffix('/').unwrap_or(body);
        let mut segments = Vec::new();
        if !body.is_empty() {
            for raw in body.split('/') {
                if matches!(segments.last(), Some(Segment::Greedy(_))) {
                    return Err(fail(
                        "a greedy {name+} parameter must be the last segment".into(),
                    ));
                }
                segments.push(parse_segment(raw).map_err(fail)?);
            }
        }
        let mut names: Vec<&str> = segments.iter().filter_map(Segment::param_name).collect();
        names.sort_unstable();
        if let Some(pair) = names.windows(2).find(|pair| pair[0] == pair[1]) {
            return Err(fail(format!("parameter {{{}}} appears twice", pair[0])));
        }
        let mut text = String::with_capacity(template.len());
        for segment in &segments {
            text.push('/');
            match segment {
                Segment::Literal(literal) => text.push_str(literal),
                Segment::Param(name) => {
                    text.push('{');
                    text.push_str(name);
                    text.push('}');
                }
                Segment::Greedy(name) => {
                    text.push('{');
                    text.push_str(name);
                    text.push_str("+}");
                }
            }
        }
        if text.is_empty() {
            text.push('/');
        }
        Ok(Self { text, segments })
    }

    /// The template as API Gateway shows it in `resource` / `routeKey` (`/items/{id}`).
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The segments, in order.
    pub fn segments(&self) -> &[Segment] {
        &self.segments
    }

    /// The parameter names, in order of appearance.
    pub fn param_names(&self) -> impl Iterator<Item = &str> {
        self.segments.iter().filter_map(Segment::param_name)
    }

    /// The template with parameter names erased (`/items/{}`): two templates with the same
    /// shape match exactly the same paths.
    pub(crate) fn shape(&self) -> String {
        let mut shape = String::new();
        for segment in &self.segments {
            shape.push('/');
            match segment {
                Segment::Literal(literal) => shape.push_str(literal),
                Segment::Param(_) => shape.push_str("{}"),
                Segment::Greedy(_) => shape.push_str("{+}"),
            }
        }
        shape
    }
}

impl Segment {
    fn param_name(&self) -> Option<&str> {
        match self {
            Segment::Literal(_) => None,
            Segment::Param(name) | Segment::Greedy(name) => Some(name),
        }
    }
}

fn parse_segment(raw: &str) -> Result<Segment, String> {
    if raw.is_empty() {
        return Err("empty segment (double slash)".into());
    }
    if let Some(inner) = raw.strip_prefix('{') {
        let Some(inner) = inner.strip_suffix('}') else {
            return Err(format!(
                "segment {raw:?} opens '{{' without closing it at its end"
            ));
        };
        let (name, greedy) = match inner.strip_suffix('+') {
            Some(name) => (name, true),
            None => (inner, false),
        };
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        {
            return Err(format!(
                "parameter name {name:?} must be non-empty ASCII letters, digits, '_', '-' or '.'"
            ));
        }
        return Ok(if greedy {
            Segment::Greedy(name.to_owned())
        } else {
            Segment::Param(name.to_owned())
        });
    }
    if let Some(bad) = raw
        .chars()
        .find(|c| matches!(c, '{' | '}' | '?' | '#' | '%') || c.is_whitespace() || c.is_control())
    {
        return Err(format!(
            "segment {raw:?} contains {bad:?}; parameters must be whole segments and literals plain text"
        ));
    }
    Ok(Segment::Literal(raw.to_owned()))
}

impl fmt::Display for PathTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl FromStr for PathTemplate {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        Self::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reason(template: &str) -> String {
        match PathTemplate::parse(template) {
            Err(Error::Template { reason, .. }) => reason,
            other => panic!("{template}: expected a template error, got {other:?}"),
        }
    }

    #[test]
    fn parses_literals_params_and_greedy() {
        let t = PathTemplate::parse("/files/{bucket}/{proxy+}").unwrap();
        assert_eq!(
            t.segments(),
            [
                Segment::Literal("files".into()),
                Segment::Param("bucket".into()),
                Segment::Greedy("proxy".into()),
            ]
        );
        assert_eq!(t.as_str(), "/files/{bucket}/{proxy+}");
        assert_eq!(t.param_names().collect::<Vec<_>>(), ["bucket", "proxy"]);
    }

    #[test]
    fn root_and_trailing_slash_normalize() {
        assert_eq!(PathTemplate::parse("/").unwrap().segments(), []);
        assert_eq!(PathTemplate::parse("/").unwrap().as_str(), "/");
        assert_eq!(PathTemplate::parse("/items/").unwrap().as_str(), "/items");
    }

    #[test]
    fn rejects_malformed_templates() {
        assert!(reason("items").contains("start with '/'"));
        assert!(reason("/a//b").contains("empty segment"));
        assert!(reason("/{proxy+}/x").contains("last segment"));
        assert!(reason("/a{id}").contains("whole segments"));
        assert!(reason("/{id").contains("without closing"));
        assert!(reason("/{}").contains("parameter name"));
        assert!(reason("/{a b}").contains("parameter name"));
        assert!(reason("/{id}/x/{id}").contains("appears twice"));
        assert!(reason("/a b").contains("contains ' '"));
        assert!(reason("/a?x=1").contains("contains '?'"));
    }

    #[test]
    fn shape_ignores_parameter_names() {
        let a = PathTemplate::parse("/items/{id}").unwrap();
        let b = PathTemplate::parse("/items/{name}").unwrap();
        assert_eq!(a.shape(), b.shape());
        assert_ne!(
            a.shape(),
            PathTemplate::parse("/items/{p+}").unwrap().shape()
        );
    }
}
