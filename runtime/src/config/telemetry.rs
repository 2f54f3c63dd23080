//! `[telemetry]`: what weir records about its requests and where traces go. Logs' format is
//! `server.log_format`; their filter is `RUST_LOG`.

use super::check::Source;
use super::error::ConfigError;
use super::raw::RawTelemetry;

/// Default size of the ring behind `GET /admin/requests`.
pub const DEFAULT_RECENT_REQUESTS: usize = 256;
/// Largest accepted `telemetry.recent_requests`.
pub const MAX_RECENT_REQUESTS: u64 = 100_000;

/// `[telemetry]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TelemetrySettings {
    /// Record metrics for `GET /metrics` (default true).
    pub metrics: bool,
    /// How many recent requests `GET /admin/requests` keeps (0: none).
    pub recent_requests: usize,
    /// Log each request's messages and each answer's text (target `weir::input`, level
    /// info). Off by default: prompts carry personal data.
    pub log_inputs: bool,
    /// Where spans are exported over OTLP/HTTP (protobuf): the collector's traces URL
    /// (`…/v1/traces`, appended when the URL has no path). `None`: no export.
    pub otlp_endpoint: Option<String>,
    /// `service.name` of exported spans (default `weir`).
    pub service_name: String,
}

impl Default for TelemetrySettings {
    fn default() -> Self {
        TelemetrySettings {
            metrics: true,
            recent_requests: DEFAULT_RECENT_REQUESTS,
            log_inputs: false,
            otlp_endpoint: None,
            service_name: "weir".to_string(),
        }
    }
}

pub(crate) fn build(src: Source<'_>, raw: &RawTelemetry) -> Result<TelemetrySettings, ConfigError> {
    let defaults = TelemetrySettings::default();
    let recent_requests = src.in_range_or(
        raw.recent_requests.as_ref(),
        0..=MAX_RECENT_REQUESTS,
        DEFAULT_RECENT_REQUESTS as u64,
        "telemetry.recent_requests",
    )? as usize;
    let otlp_endpoint = match &raw.otlp_endpoint {
        None => None,
        Some(url) => Some(traces_url(url.get_ref()).ok_or_else(|| {
            src.error(
                url.span(),
                "telemetry.otlp_endpoint",
                format!(
                    "expected an http:// or https:// URL of an OTLP/HTTP collector (such as \
                     \"http://127.0.0.1:4318\"), got {:?}",
                    url.get_ref()
                ),
            )
        })?),
    };
    let service_name = match &raw.service_name {
        None => defaults.service_name,
        Some(name) if name.get_ref().trim().is_empty() => {
            return Err(src.error(
                name.span(),
                "telemetry.service_name",
                "expected a name, got an empty string",
            ));
        }
        Some(name) => name.get_ref().clone(),
    };
    Ok(TelemetrySettings {
        metrics: raw.metrics.unwrap_or(defaults.metrics),
        recent_requests,
        log_inputs: raw.log_inputs.unwrap_or(defaults.log_inputs),
        otlp_endpoint,
        service_name,
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
