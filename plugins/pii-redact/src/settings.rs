//! The stage's config, read once per request and validated: which kinds to redact, whether
//! to restore placeholders in the response, and which roles to touch. Takes the raw lookup as
//! a function so that it can be tested without the host.

use weir_sdk::config::{ConfigError, parse_json, parse_value};

use crate::kind::{Kind, Kinds};

/// The validated config of one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    /// The kinds to detect (`kinds`; default: all).
    pub kinds: Kinds,
    /// Whether `on_response` puts the originals back (`restore`; default `true`).
    pub restore: bool,
    /// The roles whose messages are redacted (`roles`); `None` means every role (the default).
    pub roles: Option<Vec<String>>,
}

impl Settings {
    /// Reads the config through `get` (the host's `config-get` in production). A value that
    /// is set but does not parse is an error naming the key.
    pub fn load(get: impl Fn(&str) -> Option<String>) -> Result<Settings, ConfigError> {
        let kinds = parse_json::<Vec<Kind>>("kinds", get("kinds"))?
            .map_or(Kinds::ALL, |kinds| Kinds::of(&kinds));
        let restore = parse_value::<bool>("restore", get("restore"))?.unwrap_or(true);
        let roles = parse_json::<Vec<String>>("roles", get("roles"))?;
        Ok(Settings {
            kinds,
            restore,
            roles,
        })
    }

    /// Whether messages with `role` are redacted.
    pub fn redacts_role(&self, role: &str) -> bool {
        self.roles
            .as_ref()
            .is_none_or(|roles| roles.iter().any(|r| r == role))
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
        assert_eq!(settings.kinds, Kinds::ALL);
        assert!(settings.restore);
        assert!(settings.redacts_role("system") && settings.redacts_role("tool"));
    }

    #[test]
    fn explicit_values() {
        let settings = Settings::load(config(&[
            ("kinds", r#"["email","credit_card"]"#),
            ("restore", "false"),
            ("roles", r#"["user"]"#),
        ]))
        .unwrap();
        assert_eq!(settings.kinds, Kinds::of(&[Kind::Email, Kind::CreditCard]));
        assert!(!settings.restore);
        assert!(settings.redacts_role("user"));
        assert!(!settings.redacts_role("assistant"));
    }

    #[test]
    fn bad_values_name_the_key() {
        let err = Settings::load(config(&[("kinds", r#"["email","ssn"]"#)])).unwrap_err();
        assert_eq!(err.key, "kinds");
        assert!(err.to_string().contains("ssn"), "{err}");
        assert_eq!(
            Settings::load(config(&[("restore", "yes")]))
                .unwrap_err()
                .key,
            "restore"
        );
        assert_eq!(
            Settings::load(config(&[("roles", "user")]))
                .unwrap_err()
                .key,
            "roles"
        );
    }
}
