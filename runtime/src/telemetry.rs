//! Telemetry: the process-wide metrics registry (the `metrics` facade with a Prometheus
//! recorder), rendered by the admin listener's `GET /metrics`.
//!
//! Metrics so far: `weir_reloads_total{outcome="ok|failed"}` (a failed reload left the old
//! config or stage version serving). Request, stage, cache and cost metrics come with the
//! observability milestone.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

/// The installed recorder's handle (`None` when another recorder was installed first).
static RECORDER: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the Prometheus recorder once per process; later calls return the same handle.
pub fn init() -> Option<&'static PrometheusHandle> {
    RECORDER
        .get_or_init(|| {
            let handle = PrometheusBuilder::new()
                .install_recorder()
                .map_err(|err| tracing::warn!(error = %err, "no metrics recorder"))
                .ok()?;
            metrics::describe_counter!(
                "weir_reloads_total",
                "Reloads of config and stage files, by outcome (failed: the old version kept serving)"
            );
            Some(handle)
        })
        .as_ref()
}

/// The Prometheus text exposition of every metric.
pub fn render() -> String {
    init().map(PrometheusHandle::render).unwrap_or_default()
}

/// Counts one reload by its outcome.
pub fn reload(ok: bool) {
    let outcome = if ok { "ok" } else { "failed" };
    metrics::counter!("weir_reloads_total", "outcome" => outcome).increment(1);
}
