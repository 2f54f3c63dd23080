//! `[services.NAME]`: an HTTP dependency stages call (a vector database, a search API, an
//! embedding service), with the same policy machinery as an LLM route: upstream URLs in
//! fallback order (or weighted), a per-attempt timeout and a total deadline, retries with
//! backoff on chosen statuses, a breaker and a concurrency limit per URL, and optionally a
//! response cache and a price per call. A stage reaches only the services its
//! `services = [...]` grants, at `http://NAME/...` through `wasi:http`.

use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize};

use super::check::Source;
use super::error::{ConfigError, key_segment};
use super::routing::{BreakerSettings, PolicySettings, Strategy, check_breaker, check_policy};
use super::value::{Int, Ms, Usd, Val, env_var, mask, millis, ms, name_message, read_str};

fn authorization() -> String {
    "authorization".to_owned()
}

impl std::fmt::Debug for ServiceSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        super::masked::debug(self, "ServiceSettings", f)
    }
}

/// A service's total deadline when `deadline_ms` is not written: far below a route's
/// 120 s, since a stage waits on it inside the request.
pub const SERVICE_DEADLINE: Duration = Duration::from_secs(10);

/// `Usd` scale of a price per call: pico-dollars.
const PICO: u64 = 1_000_000_000_000;

/// One validated service.
#[derive(Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub struct ServiceSettings {
    /// The table key, `[a-z0-9_-]+` (1 to 64 characters): the authority stages call
    /// (`http://NAME/path`).
    #[serde(skip)]
    pub name: String,
    /// The upstreams, in fallback order: `http://` or `https://` base URLs without a trailing
    /// `/`, query or fragment; the stage's path and query are appended. 1 to 16, each once.
    #[serde(deserialize_with = "urls")]
    pub urls: Vec<String>,
    /// Name of the environment variable holding the service's key, read at load time and sent
    /// with every call (masked in `GET /admin/config`); `None` when it needs none.
    #[serde(deserialize_with = "env_var", default)]
    pub api_key_env: Option<String>,
    /// The key read from [`Self::api_key_env`].
    #[serde(skip_deserializing, serialize_with = "mask")]
    pub api_key: Option<String>,
    /// The header the key goes in: `authorization` (the default, as `Bearer <key>`) or any
    /// other header name (the key as it is, like `x-api-key`). A stage's own header of that
    /// name is dropped.
    #[serde(default = "authorization")]
    pub api_key_header: String,
    /// How the first attempt's URL is chosen (default `fallback`: the first).
    #[serde(default)]
    pub strategy: Strategy,
    /// One weight per URL (default 1 each), at least one above 0, for `weighted`.
    #[serde(deserialize_with = "super::route::weights", default)]
    pub weights: Vec<u32>,
    /// Per-attempt timeout: headers and the whole body (default 2 s).
    #[serde(rename = "timeout_ms", with = "Ms::<1, 600_000>")]
    #[serde(default = "ms::<2000>")]
    pub timeout: Duration,
    /// Calls in flight at most, per URL.
    #[serde(with = "Int::<1, 1_000_000>", default = "Val::<64>::int")]
    pub max_concurrency: u32,
    /// Each URL's breaker thresholds.
    #[serde(default)]
    pub breaker: BreakerSettings,
    /// Keep successful answers of `GET`, `HEAD` and `POST` calls this long, keyed by blake3 of
    /// method + path + body; `None` (the default) caches nothing.
    #[serde(rename = "cache_ttl_s", with = "Int::<1, 86_400>", default)]
    pub cache_ttl_s: Option<u32>,
    /// What one attempt that reached the service costs, USD (up to $100), added to the
    /// request's cost and its key's spend; `None` (the default) is free.
    #[serde(rename = "price_per_call_usd", with = "Usd::<100, PICO>", default)]
    pub price_per_call: Option<u64>,
    /// The largest request body a stage may send, bytes (default 1 MiB); over it the guest
    /// gets `HTTP-request-body-size` and nothing is sent.
    #[serde(with = "Int::<1, { 64 << 20 }>", default = "Val::<{ 1 << 20 }>::int")]
    pub max_request_bytes: u64,
    /// The largest answer body read, bytes (default 4 MiB); over it the attempt fails as a
    /// broken reply (retried elsewhere).
    #[serde(with = "Int::<1, { 64 << 20 }>", default = "Val::<{ 4 << 20 }>::int")]
    pub max_response_bytes: u64,
    /// Attempts, total deadline (default [`SERVICE_DEADLINE`]), backoff, retry budget,
    /// `retry_on` statuses, wait queue and hedging, written flat as a route writes them.
    #[serde(rename = "(policy)", default)]
    pub policy: PolicySettings,
}

