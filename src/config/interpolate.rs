//! `${VAR}` interpolation in string scalars.
//!
//! Syntax: `${NAME}` (error if unset), `${NAME:-default}` (default when unset
//! or empty), `$$` for a literal `$`. A `$` followed by anything else is kept
//! as is, so passwords like `pa$word` need no escaping. Values taken from the
//! environment are not expanded again.

use serde_json::Value;

use super::ConfigError;

/// Expands every string scalar in `value` in place; `path` is the field path
/// of `value` (empty for the root) used in error messages.
pub(super) fn interpolate_value(
    value: &mut Value,
    path: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(), ConfigError> {
    match value {
        Value::String(s) => {
            if s.contains('$') {
                *s = expand(s, env).map_err(|e| e.at(path))?;
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                interpolate_value(item, &format!("{path}[{i}]"), env)?;
            }
        }
        Value::Object(map) => {
            for (key, item) in map.iter_mut() {
                let child = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                interpolate_value(item, &child, env)?;
            }
        }
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
    Ok(())
}

/// Why a single string could not be expanded.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum ExpandError {
    /// `${NAME}` without default, and `NAME` is not set.
    Missing(String),
    /// Malformed reference (unterminated or bad variable name).
    Syntax(String),
}

impl ExpandError {
    fn at(self, path: &str) -> ConfigError {
        match self {
            ExpandError::Missing(var) => ConfigError::MissingEnv {
                path: path.to_owned(),
                var,
            },
            ExpandError::Syntax(message) => ConfigError::invalid(path, message),
        }
    }
}

/// Expands the references in one string.
pub(super) fn expand(
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<String, ExpandError> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(body) = after.strip_prefix('{') {
            let end = body.find('}').ok_or_else(|| {
                ExpandError::Syntax(format!(
                    "unterminated \"${{\" in {text:?} (write \"$$\" for a literal \"$\")"
                ))
            })?;
            let inner = &body[..end];
            let (name, default) = match inner.split_once(":-") {
                Some((name, default)) => (name, Some(default)),
                None => (inner, None),
            };
            if !is_var_name(name) {
                return Err(ExpandError::Syntax(format!(
                    "invalid reference \"${{{inner}}}\": expected ${{NAME}} or ${{NAME:-default}}"
                )));
            }
            match (env(name), default) {
                (Some(v), Some(d)) if v.is_empty() => out.push_str(d),
                (Some(v), _) => out.push_str(&v),
                (None, Some(d)) => out.push_str(d),
                (None, None) => return Err(ExpandError::Missing(name.to_owned())),
            }
            rest = &body[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}

fn is_var_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "A" => Some("alpha".into()),
            "B" => Some("beta".into()),
            "EMPTY" => Some(String::new()),
            "DOLLAR" => Some("x${A}$$".into()),
            _ => None,
        }
    }

    fn ok(text: &str) -> String {
        match expand(text, &env) {
            Ok(s) => s,
            Err(e) => panic!("{text:?}: {e:?}"),
        }
    }

    #[test]
    fn expands() {
        assert_eq!(ok("plain"), "plain");
        assert_eq!(ok("${A}"), "alpha");
        assert_eq!(ok("x-${A}-${B}-y"), "x-alpha-beta-y");
        assert_eq!(ok("${A}${B}"), "alphabeta");
        assert_eq!(ok("${MISSING:-dflt}"), "dflt");
        assert_eq!(ok("${EMPTY:-dflt}"), "dflt");
        assert_eq!(ok("${EMPTY}"), "");
        assert_eq!(ok("${A:-dflt}"), "alpha");
        assert_eq!(ok("${MISSING:-}"), "");
        assert_eq!(ok("${MISSING:-a:b/c}"), "a:b/c");
        assert_eq!(ok("$$"), "$");
        assert_eq!(ok("$${A}"), "${A}");
        assert_eq!(ok("pa$word$"), "pa$word$");
        assert_eq!(ok("$$$${A}"), "$${A}");
        assert_eq!(ok("$$${A}"), "$alpha");
        // Values from the environment are inserted verbatim.
        assert_eq!(ok("${DOLLAR}"), "x${A}$$");
    }

    #[test]
    fn errors() {
        assert_eq!(
            expand("a ${NOPE} b", &env),
            Err(ExpandError::Missing("NOPE".into()))
        );
        for bad in ["${A", "${}", "${1X}", "${A-B}", "${A:B}", "${ A }"] {
            assert!(
                matches!(expand(bad, &env), Err(ExpandError::Syntax(_))),
                "{bad:?}"
            );
        }
    }
}
