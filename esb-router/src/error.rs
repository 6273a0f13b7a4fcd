//! The one error type of this crate.

use std::fmt;
use std::path::PathBuf;

/// Why configuration could not be loaded or a router could not be built.
#[derive(Debug, thiserror::Error)]
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
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// The file (as given to the loader).
    pub file: String,
    /// The function or route at fault (`functions.echo`, `routes[2]`, `line 7`), or empty.
    pub item: String,
    /// The field at fault (`scaling.max_capacity`), or empty.
    pub field: String,
    /// What is wrong.
    pub message: String,
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
        self.problems.push(Problem {
            file: self.file.to_owned(),
            item: item.to_owned(),
            field: field.to_owned(),
            message: message.into(),
        });
    }
}
