//! Self-checking config values: the codecs a key names in its serde attributes, so that one
//! field declares the key whole (doc, type, range, default) and checks it while serde reads
//! the file:
//!
//! ```text
//! /// Per-attempt timeout.
//! #[serde(rename = "timeout_ms", with = "Ms::<1, 600_000>", default = "ms::<60_000>")]
//! pub timeout: Duration,
//! ```
//!
//! Fields keep plain Rust types (`Duration`, `u32`, bytes as `u64`) that the rest of weir
//! reads directly. A value out of range fails as `must be between 1 and 600000, got 0` at its
//! own line and key: the check runs inside serde's visitor, so even an array element is
//! pointed at. Limits that depend on another key are checked by the second pass (`check.rs`).
//! The codecs write values back as the file does (ms, MiB, dollars) for `GET /admin/config`,
//! where secrets are masked by attribute (`serialize_with = "mask"`).

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::{self, DeserializeOwned, Unexpected, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::check::{is_env_var_name, is_valid_name};

/// What a secret is shown as.
pub const MASK: &str = "***";

/// The message of a value outside `min..=max`.
pub(crate) fn out_of_range(min: u64, max: u64, got: u64) -> String {
    format!("must be between {min} and {max}, got {got}")
}

/// Reads a non-negative integer through `check`, whose error toml places at the value.
fn read_int<'de, D: Deserializer<'de>, T>(
    d: D,
    check: impl FnOnce(u64) -> Result<T, String>,
) -> Result<T, D::Error> {
    struct Int<F>(F);
    impl<'de, T, F: FnOnce(u64) -> Result<T, String>> Visitor<'de> for Int<F> {
        type Value = T;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a non-negative integer")
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<T, E> {
            (self.0)(v).map_err(E::custom)
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<T, E> {
            match u64::try_from(v) {
                Ok(v) => self.visit_u64(v),
                Err(_) => Err(E::invalid_value(Unexpected::Signed(v), &self)),
            }
        }
    }
    d.deserialize_u64(Int(check))
}

/// Reads a string through `check`, like [`read_int`].
pub(crate) fn read_str<'de, D: Deserializer<'de>, T>(
    d: D,
    check: impl FnOnce(&str) -> Result<T, String>,
) -> Result<T, D::Error> {
    struct Text<F>(F);
    impl<'de, T, F: FnOnce(&str) -> Result<T, String>> Visitor<'de> for Text<F> {
        type Value = T;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a string")
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
            (self.0)(v).map_err(E::custom)
        }
    }
    d.deserialize_str(Text(check))
}

/// An integer field type (or an option of one) a bounded value converts into, saturating
/// (the key's range keeps it in).
pub(crate) trait FromInt {
    /// `v` as `Self`.
    fn from_int(v: u64) -> Self;
}

macro_rules! from_int {
    ($($t:ty),*) => {$(
        impl FromInt for $t {
            fn from_int(v: u64) -> Self {
                <$t>::try_from(v).unwrap_or(<$t>::MAX)
            }
        }
    )*};
}
from_int!(u64, u32, usize);

impl<T: FromInt> FromInt for Option<T> {
    fn from_int(v: u64) -> Self {
        Some(T::from_int(v))
    }
}

/// An integer in `MIN..=MAX` as a value of its own (array elements, like `retry_on`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Bounded<const MIN: u64, const MAX: u64>(pub u64);

impl<'de, const MIN: u64, const MAX: u64> Deserialize<'de> for Bounded<MIN, MAX> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Int::<MIN, MAX>::deserialize(d).map(Bounded)
    }
}

/// `with = "Int::<MIN, MAX>"`: an integer in `MIN..=MAX`.
pub(crate) struct Int<const MIN: u64, const MAX: u64>;

impl<const MIN: u64, const MAX: u64> Int<MIN, MAX> {
    /// Reads the value, range-checked.
    pub fn deserialize<'de, D: Deserializer<'de>, T: FromInt>(d: D) -> Result<T, D::Error> {
        read_int(d, |n| match (MIN..=MAX).contains(&n) {
            true => Ok(T::from_int(n)),
            false => Err(out_of_range(MIN, MAX, n)),
        })
    }

    /// Writes the value as it is.
    pub fn serialize<S: Serializer, T: Serialize>(v: &T, s: S) -> Result<S::Ok, S::Error> {
        v.serialize(s)
    }
}

