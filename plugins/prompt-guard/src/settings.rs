//! The stage's config, read once per request and validated: the limits, the deny list, the
//! injection switch and the roles to scan. Takes the raw lookup as a function so that it can
//! be tested without the host.

use weir_sdk::config::{ConfigError, parse_json, parse_value};

use crate::deny::DenyList;

/// Default `max_chars`: total characters of message text.
pub const DEFAULT_MAX_CHARS: usize = 32_000;
/// Default `max_messages`.
pub const DEFAULT_MAX_MESSAGES: usize = 256;
/// Default `roles`: the roles whose text may come from someone other than the operator.
pub const DEFAULT_ROLES: [&str; 2] = ["user", "tool"];

/// The validated config of one request.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Most characters (Unicode scalar values) of message text, all roles together
    /// (`max_chars`).
    pub max_chars: usize,
    /// Most messages in the request (`max_messages`).
    pub max_messages: usize,
    /// Phrases that must not appear (`deny`; default none).
    pub deny: DenyList,
    /// Whether the built-in prompt-injection patterns are checked (`injection`; default true).
    pub injection: bool,
    /// The roles whose messages are scanned for `deny` and `injection` (`roles`).
    pub roles: Vec<String>,
}

impl Settings {
    /// Reads the config through `get` (the host's `config-get` in production). A value that
    /// is set but does not parse is an error naming the key.
    pub fn load(get: impl Fn(&str) -> Option<String>) -> Result<Settings, ConfigError> {
        let max_chars =
            parse_value::<usize>("max_chars", get("max_chars"))?.unwrap_or(DEFAULT_MAX_CHARS);
        let max_messages = parse_value::<usize>("max_messages", get("max_messages"))?
            .unwrap_or(DEFAULT_MAX_MESSAGES);
        let deny = parse_json::<Vec<String>>("deny", get("deny"))?.unwrap_or_default();
        let injection = parse_value::<bool>("injection", get("injection"))?.unwrap_or(true);
        let roles = parse_json::<Vec<String>>("roles", get("roles"))?
            .unwrap_or_else(|| DEFAULT_ROLES.iter().map(|r| r.to_string()).collect());
        Ok(Settings {
            max_chars,
            max_messages,
            deny: DenyList::new(deny),
            injection,
            roles,
        })
    }

    /// Whether messages with `role` are scanned for denied phrases and injections.
    pub fn scans_role(&self, role: &str) -> bool {
        self.roles.iter().any(|r| r == role)
    }
}

impl Default for Settings {
    /// The settings of an empty config.
    fn default() -> Settings {
        Settings {
            max_chars: DEFAULT_MAX_CHARS,
            max_messages: DEFAULT_MAX_MESSAGES,
            deny: DenyList::default(),
            injection: true,
            roles: DEFAULT_ROLES.iter().map(|r| r.to_string()).collect(),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use weir_sdk::testing::config;

    use super::*;

    #[test]
    fn defaults() {
        let settings = Settings::load(config(&[])).unwrap();
        assert_eq!(settings.max_chars, 32_000);
        assert_eq!(settings.max_messages, 256);
        assert!(settings.deny.is_empty());
        assert!(settings.injection);
        assert!(settings.scans_role("user") && settings.scans_role("tool"));
        assert!(!settings.scans_role("system") && !settings.scans_role("assistant"));
        let default = Settings::default();
        assert_eq!(default.max_chars, settings.max_chars);
        assert_eq!(default.roles, settings.roles);
    }

    #[test]
    fn explicit_values() {
        let settings = Settings::load(config(&[
            ("max_chars", "100"),
            ("max_messages", "3"),
            ("deny", r#"["Project  Bluebird"]"#),
            ("injection", "false"),
            ("roles", r#"["user","assistant"]"#),
        ]))
        .unwrap();
        assert_eq!(settings.max_chars, 100);
        assert_eq!(settings.max_messages, 3);
        assert_eq!(
            settings.deny.first_match("about project bluebird"),
            Some("Project  Bluebird")
        );
        assert!(!settings.injection);
        assert!(settings.scans_role("assistant") && !settings.scans_role("tool"));
    }

    #[test]
    fn bad_values_name_the_key() {
        for (key, value) in [
            ("max_chars", "lots"),
            ("max_chars", "-1"),
            ("max_messages", "1.5"),
            ("deny", "[1, 2]"),
            ("injection", "maybe"),
            ("roles", "user"),
        ] {
            let err = Settings::load(config(&[(key, value)])).unwrap_err();
            assert_eq!(err.key, key, "{err}");
        }
    }
}
