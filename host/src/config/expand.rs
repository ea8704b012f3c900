//! `${VAR}` expansion in config string values.
//!
//! - `${VAR}` is replaced by the variable's value; an unset variable is an error naming it
//!   and the key, because silently expanding to `""` turns a missing secret into an empty
//!   one.
//! - `${VAR:-default}` uses `default` when `VAR` is unset or empty.
//! - `$${` writes a literal `${`.
//!
//! Only string values are expanded, after parsing, so a variable can never inject TOML
//! syntax or change a value's type.

use toml::Value;

/// A `${…}` that could not be expanded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ExpandError {
    /// The variable is not set and has no default.
    Unset {
        /// Dotted key path of the value.
        key: String,
        /// The variable.
        var: String,
    },
    /// `${` without its `}` or with an empty name.
    Malformed {
        /// Dotted key path of the value.
        key: String,
    },
}

/// Expands every string in `value`, reading variables through `lookup`.
pub(crate) fn expand_value(
    value: &mut Value,
    path: &mut Vec<String>,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<(), ExpandError> {
    match value {
        Value::String(s) => {
            if s.contains('$') {
                *s = expand_str(s, lookup).map_err(|var| match var {
                    Some(var) => ExpandError::Unset {
                        key: dotted(path),
                        var,
                    },
                    None => ExpandError::Malformed { key: dotted(path) },
                })?;
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                path.push(format!("[{i}]"));
                expand_value(item, path, lookup)?;
                path.pop();
            }
        }
        Value::Table(table) => {
            for (key, item) in table.iter_mut() {
                path.push(key.clone());
                expand_value(item, path, lookup)?;
                path.pop();
            }
        }
        Value::Integer(_) | Value::Float(_) | Value::Boolean(_) | Value::Datetime(_) => {}
    }
    Ok(())
}

/// Joins a key path: `providers.corp-jwt.keys[0].hash`.
pub(crate) fn dotted(path: &[String]) -> String {
    let mut out = String::new();
    for part in path {
        if !out.is_empty() && !part.starts_with('[') {
            out.push('.');
        }
        out.push_str(part);
    }
    out
}

/// Expands one string. `Err(Some(var))`: unset variable; `Err(None)`: malformed.
fn expand_str(
    input: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<String, Option<String>> {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at..];
        if let Some(tail) = after.strip_prefix("$${") {
            out.push_str("${");
            rest = tail;
        } else if let Some(tail) = after.strip_prefix("${") {
            let end = tail.find('}').ok_or(None)?;
            let inner = &tail[..end];
            let (name, default) = match inner.split_once(":-") {
                Some((name, default)) => (name, Some(default)),
                None => (inner, None),
            };
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(None);
            }
            match (
                lookup(name).filter(|v| !(v.is_empty() && default.is_some())),
                default,
            ) {
                (Some(value), _) => out.push_str(&value),
                (None, Some(default)) => out.push_str(default),
                (None, None) => return Err(Some(name.to_owned())),
            }
            rest = &tail[end + 1..];
        } else {
            out.push('$');
            rest = &after[1..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "HOST" => Some("example.com".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn variables_defaults_and_escapes_expand() {
        assert_eq!(
            expand_str("https://${HOST}/mcp", &env),
            Ok("https://example.com/mcp".into())
        );
        assert_eq!(expand_str("${NOPE:-x}${EMPTY:-y}", &env), Ok("xy".into()));
        assert_eq!(expand_str("$${HOST} $5", &env), Ok("${HOST} $5".into()));
    }

    #[test]
    fn unset_variable_is_named() {
        assert_eq!(expand_str("a${NOPE}", &env), Err(Some("NOPE".into())));
        assert_eq!(expand_str("${HOST", &env), Err(None));
        assert_eq!(expand_str("${bad-name}", &env), Err(None));
    }

    #[test]
    fn errors_carry_the_key_path() {
        let mut value: Value =
            toml::from_str("[providers.jwt]\naudience = [\"${NOPE}\"]").expect("valid toml");
        let err = expand_value(&mut value, &mut Vec::new(), &env).expect_err("unset");
        assert_eq!(
            err,
            ExpandError::Unset {
                key: "providers.jwt.audience[0]".into(),
                var: "NOPE".into()
            }
        );
    }
}