/// `with = "Ms::<MIN, MAX>"`: a [`Duration`] written in milliseconds, `MIN..=MAX`.
pub(crate) struct Ms<const MIN: u64, const MAX: u64>;

impl<const MIN: u64, const MAX: u64> Ms<MIN, MAX> {
    /// Reads milliseconds, range-checked.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Int::<MIN, MAX>::deserialize(d).map(Duration::from_millis)
    }

    /// Writes whole milliseconds.
    pub fn serialize<S: Serializer>(v: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(millis(*v))
    }
}

/// `with = "Mib::<MIN, MAX>"`: bytes written in MiB, `MIN..=MAX` MiB.
pub(crate) struct Mib<const MIN: u64, const MAX: u64>;

impl<const MIN: u64, const MAX: u64> Mib<MIN, MAX> {
    /// Reads MiB, range-checked, as bytes.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        Int::<MIN, MAX>::deserialize(d).map(|mib: u64| mib << 20)
    }

    /// Writes whole MiB.
    pub fn serialize<S: Serializer>(bytes: &u64, s: S) -> Result<S::Ok, S::Error> {
        as_mib(bytes, s)
    }
}

/// `serialize_with = "as_mib"`: bytes shown in whole MiB.
pub(crate) fn as_mib<S: Serializer>(bytes: &u64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(bytes >> 20)
}

/// `with = "Usd::<MAX, SCALE>"`: US dollars from 0 to `MAX`, kept as an integer number of
/// `1/SCALE` dollars (`SCALE` 10¹² gives pico-dollars), so sums are exact.
pub(crate) struct Usd<const MAX: u64, const SCALE: u64>;

impl<const MAX: u64, const SCALE: u64> Usd<MAX, SCALE> {
    /// Reads dollars, range-checked, as `1/SCALE` dollars (rounded).
    pub fn deserialize<'de, D: Deserializer<'de>, T: From<u64>>(d: D) -> Result<T, D::Error> {
        let usd = f64::deserialize(d)?;
        match usd.is_finite() && (0.0..=MAX as f64).contains(&usd) {
            true => Ok(T::from((usd * SCALE as f64).round() as u64)),
            false => Err(de::Error::custom(format!(
                "must be a number of US dollars between 0 and {MAX}, got {usd}"
            ))),
        }
    }

    /// Writes dollars.
    pub fn serialize<S: Serializer, T: Copy + Into<Option<u64>>>(
        v: &T,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        (*v).into()
            .map(|units| units as f64 / SCALE as f64)
            .serialize(s)
    }
}

/// `with = "Fuel"`: fuel per call, where 0 means unmetered (`None`).
pub(crate) struct Fuel;

impl Fuel {
    /// Reads the fuel; 0 is `None`.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
        read_int(d, |fuel| Ok((fuel != 0).then_some(fuel)))
    }

    /// Writes the fuel, `null` when unmetered.
    pub fn serialize<S: Serializer>(v: &Option<u64>, s: S) -> Result<S::Ok, S::Error> {
        v.serialize(s)
    }
}

/// `deserialize_with = "env_var"`: the name of an environment variable holding a secret (a
/// `*_env` key). Someone may paste the secret itself here, so the error never repeats it.
pub(crate) fn env_var<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    read_str(d, |name| match is_env_var_name(name) {
        true => Ok(Some(name.to_owned())),
        false => Err(
            "expected the name of an environment variable (letters, digits and `_`, \
                      not starting with a digit), like OPENAI_API_KEY; put the variable's \
                      name here, never the secret itself"
                .to_owned(),
        ),
    })
}

/// `deserialize_with = "name"`: a target, stage or key name (see [`is_valid_name`]).
pub(crate) fn name<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    read_str(d, |name| match is_valid_name(name) {
        true => Ok(name.to_owned()),
        false => Err(name_message(name)),
    })
}

/// Why `name` is not a valid name.
pub(crate) fn name_message(name: &str) -> String {
    format!(
        "expected a name of 1 to {} characters from `a-z`, `0-9`, `_` and `-`, starting with a letter or digit, got {name:?}",
        super::MAX_NAME_LEN
    )
}

/// `deserialize_with = "path"`: a path as written (the second pass resolves it).
pub(crate) fn path<'de, D: Deserializer<'de>, T: From<PathBuf>>(d: D) -> Result<T, D::Error> {
    read_str(d, |path| Ok(T::from(PathBuf::from(path))))
}

