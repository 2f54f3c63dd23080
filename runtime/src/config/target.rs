//! `[targets.NAME]`: one upstream endpoint a route may send requests to, in the wire format
//! its `kind` names (OpenAI-compatible by default; Azure OpenAI, Anthropic, Gemini).

use std::collections::BTreeMap;
use std::fmt;
use std::net::Ipv6Addr;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize};

use super::check::{Source, is_header_value};
use super::error::{ConfigError, key_segment};
use super::routing::{TargetLimits, check_breaker};
use super::value::{Ms, env_var, mask, mask_values, millis, ms, name_message, read_str};

/// Headers weir itself owns on an upstream request; a target may not set them.
const RESERVED_HEADERS: [&str; 4] = ["host", "content-length", "transfer-encoding", "connection"];

/// One validated upstream target.
#[derive(Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub struct TargetSettings {
    /// The table key: `[a-z0-9_-]+`, 1 to 64 characters.
    #[serde(skip)]
    pub name: String,
    /// `http://` or `https://` URL with a host, without a trailing `/`, query or fragment;
    /// endpoint paths such as `/chat/completions` are appended to it.
    #[serde(deserialize_with = "base_url")]
    pub base_url: String,
    /// Name of the environment variable holding [`Self::api_key`].
    #[serde(deserialize_with = "env_var", default)]
    pub api_key_env: Option<String>,
    /// The API key, read from [`Self::api_key_env`] at load time and sent as a bearer token;
    /// `None` when the target needs none.
    #[serde(skip_deserializing, serialize_with = "mask")]
    pub api_key: Option<String>,
    /// Model name sent upstream instead of the client's, if set.
    #[serde(default)]
    pub model: Option<String>,
    /// The wire format the target speaks (default `openai`).
    #[serde(default)]
    pub kind: ProviderKind,
    /// `azure-openai` only, and required there: the deployment the URL names
    /// (`/openai/deployments/{deployment}/...`). `model` stays the model it serves, for prices.
    #[serde(default)]
    pub deployment: Option<String>,
    /// `azure-openai`: the `api-version` query parameter (default [`AZURE_API_VERSION`]);
    /// `anthropic`: the `anthropic-version` header (default [`ANTHROPIC_VERSION`]).
    #[serde(default)]
    pub api_version: Option<String>,
    /// Per-attempt timeout (the default is enough for a long completion).
    #[serde(rename = "timeout_ms", with = "Ms::<1, 600_000>")]
    #[serde(default = "ms::<60_000>")]
    pub timeout: Duration,
    /// Extra request headers, names lowercased, sorted by name.
    #[serde(deserialize_with = "headers", serialize_with = "mask_values", default)]
    pub headers: Vec<(String, String)>,
    /// For streams: the first event must arrive within this (1 ms to `timeout_ms`, default
    /// `timeout_ms`).
    #[serde(rename = "ttft_timeout_ms", with = "Ms::<0, { u64::MAX }>", default)]
    pub ttft_timeout: Duration,
    /// For a JSON (non-streaming) request: ask this target for a stream and assemble the
    /// answer, so `ttft_timeout_ms` finds an upstream that never answers (default: on when
    /// `ttft_timeout_ms` is below `timeout_ms`; turn it off for a provider that cannot
    /// stream).
    #[serde(default)]
    pub stream_json: bool,
    /// Concurrency limit, RPM limit, stream bounds and breaker thresholds.
    #[serde(rename = "(limits)", default)]
    pub limits: TargetLimits,
}

/// The wire format of a target: `kind = "openai" | "azure-openai" | "anthropic" | "gemini"`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(expecting = "one of \"openai\", \"azure-openai\", \"anthropic\", \"gemini\"")]
pub enum ProviderKind {
    /// OpenAI's `/chat/completions` and `/embeddings` under `base_url`, bearer key (OpenAI,
    /// vLLM, Ollama, Groq, Together, OpenRouter, `weir sim`).
    #[default]
    #[serde(rename = "openai")]
    OpenAi,
    /// Azure OpenAI: `{base_url}/openai/deployments/{deployment}/chat/completions?api-version=`,
    /// `api-key` header.
    #[serde(rename = "azure-openai")]
    AzureOpenAi,
    /// Anthropic's Messages API: `{base_url}/messages`, `x-api-key`, `anthropic-version`.
    #[serde(rename = "anthropic")]
    Anthropic,
    /// Google's Gemini API: `{base_url}/models/{model}:generateContent` (and
    /// `:streamGenerateContent?alt=sse`), `x-goog-api-key`.
    #[serde(rename = "gemini")]
    Gemini,
}

