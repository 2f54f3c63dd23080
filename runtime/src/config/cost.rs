//! `[cost]`, `[prices.MODEL]` (inline or from `cost.prices_file`) and `[[keys]]`: validated
//! data; the `cost` module gives it behaviour.
//!
//! Money is kept in integer pico-dollars (10⁻¹² USD): a price of $0.075 per million tokens is
//! 75,000 pico-dollars per token, exactly, and sums do not depend on the order requests
//! finished in.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use toml::Spanned;

use super::check::Source;
use super::error::{self, ConfigError};
use super::raw::{RawConfig, RawKey, RawPrice, RawPriceFile};

/// Pico-dollars in one US dollar.
pub const PICO_PER_USD: f64 = 1e12;

/// Default `cost.default_max_tokens`: the completion reserved for when a request sets no
/// `max_tokens`.
pub const DEFAULT_RESERVE_MAX_TOKENS: u32 = 4096;

/// Largest price accepted, USD per million tokens.
const MAX_PRICE_PER_MTOK: f64 = 100_000.0;

/// Largest budget accepted, USD.
const MAX_BUDGET_USD: f64 = 10_000_000.0;

/// Prices of one model in pico-dollars per token.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ModelPrice {
    /// Per prompt token.
    pub input: u64,
    /// Per prompt token served from the provider's prompt cache.
    pub cached_input: u64,
    /// Per completion token.
    pub output: u64,
}

/// `[cost]` and the price table.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CostSettings {
    /// Upstream model name → its price.
    pub prices: BTreeMap<String, ModelPrice>,
    /// The price file (resolved), when prices come from one; reloads watch it.
    pub prices_file: Option<PathBuf>,
    /// The price file's `date`, when prices came from a file.
    pub prices_date: Option<String>,
    /// Completion tokens reserved for a request without `max_tokens`.
    pub default_max_tokens: u32,
    /// Whether failed attempts that reported usage are charged (default true: the provider
    /// billed them).
    pub count_failed_attempts: bool,
    /// Where to append one JSON line per request for `weir cost project` (opt-in).
    pub request_log: Option<PathBuf>,
    /// Pico-dollars per million units of stage fuel (0: stage compute is recorded, not
    /// priced).
    pub fuel_pico_per_million: u64,
}

/// One API key and its limits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeySettings {
    /// Its name (in the ledger, `/admin/spend` and logs; never the key itself).
    pub name: String,
    /// blake3 of the key.
    pub hash: [u8; 32],
    /// Spend allowed per UTC day, pico-dollars.
    pub daily_budget: Option<u64>,
    /// Spend allowed per UTC calendar month, pico-dollars.
    pub monthly_budget: Option<u64>,
    /// Requests per minute.
    pub rpm: Option<u32>,
    /// Tokens (prompt + completion) per minute.
    pub tpm: Option<u32>,
    /// Most one request may cost, pico-dollars.
    pub max_cost_per_request: Option<u64>,
    /// Most LLM calls one request may make (its own and its stages' `complete()`).
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

fn usd(src: Source<'_>, value: &Spanned<f64>, max: f64, key: &str) -> Result<f64, ConfigError> {
    let got = *value.get_ref();
    if got.is_finite() && (0.0..=max).contains(&got) {
        Ok(got)
    } else {
        Err(src.error(
            value.span(),
            key,
            format!("must be a number of US dollars between 0 and {max}, got {got}"),
        ))
    }
}

fn price(src: Source<'_>, raw: &RawPrice, key: &str) -> Result<ModelPrice, ConfigError> {
    // USD per million tokens → pico-dollars per token: × 10¹² / 10⁶.
    let per_token = |v: f64| (v * 1e6).round() as u64;
    let input = usd(
        src,
        &raw.input_per_mtok,
        MAX_PRICE_PER_MTOK,
        &format!("{key}.input_per_mtok"),
    )?;
    let output = usd(
        src,
        &raw.output_per_mtok,
        MAX_PRICE_PER_MTOK,
        &format!("{key}.output_per_mtok"),
    )?;
    let cached = match &raw.cached_input_per_mtok {
        Some(v) => usd(
            src,
            v,
            MAX_PRICE_PER_MTOK,
            &format!("{key}.cached_input_per_mtok"),
        )?,
        None => input,
    };
    Ok(ModelPrice {
        input: per_token(input),
        cached_input: per_token(cached),
        output: per_token(output),
    })
}

fn prices(
    src: Source<'_>,
    raw: &BTreeMap<String, Spanned<RawPrice>>,
    out: &mut BTreeMap<String, ModelPrice>,
) -> Result<(), ConfigError> {
    for (model, raw_price) in raw {
        let key = format!("prices.{model}");
        if model.trim().is_empty() {
            return Err(src.error(
                raw_price.span(),
                key,
                "expected a model name, got an empty one",
            ));
        }
        out.insert(model.clone(), price(src, raw_price.get_ref(), &key)?);
    }
    Ok(())
}

