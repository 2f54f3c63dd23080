//! Logs and traces: the process's `tracing` subscriber (human or JSON lines on stderr,
//! filtered by `RUST_LOG`), span export over OTLP/HTTP when configured, and W3C trace context
//! (`traceparent`) in from clients and out to upstreams.
//!
//! Log lines carry the request's `weir.request` span (target `weir::request`, at INFO, with
//! only its `request_id`); the per-step spans (`weir.stage`, `weir.llm`, `weir.attempt`) are
//! at DEBUG, so logging at `info` pays for one small span per request and nothing else.
//!
//! Exported spans are not built from these: a sampled request's spans are made from its
//! record once it is over, off the request path (see `export`). The ids are fixed as the
//! request goes: [`join_trace`] gives the request span its id (a child of the client's
//! trace, or a new trace sampled `telemetry.sample_percent` of the time), each attempt's
//! `traceparent` names a span id of its own ([`reparent`]), and the exported spans carry
//! those same ids, so an upstream's spans hang under the attempt that called it.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use http::HeaderValue;
use tracing_subscriber::Layer;
use tracing_subscriber::filter::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::Registry;
use tracing_subscriber::util::SubscriberInitExt;

use super::export::Worker;

/// Whether spans are exported.
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

/// The installed subscriber's resources: call [`Tracing::shutdown`] before the process
/// exits, so the last spans are sent.
pub struct Tracing {
    export: Option<Worker>,
}

impl Tracing {
    /// Sends the spans still queued and stops the exporter (5 s at most).
    pub fn shutdown(self) {
        if let Some(worker) = self.export {
            worker.stop(std::time::Duration::from_secs(5));
        }
    }
}

/// Installs the subscriber: log lines on stderr (JSON lines when `json`), filtered by
/// `RUST_LOG` (default `info`), and, with `export`, the exporter's thread, which sends
/// sampled requests' spans to an OTLP/HTTP collector in batches. Call it outside the async
/// runtime (the exporter's HTTP client is a blocking one, on that thread).
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
    Registry::default()
        .with(fmt.with_filter(filter))
        .try_init()
        .map_err(|err| format!("cannot install the log subscriber: {err}"))?;
    let export = match export {
        Some(export) => {
            let worker = super::export::start(export.endpoint, export.service_name)?;
            SAMPLE_PERCENT.store(export.sample_percent.clamp(1, 100), Ordering::Relaxed);
            EXPORTING.store(true, Ordering::Relaxed);
            Some(worker)
        }
        None => None,
    };
    Ok(Tracing { export })
}

/// Whether a request in `trace` has its spans exported: export is on and the trace sampled.
pub fn exported(trace: Option<TraceParent>) -> bool {
    EXPORTING.load(Ordering::Relaxed) && trace.is_some_and(|t| t.sampled)
}

/// The `weir.request` span of one public request, for log lines: its `request_id`.
pub fn request_span(request_id: &str) -> tracing::Span {
    tracing::info_span!(target: "weir::request", "weir.request", request_id)
}

/// The trace context of a request whose client sent `incoming`: the client's trace with a
/// new span id standing for weir's request span, sampled as the client says; or a new
/// trace, sampled `telemetry.sample_percent` of the time when spans are exported (always
/// otherwise, so the upstream decides for itself).
pub fn join_trace(incoming: Option<TraceParent>) -> TraceParent {
    match incoming {
        Some(parent) => parent.child(),
        None => {
            let percent = SAMPLE_PERCENT.load(Ordering::Relaxed);
            let sampled = !EXPORTING.load(Ordering::Relaxed)
                || percent >= 100
                || rand::random_range(0..100) < percent;
            TraceParent {
                sampled,
                ..TraceParent::random()
            }
        }
    }
}

/// A new span id (never zero).
pub fn span_id() -> [u8; 8] {
    rand::random::<u64>().max(1).to_be_bytes()
}

/// The `traceparent` header `header` with `span` as its parent span (what an attempt sends:
/// the upstream's parent is the attempt's span); `None` when `header` is not valid.
pub fn reparent(header: &HeaderValue, span: [u8; 8]) -> Option<HeaderValue> {
    let parent = TraceParent::parse(header.to_str().ok()?)?;
    HeaderValue::from_str(
        &TraceParent {
            span_id: span,
            ..parent
        }
        .header(),
    )
    .ok()
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
