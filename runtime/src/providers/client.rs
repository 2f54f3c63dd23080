//! One attempt against an OpenAI-compatible upstream over a pooled keep-alive client.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderName, HeaderValue, RETRY_AFTER};
use http::{Method, Request, Response};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::{CaptureConnection, HttpConnector, capture_connection};
use hyper_util::rt::TokioExecutor;

use super::Dialect;
use super::translate::Untranslatable;

/// Largest upstream error or JSON body read into memory (16 MiB).
const MAX_UPSTREAM_BODY_BYTES: usize = 16 << 20;
/// Idle keep-alive connections kept per upstream host.
const MAX_IDLE_PER_HOST: usize = 512;
/// How long an idle connection is kept.
const IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// How long connecting to an upstream may take (Envoy's `connect_timeout` default). Past it the
/// attempt fails as a connect error, which is retried on the next target and charges
/// nothing: a request that never had a connection was not billed. Without it a connect that
/// hangs (an address that drops SYNs, a full accept queue) ran into the attempt's `timeout_ms`
/// and was charged as a timeout. A `timeout_ms` below it still ends the attempt first.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// One upstream target, as the router uses it.
#[derive(Debug)]
pub struct Upstream {
    /// The target's name in the config.
    pub name: Arc<str>,
    /// Base URL without a trailing slash (`https://api.openai.com/v1`).
    pub base_url: String,
    /// The wire format it speaks: its URLs, its headers, its bodies.
    pub dialect: Dialect,
    /// The headers that sign every request: the API key in the dialect's header (when the
    /// target has one) and the dialect's own (`anthropic-version`). Marked sensitive.
    pub signing: Vec<(HeaderName, HeaderValue)>,
    /// The upstream model name to send instead of the client's alias.
    pub model: Option<String>,
    /// Per-attempt timeout: headers and, for JSON, the whole body.
    pub timeout: Duration,
    /// For streams: headers and the first event (at most [`Self::timeout`]).
    pub ttft_timeout: Duration,
    /// A JSON request is sent as a stream and its answer assembled, so [`Self::ttft_timeout`]
    /// applies to it too.
    pub stream_json: bool,
    /// Extra headers sent with every request.
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

/// Why one attempt failed.
#[derive(Debug, thiserror::Error)]
pub enum AttemptError {
    /// No connection could be made (refused, DNS, TLS, the connect timeout), or the
    /// connection ended before the request was written: the upstream never had it.
    #[error("connect error: {0}")]
    Connect(String),
    /// The connection ended (reset, closed) after the request was handed to it and before
    /// a response's headers: the upstream may have started on it.
    #[error("connection lost before an answer: {0}")]
    Dropped(String),
    /// No answer within the target's timeout.
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    /// The target's timeout ran out before a connection was made: the request never went
    /// out (a connect slower than the timeout, or one that hung).
    #[error("no connection within {0:?}")]
    ConnectTimeout(Duration),
    /// The upstream answered with a non-success status.
    #[error("upstream status {status}")]
    Status {
        /// The status.
        status: u16,
        /// Its body (bounded), usually an OpenAI error object.
        body: Bytes,
        /// `Retry-After`, when given.
        retry_after: Option<Duration>,
    },
    /// The upstream answered with something that is not a chat completion.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// A stream asked for a JSON request broke off after some text: a protocol error that
    /// also carries the text received, which the upstream generated (and bills).
    #[error("protocol error: {detail}")]
    BrokenOff {
        /// What went wrong.
        detail: String,
        /// The text received before it did, every choice's.
        received: String,
    },
    /// The request holds something the target's wire format cannot carry; nothing was sent.
    #[error("the target cannot carry the request: {0}")]
    Untranslatable(Untranslatable),
}

/// A `Retry-After`: seconds (the form providers and weir itself send) or an HTTP date (RFC
/// 9110's other form, which proxies and CDNs in front of providers send: third probe, A6).
pub fn retry_after(headers: &http::HeaderMap) -> Option<Duration> {
    retry_after_at(headers, std::time::SystemTime::now())
}

/// [`retry_after`] at wall time `now` (a date already past is no wait).
fn retry_after_at(headers: &http::HeaderMap, now: std::time::SystemTime) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or_default())
}

impl AttemptError {
    /// Whether another target may succeed where this one failed: connect errors, timeouts
    /// and protocol errors always; a status when `retry_on` holds it (by default 408, 429
    /// and 5xx — other 4xx mean the request itself is wrong); a request this target's wire
    /// format cannot carry (a target of another format may: the router skips this one).
    pub fn is_retryable(&self, retry_on: &crate::config::StatusSet) -> bool {
        match self {
            AttemptError::Status { status, .. } => retry_on.contains(*status),
            _ => true,
        }
    }