/// Reads the price file at `path` (errors name that file, line and key; a file that cannot
/// be read is an error at `cost.prices_file`).
fn price_file(
    src: Source<'_>,
    at: &Spanned<String>,
    path: &Path,
    out: &mut BTreeMap<String, ModelPrice>,
) -> Result<Option<String>, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|err| {
        src.error(
            at.span(),
            "cost.prices_file",
            format!("cannot read the price file {}: {err}", path.display()),
        )
    })?;
    let file_src = Source {
        file: path,
        text: &text,
    };
    let deserializer =
        toml::Deserializer::parse(&text).map_err(|err| error::from_syntax(path, &text, &err))?;
    let raw: RawPriceFile = serde_path_to_error::deserialize(deserializer)
        .map_err(|err| error::from_serde(path, &text, err))?;
    prices(file_src, &raw.prices, out)?;
    Ok(raw.date.map(|d| d.into_inner()))
}

pub(crate) fn build(
    src: Source<'_>,
    raw: &RawConfig,
    base_dir: &Path,
) -> Result<CostSettings, ConfigError> {
    let cost = &raw.cost;
    let mut table = BTreeMap::new();
    let prices_file = cost
        .prices_file
        .as_ref()
        .map(|file| super::route::resolve(base_dir, Path::new(file.get_ref())));
    let prices_date = match (&cost.prices_file, &prices_file) {
        (Some(file), Some(path)) => price_file(src, file, path, &mut table)?,
        _ => None,
    };
    // Inline prices override the file's.
    prices(src, &raw.prices, &mut table)?;
    let fuel = match &cost.fuel_usd_per_billion {
        Some(v) => usd(src, v, 1_000.0, "cost.fuel_usd_per_billion")?,
        None => 0.0,
    };
    Ok(CostSettings {
        prices: table,
        prices_file,
        prices_date,
        default_max_tokens: src.in_range_or(
            cost.default_max_tokens.as_ref(),
            1..=10_000_000,
            u64::from(DEFAULT_RESERVE_MAX_TOKENS),
            "cost.default_max_tokens",
        )? as u32,
        count_failed_attempts: cost.count_failed_attempts.unwrap_or(true),
        request_log: cost
            .request_log
            .as_ref()
            .map(|p| super::route::resolve(base_dir, Path::new(p.get_ref()))),
        // USD per 10⁹ fuel → pico-dollars per 10⁶ fuel: × 10¹² / 10³.
        fuel_pico_per_million: (fuel * 1e9).round() as u64,
    })
}

fn key(src: Source<'_>, raw: &RawKey, at: &str) -> Result<KeySettings, ConfigError> {
    src.name(raw.name.get_ref(), raw.name.span(), &format!("{at}.name"))?;
    let hash_text = raw.hash.get_ref();
    let hash = hash_text
        .strip_prefix("blake3:")
        .and_then(|hex| blake3::Hash::from_hex(hex).ok())
        .ok_or_else(|| {
            src.error(
                raw.hash.span(),
                format!("{at}.hash"),
                "expected `blake3:` and 64 hex digits, the digest of the key (`weir key new` \
                 makes a key and prints its hash); never put the key itself here",
            )
        })?;
    let budget = |v: &Option<Spanned<f64>>, name: &str| -> Result<Option<u64>, ConfigError> {
        v.as_ref()
            .map(|v| usd(src, v, MAX_BUDGET_USD, &format!("{at}.{name}")).map(usd_to_pico))
            .transpose()
    };
    let count = |v: &Option<Spanned<u64>>, range, name: &str| -> Result<Option<u32>, ConfigError> {
        v.as_ref()
            .map(|v| {
                src.in_range(v, range, &format!("{at}.{name}"))
                    .map(|n| n as u32)
            })
            .transpose()
    };
    Ok(KeySettings {
        name: raw.name.get_ref().clone(),
        hash: *hash.as_bytes(),
        daily_budget: budget(&raw.daily_budget_usd, "daily_budget_usd")?,
        monthly_budget: budget(&raw.monthly_budget_usd, "monthly_budget_usd")?,
        rpm: count(&raw.rpm, 1..=10_000_000, "rpm")?,
        tpm: count(&raw.tpm, 1..=1_000_000_000, "tpm")?,
        max_cost_per_request: budget(&raw.max_cost_per_request_usd, "max_cost_per_request_usd")?,
        max_llm_calls_per_request: count(
            &raw.max_llm_calls_per_request,
            1..=10_000,
            "max_llm_calls_per_request",
        )?,
    })
}

pub(crate) fn build_keys(
    src: Source<'_>,
    raw: &[Spanned<RawKey>],
) -> Result<Vec<KeySettings>, ConfigError> {
    let mut keys: Vec<KeySettings> = Vec::with_capacity(raw.len());
    for (i, raw_key) in raw.iter().enumerate() {
        let at = format!("keys[{i}]");
        let built = key(src, raw_key.get_ref(), &at)?;
        if let Some(first) = keys.iter().position(|k| k.name == built.name) {
            return Err(src.error(
                raw_key.get_ref().name.span(),
                format!("{at}.name"),
                format!(
                    "expected unique key names; `{}` is already keys[{first}]",
                    built.name
                ),
            ));
        }
        if let Some(first) = keys.iter().position(|k| k.hash == built.hash) {
            return Err(src.error(
                raw_key.get_ref().hash.span(),
                format!("{at}.hash"),
                format!("the same key hash as keys[{first}]; every key must be distinct"),
            ));
        }
        keys.push(built);
    }
    Ok(keys)
}