impl ProviderKind {
    /// The name the config writes.
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderKind::OpenAi => "openai",
            ProviderKind::AzureOpenAi => "azure-openai",
            ProviderKind::Anthropic => "anthropic",
            ProviderKind::Gemini => "gemini",
        }
    }

    /// The header that carries the API key.
    pub fn key_header(self) -> &'static str {
        match self {
            ProviderKind::OpenAi => "authorization",
            ProviderKind::AzureOpenAi => "api-key",
            ProviderKind::Anthropic => "x-api-key",
            ProviderKind::Gemini => "x-goog-api-key",
        }
    }

    /// Whether the target serves OpenAI-shaped `/embeddings`.
    pub fn embeds(self) -> bool {
        matches!(self, ProviderKind::OpenAi | ProviderKind::AzureOpenAi)
    }
}

/// The `api-version` an `azure-openai` target sends when the config names none (Azure's
/// current GA version).
pub const AZURE_API_VERSION: &str = "2024-10-21";
/// The `anthropic-version` an `anthropic` target sends when the config names none.
pub const ANTHROPIC_VERSION: &str = "2023-06-01";

impl fmt::Debug for TargetSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        super::masked::debug(self, "TargetSettings", f)
    }
}

fn base_url<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    read_str(d, normalize_base_url)
}

/// The headers as written; [`check`] checks and normalises them.
fn headers<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<(String, String)>, D::Error> {
    Ok(BTreeMap::deserialize(d)?.into_iter().collect())
}

/// The second pass over `[targets.NAME]`: its name, API key, model, headers and the bounds
/// that depend on another key.
pub(crate) fn check(
    name: String,
    mut target: TargetSettings,
    src: &Source<'_>,
) -> Result<TargetSettings, ConfigError> {
    let key = format!("targets.{}", key_segment(&name));
    src.ensure(super::is_valid_name(&name), &key, &name_message(&name))?;
    if let Some(var) = &target.api_key_env {
        let purpose = format!("the API key for target `{name}`");
        target.api_key = Some(src.secret(&format!("{key}.api_key_env"), var, &purpose)?);
    }
    let model = target.model.as_deref().unwrap_or("-");
    let message = "expected an upstream model name like \"gpt-4o-mini\", got an empty string; \
                   leave the key out to send the client's model";
    src.ensure(!model.trim().is_empty(), &format!("{key}.model"), message)?;
    check_kind(&target, src, &key)?;
    let mut headers: Vec<(String, String)> = Vec::with_capacity(target.headers.len());
    for (header, value) in &target.headers {
        let lower = header.to_ascii_lowercase();
        let problem = if !is_header_name(header) {
            format!(
                "expected an HTTP header name (letters, digits and !#$%&'*+-.^_`|~), got {header:?}"
            )
        } else if RESERVED_HEADERS.contains(&lower.as_str()) {
            format!(
                "expected a header weir does not set itself; `{lower}` is managed by the HTTP client"
            )
        } else if lower == target.kind.key_header() && target.api_key_env.is_some() {
            format!(
                "expected no `{lower}` header when `api_key_env` is set: the API key is \
                 already sent in it"
            )
        } else if headers.iter().any(|(name, _)| *name == lower) {
            format!(
                "expected each header once; `{lower}` is already set (header names are \
                 case-insensitive)"
            )
        } else if !is_header_value(value) {
            "expected a header value of visible ASCII characters, spaces and tabs".to_owned()
        } else {
            headers.push((lower, value.clone()));
            continue;
        };
        return Err(src.error(&format!("{key}.headers.{}", key_segment(header)), problem));
    }
    headers.sort();
    target.headers = headers;
    let timeout = target.timeout;
    let ttft_key = format!("{key}.ttft_timeout_ms");
    src.bounded(
        &ttft_key,
        &mut target.ttft_timeout,
        (1, millis(timeout)),
        timeout,
    )?;
    if !src.written(&format!("{key}.stream_json")) {
        target.stream_json = target.ttft_timeout < timeout;
    }
    // Between two events a stream may pause as long as before its first one, by default.
    if !src.written(&format!("{key}.stream_idle_timeout_ms")) {
        target.limits.stream_idle_timeout = target.ttft_timeout;
    }
    check_breaker(&mut target.limits.breaker, src, &format!("{key}.breaker"))?;
    target.name = name;
    Ok(target)
}

