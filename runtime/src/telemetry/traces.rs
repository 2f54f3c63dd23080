//! Logs and traces: the process's `tracing` subscriber (human or JSON lines on stderr,
//! filtered by `RUST_LOG`), span export over OTLP/HTTP when configured, and W3C trace context
//! (`traceparent`) in from clients and out to upstreams.
//!
//! Spans (target `weir::…`): `weir.request` at INFO (route, model, key, status, cache, cost)
//! → `weir.stage` (stage, version, phase, fuel, outcome) and `weir.llm` (cache outcome,
//! usage) → `weir.attempt` (target, model, retry number, status, outcome), those three at
//! DEBUG. Unless spans are exported the request span carries only `request_id` (what log
//! lines need), so logging at `info` pays for one small span per request and nothing else
//! (measured: with every span at INFO and all fields, spans cost about 10 µs of CPU per
//! request; as now, about 1.5 µs).
//! Fields follow the OpenTelemetry GenAI conventions where one exists
//! (`gen_ai.request.model`, `gen_ai.usage.input_tokens`, …); `otel.name` and `otel.kind` name
//! and classify the exported span.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use opentelemetry::trace::{
    SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState, TracerProvider as _,
};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::Layer;
use tracing_subscriber::filter::{EnvFilter, dynamic_filter_fn};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::Registry;
use tracing_subscriber::util::SubscriberInitExt;

/// Whether spans are exported (an OpenTelemetry layer is installed).
static EXPORTING: AtomicBool = AtomicBool::new(false);
/// Percent of new traces exported (`telemetry.sample_percent`).
static SAMPLE_PERCENT: AtomicU32 = AtomicU32::new(100);

/// Where spans go, from `[telemetry]`.
pub struct Export<'a> {
    /// The collector's OTLP/HTTP traces URL.
    pub endpoint: &'a str,
    /// `service.name`.
    pub service_name: &'a str,
    /// Percent of new traces exported.
    pub sample_percent: u32,
}

/// The installed subscriber's resources: call [`Tracing::shutdown`] outside the async
/// runtime before the process exits, so the last spans are sent.
pub struct Tracing {
    provider: Option<SdkTracerProvider>,
}

impl Tracing {
    /// Sends the spans still buffered and stops the exporter (a few seconds at most).
    pub fn shutdown(self) {
        if let Some(provider) = self.provider
            && let Err(err) = provider.shutdown_with_timeout(std::time::Duration::from_secs(5))
        {
            eprintln!("warning: exporting the last spans failed: {err}");
        }
    }
}

/// Installs the subscriber: log lines on stderr (JSON lines when `json`), filtered by
/// `RUST_LOG` (default `info`), and, with `export`, every weir span sent to an OTLP/HTTP
/// collector in batches. Call it outside the async runtime (the exporter's HTTP client is
/// a blocking one, on the batch processor's own thread).
pub fn init(json: bool, export: Option<Export<'_>>) -> Result<Tracing, String> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let fmt = if json {
        fmt.json()
            .with_current_span(true)
            .with_span_list(true)
            .boxed()
    } else {
        fmt.boxed()
    };
    let mut layers = vec![fmt.with_filter(filter).boxed()];
    let mut provider = None;
    if let Some(export) = export {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_endpoint(export.endpoint)
            .build()
            .map_err(|err| format!("OTLP exporter for {}: {err}", export.endpoint))?;
        let resource = opentelemetry_sdk::Resource::builder()
            .with_service_name(export.service_name.to_string())
            .build();
        let sdk = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource)
            .build();
        let tracer = sdk.tracer("weir");
        // weir's spans (the per-step ones are at DEBUG, so logs at `info` pay nothing for
        // them) and its events at INFO and above, which become span events.
        // Under a request left out of the sample, nothing: its steps' spans are not even
        // built (a sampled-out trace would otherwise cost nearly what an exported one does).
        let only_weir = dynamic_filter_fn(|meta, cx| {
            meta.target().starts_with("weir")
                && (meta.is_span() || *meta.level() <= tracing::Level::INFO)
                && !cx
                    .lookup_current()
                    .is_some_and(|current| current.scope().any(|s| s.name() == UNSAMPLED))
        });
        layers.push(
            tracing_opentelemetry::layer()
                .with_tracer(tracer)
                .with_filter(only_weir)
                .boxed(),
        );
        provider = Some(sdk);
        SAMPLE_PERCENT.store(export.sample_percent.clamp(1, 100), Ordering::Relaxed);
        EXPORTING.store(true, Ordering::Relaxed);
    }
    Registry::default()
        .with(layers)
        .try_init()
        .map_err(|err| format!("cannot install the log subscriber: {err}"))?;
    Ok(Tracing { provider })
}

