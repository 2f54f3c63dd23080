//! The file as toml parses it: a tree of values with their positions. serde reads the
//! validated structs from it, and the second pass (`check.rs`) looks keys up in it to point
//! a cross-field error at its line.
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
use std::ops::Range;
use std::path::Path;

use serde::de::DeserializeOwned;
use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::error::{self, ConfigError, key_segment};
use super::value::keys_of;
use super::{
    CallLimits, ConnectionLimits, PolicySettings, RouteSettings, SandboxSettings, ServerSettings,
    StageSettings, TargetLimits, TargetSettings,
};

/// A parsed file: its root table, with positions.
pub(crate) type Doc<'a> = Spanned<DeTable<'a>>;

/// Parses `text`, the contents of `file` (a syntax error names the file, line and column).
pub(crate) fn parse<'a>(file: &Path, text: &'a str) -> Result<Doc<'a>, ConfigError> {
    DeTable::parse(text).map_err(|err| error::from_syntax(file, text, &err))
}

/// Reads `T` from `doc` (a wrong type or an unknown key names its file, line and key).
pub(crate) fn read<T: DeserializeOwned>(
    file: &Path,
    text: &str,
    doc: Doc<'_>,
) -> Result<T, ConfigError> {
    serde_path_to_error::deserialize(toml::de::Deserializer::from(doc))
        .map_err(|err| error::from_serde(file, text, err))
}

/// The value at `key`, a key path as [`ConfigError::key`] prints it (`routes[0].targets[1]`,
/// `targets.primary.headers."x team"`); `None` when the file does not set it.
pub(crate) fn find<'d, 'a>(doc: &'d Doc<'a>, key: &str) -> Option<&'d Spanned<DeValue<'a>>> {
    let mut table = doc.get_ref();
    let mut found: Option<&Spanned<DeValue<'a>>> = None;
    for segment in split_key(key) {
        let index = segment.strip_prefix('[').and_then(|s| s.strip_suffix(']'));
        found = match (found.map(Spanned::get_ref), index) {
            (Some(DeValue::Array(items)), Some(i)) => items.get(i.parse::<usize>().ok()?),
            (None | Some(DeValue::Table(_)), None) => table
                .iter()
                .find(|(name, _)| key_segment(name.get_ref()) == segment)
                .map(|(_, value)| value),
            _ => None,
        };
        if let Some(DeValue::Table(next)) = found.map(Spanned::get_ref) {
            table = next;
        }
        found?;
    }
    found
}

/// The segments of a key path: `a`, `[0]`, `"quoted.name"`.
fn split_key(key: &str) -> Vec<&str> {
    let (mut segments, mut start, mut quoted, mut escaped) = (Vec::new(), 0, false, false);
    for (i, c) in key.char_indices() {
        match (quoted, c) {
            (true, _) if escaped => escaped = false,
            (true, '\\') => escaped = true,
            (true, '"') => quoted = false,
            (true, _) => {}
            (false, '"') => quoted = true,
            (false, '.' | '[') => {
                segments.push(&key[start..i]);
                start = if c == '.' { i + 1 } else { i };
            }
            (false, _) => {}
        }
    }
    segments.push(&key[start..]);
    segments.retain(|s| !s.is_empty());
    segments
}

/// A validated struct that keeps some of its table's keys in a nested struct.
struct Group {
    /// Where its tables are; `*` is every entry of a table or array.
    at: &'static [&'static str],
    /// The keys of the struct, the nested one's field (in parentheses) among them.
    outer: fn() -> &'static [&'static str],
    /// The keys of the nested struct.
    nested: fn() -> &'static [&'static str],
}

/// Every such struct in the schema.
const GROUPS: [Group; 5] = [
    Group {
        at: &["server"],
        outer: keys_of::<ServerSettings>,
        nested: keys_of::<ConnectionLimits>,
    },
    Group {
        at: &["sandbox"],
        outer: keys_of::<SandboxSettings>,
        nested: keys_of::<CallLimits>,
    },
    Group {
        at: &["targets", "*"],
        outer: keys_of::<TargetSettings>,
        nested: keys_of::<TargetLimits>,
    },
    Group {
        at: &["routes", "*"],
        outer: keys_of::<RouteSettings>,
        nested: keys_of::<PolicySettings>,
    },
    Group {
        at: &["routes", "*", "stages", "*"],
        outer: keys_of::<StageSettings>,
        nested: keys_of::<CallLimits>,
    },
];