/// The keys that belong to one `kind`: `deployment` (required) for `azure-openai`,
/// `api_version` for `azure-openai` and `anthropic`. Each is a URL segment or a header value,
/// so it is checked as one.
fn check_kind(target: &TargetSettings, src: &Source<'_>, key: &str) -> Result<(), ConfigError> {
    let kind = target.kind;
    let azure = kind == ProviderKind::AzureOpenAi;
    match &target.deployment {
        None if azure => {
            let message = "expected `deployment = \"NAME\"` for an `azure-openai` target: the \
                           URL names the deployment";
            return Err(src.error(&format!("{key}.kind"), message.to_owned()));
        }
        Some(_) if !azure => {
            let message = format!(
                "expected no `deployment` for a target of kind `{}`: only `azure-openai` URLs name one",
                kind.as_str()
            );
            return Err(src.error(&format!("{key}.deployment"), message));
        }
        Some(name) => {
            let ok = !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
            let message = format!(
                "expected a deployment name of letters, digits, `-`, `_` and `.`, got {name:?}"
            );
            src.ensure(ok, &format!("{key}.deployment"), &message)?;
        }
        None => {}
    }
    if let Some(version) = &target.api_version {
        let field = format!("{key}.api_version");
        if !matches!(kind, ProviderKind::AzureOpenAi | ProviderKind::Anthropic) {
            let message = format!(
                "expected no `api_version` for a target of kind `{}`: only `azure-openai` and \
                 `anthropic` targets send one",
                kind.as_str()
            );
            return Err(src.error(&field, message));
        }
        let ok = !version.is_empty()
            && version
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.'));
        let message = format!(
            "expected a version like \"{}\", got {version:?}",
            if azure {
                AZURE_API_VERSION
            } else {
                ANTHROPIC_VERSION
            }
        );
        src.ensure(ok, &field, &message)?;
    }
    Ok(())
}

/// Checks an upstream base URL and normalises it: lowercase scheme, no trailing `/`.
/// The error says what is expected.
pub(crate) fn normalize_base_url(url: &str) -> Result<String, String> {
    const EXAMPLE: &str = "http://127.0.0.1:9101/v1";
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "expected a URL like {EXAMPLE}, without spaces or control characters"
        ));
    }
    let (scheme, rest) = match url.split_once("://") {
        Some((scheme, rest))
            if scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https") =>
        {
            (scheme.to_ascii_lowercase(), rest)
        }
        _ => {
            return Err(format!(
                "expected an http:// or https:// URL like {EXAMPLE}, got `{url}`"
            ));
        }
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    if authority.contains('@') {
        return Err(
            "expected a URL without a user name or password; name the environment \
                    variable that holds the key in `api_key_env` instead"
                .to_owned(),
        );
    }
    let (host, port) = if let Some(bracketed) = authority.strip_prefix('[') {
        let Some((ip, after)) = bracketed.split_once(']') else {
            return Err(format!("expected `]` closing the IPv6 address in `{url}`"));
        };
        if ip.parse::<Ipv6Addr>().is_err() {
            return Err(format!(
                "expected an IPv6 address between `[` and `]`, got `{ip}`"
            ));
        }
        match after {
            "" => (authority, None),
            _ => match after.strip_prefix(':') {
                Some(port) => (&authority[..authority.len() - after.len()], Some(port)),
                None => return Err(format!("expected `:port` after `]`, got `{after}`")),
            },
        }
    } else {
        match authority.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return Err(format!(
            "expected a URL with a host, like {EXAMPLE}, got `{url}`"
        ));
    }
    let valid_host = host.starts_with('[')
        || host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'));
    if !valid_host {
        return Err(format!(
            "expected a host name of ASCII letters, digits, `.`, `-` and `_` or an IP address, \
             got `{host}`"
        ));
    }
    if let Some(port) = port {
        let valid_port = !port.is_empty()
            && port.bytes().all(|b| b.is_ascii_digit())
            && port.parse::<u16>().is_ok_and(|p| p != 0);
        if !valid_port {
            return Err(format!(
                "expected a port between 1 and 65535 after the host, got `{port}`"
            ));
        }
    }
    if path.contains(['?', '#']) {
        return Err(format!(
            "expected a URL without a query or fragment (weir appends paths like \
             /chat/completions to it), got `{url}`"
        ));
    }
    let normalized = format!("{scheme}://{authority}{}", path.trim_end_matches('/'));
    Ok(normalized)
}

