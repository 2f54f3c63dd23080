//! The file as toml parses it: a tree of values with their positions. serde reads the
//! validated structs from it, and the second pass (`check.rs`) finds in its [`Index`] the line
//! of the key a cross-field error is about.
//!
//! A few validated structs keep some of their table's keys in a nested struct that consumers
//! take whole (`server.connections`, a target's `limits`, a route's `policy`, the call limits
//! of `[sandbox]` and of each stage), while the file writes those keys flat. serde's
//! `flatten` would buffer the values and lose their positions, so instead the nested field is
//! named in parentheses (`#[serde(rename = "(connections)")]`) and [`regroup`] moves the keys
//! its struct declares into a sub-table of that name before serde runs. Error paths skip the
//! parenthesised segment (`error.rs`) and [`lift`] flattens the output of `GET /admin/config`
//! again, so both read like the file.

use std::borrow::Cow;
use std::collections::HashMap;
use std::path::Path;

use serde::de::DeserializeOwned;
use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::error::{self, ConfigError, key_segment};
use super::value::keys_of;
use super::{CallLimits, ConnectionLimits, PolicySettings, RouteSettings, SandboxSettings};
use super::{ServerSettings, ServiceSettings, StageSettings, TargetLimits, TargetSettings};

/// A parsed file: its root table, with positions.
pub(crate) type Doc<'a> = Spanned<DeTable<'a>>;

/// Every value of a file by its key path as errors print it (`routes[0].targets[1]`,
/// `targets.primary.headers."x team"`).
pub(crate) type Index<'a> = HashMap<String, &'a Spanned<DeValue<'a>>>;

/// Parses `text`, the contents of `file` (a syntax error names the file, line and column).
pub(crate) fn parse<'a>(file: &Path, text: &'a str) -> Result<Doc<'a>, ConfigError> {
    DeTable::parse(text).map_err(|err| error::from_syntax(file, text, &err))
}

/// Reads `T` from `doc` (a wrong type or an unknown key names its file, line and key).
pub(crate) fn read<T: DeserializeOwned>(
    file: &Path,
    text: &str,
    doc: Doc,
) -> Result<T, ConfigError> {
    serde_path_to_error::deserialize(toml::de::Deserializer::from(doc))
        .map_err(|err| error::from_serde(file, text, err))
}

/// The [`Index`] of `doc`.
pub(crate) fn index<'a>(doc: &'a Doc<'a>) -> Index<'a> {
    fn add<'a>(index: &mut Index<'a>, key: String, value: &'a Spanned<DeValue<'a>>) {
        match value.get_ref() {
            DeValue::Table(table) => table.iter().for_each(|(k, v)| add(index, join(&key, k), v)),
            DeValue::Array(items) => {
                let key = &key;
                items
                    .iter()
                    .enumerate()
                    .for_each(|(i, v)| add(index, format!("{key}[{i}]"), v))
            }
            _ => {}
        }
        index.insert(key, value);
    }
    let mut index = Index::new();
    doc.get_ref()
        .iter()
        .for_each(|(k, v)| add(&mut index, join("", k), v));
    index
}

/// `key` and then `name`, as a key path.
fn join(key: &str, name: &Spanned<Cow<'_, str>>) -> String {
    match key {
        "" => key_segment(name.get_ref()),
        _ => format!("{key}.{}", key_segment(name.get_ref())),
    }
}

/// The keys of a derived struct ([`keys_of`]).
type Keys = fn() -> &'static [&'static str];

/// Each struct with a nested one: where its tables are (`*` is every entry of a table or
/// array), its keys (the nested field's among them, in parentheses) and the nested keys.
const GROUPS: [(&[&str], Keys, Keys); 6] = [
    (
        &["server"],
        keys_of::<ServerSettings>,
        keys_of::<ConnectionLimits>,
    ),
    (
        &["sandbox"],
        keys_of::<SandboxSettings>,
        keys_of::<CallLimits>,
    ),
    (
        &["targets", "*"],
        keys_of::<TargetSettings>,
        keys_of::<TargetLimits>,
    ),
    (
        &["routes", "*"],
        keys_of::<RouteSettings>,
        keys_of::<PolicySettings>,
    ),
    (
        &["services", "*"],
        keys_of::<ServiceSettings>,
        keys_of::<PolicySettings>,
    ),
    (
        &["routes", "*", "stages", "*"],
        keys_of::<StageSettings>,
        keys_of::<CallLimits>,
    ),
];

/// Moves the keys of each nested struct into its sub-table (see the module docs). A key that
/// neither struct declares is an error listing the keys of both, as the file writes them.
pub(crate) fn regroup(file: &Path, text: &str, doc: &mut Doc<'_>) -> Result<(), ConfigError> {
    let mut root = DeValue::Table(std::mem::take(doc.get_mut()));
    let result = GROUPS.iter().try_for_each(|&(at, outer, nested)| {
        each_table(&mut root, at, String::new(), &mut |table, key| {
            regroup_table(table, outer(), nested())
                .map_err(|(span, message)| ConfigError::at(file, text, span, key, message))
        })
    });
    if let DeValue::Table(table) = root {
        *doc.get_mut() = table;
    }
    result
}

type Located<T> = Result<T, (std::ops::Range<usize>, String)>;