/// `serialize_with = "lossy"`: a path as text, unreadable bytes replaced.
pub(crate) fn lossy<S: Serializer, P: AsRef<Path>>(path: &P, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&path.as_ref().to_string_lossy())
}

/// `serialize_with = "lossy_opt"`: [`lossy`] for an optional path.
pub(crate) fn lossy_opt<S: Serializer>(path: &Option<PathBuf>, s: S) -> Result<S::Ok, S::Error> {
    path.as_ref().map(|p| p.to_string_lossy()).serialize(s)
}

/// `serialize_with = "mask"`: a secret, shown as [`MASK`] (or `null` when there is none).
pub(crate) fn mask<S: Serializer>(v: &Option<String>, s: S) -> Result<S::Ok, S::Error> {
    v.as_ref().map(|_| MASK).serialize(s)
}

/// `serialize_with = "mask_values"`: a table (a target's `headers`, a stage's `config`) with
/// its keys shown and its values, often secrets, masked.
pub(crate) fn mask_values<S: Serializer, T: Names>(table: &T, s: S) -> Result<S::Ok, S::Error> {
    s.collect_map(table.names().map(|name| (name, MASK)))
}

/// A table [`mask_values`] shows.
pub(crate) trait Names {
    /// Its keys.
    fn names(&self) -> impl Iterator<Item = &str>;
}

impl Names for Vec<(String, String)> {
    fn names(&self) -> impl Iterator<Item = &str> {
        self.iter().map(|(name, _)| name.as_str())
    }
}

impl Names for std::collections::BTreeMap<String, String> {
    fn names(&self) -> impl Iterator<Item = &str> {
        self.keys().map(String::as_str)
    }
}

/// `default = "Val::<N>::int"`: a key's default integer `N` (or `Some(N)`), in the field's
/// type.
pub(crate) struct Val<const N: u64>;

impl<const N: u64> Val<N> {
    /// `N` as the field's integer type.
    pub fn int<T: FromInt>() -> T {
        T::from_int(N)
    }
}

/// `default = "ms::<N>"`: a default of `N` milliseconds.
pub(crate) fn ms<const N: u64>() -> Duration {
    Duration::from_millis(N)
}

/// `default = "mib::<N>"`: a default of `N` MiB, in bytes.
pub(crate) fn mib<const N: u64>() -> u64 {
    N << 20
}

/// `default = "yes"`: a flag that is on unless the file turns it off.
pub(crate) fn yes() -> bool {
    true
}

/// Every key of `T` at its default: `T` read from an empty table.
///
/// # Panics
///
/// When `T` has a key without a default: a schema bug each table's tests catch.
pub(crate) fn defaults<T: DeserializeOwned>() -> T {
    let empty = std::iter::empty::<(&str, &str)>();
    match T::deserialize(de::value::MapDeserializer::<_, de::value::Error>::new(
        empty,
    )) {
        Ok(value) => value,
        Err(err) => panic!(
            "{} has a key without a default: {err}",
            std::any::type_name::<T>()
        ),
    }
}

/// `impl Default` from each key's own default ([`defaults`]).
macro_rules! serde_default {
    ($($t:ty),*) => {$(
        impl Default for $t {
            fn default() -> Self {
                $crate::config::value::defaults()
            }
        }
    )*};
}
pub(crate) use serde_default;

/// The keys a derived struct declares, in order: what serde hands `deserialize_struct`.
/// Empty for a type that is not a struct.
pub(crate) fn keys_of<T: DeserializeOwned>() -> &'static [&'static str] {
    struct Probe<'a>(&'a mut &'static [&'static str]);
    impl<'de> Deserializer<'de> for Probe<'_> {
        type Error = de::value::Error;
        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
            Err(de::Error::custom("not a struct"))
        }
        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Self::Error> {
            *self.0 = fields;
            Err(de::Error::custom("probed"))
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
            option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier
            ignored_any
        }
    }
    let mut keys: &'static [&'static str] = &[];
    let _ = T::deserialize(Probe(&mut keys));
    keys
}

