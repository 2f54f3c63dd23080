//! `[cost]`, `[prices.MODEL]` (inline or from `cost.prices_file`) and `[[keys]]`: validated
//! data; the `cost` module gives it behaviour.
//!
//! Money is kept in integer pico-dollars (10⁻¹² USD): a price of $0.075 per million tokens is
//! 75,000 pico-dollars per token, exactly, and sums do not depend on the order requests
//! finished in.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Deserializer, Serialize};

use super::check::Source;
use super::document;
use super::error::{ConfigError, key_segment};
use super::value::{Int, Usd, Val, defaults, lossy_opt, mask, name, path, read_str, yes};

/// Pico-dollars in one US dollar.
pub const PICO_PER_USD: f64 = 1e12;

/// Prices of one model in pico-dollars per token (`[prices.MODEL]`, in USD per million
/// tokens, 0 to 100,000).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub struct ModelPrice {
    /// Per prompt token (`input_per_mtok`).
    #[serde(rename = "input_per_mtok", with = "Usd::<100_000, 1_000_000>")]
    pub input: u64,
    /// Per prompt token served from the provider's prompt cache (`cached_input_per_mtok`,
    /// default the input price).
    #[serde(
        rename = "cached_input_per_mtok",
        with = "Usd::<100_000, 1_000_000>",
        default
    )]
    pub cached_input: u64,
    /// Per completion token (`output_per_mtok`).
    #[serde(rename = "output_per_mtok", with = "Usd::<100_000, 1_000_000>")]
    pub output: u64,
}

/// `[cost]` and the price table.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub struct CostSettings {
    /// Upstream model name → its price: the price file's, then the inline `[prices.MODEL]`
    /// tables over them.
    #[serde(skip)]
    pub prices: BTreeMap<String, ModelPrice>,
    /// The price file (resolved), when prices come from one; reloads watch it.
    #[serde(deserialize_with = "path", serialize_with = "lossy_opt", default)]
    pub prices_file: Option<PathBuf>,
    /// The price file's `date`, when prices came from a file.
    #[serde(skip_deserializing)]
    pub prices_date: Option<String>,
    /// Completion tokens reserved for a request without `max_tokens`, 1 to 10,000,000
    /// (default 4096).
    #[serde(with = "Int::<1, 10_000_000>", default = "Val::<4096>::int")]
    pub default_max_tokens: u32,
    /// Whether failed attempts that reported usage are charged (default true: the provider
    /// billed them).
    #[serde(default = "yes")]
    pub count_failed_attempts: bool,
    /// Where to append one JSON line per request for `weir cost project` (opt-in).
    #[serde(deserialize_with = "path", serialize_with = "lossy_opt", default)]
    pub request_log: Option<PathBuf>,
    /// Pico-dollars per million units of stage fuel (`fuel_usd_per_billion`, USD 0 to 1000;
    /// default 0: stage compute is recorded, not priced).
    #[serde(
        rename = "fuel_usd_per_billion",
        with = "Usd::<1000, 1_000_000_000>",
        default
    )]
    pub fuel_pico_per_million: u64,
}

impl Default for CostSettings {
    fn default() -> Self {
        defaults()
    }
}

/// One API key and its limits (`[[keys]]`).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub struct KeySettings {
    /// Its name (in the ledger, `/admin/spend` and logs; never the key itself).
    #[serde(deserialize_with = "name")]
    pub name: String,
    /// blake3 of the key, written `blake3:<64 hex>`. Not a secret, but not shown either.
    #[serde(deserialize_with = "key_hash", serialize_with = "mask")]
    pub hash: [u8; 32],
    /// Spend allowed per UTC day, pico-dollars (`daily_budget_usd`, 0 to 10,000,000).
    #[serde(
        rename = "daily_budget_usd",
        with = "Usd::<10_000_000, 1_000_000_000_000>",
        default
    )]
    pub daily_budget: Option<u64>,
    /// Spend allowed per UTC calendar month, pico-dollars (`monthly_budget_usd`).
    #[serde(
        rename = "monthly_budget_usd",
        with = "Usd::<10_000_000, 1_000_000_000_000>",
        default
    )]
    pub monthly_budget: Option<u64>,
    /// Requests per minute, 1 to 10,000,000.
    #[serde(with = "Int::<1, 10_000_000>", default)]
    pub rpm: Option<u32>,
    /// Tokens (prompt + completion) per minute, 1 to 1,000,000,000.
    #[serde(with = "Int::<1, 1_000_000_000>", default)]
    pub tpm: Option<u32>,
    /// Most one request may cost, pico-dollars (`max_cost_per_request_usd`).
    #[serde(
        rename = "max_cost_per_request_usd",
        with = "Usd::<10_000_000, 1_000_000_000_000>",
        default
    )]
    pub max_cost_per_request: Option<u64>,
    /// Most LLM calls one request may make (its own and its stages' `complete()`), 1 to
    /// 10,000.
    #[serde(with = "Int::<1, 10_000>", default)]
    pub max_llm_calls_per_request: Option<u32>,
}