    /// A short class of the failure, for metrics and traces: `timeout`, `connect`, `dropped`,
    /// `status_429`, `status_4xx`, `status_5xx` or `protocol`.
    pub fn kind(&self) -> &'static str {
        match self {
            AttemptError::Connect(_) | AttemptError::ConnectTimeout(_) => "connect",
            AttemptError::Dropped(_) => "dropped",
            AttemptError::Timeout(_) => "timeout",
            AttemptError::Status { status: 429, .. } => "status_429",
            AttemptError::Status { status, .. } if *status >= 500 => "status_5xx",
            AttemptError::Status { .. } => "status_4xx",
            AttemptError::Protocol(_) | AttemptError::BrokenOff { .. } => "protocol",
            AttemptError::Untranslatable(_) => "untranslatable",
        }
    }

    /// Whether the upstream (likely) billed the attempt though it reported no usage: a
    /// timeout or a connection lost after the request was handed to it (a provider bills a
    /// request it started on, answered or not) or an unusable reply (broken, oversized or
    /// not a chat completion, after a success status). A connect error never reached it; an
    /// error status is billed only when its body reports usage ([`AttemptError::usage`]).
    pub fn billed(&self) -> bool {
        matches!(
            self,
            AttemptError::Timeout(_)
                | AttemptError::Dropped(_)
                | AttemptError::Protocol(_)
                | AttemptError::BrokenOff { .. }
        )
    }

    /// The text received before the attempt broke off ([`AttemptError::BrokenOff`]), taken
    /// out; empty for every other failure.
    pub fn take_received(&mut self) -> String {
        match self {
            AttemptError::BrokenOff { received, .. } => std::mem::take(received),
            _ => String::new(),
        }
    }

    /// The upstream's `Retry-After`, when it sent one.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            AttemptError::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// The upstream status, when there was one; an untranslatable request is refused as a
    /// 400 (the client's request is what the target cannot take).
    pub fn status(&self) -> Option<u16> {
        match self {
            AttemptError::Status { status, .. } => Some(*status),
            AttemptError::Untranslatable(_) => Some(400),
            _ => None,
        }
    }

    /// Usage reported in a failed answer's body (a provider that billed a request that then
    /// failed says so there), when any.
    pub fn usage(&self) -> Option<crate::wit::Usage> {
        let AttemptError::Status { body, .. } = self else {
            return None;
        };
        let value: serde_json::Value = serde_json::from_slice(body).ok()?;
        crate::openai::parse_usage(value.get("usage")?)
    }

    /// The upstream's own error message, when its body is an OpenAI error object.
    pub fn upstream_message(&self) -> Option<String> {
        let body = match self {
            AttemptError::Status { body, .. } => body,
            AttemptError::Untranslatable(err) => return Some(err.to_string()),
            _ => return None,
        };
        let value: serde_json::Value = serde_json::from_slice(body).ok()?;
        value["error"]["message"].as_str().map(str::to_string)
    }
}

/// Whether an attempt's request went out: filled by [`ProviderClient::send`] with the
/// request's connection capture (hyper's pool sets it once it hands the request a
/// connection, just before writing it), read when a call is dropped midway to tell an attempt
/// the upstream received (billed) from one still connecting (free). Cheap to clone: clones
/// share the one capture. [`Sent::default`] (no capture to read) is taken as sent.
#[derive(Clone, Debug, Default)]
pub struct Sent(Option<Arc<std::sync::OnceLock<CaptureConnection>>>);

impl Sent {
    /// A handle [`ProviderClient::send`] fills in.
    pub fn watch() -> Sent {
        Sent(Some(Arc::new(std::sync::OnceLock::new())))
    }

    /// Whether the request had a connection (and so, likely, went out); `true` when the
    /// handle cannot tell.
    pub fn went_out(&self) -> bool {
        match &self.0 {
            None => true,
            Some(cell) => cell
                .get()
                .is_some_and(|capture| capture.connection_metadata().is_some()),
        }
    }
}

/// Two handles are alike when they tell the same (for comparing attempt records).
impl PartialEq for Sent {
    fn eq(&self, other: &Sent) -> bool {
        self.went_out() == other.went_out()
    }
}

impl Eq for Sent {}

/// The pooled HTTP(S) client shared by every target.
#[derive(Clone)]
pub struct ProviderClient {
    /// hyper's pooled client with rustls for `https://` targets.
    client: Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>,
}

impl ProviderClient {
    /// A client with keep-alive pooling, HTTP and HTTPS (webpki roots).
    pub fn new() -> std::io::Result<ProviderClient> {
        let mut http = HttpConnector::new();
        http.set_nodelay(true);
        http.enforce_http(false);
        http.set_connect_timeout(Some(CONNECT_TIMEOUT));
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_webpki_roots(rustls::crypto::ring::default_provider())
            .map_err(std::io::Error::other)?
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(IDLE_TIMEOUT)
            .pool_max_idle_per_host(MAX_IDLE_PER_HOST)
            .build(https);
        Ok(ProviderClient { client })
    }