/// Reads one of `choices` by name; the error lists them all.
pub(crate) fn choose<'de, D: Deserializer<'de>, T: Copy>(
    d: D,
    choices: &[(&str, T)],
) -> Result<T, D::Error> {
    read_str(d, |got| {
        if let Some((_, choice)) = choices.iter().find(|(name, _)| *name == got) {
            return Ok(*choice);
        }
        let names: Vec<String> = choices.iter().map(|(n, _)| format!("\"{n}\"")).collect();
        let expected = match names.as_slice() {
            [one, two] => format!("{one} or {two}"),
            _ => format!("one of {}", names.join(", ")),
        };
        Err(format!("expected {expected}, got {got:?}"))
    })
}

/// Declares an enum the file names by string (`log_format = "json"`): a wrong name is an
/// error listing the choices, and `GET /admin/config` shows the name. The first variant is
/// the default.
macro_rules! choices {
    (
        $(#[$meta:meta])*
        pub enum $name:ident {
            $(#[$first_doc:meta])* $first:ident = $first_name:literal,
            $($(#[$doc:meta])* $variant:ident = $variant_name:literal,)*
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
        pub enum $name {
            $(#[$first_doc])*
            #[default]
            $first,
            $($(#[$doc])* $variant,)*
        }

        impl $name {
            /// Each choice's name in the file.
            const CHOICES: &[(&str, $name)] =
                &[($first_name, $name::$first), $(($variant_name, $name::$variant),)*];
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                $crate::config::value::choose(d, Self::CHOICES)
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                let name = Self::CHOICES.iter().find(|(_, c)| c == self).map(|(n, _)| *n);
                s.serialize_str(name.unwrap_or_default())
            }
        }
    };
}
pub(crate) use choices;

/// Whole milliseconds of `duration`, saturating.
pub(crate) fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deserializes `T` from a TOML snippet.
    fn from_toml<T: DeserializeOwned>(text: &str) -> Result<T, String> {
        toml::from_str(text).map_err(|e| e.message().to_owned())
    }

    #[derive(Debug, PartialEq, Deserialize, Serialize)]
    #[serde(deny_unknown_fields)]
    struct Table {
        #[serde(with = "Int::<1, 600>", default = "Val::<7>::int")]
        n: u32,
        #[serde(with = "Int::<1, 600>", default)]
        maybe: Option<u32>,
        #[serde(rename = "t_ms", with = "Ms::<0, 1000>", default = "ms::<250>")]
        t: Duration,
        #[serde(rename = "m_mib", with = "Mib::<1, 64>", default = "mib::<2>")]
        m: u64,
        #[serde(rename = "usd", with = "Usd::<100, 1_000_000>", default)]
        micro: Option<u64>,
        #[serde(with = "Fuel", default = "Val::<9>::int")]
        fuel: Option<u64>,
        #[serde(deserialize_with = "env_var", default)]
        var: Option<String>,
        #[serde(default = "yes")]
        on: bool,
    }

    #[test]
    fn defaults_come_from_each_field() {
        let table: Table = defaults();
        assert_eq!(
            table,
            Table {
                n: 7,
                maybe: None,
                t: Duration::from_millis(250),
                m: 2 << 20,
                micro: None,
                fuel: Some(9),
                var: None,
                on: true,
            }
        );
        assert_eq!(from_toml::<Table>(""), Ok(defaults()));
    }

    #[test]
    fn values_are_read_in_the_files_units_and_written_back_in_them() {
        let table = from_toml::<Table>(
            "n = 600\nmaybe = 1\nt_ms = 0\nm_mib = 64\nusd = 0.25\nfuel = 0\nvar = \"K_1\"\n\
             on = false",
        );
        let Ok(table) = table else {
            panic!("{table:?}");
        };
        assert_eq!((table.n, table.maybe), (600, Some(1)));
        assert_eq!((table.t, table.m), (Duration::ZERO, 64 << 20));
        assert_eq!((table.micro, table.fuel), (Some(250_000), None));
        assert_eq!((table.var.as_deref(), table.on), (Some("K_1"), false));
        let json = serde_json::to_value(&table).map_err(|e| e.to_string());
        assert_eq!(
            json,
            Ok(serde_json::json!({
                "n": 600, "maybe": 1, "t_ms": 0, "m_mib": 64, "usd": 0.25, "fuel": null,
                "var": "K_1", "on": false,
            }))
        );
    }

    #[test]
    fn out_of_range_and_wrong_types_say_what_is_expected() {
        for (text, message) in [
            ("n = 0", "must be between 1 and 600, got 0"),
            ("maybe = 601", "must be between 1 and 600, got 601"),
            ("t_ms = 1001", "must be between 0 and 1000, got 1001"),
            ("m_mib = 65", "must be between 1 and 64, got 65"),
            (
                "n = -1",
                "invalid value: integer `-1`, expected a non-negative integer",
            ),
            (
                "n = \"3\"",
                "invalid type: string \"3\", expected a non-negative integer",
            ),
            (
                "n = 1.5",
                "invalid type: floating point `1.5`, expected a non-negative integer",
            ),
            (
                "usd = -5",
                "must be a number of US dollars between 0 and 100, got -5",
            ),
            (
                "usd = nan",
                "must be a number of US dollars between 0 and 100, got NaN",
            ),
            ("usd = \"1\"", "invalid type: string \"1\", expected f64"),
            ("var = 1", "invalid type: integer `1`, expected a string"),
        ] {
            assert_eq!(from_toml::<Table>(text), Err(message.to_owned()), "{text}");
        }
        let pasted = from_toml::<Table>("var = \"sk-live-abc123\"")
            .err()
            .unwrap_or_default();
        assert!(pasted.starts_with("expected the name of an environment variable"));
        assert!(!pasted.contains("sk-live"), "{pasted}");
    }

    #[test]
    fn bounded_array_elements_are_each_checked() {
        #[derive(Debug, Deserialize)]
        struct List {
            codes: Vec<Bounded<400, 527>>,
        }
        let list = from_toml::<List>("codes = [400, 527]").map(|l| l.codes);
        assert_eq!(list, Ok(vec![Bounded(400), Bounded(527)]));
        let error = from_toml::<List>("codes = [400, 399]").map(|l| l.codes);
        assert_eq!(
            error,
            Err("must be between 400 and 527, got 399".to_owned())
        );
    }

    #[test]
    fn names_and_secrets_are_masked_in_the_output() {
        #[derive(Serialize)]
        struct Shown {
            #[serde(serialize_with = "mask")]
            token: Option<String>,
            #[serde(serialize_with = "mask")]
            none: Option<String>,
            #[serde(serialize_with = "mask_values")]
            headers: Vec<(String, String)>,
            #[serde(serialize_with = "lossy")]
            path: PathBuf,
        }
        let shown = Shown {
            token: Some("s3cret".to_owned()),
            none: None,
            headers: vec![("api-key".to_owned(), "s3cret".to_owned())],
            path: PathBuf::from("/p"),
        };
        assert_eq!(
            serde_json::to_value(&shown).map_err(|e| e.to_string()),
            Ok(serde_json::json!({
                "token": "***", "none": null, "headers": { "api-key": "***" }, "path": "/p",
            }))
        );
    }

    choices! {
        /// A test enum.
        pub enum Three {
            /// First.
            A = "a",
            /// Second.
            B = "b-b",
            /// Third.
            C = "c",
        }
    }

    #[test]
    fn a_choice_lists_the_options_and_is_written_by_name() {
        #[derive(Debug, Deserialize, Serialize)]
        struct Pick {
            #[serde(default)]
            pick: Three,
        }
        assert_eq!(
            from_toml::<Pick>("pick = \"b-b\"").map(|p| p.pick),
            Ok(Three::B)
        );
        assert_eq!(from_toml::<Pick>("").map(|p| p.pick), Ok(Three::A));
        assert_eq!(
            from_toml::<Pick>("pick = \"d\"").map(|p| p.pick),
            Err(r#"expected one of "a", "b-b", "c", got "d""#.to_owned())
        );
        #[derive(Debug, Deserialize)]
        struct Format {
            format: super::super::LogFormat,
        }
        assert_eq!(
            from_toml::<Format>("format = \"xml\"").map(|f| f.format),
            Err(r#"expected "human" or "json", got "xml""#.to_owned())
        );
        assert_eq!(
            from_toml::<Pick>("pick = 1").map(|p| p.pick),
            Err("invalid type: integer `1`, expected a string".to_owned())
        );
        let json = serde_json::to_value(Pick { pick: Three::B }).map_err(|e| e.to_string());
        assert_eq!(json, Ok(serde_json::json!({ "pick": "b-b" })));
    }

    #[test]
    fn the_keys_of_a_struct_come_in_declaration_order() {
        assert_eq!(
            keys_of::<Table>(),
            ["n", "maybe", "t_ms", "m_mib", "usd", "fuel", "var", "on"]
        );
        assert!(keys_of::<u32>().is_empty());
    }
}
