//! The second pass: what serde cannot check key by key. Cross-field checks (a route naming an
//! unknown target, a connect timeout above the total one), defaults that depend on another
//! key, secrets read from the environment and paths resolved against the file's directory.
//! [`Source`] points each error at the line of the key it is about.

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::de::DeValue;

use super::document::Index;
use super::error::ConfigError;
use super::value::{millis, out_of_range};

/// Longest accepted target or stage name, in characters.
pub const MAX_NAME_LEN: usize = 64;

/// Looks up an environment variable by name; `None` when it is unset.
pub(crate) type EnvLookup<'a> = &'a dyn Fn(&str) -> Option<String>;

/// The file being validated, and what the second pass reads besides the values.
#[derive(Clone, Copy)]
pub(crate) struct Source<'a> {
    /// The file, as given by the caller (shown in errors).
    pub file: &'a Path,
    /// Its contents (to turn spans into lines and columns).
    pub text: &'a str,
    /// Its values by key path (to find the position of a key).
    pub keys: &'a Index<'a>,
    /// The directory relative paths are resolved against.
    pub base_dir: &'a Path,
    /// The environment secrets are read from.
    pub env: EnvLookup<'a>,
}

impl<'a> Source<'a> {
    /// The value the file sets `key` (a key path as errors print it) to.
    pub fn find(&self, key: &str) -> Option<&'a DeValue<'a>> {
        self.keys.get(key).map(|value| value.get_ref())
    }

    /// Where the file sets `key`; `0..0` when it does not.
    pub fn span(&self, key: &str) -> Range<usize> {
        self.keys.get(key).map_or(0..0, |value| value.span())
    }

    /// Whether the file sets `key`.
    pub fn written(&self, key: &str) -> bool {
        self.keys.contains_key(key)
    }

    /// An error about `key`, at its value.
    pub fn error(&self, key: &str, message: impl Into<String>) -> ConfigError {
        self.error_at(self.span(key), key, message)
    }

    /// An error about `key`, at `span`.
    pub fn error_at(
        &self,
        span: Range<usize>,
        key: impl Into<String>,
        message: impl Into<String>,
    ) -> ConfigError {
        ConfigError::at(self.file, self.text, span, key, message)
    }

    /// `Ok` if `check` holds, else an error about `key`.
    pub fn ensure(&self, check: bool, key: &str, message: &str) -> Result<(), ConfigError> {
        if check {
            Ok(())
        } else {
            Err(self.error(key, message))
        }
    }

    /// A key whose range or default depends on another key: when the file sets it, it must
    /// lie in `min..=max`; else it becomes `default`.
    pub fn bounded<T: Amount>(
        &self,
        key: &str,
        value: &mut T,
        range: (u64, u64),
        default: T,
    ) -> Result<(), ConfigError> {
        let (min, max, got) = (range.0, range.1, value.amount());
        match self.written(key) {
            false => *value = default,
            true if !(min..=max).contains(&got) => {
                return Err(self.error(key, out_of_range(min, max, got)));
            }
            true => {}
        }
        Ok(())
    }

    /// Reads the secret held by the environment variable `var`, named by `key` (a `*_env`
    /// key). It must be set, non-empty and usable as an HTTP header value; its value never
    /// appears in an error.
    pub fn secret(&self, key: &str, var: &str, purpose: &str) -> Result<String, ConfigError> {
        let problem = match (self.env)(var) {
            None => "is not set",
            Some(value) if value.is_empty() => "is empty",
            Some(value) if !is_header_value(&value) => {
                "holds characters that cannot go in an HTTP header (control or non-ASCII)"
            }
            Some(value) => return Ok(value),
        };
        Err(self.error(
            key,
            format!("environment variable `{var}` {problem}; it must hold {purpose}"),
        ))
    }

    /// An optional path key: not blank (else the error says `empty`), and resolved.
    pub fn path(
        &self,
        key: &str,
        path: &mut Option<PathBuf>,
        empty: &str,
    ) -> Result<(), ConfigError> {
        if let Some(given) = path {
            self.ensure(!given.to_string_lossy().trim().is_empty(), key, empty)?;
            *given = self.resolve(given);
        }
        Ok(())
    }

    /// `path` if absolute, otherwise `path` under the file's directory.
    pub fn resolve(&self, path: &Path) -> PathBuf {
        resolve(self.base_dir, path)
    }
}

/// `path` if absolute, otherwise `path` under `base_dir`.
fn resolve(base_dir: &Path, path: &Path) -> PathBuf {
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        base_dir.join(path)
    }
}

/// A value [`Source::bounded`] checks: a count, or a duration in milliseconds.
pub(crate) trait Amount {
    /// The number the file writes.
    fn amount(&self) -> u64;
}

impl Amount for u32 {
    fn amount(&self) -> u64 {
        u64::from(*self)
    }
}