/// The name of the request span of a request whose trace is not sampled: under it no weir
/// span is built for export at all (see `init`'s filter), and the span itself is dropped by
/// the SDK's parent-based sampler ([`join_trace`] gives it a parent that is not sampled).
const UNSAMPLED: &str = "weir.request.unsampled";

/// Whether a request with the client's trace context `incoming` is sampled: as the client
/// says, or, for a new trace, `telemetry.sample_percent` of the time.
fn sampled(incoming: Option<&TraceParent>) -> bool {
    match incoming {
        Some(parent) => parent.sampled,
        None => {
            let percent = SAMPLE_PERCENT.load(Ordering::Relaxed);
            percent >= 100 || rand::random_range(0..100) < percent
        }
    }
}

/// The `weir.request` span of one public request (`incoming`: the client's trace context):
/// with export on and the trace sampled, every attribute the request will record; otherwise
/// only its `request_id` (recording an undeclared field is a no-op).
pub fn request_span(
    method: &http::Method,
    path: &str,
    request_id: &str,
    incoming: Option<&TraceParent>,
) -> tracing::Span {
    if !EXPORTING.load(Ordering::Relaxed) {
        return tracing::info_span!(target: "weir::request", "weir.request", request_id);
    }
    if !sampled(incoming) {
        return tracing::info_span!(target: "weir::request", "weir.request.unsampled", request_id);
    }
    tracing::info_span!(
        target: "weir::request",
        "weir.request",
        otel.name = %format_args!("{method} {path}"),
        otel.kind = "server",
        otel.status_code = tracing::field::Empty,
        request_id,
        http.request.method = %method,
        url.path = path,
        http.response.status_code = tracing::field::Empty,
        error.type = tracing::field::Empty,
        gen_ai.operation.name = "chat",
        gen_ai.request.model = tracing::field::Empty,
        weir.route = tracing::field::Empty,
        weir.key = tracing::field::Empty,
        weir.cache = tracing::field::Empty,
        weir.cost_usd = tracing::field::Empty,
    )
}

/// A W3C trace context: the trace a request belongs to and the span that is its parent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TraceParent {
    /// The trace id (never all zero).
    pub trace_id: [u8; 16],
    /// The parent span id (never all zero).
    pub span_id: [u8; 8],
    /// The `sampled` flag.
    pub sampled: bool,
}

impl TraceParent {
    /// Parses a `traceparent` header (`00-<32 hex>-<16 hex>-<2 hex>`); `None` when it is not
    /// valid, in which case a new trace starts (as the W3C spec asks).
    pub fn parse(header: &str) -> Option<TraceParent> {
        let mut parts = header.trim().split('-');
        let version = parts.next()?;
        let trace = parts.next()?;
        let span = parts.next()?;
        let flags = parts.next()?;
        // Version 00 has exactly four fields; later versions may append more.
        if version.len() != 2 || version.eq_ignore_ascii_case("ff") {
            return None;
        }
        let version = u8::from_str_radix(version, 16).ok()?;
        if version == 0 && parts.next().is_some() {
            return None;
        }
        let trace_id: [u8; 16] = hex_bytes(trace)?;
        let span_id: [u8; 8] = hex_bytes(span)?;
        let flags: [u8; 1] = hex_bytes(flags)?;
        if trace_id == [0; 16] || span_id == [0; 8] {
            return None;
        }
        Some(TraceParent {
            trace_id,
            span_id,
            sampled: flags[0] & 1 == 1,
        })
    }

    /// A new trace, sampled.
    pub fn random() -> TraceParent {
        TraceParent {
            trace_id: nonzero(rand::random::<u128>()).to_be_bytes(),
            span_id: nonzero(u128::from(rand::random::<u64>())).to_be_bytes()[8..]
                .try_into()
                .unwrap_or([1; 8]),
            sampled: true,
        }
    }