/// An RFC 9110 token: what an HTTP header name may be.
pub(crate) fn is_header_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls_are_normalised() {
        for (given, expected) in [
            ("http://127.0.0.1:9101/v1", "http://127.0.0.1:9101/v1"),
            ("http://127.0.0.1:9101/v1/", "http://127.0.0.1:9101/v1"),
            ("HTTPS://api.example.com/", "https://api.example.com"),
            ("https://api.example.com", "https://api.example.com"),
            ("http://[::1]:8080/v1//", "http://[::1]:8080/v1"),
            ("http://[::1]", "http://[::1]"),
            (
                "http://my_host.internal/openai/v1",
                "http://my_host.internal/openai/v1",
            ),
        ] {
            assert_eq!(
                normalize_base_url(given).as_deref(),
                Ok(expected),
                "{given}"
            );
        }
    }

    #[test]
    fn bad_base_urls_say_what_is_expected() {
        for (given, expected) in [
            ("ftp://x/v1", "expected an http:// or https:// URL"),
            ("127.0.0.1:9101/v1", "expected an http:// or https:// URL"),
            ("http:///v1", "expected a URL with a host"),
            ("http://:80/v1", "expected a URL with a host"),
            ("http://h:0/v1", "expected a port between 1 and 65535"),
            ("http://h:99999", "expected a port between 1 and 65535"),
            ("http://h:/v1", "expected a port between 1 and 65535"),
            ("http://a:b:c/v1", "expected a port between 1 and 65535"),
            ("http://h/v1?x=1", "without a query or fragment"),
            ("http://h/v1#top", "without a query or fragment"),
            ("http://user:pw@h/v1", "without a user name or password"),
            ("http://h /v1", "without spaces"),
            ("http://hé/v1", "expected a host name"),
            ("http://[::1/v1", "closing the IPv6 address"),
            ("http://[nope]/v1", "expected an IPv6 address"),
        ] {
            let error = normalize_base_url(given).err().unwrap_or_default();
            assert!(error.contains(expected), "{given}: {error}");
        }
        let error = normalize_base_url("http://user:sk-123@h/v1").err();
        assert!(!error.unwrap_or_default().contains("sk-123"));
    }

    #[test]
    fn header_names_are_tokens() {
        assert!(is_header_name("x-team"));
        assert!(is_header_name("X_Custom.1"));
        assert!(!is_header_name(""));
        assert!(!is_header_name("x team"));
        assert!(!is_header_name("x:team"));
    }

    #[test]
    fn debug_redacts_the_api_key() {
        let target = TargetSettings {
            name: "primary".to_owned(),
            base_url: "http://h".to_owned(),
            api_key_env: Some("OPENAI_API_KEY".to_owned()),
            api_key: Some("sk-secret".to_owned()),
            model: None,
            kind: ProviderKind::OpenAi,
            deployment: None,
            api_version: None,
            timeout: Duration::from_secs(60),
            headers: Vec::new(),
            limits: TargetLimits::default(),
            ttft_timeout: Duration::from_secs(1),
            stream_json: true,
        };
        let debug = format!("{target:?}");
        assert!(!debug.contains("sk-secret"), "{debug}");
        assert!(debug.contains("OPENAI_API_KEY"), "{debug}");
    }
}