impl Amount for Duration {
    fn amount(&self) -> u64 {
        millis(*self)
    }
}

/// Whether `name` is a valid target, stage or key name: `[a-z0-9][a-z0-9_-]*`, at most
/// [`MAX_NAME_LEN`] characters.
pub fn is_valid_name(name: &str) -> bool {
    let allowed = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-';
    // The first character is a letter or digit: `-` alone is the anonymous owner (no key)
    // in the ledger and the job queue, so no key may be called that.
    name.len() <= MAX_NAME_LEN
        && name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric())
        && name.bytes().all(allowed)
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
    use super::super::document;
    use super::*;

    const TEXT: &str = "x = 0\ny = 7\n";

    fn with_source(test: impl FnOnce(Source<'_>)) {
        let doc = match document::parse(Path::new("w.toml"), TEXT) {
            Ok(doc) => doc,
            Err(err) => panic!("{err}"),
        };
        let keys = document::index(&doc);
        let env = |name: &str| match name {
            "SET" => Some("sk-123".to_owned()),
            "EMPTY" => Some(String::new()),
            "NEWLINE" => Some("sk-123\n".to_owned()),
            _ => None,
        };
        test(Source {
            file: Path::new("w.toml"),
            text: TEXT,
            keys: &keys,
            base_dir: Path::new("/etc/weir"),
            env: &env,
        });
    }

    #[test]
    fn a_dependent_key_is_checked_when_set_and_defaulted_when_not() {
        with_source(|src| {
            let mut x = 0u32;
            let error = src.bounded("x", &mut x, (1, 600_000), 5);
            assert_eq!(
                error.map_err(|e| e.to_string()),
                Err("w.toml:1:5: x: must be between 1 and 600000, got 0".to_owned())
            );
            let mut y = Duration::from_millis(7);
            assert_eq!(src.bounded("y", &mut y, (7, 7), Duration::ZERO), Ok(()));
            let mut z = 0u32;
            assert_eq!(src.bounded("z", &mut z, (1, 2), 9), Ok(()));
            assert_eq!(z, 9);
        });
    }

    #[test]
    fn names_are_lowercase_ids_of_bounded_length() {
        for good in ["primary", "a", "prompt-guard_2", &"a".repeat(MAX_NAME_LEN)] {
            assert!(is_valid_name(good), "{good}");
        }
        let too_long = "a".repeat(MAX_NAME_LEN + 1);
        for bad in [
            "", "Primary", "a.b", "a b", "é", "-", "_a", "-team", &too_long,
        ] {
            assert!(!is_valid_name(bad), "{bad}");
        }
    }

    #[test]
    fn secrets_come_from_the_environment_and_are_never_echoed() {
        with_source(|src| {
            let read = |var: &str| src.secret("x", var, "the key");
            assert_eq!(read("SET"), Ok("sk-123".to_owned()));
            let message = |var: &str| read(var).map_err(|e| e.message).err().unwrap_or_default();
            assert_eq!(
                message("UNSET"),
                "environment variable `UNSET` is not set; it must hold the key"
            );
            assert!(message("EMPTY").contains("`EMPTY` is empty"));
            assert!(message("NEWLINE").contains("cannot go in an HTTP header"));
            assert!(!message("NEWLINE").contains("sk-123"));
        });
    }

    #[test]
    fn paths_are_resolved_against_the_files_directory() {
        with_source(|src| {
            let mut path = Some(PathBuf::from("state"));
            assert_eq!(src.path("x", &mut path, "empty"), Ok(()));
            assert_eq!(path.as_deref(), Some(Path::new("/etc/weir/state")));
            let mut blank = Some(PathBuf::from(" "));
            let error = src
                .path("x", &mut blank, "expected a path")
                .map_err(|e| e.message);
            assert_eq!(error, Err("expected a path".to_owned()));
        });
    }

    #[test]
    fn relative_paths_are_joined_to_the_config_dir_and_absolute_ones_kept() {
        let dir = Path::new("/etc/weir");
        assert_eq!(
            resolve(dir, Path::new("plugins/guard.wasm")),
            Path::new("/etc/weir/plugins/guard.wasm")
        );
        assert_eq!(
            resolve(dir, Path::new("../shared/guard.wasm")),
            Path::new("/etc/weir/../shared/guard.wasm")
        );
        assert_eq!(
            resolve(dir, Path::new("/opt/guard.wasm")),
            Path::new("/opt/guard.wasm")
        );
        assert_eq!(
            resolve(Path::new(""), Path::new("guard.wasm")),
            Path::new("guard.wasm")
        );
    }

    #[test]
    fn env_var_names_are_portable_identifiers() {
        assert!(is_env_var_name("OPENAI_API_KEY"));
        assert!(is_env_var_name("_x1"));
        for bad in ["", "1X", "A-B", "A=B"] {
            assert!(!is_env_var_name(bad), "{bad}");
        }
    }
}