    /// Sends `body` to `url` (one of `upstream`'s) with `method`, signed as its dialect
    /// signs; returns the response when its status is a success and its headers arrived
    /// within `timeout`. The body is left to the caller. The content type is JSON unless
    /// `forward` names one.
    ///
    /// A failure status's (bounded) body is read within what is left of the same `timeout`,
    /// never a fresh one, so a failed attempt takes at most `timeout` in all; a body that does
    /// not arrive in time is left empty.
    ///
    /// `sent` learns whether the request had a connection, for a caller dropped midway.
    pub async fn send(
        &self,
        method: Method,
        upstream: &Upstream,
        (url, body): (String, Bytes),
        forward: &[(HeaderName, HeaderValue)],
        timeout: Duration,
        sent: &Sent,
    ) -> Result<Response<Incoming>, AttemptError> {
        let mut builder = Request::builder().method(method).uri(url);
        if !forward.iter().any(|(name, _)| name == CONTENT_TYPE) {
            builder = builder.header(CONTENT_TYPE, "application/json");
        }
        let own = upstream.dialect.body_header(&body);
        for (name, value) in upstream
            .signing
            .iter()
            .chain(&upstream.headers)
            .chain(forward)
        {
            builder = builder.header(name, value);
        }
        if let Some((name, value)) = own {
            builder = builder.header(name, value);
        }
        let mut request = builder
            .body(Full::new(body))
            .map_err(|err| AttemptError::Protocol(format!("cannot build the request: {err}")))?;
        // Whether the request had a connection (hyper's pool says so just before it writes):
        // what decides if a failure before the answer can have been billed.
        let connection = capture_connection(&mut request);
        if let Some(cell) = &sent.0 {
            let _ = cell.set(connection.clone());
        }
        let deadline = tokio::time::Instant::now() + timeout;
        let response = match tokio::time::timeout_at(deadline, self.client.request(request)).await {
            Ok(Ok(response)) => response,
            Ok(Err(err)) => return Err(failed_before_answer(&err, &connection)),
            Err(_) if connection.connection_metadata().is_none() => {
                return Err(AttemptError::ConnectTimeout(timeout));
            }
            Err(_) => return Err(AttemptError::Timeout(timeout)),
        };
        if response.status().is_success() {
            return Ok(response);
        }
        let status = response.status().as_u16();
        let retry_after = retry_after(response.headers());
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let body = read_body(response.into_body(), left)
            .await
            .unwrap_or_default();
        Err(AttemptError::Status {
            status,
            body,
            retry_after,
        })
    }
}

/// What hyper's client failing before a response means for the attempt: a connect error when
/// the upstream never had the request (no connection was made, or the connection closed
/// before the request went out: hyper calls that canceled), else [`AttemptError::Dropped`],
/// which is charged. hyper's pool already sends again, on a new connection, a request whose
/// reused connection closed before it was written; what reaches here may have been read
/// upstream.
fn failed_before_answer(
    err: &hyper_util::client::legacy::Error,
    connection: &CaptureConnection,
) -> AttemptError {
    let never_sent = err.is_connect()
        || connection.connection_metadata().is_none()
        || std::iter::successors(Some(err as &(dyn std::error::Error + 'static)), |e| {
            e.source()
        })
        .filter_map(|e| e.downcast_ref::<hyper::Error>())
        .any(hyper::Error::is_canceled);
    if never_sent {
        AttemptError::Connect(error_chain(err))
    } else {
        AttemptError::Dropped(error_chain(err))
    }
}

/// Reads a whole (bounded) body within `timeout`.
pub async fn read_body(body: Incoming, timeout: Duration) -> Result<Bytes, AttemptError> {
    let collected = tokio::time::timeout(
        timeout,
        Limited::new(body, MAX_UPSTREAM_BODY_BYTES).collect(),
    )
    .await
    .map_err(|_| AttemptError::Timeout(timeout))?
    .map_err(|err| AttemptError::Protocol(format!("reading the body: {err}")))?;
    Ok(collected.to_bytes())
}

/// `err` and its causes, joined with `": "` (for logs and attempt errors).
pub(crate) fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Third probe, A6: a `Retry-After` given as an HTTP date was ignored, and the target
    /// was tried again at once.
    #[test]
    fn retry_after_reads_seconds_and_http_dates() {
        let now = std::time::UNIX_EPOCH + Duration::from_secs(1_784_000_000);
        let with = |value: &str| {
            let mut headers = http::HeaderMap::new();
            headers.insert(RETRY_AFTER, HeaderValue::from_str(value).unwrap());
            retry_after_at(&headers, now)
        };
        assert_eq!(with("5"), Some(Duration::from_secs(5)));
        let later = httpdate::fmt_http_date(now + Duration::from_secs(8));
        assert_eq!(with(&later), Some(Duration::from_secs(8)));
        let earlier = httpdate::fmt_http_date(now - Duration::from_secs(8));
        assert_eq!(with(&earlier), Some(Duration::ZERO));
        for junk in ["-5", "1.5", "soon", ""] {
            assert_eq!(with(junk), None, "{junk}");
        }
    }
}