fn regroup_table(table: &mut DeTable<'_>, outer: &[&'static str], nested: &[&str]) -> Located<()> {
    let Some(&field) = outer.iter().find(|k| k.starts_with('(')) else {
        return Ok(());
    };
    let mut moved = DeTable::new();
    let names: Vec<String> = table.keys().map(|k| k.get_ref().to_string()).collect();
    for name in names {
        if nested.contains(&name.as_str()) {
            moved.extend(table.remove_entry(name.as_str()));
        } else if name == field || !outer.contains(&name.as_str()) {
            let span = table
                .get_key_value(name.as_str())
                .map_or(0..0, |(k, _)| k.span());
            let all = outer.iter().flat_map(|k| {
                if *k == field {
                    nested
                } else {
                    std::slice::from_ref(k)
                }
            });
            let expected: Vec<String> = all.map(|k| format!("`{k}`")).collect();
            let message = format!(
                "unknown field `{name}`, expected one of {}",
                expected.join(", ")
            );
            return Err((span, message));
        }
    }
    if let Some(span) = moved.keys().next().map(Spanned::span) {
        let value = Spanned::new(span.clone(), DeValue::Table(moved));
        table.insert(Spanned::new(span, Cow::Borrowed(field)), value);
    }
    Ok(())
}

/// Calls `f` on every table at `at` under `value`, with its key path.
fn each_table<'a>(
    value: &mut DeValue<'a>,
    at: &[&str],
    key: String,
    f: &mut dyn FnMut(&mut DeTable<'a>, &str) -> Result<(), ConfigError>,
) -> Result<(), ConfigError> {
    match (value, at.split_first()) {
        (DeValue::Table(table), None) => f(table, &key),
        (DeValue::Table(table), Some((name, rest))) => {
            table
                .iter_mut()
                .try_for_each(|(k, v)| match *name == "*" || k.get_ref() == name {
                    true => each_table(v.get_mut(), rest, join(&key, k), f),
                    false => Ok(()),
                })
        }
        (DeValue::Array(items), Some((&"*", rest))) => items
            .iter_mut()
            .enumerate()
            .try_for_each(|(i, v)| each_table(v.get_mut(), rest, format!("{key}[{i}]"), f)),
        _ => Ok(()),
    }
}

/// Moves the entries of every object whose key is in parentheses into its parent: the
/// inverse of [`regroup`], for the JSON of `GET /admin/config`.
pub(crate) fn lift(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(map) => {
            while let Some(group) = map.keys().find(|k| k.starts_with('(')).cloned() {
                if let Some(serde_json::Value::Object(inner)) = map.remove(&group) {
                    map.extend(inner);
                }
            }
            map.values_mut().for_each(lift);
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(lift),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "[server]\nport = 1\n\n[targets.\"a b\"]\nx = [10, { y = 2 }]\n";

    fn doc() -> Doc<'static> {
        match parse(Path::new("w.toml"), TEXT) {
            Ok(doc) => doc,
            Err(err) => panic!("{err}"),
        }
    }

    #[test]
    fn keys_are_indexed_by_the_path_errors_print() {
        let doc = doc();
        let index = index(&doc);
        let at = |key: &str| index.get(key).map(|v| &TEXT[v.span()]);
        assert_eq!(at("server.port"), Some("1"));
        assert_eq!(at("targets.\"a b\".x[0]"), Some("10"));
        assert_eq!(at("targets.\"a b\".x[1].y"), Some("2"));
        assert_eq!(at("targets.\"a b\".x[2]"), None);
        assert_eq!(at("targets.a"), None);
        assert_eq!(at("server.port.x"), None);
        let mut keys: Vec<&str> = index.keys().map(String::as_str).collect();
        keys.sort();
        assert_eq!(
            keys,
            [
                "server",
                "server.port",
                "targets",
                "targets.\"a b\"",
                "targets.\"a b\".x",
                "targets.\"a b\".x[0]",
                "targets.\"a b\".x[1]",
                "targets.\"a b\".x[1].y",
            ]
        );
    }

    #[test]
    fn regrouping_moves_nested_keys_and_rejects_unknown_ones() {
        let text = "[server]\nlisten = \"x\"\nmax_connections = 3\n";
        let mut grouped = match parse(Path::new("w.toml"), text) {
            Ok(doc) => doc,
            Err(err) => panic!("{err}"),
        };
        assert_eq!(regroup(Path::new("w.toml"), text, &mut grouped), Ok(()));
        let index = index(&grouped);
        assert!(index.contains_key("server.listen"));
        assert!(!index.contains_key("server.max_connections"));
        assert!(index.contains_key("server.\"(connections)\".max_connections"));

        let mut doc = doc();
        let error = regroup(Path::new("w.toml"), TEXT, &mut doc).map_err(|e| e.to_string());
        let Err(message) = error else {
            panic!("an unknown key was accepted");
        };
        assert!(
            message.starts_with(
                "w.toml:2:1: server: unknown field `port`, expected one of `listen`, \
                 `admin_listen`, `admin_token_env`, `admin_allowed_hosts`, `max_body_bytes`, \
                 `header_read_timeout_ms`,"
            ),
            "{message}"
        );
    }

    #[test]
    fn lifting_flattens_parenthesised_objects() {
        let mut value = serde_json::json!({
            "a": 1,
            "(g)": { "b": 2, "(h)": { "c": 3 } },
            "list": [{ "(g)": { "d": 4 } }],
        });
        lift(&mut value);
        assert_eq!(
            value,
            serde_json::json!({ "a": 1, "b": 2, "c": 3, "list": [{ "d": 4 }] })
        );
    }
}
