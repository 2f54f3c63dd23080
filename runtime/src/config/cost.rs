//! `[cost]`, `[prices.MODEL]` (inline or from `cost.prices_file`) and `[[keys]]`: validated
//! data; the `cost` module gives it behaviour.
//!
//! Money is kept in integer pico-dollars (10⁻¹² USD): a price of $0.075 per million tokens is
//! 75,000 pico-dollars per token, exactly, and sums do not depend on the order requests
//! finished in.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::check::Source;
use super::document;
use super::error::{ConfigError, key_segment};
use super::value::{Int, MASK, Usd, Val, lossy_opt, name, path, read_str, serde_default};

/// Pico-dollars in one US dollar.
pub const PICO_PER_USD: f64 = 1e12;
/// `Usd` scale of prices, written in USD per million tokens: pico-dollars per token.
const PER_MTOK: u64 = 1_000_000;
/// `Usd` scale of budgets: pico-dollars.
const PICO: u64 = 1_000_000_000_000;
/// Most LLM calls one request may make when neither its route nor its key says otherwise
/// (`cost.max_llm_calls_per_request`).
pub const DEFAULT_LLM_CALLS_PER_REQUEST: u32 = 10;
/// Largest per-request limit on LLM calls a route, a key or `[cost]` may set.
const MAX_LLM_CALLS: u64 = 10_000;

/// Prices of one model in pico-dollars per token (`[prices.MODEL]`, USD per million tokens).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub struct ModelPrice {
    /// Per prompt token.
    #[serde(rename = "input_per_mtok", with = "Usd::<100_000, PER_MTOK>")]
    pub input: u64,
    /// Per prompt token served from the provider's prompt cache (default the input price).
    #[serde(
        rename = "cached_input_per_mtok",
        with = "Usd::<100_000, PER_MTOK>",
        default
    )]
    pub cached_input: u64,
    /// Per prompt token written to the provider's prompt cache (Anthropic's
    /// `cache_creation_input_tokens`); default 1.25 × the input price, Anthropic's rate for a
    /// 5-minute cache write.
    #[serde(
        rename = "cache_write_per_mtok",
        with = "Usd::<100_000, PER_MTOK>",
        default
    )]
    pub cache_write: u64,
    /// Per completion token.
    #[serde(rename = "output_per_mtok", with = "Usd::<100_000, PER_MTOK>")]
    pub output: u64,
}

/// `[cost]` and the price table.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub struct CostSettings {
    /// Upstream model name → its price: the price file's, the inline `[prices.MODEL]` tables
    /// over them.
    #[serde(skip)]
    pub prices: BTreeMap<String, ModelPrice>,
    /// The price file (resolved), when prices come from one; reloads watch it.
    #[serde(deserialize_with = "path", serialize_with = "lossy_opt", default)]
    pub prices_file: Option<PathBuf>,
    /// The price file's `date`, when prices came from a file.
    #[serde(skip_deserializing)]
    pub prices_date: Option<String>,
    /// Completion tokens reserved for a request without `max_tokens`.
    #[serde(with = "Int::<1, 10_000_000>", default = "Val::<4096>::int")]
    pub default_max_tokens: u32,
    /// Whether failed attempts that reported usage are charged (default true: the provider
    /// billed them).
    #[serde(default = "super::value::yes")]
    pub count_failed_attempts: bool,
    /// Where to append one JSON line per request for `weir cost project` (opt-in).
    #[serde(deserialize_with = "path", serialize_with = "lossy_opt", default)]
    pub request_log: Option<PathBuf>,
    /// Pico-dollars per million units of stage fuel (0: stage compute is recorded, not
    /// priced).
    #[serde(rename = "fuel_usd_per_billion", default)]
    #[serde(with = "Usd::<1000, 1_000_000_000>")]
    pub fuel_pico_per_million: u64,
    /// Most LLM calls one client request may make, with or without keys: its own call
    /// (retries and fallbacks excluded), each `complete()` and `embed()` of its stages and
    /// the semantic tier's embedding call. A route may set its own; a key may only lower it.
    #[serde(with = "Int::<1, MAX_LLM_CALLS>")]
    #[serde(default = "Val::<{ DEFAULT_LLM_CALLS_PER_REQUEST as u64 }>::int")]
    pub max_llm_calls_per_request: u32,
}

serde_default!(CostSettings);