fn urls<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    struct Url(String);
    impl<'de> Deserialize<'de> for Url {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            read_str(d, super::target::normalize_base_url).map(Url)
        }
    }
    Ok(Vec::<Url>::deserialize(d)?
        .into_iter()
        .map(|u| u.0)
        .collect())
}

/// Most URLs one service may list.
const MAX_URLS: usize = 16;

/// The second pass over `[services.NAME]`: its name, its URLs, weights, breaker and policy
/// bounds that depend on another key, and the deadline's default.
pub(crate) fn check(
    name: String,
    mut service: ServiceSettings,
    src: &Source<'_>,
) -> Result<ServiceSettings, ConfigError> {
    let key = format!("services.{}", key_segment(&name));
    src.ensure(super::is_valid_name(&name), &key, &name_message(&name))?;
    if let Some(var) = &service.api_key_env {
        let purpose = format!("the key for service `{name}`");
        service.api_key = Some(src.secret(&format!("{key}.api_key_env"), var, &purpose)?);
    }
    service.api_key_header = service.api_key_header.to_ascii_lowercase();
    let header = &service.api_key_header;
    let message = format!(
        "expected an HTTP header name (letters, digits and !#$%&'*+-.^_`|~), got {header:?}"
    );
    src.ensure(
        super::target::is_header_name(header),
        &format!("{key}.api_key_header"),
        &message,
    )?;
    let urls_key = format!("{key}.urls");
    let count = service.urls.len();
    let message = format!("expected 1 to {MAX_URLS} upstream URLs, got {count}");
    src.ensure((1..=MAX_URLS).contains(&count), &urls_key, &message)?;
    for (i, url) in service.urls.iter().enumerate() {
        if let Some(first) = service.urls[..i].iter().position(|u| u == url) {
            let message = format!("expected each URL once; `{url}` is already {urls_key}[{first}]");
            return Err(src.error(&format!("{urls_key}[{i}]"), message));
        }
    }
    super::route::check_weights(&mut service.weights, count, "URL", src, &key)?;
    check_breaker(&mut service.breaker, src, &format!("{key}.breaker"))?;
    if !src.written(&format!("{key}.deadline_ms")) {
        service.policy.deadline = SERVICE_DEADLINE;
    }
    let timeout_key = format!("{key}.timeout_ms");
    let message = format!(
        "expected a per-attempt timeout no longer than the service's deadline ({} ms)",
        millis(service.policy.deadline)
    );
    src.ensure(
        service.timeout <= service.policy.deadline,
        &timeout_key,
        &message,
    )?;
    check_policy(&mut service.policy, src, &key)?;
    service.name = name;
    Ok(service)
}

/// Checks that every service a stage grants (`routes[i].stages[j].services`) is defined.
pub(crate) fn check_grants(
    granted: &[String],
    services: &[ServiceSettings],
    src: &Source<'_>,
    key: &str,
) -> Result<(), ConfigError> {
    for (i, name) in granted.iter().enumerate() {
        if !services.iter().any(|s| s.name == *name) {
            let defined = match services.is_empty() {
                true => "no services are defined (add a [services.NAME] table)".to_owned(),
                false => {
                    let names: Vec<&str> = services.iter().map(|s| s.name.as_str()).collect();
                    format!("defined services: {}", names.join(", "))
                }
            };
            let message = format!("unknown service `{name}`; {defined}");
            return Err(src.error(&format!("{key}.services[{i}]"), message));
        }
        if let Some(first) = granted[..i].iter().position(|g| g == name) {
            let message =
                format!("expected each service once; `{name}` is already {key}.services[{first}]");
            return Err(src.error(&format!("{key}.services[{i}]"), message));
        }
    }
    Ok(())
}
