//! [`ConfigError`]: one problem in a config file, located by file, line, column and key.
//!
//! Every error the config module returns goes through here, so they all print the same way:
//! `{file}:{line}:{column}: {key}: {message}`, which editors and terminals turn into a link.

use std::ops::Range;
use std::path::{Path, PathBuf};

/// The key shown when an error has no key (a TOML syntax error, an unreadable file).
pub const NO_KEY: &str = "-";

/// A config file that cannot be used, and where the problem is.
///
/// Displays as `{file}:{line}:{column}: {key}: {message}`, for example
/// `weir.toml:14:1: routes[0].stages[1]: unknown field `fule`, expected one of `name`, ...`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}:{line}:{column}: {key}: {message}", file.display())]
pub struct ConfigError {
    /// The config file, as it was given to [`Config::load`](super::Config::load) or
    /// [`Config::parse`](super::Config::parse).
    pub file: PathBuf,
    /// 1-based line of the offending key or value (1 when the file could not be read).
    pub line: usize,
    /// 1-based column, in characters, of the offending key or value.
    pub column: usize,
    /// Dotted/indexed path of the offending key, like `targets.primary.timeout_ms` or
    /// `routes[0].targets[1]`; [`NO_KEY`] (`-`) when there is none.
    pub key: String,
    /// What is wrong and what is expected instead.
    pub message: String,
}

impl ConfigError {
    /// An error at byte offset `span.start` of `text`, the contents of `file`.
    pub(crate) fn at(
        file: &Path,
        text: &str,
        span: Range<usize>,
        key: impl Into<String>,
        message: impl Into<String>,
    ) -> ConfigError {
        let (line, column) = line_column(text, span.start);
        let key = key.into();
        ConfigError {
            file: file.to_path_buf(),
            line,
            column,
            key: if key.is_empty() {
                NO_KEY.to_owned()
            } else {
                key
            },
            message: message.into(),
        }
    }
}

/// 1-based line and column (in characters) of byte `offset` in `text`; an offset past the end
/// or inside a character is moved back to the nearest character boundary.
pub(crate) fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let line = before.matches('\n').count() + 1;
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

/// A key path segment as written in TOML: bare when it can be, quoted otherwise.
pub(crate) fn key_segment(key: &str) -> String {
    let bare = !key.is_empty()
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if bare {
        key.to_owned()
    } else {
        format!("{key:?}")
    }
}

/// Turns a serde error from the TOML deserializer into a [`ConfigError`]: the key path comes
/// from `serde_path_to_error`, the position from the span toml attaches to the error.
pub(crate) fn from_serde(
    file: &Path,
    text: &str,
    error: serde_path_to_error::Error<toml::de::Error>,
) -> ConfigError {
    let mut segments: Vec<String> = Vec::new();
    for segment in error.path() {
        match segment {
            serde_path_to_error::Segment::Seq { index } => segments.push(format!("[{index}]")),
            serde_path_to_error::Segment::Map { key }
            | serde_path_to_error::Segment::Enum { variant: key } => {
                // `toml::Spanned<T>` deserializes as a struct with private field names; a
                // nested struct's keys are written in its parent's table (`document.rs`).
                if !key.starts_with("$__serde_spanned_private") && !key.starts_with('(') {
                    segments.push(key_segment(key));
                }
            }
            serde_path_to_error::Segment::Unknown => segments.push("?".to_owned()),
        }
    }
    let inner = error.into_inner();
    let message = friendly_message(inner.message());
    // An unknown key is reported against the table that holds it (the message names the key).
    if let Some(unknown) = unknown_field_name(inner.message())
        && segments.last().map(String::as_str) == Some(key_segment(&unknown).as_str())
    {
        segments.pop();
    }
    let key = join_path(&segments);
    let span = inner.span().unwrap_or(0..0);
    ConfigError::at(file, text, span, key, message)
}

/// A TOML syntax error (the document could not be parsed at all).
pub(crate) fn from_syntax(file: &Path, text: &str, error: &toml::de::Error) -> ConfigError {
    let span = error.span().unwrap_or(0..0);
    let message = match (error.message(), text.get(span.clone())) {
        ("duplicate key", Some(key)) if !key.is_empty() => {
            format!("invalid TOML: duplicate key `{key}`; expected each key once per table")
        }
        (message, _) => format!("invalid TOML: {message}"),
    };
    ConfigError::at(file, text, span, NO_KEY, message)
}

fn join_path(segments: &[String]) -> String {
    let mut path = String::new();
    for segment in segments {
        if !path.is_empty() && !segment.starts_with('[') {
            path.push('.');
        }
        path.push_str(segment);
    }
    path
}

/// The key named by serde's "unknown field `x`, expected ..." message.
fn unknown_field_name(message: &str) -> Option<String> {
    let rest = message.strip_prefix("unknown field `")?;
    let end = rest.find('`')?;
    Some(rest[..end].to_owned())
}

/// Rewords serde's Rust-flavoured messages in TOML terms.
fn friendly_message(message: &str) -> String {
    let mut message = message.to_owned();
    if let Some(rest) = message.strip_prefix("missing field ") {
        message = format!("missing required field {rest}");
    }
    for (rust, toml) in [
        ("expected u64", "expected a non-negative integer"),
        ("expected a map", "expected a table"),
        ("expected a sequence", "expected an array"),
    ] {
        if let Some(head) = message.strip_suffix(rust) {
            message = format!("{head}{toml}");
        }
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_and_column_are_one_based_and_count_characters() {
        let text = "a = 1\nbé = \"x\"\n";
        assert_eq!(line_column(text, 0), (1, 1));
        assert_eq!(line_column(text, 4), (1, 5));
        assert_eq!(line_column(text, 6), (2, 1));
        // `=` after the two-byte `é` is the fourth character of line 2.
        let eq = text.rfind('=').unwrap_or(0);
        assert_eq!(line_column(text, eq), (2, 4));
        // Past the end and inside a character both clamp.
        assert_eq!(line_column(text, 1000), (3, 1));
        assert_eq!(line_column(text, 8), (2, 2));
    }

    #[test]
    fn display_is_file_line_column_key_message() {
        let error = ConfigError::at(
            Path::new("examples/weir.toml"),
            "x\n\nfule = 1",
            3..7,
            "routes[0].stages[1]",
            "unknown field `fule`",
        );
        assert_eq!(
            error.to_string(),
            "examples/weir.toml:3:1: routes[0].stages[1]: unknown field `fule`"
        );
        let no_key = ConfigError::at(Path::new("w.toml"), "", 0..0, "", "invalid TOML");
        assert_eq!(no_key.to_string(), "w.toml:1:1: -: invalid TOML");
    }

    #[test]
    fn key_segments_are_quoted_only_when_not_bare() {
        assert_eq!(key_segment("x-team"), "x-team");
        assert_eq!(key_segment("x team"), "\"x team\"");
        assert_eq!(key_segment(""), "\"\"");
        assert_eq!(
            join_path(&[
                "routes".into(),
                "[0]".into(),
                "targets".into(),
                "[1]".into()
            ]),
            "routes[0].targets[1]"
        );
    }
}
