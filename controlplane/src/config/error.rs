//! Configuration errors: which file, which field, what is wrong, and the
//! line when it can be found.

use std::fmt;

use super::path::FieldPath;

/// A configuration that cannot be used. Displays as
/// `config/x.toml: trunks[1].address: "foo" is not an IP address and port (line 12)`.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{origin}: {source}")]
    Read {
        origin: String,
        #[source]
        source: std::io::Error,
    },
    /// The text is not a valid configuration.
    #[error("{origin}: {problem}")]
    Invalid { origin: String, problem: Problem },
}

impl ConfigError {
    /// The problem in the text, when the text was read.
    pub fn problem(&self) -> Option<&Problem> {
        match self {
            ConfigError::Read { .. } => None,
            ConfigError::Invalid { problem, .. } => Some(problem),
        }
    }
}

/// One thing wrong in a configuration text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Where: empty for the document itself (e.g. a TOML syntax error).
    pub field: FieldPath,
    pub message: String,
    /// 1-based line of the offending value, when known.
    pub line: Option<usize>,
}

impl Problem {
    pub fn new(field: FieldPath, message: impl Into<String>) -> Self {
        Problem {
            field,
            message: message.into(),
            line: None,
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.field.is_root() {
            write!(f, "{}: ", self.field)?;
        }
        f.write_str(&self.message)?;
        if let Some(line) = self.line {
            write!(f, " (line {line})")?;
        }
        Ok(())
    }
}