/// Moves the keys of each nested struct into its sub-table (see the module docs). A key that
/// neither struct declares is an error listing the keys of both, as the file writes them.
pub(crate) fn regroup(file: &Path, text: &str, doc: &mut Doc<'_>) -> Result<(), ConfigError> {
    let mut root = DeValue::Table(std::mem::take(doc.get_mut()));
    let result = GROUPS.iter().try_for_each(|group| {
        each_table(&mut root, group.at, String::new(), &mut |table, key| {
            regroup_table(table, group)
                .map_err(|(span, message)| ConfigError::at(file, text, span, key, message))
        })
    });
    if let DeValue::Table(table) = root {
        *doc.get_mut() = table;
    }
    result
}

fn regroup_table(table: &mut DeTable<'_>, group: &Group) -> Result<(), (Range<usize>, String)> {
    let (outer, nested) = ((group.outer)(), (group.nested)());
    let Some(&field) = outer.iter().find(|k| k.starts_with('(')) else {
        return Ok(());
    };
    let mut moved = DeTable::new();
    let names: Vec<String> = table.keys().map(|k| k.get_ref().to_string()).collect();
    for name in names {
        if nested.contains(&name.as_str()) {
            if let Some((k, v)) = table.remove_entry(name.as_str()) {
                moved.insert(k, v);
            }
        } else if name == field || !outer.contains(&name.as_str()) {
            let span = table
                .get_key_value(name.as_str())
                .map_or(0..0, |(k, _)| k.span());
            let keys: Vec<String> = outer
                .iter()
                .flat_map(|k| {
                    if *k == field {
                        nested
                    } else {
                        std::slice::from_ref(k)
                    }
                })
                .map(|k| format!("`{k}`"))
                .collect();
            let message = format!(
                "unknown field `{name}`, expected one of {}",
                keys.join(", ")
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
    let join = |segment: &str| match key.is_empty() {
        true => segment.to_owned(),
        false => format!("{key}.{segment}"),
    };
    match (value, at.split_first()) {
        (DeValue::Table(table), None) => f(table, &key),
        (DeValue::Table(table), Some((&"*", rest))) => table.iter_mut().try_for_each(|(k, v)| {
            each_table(v.get_mut(), rest, join(&key_segment(k.get_ref())), f)
        }),
        (DeValue::Array(items), Some((&"*", rest))) => items
            .iter_mut()
            .enumerate()
            .try_for_each(|(i, v)| each_table(v.get_mut(), rest, format!("{key}[{i}]"), f)),
        (DeValue::Table(table), Some((name, rest))) => match table.get_mut(*name) {
            Some(v) => each_table(v.get_mut(), rest, join(name), f),
            None => Ok(()),
        },
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
    fn keys_are_found_by_the_path_errors_print() {
        let doc = doc();
        let at = |key: &str| find(&doc, key).map(|v| &TEXT[v.span()]);
        assert_eq!(at("server.port"), Some("1"));
        assert_eq!(at("targets.\"a b\".x[0]"), Some("10"));
        assert_eq!(at("targets.\"a b\".x[1].y"), Some("2"));
        assert_eq!(at("targets.\"a b\".x[2]"), None);
        assert_eq!(at("targets.a"), None);
        assert_eq!(at("server.port.x"), None);
        assert_eq!(split_key("a.\"b.[c\"[1].d"), ["a", "\"b.[c\"", "[1]", "d"]);
    }

    #[test]
    fn regrouping_moves_nested_keys_and_rejects_unknown_ones() {
        let text = "[server]\nlisten = \"x\"\nmax_connections = 3\n";
        let mut grouped = match parse(Path::new("w.toml"), text) {
            Ok(doc) => doc,
            Err(err) => panic!("{err}"),
        };
        assert_eq!(regroup(Path::new("w.toml"), text, &mut grouped), Ok(()));
        assert!(find(&grouped, "server.listen").is_some());
        assert!(find(&grouped, "server.max_connections").is_none());
        assert!(find(&grouped, "server.\"(connections)\".max_connections").is_some());

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