    /// The same trace with a new span as parent.
    pub fn child(self) -> TraceParent {
        TraceParent {
            span_id: TraceParent::random().span_id,
            ..self
        }
    }

    /// The trace id as 32 lowercase hex digits.
    pub fn trace_id_hex(&self) -> String {
        hex(&self.trace_id)
    }

    /// The `traceparent` header value.
    pub fn header(&self) -> String {
        format!(
            "00-{}-{}-{:02x}",
            hex(&self.trace_id),
            hex(&self.span_id),
            u8::from(self.sampled)
        )
    }

    fn from_span_context(cx: &SpanContext) -> Option<TraceParent> {
        cx.is_valid().then(|| TraceParent {
            trace_id: cx.trace_id().to_bytes(),
            span_id: cx.span_id().to_bytes(),
            sampled: cx.is_sampled(),
        })
    }
}

/// Joins the request span to the client's trace (call it before the span is first entered),
/// and returns the context weir's own spans
/// continue: with export on, the request span's exported ids; otherwise the client's trace
/// (or a new one) with a fresh span id standing for weir.
pub fn join_trace(span: &tracing::Span, incoming: Option<TraceParent>) -> TraceParent {
    if !EXPORTING.load(Ordering::Relaxed) {
        return incoming.map_or_else(TraceParent::random, TraceParent::child);
    }
    // A new trace left out of the sample (`request_span` named it so) gets a parent that
    // says so (ids of its own, never exported), which the SDK's parent-based sampler
    // follows. A client's trace keeps its flag.
    let unsampled = span.metadata().is_some_and(|m| m.name() == UNSAMPLED);
    let parent = incoming.or_else(|| {
        unsampled.then(|| TraceParent {
            sampled: false,
            ..TraceParent::random()
        })
    });
    if let Some(parent) = parent {
        let flags = if parent.sampled {
            TraceFlags::SAMPLED
        } else {
            TraceFlags::default()
        };
        let remote = SpanContext::new(
            TraceId::from_bytes(parent.trace_id),
            SpanId::from_bytes(parent.span_id),
            flags,
            true,
            TraceState::default(),
        );
        if let Err(err) =
            span.set_parent(opentelemetry::Context::new().with_remote_span_context(remote))
        {
            tracing::debug!(error = %err, "the client's trace could not be joined");
        }
    }
    TraceParent::from_span_context(span.context().span().span_context())
        .or(incoming.map(TraceParent::child))
        .unwrap_or_else(TraceParent::random)
}

/// The `traceparent` for a call made inside the current span, when spans are exported (so
/// the upstream's spans hang under the exported attempt span); `None` otherwise.
pub fn current_traceparent() -> Option<String> {
    if !EXPORTING.load(Ordering::Relaxed) {
        return None;
    }
    let cx = tracing::Span::current().context();
    TraceParent::from_span_context(cx.span().span_context()).map(|t| t.header())
}

fn nonzero(value: u128) -> u128 {
    value.max(1)
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        out.push(char::from(DIGITS[usize::from(byte >> 4)]));
        out.push(char::from(DIGITS[usize::from(byte & 0xf)]));
    }
    out
}

/// Exactly `2 * N` lowercase hex digits as bytes (the spec forbids upper case).
fn hex_bytes<const N: usize>(text: &str) -> Option<[u8; N]> {
    if text.len() != 2 * N
        || !text
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return None;
    }
    let mut out = [0u8; N];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::TraceParent;

    #[test]
    fn traceparent_round_trips_and_rejects_what_the_spec_rejects() {
        let header = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let parsed = TraceParent::parse(header).expect("valid");
        assert_eq!(parsed.header(), header);
        assert_eq!(parsed.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert!(parsed.sampled);
        let child = parsed.child();
        assert_eq!(child.trace_id, parsed.trace_id);
        assert_ne!(child.span_id, parsed.span_id);
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e47-00f067aa0ba902b7-01",
        ] {
            assert_eq!(TraceParent::parse(bad), None, "{bad:?}");
        }
        // A later version may carry more fields.
        assert!(
            TraceParent::parse("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00-x")
                .is_some_and(|t| !t.sampled)
        );
        let random = TraceParent::random();
        assert_ne!(random.trace_id, [0; 16]);
        assert_eq!(TraceParent::parse(&random.header()), Some(random));
    }
}
