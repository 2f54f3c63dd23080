//! `[targets.NAME]`: one upstream OpenAI-compatible endpoint a route may send requests to.

use std::fmt;
use std::net::Ipv6Addr;
use std::time::Duration;

use toml::Spanned;

use super::check::{EnvLookup, Source, is_header_value};
use super::error::{ConfigError, key_segment};
use super::raw::RawTarget;
use super::routing::{
    BreakerSettings, DEFAULT_MAX_STREAM_BYTES, MAX_STREAM_BYTES_RANGE, TargetLimits,
};

/// Default per-attempt timeout of a target (`timeout_ms`): 60 s, enough for a long completion.
pub const DEFAULT_TARGET_TIMEOUT: Duration = Duration::from_secs(60);
/// Largest accepted `timeout_ms` of a target: 10 minutes.
pub const MAX_TARGET_TIMEOUT: Duration = Duration::from_secs(600);

/// Headers weir itself owns on an upstream request; a target may not set them.
const RESERVED_HEADERS: [&str; 4] = ["host", "content-length", "transfer-encoding", "connection"];

/// One validated upstream target.
#[derive(Clone, PartialEq, Eq)]
pub struct TargetSettings {
    /// The table key: `[a-z0-9_-]+`, 1 to 64 characters.
    pub name: String,
    /// `http://` or `https://` URL with a host, without a trailing `/`, query or fragment;
    /// endpoint paths such as `/chat/completions` are appended to it.
    pub base_url: String,
    /// Name of the environment variable holding [`Self::api_key`].
    pub api_key_env: Option<String>,
    /// The API key, read from [`Self::api_key_env`] at load time and sent as a bearer token;
    /// `None` when the target needs none. Redacted in `Debug`.
    pub api_key: Option<String>,
    /// Model name sent upstream instead of the client's, if set.
    pub model: Option<String>,
    /// Per-attempt timeout, 1 ms to [`MAX_TARGET_TIMEOUT`] (default
    /// [`DEFAULT_TARGET_TIMEOUT`]).
    pub timeout: Duration,
    /// Extra request headers, names lowercased, sorted by name.
    pub headers: Vec<(String, String)>,
    /// Concurrency limit, RPM limit and breaker thresholds.
    pub limits: TargetLimits,
    /// For streams: the first event must arrive within this (default: [`Self::timeout`]).
    pub ttft_timeout: Duration,
}

impl fmt::Debug for TargetSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TargetSettings")
            .field("name", &self.name)
            .field("base_url", &self.base_url)
            .field("api_key_env", &self.api_key_env)
            .field("api_key", &self.api_key.as_ref().map(|_| "***"))
            .field("model", &self.model)
            .field("timeout", &self.timeout)
            .field("headers", &self.headers)
            .field("limits", &self.limits)
            .field("ttft_timeout", &self.ttft_timeout)
            .finish()
    }
}

/// Validates one `[targets.NAME]` table.
pub(crate) fn build(
    src: Source<'_>,
    name: &str,
    raw: &Spanned<RawTarget>,
    env: EnvLookup<'_>,
) -> Result<TargetSettings, ConfigError> {
    let key = format!("targets.{}", key_segment(name));
    src.name(name, raw.span(), &key)?;
    let target = raw.get_ref();
    let base_url = normalize_base_url(target.base_url.get_ref())
        .map_err(|message| src.error(target.base_url.span(), format!("{key}.base_url"), message))?;
    let api_key = match &target.api_key_env {
        Some(var) => Some(src.secret(
            var,
            &format!("{key}.api_key_env"),
            &format!("the API key for target `{name}`"),
            env,
        )?),
        None => None,
    };
    let model = match &target.model {
        Some(model) if model.get_ref().trim().is_empty() => {
            return Err(src.error(
                model.span(),
                format!("{key}.model"),
                "expected an upstream model name like \"gpt-4o-mini\", got an empty string; \
                 leave the key out to send the client's model",
            ));
        }
        Some(model) => Some(model.get_ref().clone()),
        None => None,
    };
    let timeout_ms = src.in_range_or(
        target.timeout_ms.as_ref(),
        1..=MAX_TARGET_TIMEOUT.as_millis() as u64,
        DEFAULT_TARGET_TIMEOUT.as_millis() as u64,
        &format!("{key}.timeout_ms"),
    )?;
    let mut headers: Vec<(String, String)> = Vec::with_capacity(target.headers.len());
    for (header, value) in &target.headers {
        let header_key = format!("{key}.headers.{}", key_segment(header));
        let lower = header.to_ascii_lowercase();
        let problem = if !is_header_name(header) {
            Some(format!(
                "expected an HTTP header name (letters, digits and !#$%&'*+-.^_`|~), got {header:?}"
            ))
        } else if RESERVED_HEADERS.contains(&lower.as_str()) {
            Some(format!(
                "expected a header weir does not set itself; `{lower}` is managed by the HTTP \
                 client"
            ))
        } else if lower == "authorization" && target.api_key_env.is_some() {
            Some(
                "expected no `authorization` header when `api_key_env` is set: the API key is \
                 already sent as a bearer token"
                    .to_owned(),
            )
        } else if headers.iter().any(|(name, _)| *name == lower) {
            Some(format!(
                "expected each header once; `{lower}` is already set (header names are \
                 case-insensitive)"
            ))
        } else if !is_header_value(value.get_ref()) {
            Some("expected a header value of visible ASCII characters, spaces and tabs".to_owned())
        } else {
            None
        };
        if let Some(message) = problem {
            return Err(src.error(value.span(), header_key, message));
        }
        headers.push((lower, value.get_ref().clone()));
    }
    headers.sort();
    let mut limits = build_limits(src, target, &key)?;
    let ttft_timeout_ms = src.in_range_or(
        target.ttft_timeout_ms.as_ref(),
        1..=timeout_ms,
        timeout_ms,
        &format!("{key}.ttft_timeout_ms"),
    )?;
    // Between two events a stream may pause as long as before its first one, by default.
    limits.stream_idle_timeout = Duration::from_millis(src.in_range_or(
        target.stream_idle_timeout_ms.as_ref(),
        1..=MAX_TARGET_TIMEOUT.as_millis() as u64,
        ttft_timeout_ms,
        &format!("{key}.stream_idle_timeout_ms"),
    )?);
    limits.max_stream_bytes = src.in_range_or(
        target.max_stream_bytes.as_ref(),
        MAX_STREAM_BYTES_RANGE,
        DEFAULT_MAX_STREAM_BYTES,
        &format!("{key}.max_stream_bytes"),
    )?;
    Ok(TargetSettings {
        name: name.to_owned(),
        base_url,
        api_key_env: target.api_key_env.as_ref().map(|v| v.get_ref().clone()),
        api_key,
        model,
        timeout: Duration::from_millis(timeout_ms),
        headers,
        limits,
        ttft_timeout: Duration::from_millis(ttft_timeout_ms),
    })
}

