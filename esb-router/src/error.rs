//! The one error type of this crate.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

/// Why configuration could not be loaded or a router could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A configuration file could not be read.
    #[error("cannot read {}: {source}", .path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The configuration is invalid; every problem found is listed.
    #[error("invalid configuration ({} problem{}):\n{}", .0.len(), if .0.len() == 1 { "" } else { "s" }, Problems(.0))]
    Invalid(Vec<Problem>),
    /// A path template such as `/items/{id}` is malformed.
    #[error("invalid path template {template:?}: {reason}")]
    Template {
        /// The template as written.
        template: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// One problem found while validating configuration: where it is and what is wrong.
///
/// A problem caused by another error (a YAML syntax error) keeps it as its
/// [`source`](std::error::Error::source).
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Problem {
    /// The file (as given to the loader).
    pub file: String,
    /// The function or route at fault (`functions.echo`, `routes[2]`, `line 7`), or empty.
    pub item: String,
    /// The field at fault (`scaling.max_capacity`), or empty.
    pub field: String,
    /// What is wrong.
    pub message: String,
    cause: Option<Arc<dyn std::error::Error + Send + Sync>>,
}

impl Problem {
    /// A problem in `file` at `item` / `field` (either may be empty).
    pub fn new(
        file: impl Into<String>,
        item: impl Into<String>,
        field: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            file: file.into(),
            item: item.into(),
            field: field.into(),
            message: message.into(),
            cause: None,
        }
    }
}

/// Problems are equal when they say the same thing about the same place, whatever their causes.
impl PartialEq for Problem {
    fn eq(&self, other: &Self) -> bool {
        (&self.file, &self.item, &self.field, &self.message)
            == (&other.file, &other.item, &other.field, &other.message)
    }
}

impl Eq for Problem {}

impl std::error::Error for Problem {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.cause
            .as_deref()
            .map(|cause| cause as &(dyn std::error::Error + 'static))
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if !self.item.is_empty() {
            write!(f, ": {}", self.item)?;
        }
        if !self.field.is_empty() {
            write!(f, ": {}", self.field)?;
        }
        write!(f, ": {}", self.message)
    }
}

struct Problems<'a>(&'a [Problem]);

impl fmt::Display for Problems<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, problem) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "  {problem}")?;
        }
        Ok(())
    }
}

/// Collects problems for one file while validating.
pub(crate) struct Report<'a> {
    pub(crate) file: &'a str,
    pub(crate) problems: &'a mut Vec<Problem>,
}

impl Report<'_> {
    /// Records a problem with `item` and `field`.
    pub(crate) fn push(&mut self, item: &str, field: &str, message: impl Into<String>) {
        self.problems
            .push(Problem::new(self.file, item, field, message));
    }

    /// Records a problem of the whole file caused by `cause`, which it keeps as its source.
    pub(crate) fn push_cause(
        &mut self,
        message: impl Into<String>,
        cause: impl std::error::Error + Send + Sync + 'static,
    ) {
        let mut problem = Problem::new(self.file, "", "", message);
        problem.cause = Some(Arc::new(cause));
        self.problems.push(problem);
    }
}
