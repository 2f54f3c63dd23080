//! Checks shared by every part of the schema: numeric ranges, names, environment variables.
//!
//! Each check returns a [`ConfigError`] that points at the value it rejected and says what it
//! expected instead.

use std::ops::{Range, RangeInclusive};
use std::path::Path;

use toml::Spanned;

use super::error::ConfigError;

/// Longest accepted target or stage name, in characters.
pub const MAX_NAME_LEN: usize = 64;

/// Looks up an environment variable by name; `None` when it is unset.
pub(crate) type EnvLookup<'a> = &'a dyn Fn(&str) -> Option<String>;

/// The file being validated: what every error needs to say where it is.
#[derive(Clone, Copy)]
pub(crate) struct Source<'a> {
    /// The file, as given by the caller (shown in errors).
    pub file: &'a Path,
    /// Its contents (to turn spans into lines and columns).
    pub text: &'a str,
}

impl Source<'_> {
    /// An error at `span`.
    pub fn error(
        &self,
        span: Range<usize>,
        key: impl Into<String>,
        message: impl Into<String>,
    ) -> ConfigError {
        ConfigError::at(self.file, self.text, span, key, message)
    }

    /// `value` if it lies in `range`, otherwise an error naming the range.
    pub fn in_range(
        &self,
        value: &Spanned<u64>,
        range: RangeInclusive<u64>,
        key: &str,
    ) -> Result<u64, ConfigError> {
        let got = *value.get_ref();
        if range.contains(&got) {
            Ok(got)
        } else {
            Err(self.error(
                value.span(),
                key,
                format!(
                    "must be between {} and {}, got {got}",
                    range.start(),
                    range.end()
                ),
            ))
        }
    }

    /// The optional `value` range-checked, or `default` when absent.
    pub fn in_range_or(
        &self,
        value: Option<&Spanned<u64>>,
        range: RangeInclusive<u64>,
        default: u64,
        key: &str,
    ) -> Result<u64, ConfigError> {
        match value {
            Some(value) => self.in_range(value, range, key),
            None => Ok(default),
        }
    }

    /// The option named by `value` (one of `choices`), or `default` when absent.
    pub fn choice<T: Copy>(
        &self,
        value: Option<&Spanned<String>>,
        choices: &[(&str, T)],
        default: T,
        key: &str,
    ) -> Result<T, ConfigError> {
        let Some(value) = value else {
            return Ok(default);
        };
        if let Some((_, choice)) = choices.iter().find(|(name, _)| name == value.get_ref()) {
            return Ok(*choice);
        }
        let names: Vec<String> = choices
            .iter()
            .map(|(name, _)| format!("\"{name}\""))
            .collect();
        let expected = match names.as_slice() {
            [one, two] => format!("{one} or {two}"),
            _ => format!("one of {}", names.join(", ")),
        };
        Err(self.error(
            value.span(),
            key,
            format!("expected {expected}, got {:?}", value.get_ref()),
        ))
    }

    /// Checks a target or stage name: `[a-z0-9_-]+`, at most [`MAX_NAME_LEN`] characters.
    pub fn name(&self, name: &str, span: Range<usize>, key: &str) -> Result<(), ConfigError> {
        if is_valid_name(name) {
            Ok(())
        } else {
            Err(self.error(
                span,
                key,
                format!(
                    "expected a name of 1 to {MAX_NAME_LEN} characters from `a-z`, `0-9`, `_` \
                     and `-`, got {name:?}"
                ),
            ))
        }
    }

    /// Reads the secret held by the environment variable named by `var` (a `*_env` key).
    ///
    /// The variable must be set, non-empty and usable as an HTTP header value. Its value never
    /// appears in an error; neither does `var` itself unless it looks like a variable name
    /// (someone may have pasted the secret where its variable's name belongs).
    pub fn secret(
        &self,
        var: &Spanned<String>,
        key: &str,
        purpose: &str,
        env: EnvLookup<'_>,
    ) -> Result<String, ConfigError> {
        let name = var.get_ref();
        if !is_env_var_name(name) {
            return Err(self.error(
                var.span(),
                key,
                "expected the name of an environment variable (letters, digits and `_`, not \
                 starting with a digit), like OPENAI_API_KEY; put the variable's name here, \
                 never the secret itself",
            ));
        }
        let problem = match env(name) {
            None => "is not set",
            Some(value) if value.is_empty() => "is empty",
            Some(value) if !is_header_value(&value) => {
                "holds characters that cannot go in an HTTP header (control or non-ASCII)"
            }
            Some(value) => return Ok(value),
        };
        Err(self.error(
            var.span(),
            key,
            format!("environment variable `{name}` {problem}; it must hold {purpose}"),
        ))
    }
}

