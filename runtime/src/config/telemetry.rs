//! `[telemetry]`: what weir records about its requests and where traces go. Logs' format is
//! `server.log_format`; their filter is `RUST_LOG`.

use serde::{Deserialize, Deserializer, Serialize};

use super::value::{Int, Val, read_str, serde_default, yes};

/// `[telemetry]`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub struct TelemetrySettings {
    /// Record metrics for `GET /metrics` (default true).
    #[serde(default = "yes")]
    pub metrics: bool,
    /// How many recent requests `GET /admin/requests` keeps (0: none).
    #[serde(with = "Int::<0, 100_000>", default = "Val::<256>::int")]
    pub recent_requests: usize,
    /// Log each request's messages and each answer's text (target `weir::input`, level
    /// info). Off by default: prompts carry personal data.
    #[serde(default)]
    pub log_inputs: bool,
    /// Where spans are exported over OTLP/HTTP (protobuf): the collector's traces URL
    /// (`…/v1/traces`, appended when the URL has no path). `None`: no export.
    #[serde(deserialize_with = "otlp_endpoint", default)]
    pub otlp_endpoint: Option<String>,
    /// `service.name` of exported spans (default `weir`).
    #[serde(deserialize_with = "service_name", default = "weir")]
    pub service_name: String,
    /// Percent of new traces exported (1 to 100, default 100); a request that arrives with
    /// a `traceparent` follows its sampled flag.
    #[serde(with = "Int::<1, 100>", default = "Val::<100>::int")]
    pub sample_percent: u32,
}

serde_default!(TelemetrySettings);

fn weir() -> String {
    "weir".to_owned()
}

fn otlp_endpoint<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    read_str(d, |url| match traces_url(url) {
        Some(traces) => Ok(Some(traces)),
        None => Err(format!(
            "expected an http:// or https:// URL of an OTLP/HTTP collector (such as \
             \"http://127.0.0.1:4318\"), got {url:?}"
        )),
    })
}

fn service_name<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    read_str(d, |name| match name.trim().is_empty() {
        true => Err("expected a name, got an empty string".to_owned()),
        false => Ok(name.to_owned()),
    })
}

/// The traces URL of an OTLP/HTTP endpoint: as given when it has a path, else with
/// `/v1/traces` (what `OTEL_EXPORTER_OTLP_ENDPOINT` means). `None` when it is no http(s) URL.
fn traces_url(url: &str) -> Option<String> {
    let url = url.trim();
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))?;
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    if host.is_empty() || host.contains(char::is_whitespace) {
        return None;
    }
    if path.is_empty() {
        Some(format!("{}/v1/traces", url.trim_end_matches('/')))
    } else {
        Some(url.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::traces_url;

    #[test]
    fn a_bare_collector_address_gets_the_traces_path() {
        assert_eq!(
            traces_url("http://127.0.0.1:4318").as_deref(),
            Some("http://127.0.0.1:4318/v1/traces")
        );
        assert_eq!(
            traces_url("http://127.0.0.1:4318/").as_deref(),
            Some("http://127.0.0.1:4318/v1/traces")
        );
        assert_eq!(
            traces_url("https://otel.example/custom/traces").as_deref(),
            Some("https://otel.example/custom/traces")
        );
        assert_eq!(traces_url("127.0.0.1:4318"), None);
        assert_eq!(traces_url("http:///v1/traces"), None);
    }
}