/// One API key and its limits (`[[keys]]`).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub struct KeySettings {
    /// Its name (in the ledger, `/admin/spend` and logs; never the key itself).
    #[serde(deserialize_with = "name")]
    pub name: String,
    /// blake3 of the key, written `blake3:<64 hex>`; not a secret, but not shown either.
    #[serde(deserialize_with = "key_hash", serialize_with = "hidden")]
    pub hash: [u8; 32],
    /// Spend allowed per UTC day, pico-dollars.
    #[serde(rename = "daily_budget_usd", with = "Usd::<10_000_000, PICO>", default)]
    pub daily_budget: Option<u64>,
    /// Spend allowed per UTC calendar month, pico-dollars.
    #[serde(
        rename = "monthly_budget_usd",
        with = "Usd::<10_000_000, PICO>",
        default
    )]
    pub monthly_budget: Option<u64>,
    /// Requests per minute.
    #[serde(with = "Int::<1, 10_000_000>", default)]
    pub rpm: Option<u32>,
    /// Tokens (prompt + completion) per minute.
    #[serde(with = "Int::<1, 1_000_000_000>", default)]
    pub tpm: Option<u32>,
    /// Most one request may cost, pico-dollars.
    #[serde(rename = "max_cost_per_request_usd", default)]
    #[serde(with = "Usd::<10_000_000, PICO>")]
    pub max_cost_per_request: Option<u64>,
    /// Most LLM calls one request may make (counted as `cost.max_llm_calls_per_request`
    /// counts them); it may only lower the route's or the server's limit.
    #[serde(with = "Int::<1, MAX_LLM_CALLS>", default)]
    pub max_llm_calls_per_request: Option<u32>,
}

impl KeySettings {
    /// Whether the key limits spend (a budget, a per-request cost or TPM), so that calls
    /// must reserve their worst case.
    pub fn limits_spend(&self) -> bool {
        self.daily_budget.is_some()
            || self.monthly_budget.is_some()
            || self.max_cost_per_request.is_some()
            || self.tpm.is_some()
    }
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
        match text.strip_prefix("blake3:").map(blake3::Hash::from_hex) {
            Some(Ok(hash)) => Ok(*hash.as_bytes()),
            _ => Err(
                "expected `blake3:` and 64 hex digits, the digest of the key (`weir key new` \
                  makes a key and prints its hash); never put the key itself here"
                    .to_owned(),
            ),
        }
    })
}

fn hidden<S: Serializer>(_: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(MASK)
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
        if !src.written(&format!("{key}.cache_write_per_mtok")) {
            price.cache_write = price.input.saturating_add(price.input / 4);
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
        let text = crate::fsutil::read_regular(&path, crate::fsutil::MAX_CONFIG_FILE_BYTES)
            .and_then(|bytes| String::from_utf8(bytes).map_err(std::io::Error::other));
        let text = text.map_err(|err| {
            let message = format!("cannot read the price file {}: {err}", path.display());
            src.error("cost.prices_file", message)
        })?;
        let doc = document::parse(&path, &text)?;
        let prices: PriceFile = document::read(&path, &text, doc.clone())?;
        let keys = document::index(&doc);
        let file_src = Source {
            file: &path,
            text: &text,
            keys: &keys,
            ..*src
        };
        add_prices(&file_src, prices.prices, &mut cost.prices)?;
        (cost.prices_date, cost.prices_file) = (prices.date, Some(path));
    }
    add_prices(src, inline, &mut cost.prices)?;
    cost.request_log = cost.request_log.as_deref().map(|log| src.resolve(log));
    Ok(())
}

/// The second pass over `[[keys]]`: names and keys unique.
pub(crate) fn check_keys(keys: &[KeySettings], src: &Source<'_>) -> Result<(), ConfigError> {
    for (i, key) in keys.iter().enumerate() {
        if let Some(first) = keys[..i].iter().position(|k| k.name == key.name) {
            let message = format!(
                "expected unique key names; `{}` is already keys[{first}]",
                key.name
            );
            return Err(src.error(&format!("keys[{i}].name"), message));
        }
        if let Some(first) = keys[..i].iter().position(|k| k.hash == key.hash) {
            let message = format!("the same key hash as keys[{first}]; every key must be distinct");
            return Err(src.error(&format!("keys[{i}].hash"), message));
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
                    cache_write_per_mtok = 6\noutput_per_mtok = 15\n[targets.t]\nbase_url = \"http://h\"\n[[routes]]\n\
                    model = \"m\"\ntargets = [\"t\"]\n";
        let config = Config::parse(text, std::path::Path::new("w.toml"), &|_| None);
        let prices = config.map(|c| c.cost.prices).map_err(|e| e.to_string());
        let price = |input, cached_input, cache_write, output| super::ModelPrice {
            input,
            cached_input,
            cache_write,
            output,
        };
        assert_eq!(
            prices,
            Ok([
                (
                    "c".to_owned(),
                    price(3_000_000, 300_000, 6_000_000, 15_000_000)
                ),
                // Cache writes default to 1.25 × input.
                ("m".to_owned(), price(75_000, 75_000, 93_750, 300_000)),
            ]
            .into())
        );
    }
}