/// Whether `name` is a valid target, stage or key name: `[a-z0-9_-]+`, at most
/// [`MAX_NAME_LEN`] characters.
pub fn is_valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

/// `[A-Za-z_][A-Za-z0-9_]*`: the portable environment variable names.
pub(crate) fn is_env_var_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Visible ASCII, spaces and tabs: what an HTTP/1.1 header value may safely hold.
pub(crate) fn is_header_value(value: &str) -> bool {
    value
        .bytes()
        .all(|b| b == b'\t' || (b' '..=b'~').contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "x = 0\n";

    fn source() -> Source<'static> {
        Source {
            file: Path::new("w.toml"),
            text: TEXT,
        }
    }

    #[test]
    fn out_of_range_names_the_range_and_the_value() {
        let value = Spanned::new(4..5, 0);
        let error = source().in_range(&value, 1..=600_000, "x");
        assert_eq!(
            error.map_err(|e| e.to_string()),
            Err("w.toml:1:5: x: must be between 1 and 600000, got 0".to_owned())
        );
        let value = Spanned::new(4..5, 600_000);
        assert_eq!(source().in_range(&value, 1..=600_000, "x"), Ok(600_000));
        assert_eq!(source().in_range_or(None, 1..=2, 7, "x"), Ok(7));
    }

    #[test]
    fn a_choice_lists_the_options() {
        let value = Spanned::new(4..5, "xml".to_owned());
        let two = source().choice(Some(&value), &[("human", 1), ("json", 2)], 1, "k");
        assert_eq!(
            two.map_err(|e| e.message),
            Err(r#"expected "human" or "json", got "xml""#.to_owned())
        );
        let three = source().choice(Some(&value), &[("a", 1), ("b", 2), ("c", 3)], 1, "k");
        assert_eq!(
            three.map_err(|e| e.message),
            Err(r#"expected one of "a", "b", "c", got "xml""#.to_owned())
        );
        let json = Spanned::new(4..5, "json".to_owned());
        assert_eq!(
            source().choice(Some(&json), &[("human", 1), ("json", 2)], 1, "k"),
            Ok(2)
        );
        assert_eq!(
            source().choice(None, &[("human", 1), ("json", 2)], 1, "k"),
            Ok(1)
        );
    }

    #[test]
    fn names_are_lowercase_ids_of_bounded_length() {
        for good in ["primary", "a", "prompt-guard_2", &"a".repeat(MAX_NAME_LEN)] {
            assert!(source().name(good, 0..1, "k").is_ok(), "{good}");
        }
        for bad in [
            "",
            "Primary",
            "a.b",
            "a b",
            "é",
            &"a".repeat(MAX_NAME_LEN + 1),
        ] {
            assert!(source().name(bad, 0..1, "k").is_err(), "{bad}");
        }
    }

    #[test]
    fn secrets_come_from_the_environment_and_are_never_echoed() {
        let env = |name: &str| match name {
            "SET" => Some("sk-123".to_owned()),
            "EMPTY" => Some(String::new()),
            "NEWLINE" => Some("sk-123\n".to_owned()),
            _ => None,
        };
        let var = |name: &str| Spanned::new(4..5, name.to_owned());
        let read = |name: &str| source().secret(&var(name), "k", "the key", &env);
        assert_eq!(read("SET"), Ok("sk-123".to_owned()));
        let message = |name: &str| read(name).map_err(|e| e.message).err().unwrap_or_default();
        assert_eq!(
            message("UNSET"),
            "environment variable `UNSET` is not set; it must hold the key"
        );
        assert!(message("EMPTY").contains("`EMPTY` is empty"));
        assert!(message("NEWLINE").contains("cannot go in an HTTP header"));
        let pasted = message("sk-live-abc123");
        assert!(pasted.contains("name of an environment variable"));
        assert!(!pasted.contains("sk-live"), "{pasted}");
    }

    #[test]
    fn env_var_names_are_portable_identifiers() {
        assert!(is_env_var_name("OPENAI_API_KEY"));
        assert!(is_env_var_name("_x1"));
        assert!(!is_env_var_name(""));
        assert!(!is_env_var_name("1X"));
        assert!(!is_env_var_name("A-B"));
        assert!(!is_env_var_name("A=B"));
    }
}
