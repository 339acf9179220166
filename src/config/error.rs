//! The error type of configuration loading.

use std::path::PathBuf;

use serde_path_to_error::Segment;

/// Why a configuration could not be loaded; every variant's message names
/// the file, the YAML location or the field path at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("could not read {}: {}", path.display(), io_message(error))]
    Read {
        /// The file that was being read.
        path: PathBuf,
        /// The underlying I/O error.
        error: std::io::Error,
    },
    /// The text is not valid YAML; `message` includes line and column.
    #[error("invalid YAML: {message}")]
    Syntax {
        /// Parser message, ending in "at line L, column C" where known.
        message: String,
    },
    /// A `${VAR}` reference names a variable that is not set and has no default.
    #[error("{path}: environment variable {var} is not set")]
    MissingEnv {
        /// Field path of the string containing the reference, e.g. `users[0].password`.
        path: String,
        /// Name of the missing variable.
        var: String,
    },
    /// A value has the wrong type, is out of range or violates a rule.
    #[error("{}", located(path, message))]
    Invalid {
        /// Field path, e.g. `nodes[1].port`; empty for the top level.
        path: String,
        /// What is wrong with the value.
        message: String,
    },
}

impl ConfigError {
    pub(super) fn invalid(path: impl Into<String>, message: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            path: path.into(),
            message: message.into(),
        }
    }

    /// Converts a typed-deserialization error, keeping the field path.
    pub(super) fn from_deserialize(
        err: serde_path_to_error::Error<serde_json::Error>,
    ) -> ConfigError {
        let message = err.inner().to_string();
        let segments: Vec<&Segment> = err.path().iter().collect();
        if message.starts_with("unknown field `") {
            // serde_path_to_error appends the unknown key itself to the path;
            // report the mapping that contains it instead.
            let parent = segments.split_last().map_or(&[][..], |(_, rest)| rest);
            let path = join(parent);
            if path.is_empty() {
                return ConfigError::invalid("", at_top_level(&message));
            }
            return ConfigError::invalid(path, message);
        }
        let path = join(&segments);
        if path.is_empty() {
            return ConfigError::invalid("", at_top_level(&message));
        }
        ConfigError::invalid(path, message)
    }
}

/// Formats path segments like `serde_path_to_error` does (`a.b[0].c`), but
/// gives an empty string for the root.
fn join(segments: &[&Segment]) -> String {
    let mut out = String::new();
    for segment in segments {
        if !out.is_empty() && !matches!(segment, Segment::Seq { .. }) {
            out.push('.');
        }
        out.push_str(&segment.to_string());
    }
    out
}

/// "unknown field `x`, expected ..." -> "unknown field `x` at top level, expected ...".
fn at_top_level(message: &str) -> String {
    let mut ticks = message.match_indices('`').map(|(i, _)| i);
    match (ticks.next(), ticks.next()) {
        (Some(_), Some(close)) => {
            format!(
                "{} at top level{}",
                &message[..=close],
                &message[close + 1..]
            )
        }
        _ => format!("{message} at top level"),
    }
}

fn located(path: &str, message: &str) -> String {
    if path.is_empty() {
        message.to_owned()
    } else {
        format!("{path}: {message}")
    }
}

/// `io::Error`'s message without the " (os error N)" suffix.
fn io_message(error: &std::io::Error) -> String {
    let text = error.to_string();
    match text.rfind(" (os error ") {
        Some(i) if text.ends_with(')') => text[..i].to_owned(),
        _ => text,
    }
}

/// Human name of a JSON value's kind, for "expected a mapping" messages.
pub(super) fn kind_of(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "a sequence",
        serde_json::Value::Object(_) => "a mapping",
    }
}