/// Largest `max_concurrency` or `rpm` accepted.
const MAX_LIMIT: u64 = 1_000_000;
/// Longest breaker ejection accepted: 1 hour.
const MAX_EJECTION_MS: u64 = 3_600_000;

fn build_limits(
    src: Source<'_>,
    target: &RawTarget,
    key: &str,
) -> Result<TargetLimits, ConfigError> {
    let defaults = TargetLimits::default();
    let max_concurrency = src.in_range_or(
        target.max_concurrency.as_ref(),
        1..=MAX_LIMIT,
        u64::from(defaults.max_concurrency),
        &format!("{key}.max_concurrency"),
    )? as u32;
    let rpm = match &target.rpm {
        Some(rpm) => Some(src.in_range(rpm, 1..=MAX_LIMIT, &format!("{key}.rpm"))? as u32),
        None => None,
    };
    let tpm = match &target.tpm {
        Some(tpm) => {
            Some(src.in_range(tpm, 1..=u64::from(u32::MAX), &format!("{key}.tpm"))? as u32)
        }
        None => None,
    };
    let raw = target.breaker.as_ref();
    let d = BreakerSettings::default();
    let field = |f: fn(&super::raw::RawBreaker) -> Option<&Spanned<u64>>| raw.and_then(f);
    let bkey = format!("{key}.breaker");
    let window = src.in_range_or(
        field(|b| b.window.as_ref()),
        1..=1000,
        u64::from(d.window),
        &format!("{bkey}.window"),
    )? as u32;
    let ejection_ms = src.in_range_or(
        field(|b| b.ejection_ms.as_ref()),
        1..=MAX_EJECTION_MS,
        d.ejection.as_millis() as u64,
        &format!("{bkey}.ejection_ms"),
    )?;
    let breaker = BreakerSettings {
        consecutive_failures: src.in_range_or(
            field(|b| b.consecutive_failures.as_ref()),
            1..=1000,
            u64::from(d.consecutive_failures),
            &format!("{bkey}.consecutive_failures"),
        )? as u32,
        failure_rate_percent: src.in_range_or(
            field(|b| b.failure_rate_percent.as_ref()),
            1..=100,
            u64::from(d.failure_rate_percent),
            &format!("{bkey}.failure_rate_percent"),
        )? as u32,
        window,
        min_requests: src.in_range_or(
            field(|b| b.min_requests.as_ref()),
            1..=u64::from(window),
            u64::from(d.min_requests.min(window)),
            &format!("{bkey}.min_requests"),
        )? as u32,
        ejection: Duration::from_millis(ejection_ms),
        max_ejection: Duration::from_millis(src.in_range_or(
            field(|b| b.max_ejection_ms.as_ref()),
            ejection_ms..=MAX_EJECTION_MS,
            (d.max_ejection.as_millis() as u64).max(ejection_ms),
            &format!("{bkey}.max_ejection_ms"),
        )?),
    };
    Ok(TargetLimits {
        max_concurrency,
        rpm,
        tpm,
        breaker,
        ..defaults
    })
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
fn is_header_name(name: &str) -> bool {
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
            timeout: DEFAULT_TARGET_TIMEOUT,
            headers: Vec::new(),
            limits: TargetLimits::default(),
            ttft_timeout: Duration::from_secs(1),
        };
        let debug = format!("{target:?}");
        assert!(!debug.contains("sk-secret"), "{debug}");
        assert!(debug.contains("OPENAI_API_KEY"), "{debug}");
    }
}
