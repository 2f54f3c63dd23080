//! The kinds of PII this stage knows: their config names, their placeholder labels and the
//! set type the config's `kinds` list becomes. Owns nothing else: no scanning, no state.

use serde::Deserialize;

/// One kind of personal or secret data.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// An e-mail address (`local@domain.tld`).
    Email,
    /// A telephone number.
    Phone,
    /// A payment card number that passes the Luhn check.
    CreditCard,
    /// An IPv4 or IPv6 address.
    Ip,
    /// An API key, token or private key.
    Secret,
}

impl Kind {
    /// Every kind, in the order detectors claim text: when two detectors match overlapping
    /// text, the one earlier in this list wins. Secrets come first because a key can contain
    /// runs that look like numbers; phone numbers come last because their shapes are the
    /// loosest.
    pub const BY_PRIORITY: [Kind; 5] = [
        Kind::Secret,
        Kind::Email,
        Kind::CreditCard,
        Kind::Ip,
        Kind::Phone,
    ];

    /// A dense index (0..5) for per-kind tables.
    pub fn index(self) -> usize {
        match self {
            Kind::Email => 0,
            Kind::Phone => 1,
            Kind::CreditCard => 2,
            Kind::Ip => 3,
            Kind::Secret => 4,
        }
    }

    /// The label used in placeholders: `EMAIL` in `[EMAIL_1]`.
    pub fn label(self) -> &'static str {
        match self {
            Kind::Email => "EMAIL",
            Kind::Phone => "PHONE",
            Kind::CreditCard => "CREDIT_CARD",
            Kind::Ip => "IP",
            Kind::Secret => "SECRET",
        }
    }

    /// The name used in the `kinds` config list and in log lines: `credit_card`.
    pub fn config_name(self) -> &'static str {
        match self {
            Kind::Email => "email",
            Kind::Phone => "phone",
            Kind::CreditCard => "credit_card",
            Kind::Ip => "ip",
            Kind::Secret => "secret",
        }
    }

    /// The kind whose placeholder label is `label`, if any.
    pub fn from_label(label: &str) -> Option<Kind> {
        Kind::BY_PRIORITY
            .into_iter()
            .find(|kind| kind.label() == label)
    }
}

/// A set of kinds (a bit per kind).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Kinds(u8);

impl Kinds {
    /// No kind at all.
    pub const NONE: Kinds = Kinds(0);
    /// Every kind (the config default).
    pub const ALL: Kinds = Kinds(0b1_1111);

    /// The set holding exactly `kinds`.
    pub fn of(kinds: &[Kind]) -> Kinds {
        kinds
            .iter()
            .fold(Kinds::NONE, |set, kind| Kinds(set.0 | 1 << kind.index()))
    }

    /// Whether `kind` is in the set.
    pub fn contains(self, kind: Kind) -> bool {
        self.0 & (1 << kind.index()) != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_round_trip_and_indexes_are_dense() {
        let mut seen = [false; 5];
        for kind in Kind::BY_PRIORITY {
            assert_eq!(Kind::from_label(kind.label()), Some(kind));
            assert!(!seen[kind.index()], "index {} used twice", kind.index());
            seen[kind.index()] = true;
        }
        assert_eq!(Kind::from_label("NAME"), None);
        assert_eq!(Kind::from_label("email"), None, "labels are upper case");
    }

    #[test]
    fn sets() {
        let set = Kinds::of(&[Kind::Email, Kind::Ip]);
        assert!(set.contains(Kind::Email) && set.contains(Kind::Ip));
        assert!(!set.contains(Kind::Phone) && !set.contains(Kind::Secret));
        assert!(
            Kind::BY_PRIORITY
                .into_iter()
                .all(|kind| Kinds::ALL.contains(kind))
        );
        assert!(
            Kind::BY_PRIORITY
                .into_iter()
                .all(|kind| !Kinds::NONE.contains(kind))
        );
    }

    #[test]
    fn config_names_deserialize() {
        for kind in Kind::BY_PRIORITY {
            let json = format!("\"{}\"", kind.config_name());
            assert_eq!(serde_json::from_str::<Kind>(&json).ok(), Some(kind));
        }
    }
}