/// The blake3 digest a key is stored as, written `blake3:<64 hex>` in the config.
pub fn hash_key(key: &str) -> [u8; 32] {
    *blake3::hash(key.as_bytes()).as_bytes()
}

/// USD as pico-dollars, rounded.
pub fn usd_to_pico(usd: f64) -> u64 {
    (usd * PICO_PER_USD).round() as u64
}

/// Pico-dollars as USD.
pub fn pico_to_usd(pico: u64) -> f64 {
    pico as f64 / PICO_PER_USD
}

fn key_hash<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
    read_str(d, |text| {
        let hash = text.strip_prefix("blake3:").map(blake3::Hash::from_hex);
        match hash {
            Some(Ok(hash)) => Ok(*hash.as_bytes()),
            _ => Err(
                "expected `blake3:` and 64 hex digits, the digest of the key (`weir key \
                      new` makes a key and prints its hash); never put the key itself here"
                    .to_owned(),
            ),
        }
    })
}

/// A price file: `date` and `[prices.MODEL]` tables.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
struct PriceFile {
    date: Option<String>,
    #[serde(default)]
    prices: BTreeMap<String, ModelPrice>,
}

/// Checks `prices` (read from the file `src` describes) and adds them to `table`.
fn add_prices(
    src: &Source<'_>,
    prices: BTreeMap<String, ModelPrice>,
    table: &mut BTreeMap<String, ModelPrice>,
) -> Result<(), ConfigError> {
    for (model, mut price) in prices {
        let key = format!("prices.{}", key_segment(&model));
        if model.trim().is_empty() {
            let message = "expected a model name, got an empty one";
            return Err(src.error_at(src.span(&key), format!("prices.{model}"), message));
        }
        if !src.written(&format!("{key}.cached_input_per_mtok")) {
            price.cached_input = price.input;
        }
        table.insert(model, price);
    }
    Ok(())
}

/// The second pass over `[cost]` and `[prices]`: the price file (errors in it name that file,
/// line and key; one that cannot be read is an error at `cost.prices_file`), the inline
/// prices over its own, and the paths.
pub(crate) fn check(
    cost: &mut CostSettings,
    inline: BTreeMap<String, ModelPrice>,
    src: &Source<'_>,
) -> Result<(), ConfigError> {
    if let Some(file) = &cost.prices_file {
        let path = src.resolve(file);
        let text = std::fs::read_to_string(&path).map_err(|err| {
            let message = format!("cannot read the price file {}: {err}", path.display());
            src.error("cost.prices_file", message)
        })?;
        let doc = document::parse(&path, &text)?;
        let file_src = Source {
            file: &path,
            text: &text,
            doc: &doc,
            ..*src
        };
        let prices: PriceFile = document::read(&path, &text, doc.clone())?;
        add_prices(&file_src, prices.prices, &mut cost.prices)?;
        cost.prices_date = prices.date;
        cost.prices_file = Some(path);
    }
    add_prices(src, inline, &mut cost.prices)?;
    if let Some(log) = &cost.request_log {
        cost.request_log = Some(src.resolve(log));
    }
    Ok(())
}

/// The second pass over `[[keys]]`: names and keys unique.
pub(crate) fn check_keys(keys: &[KeySettings], src: &Source<'_>) -> Result<(), ConfigError> {
    for (i, key) in keys.iter().enumerate() {
        if let Some(first) = keys[..i].iter().position(|k| k.name == key.name) {
            return Err(src.error(
                &format!("keys[{i}].name"),
                format!(
                    "expected unique key names; `{}` is already keys[{first}]",
                    key.name
                ),
            ));
        }
        if let Some(first) = keys[..i].iter().position(|k| k.hash == key.hash) {
            return Err(src.error(
                &format!("keys[{i}].hash"),
                format!("the same key hash as keys[{first}]; every key must be distinct"),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::Config;

    #[test]
    fn prices_are_pico_dollars_per_token_and_cached_input_defaults_to_input() {
        let text = "[prices.m]\ninput_per_mtok = 0.075\noutput_per_mtok = 0.3\n\
                    [prices.c]\ninput_per_mtok = 3\ncached_input_per_mtok = 0.3\n\
                    output_per_mtok = 15\n[targets.t]\nbase_url = \"http://h\"\n[[routes]]\n\
                    model = \"m\"\ntargets = [\"t\"]\n";
        let config = Config::parse(text, std::path::Path::new("w.toml"), &|_| None);
        let prices = config.map(|c| c.cost.prices).map_err(|e| e.to_string());
        let price = |input, cached_input, output| super::ModelPrice {
            input,
            cached_input,
            output,
        };
        assert_eq!(
            prices,
            Ok([
                ("c".to_owned(), price(3_000_000, 300_000, 15_000_000)),
                ("m".to_owned(), price(75_000, 75_000, 300_000)),
            ]
            .into())
        );
    }
}
