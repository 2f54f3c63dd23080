//! Request bodies in, response bodies out.
//!
//! Owns the request body bound (`MAX_BODY_BYTES`), the one response body type (`SimBody`: a
//! complete buffer, or a stream of SSE frames that may end in a deliberate cut) and the helpers
//! that turn JSON values and `ApiError`s into responses, so every endpoint answers the same way.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use http::header::{CONTENT_LENGTH, CONTENT_TYPE, HeaderValue, RETRY_AFTER};
use http::{HeaderMap, Response, StatusCode};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use serde::Serialize;

use crate::sim::error::ApiError;

/// Largest request body accepted (16 MiB); larger ones are answered 413.
pub const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;

/// The error that ends a body on purpose: a stream cut by the `stream_cut_after` fault, or a
/// stalled stream or error body at shutdown. Hyper drops the connection when a body fails, so
/// the client sees its chunked body end early, without `[DONE]`.
#[derive(Debug, thiserror::Error)]
#[error("body ended after {chunks} content chunks by the {fault} fault")]
pub struct StreamCut {
    /// Content chunks sent before the cut.
    pub chunks: u32,
    /// The fault that ended it.
    pub fault: &'static str,
}

/// A boxed stream of body chunks.
pub type ChunkStream = Pin<Box<dyn Stream<Item = Result<Bytes, StreamCut>> + Send>>;

/// Every response body of the simulator.
pub enum SimBody {
    /// A complete body (sent with `Content-Length`); `None` once sent.
    Full(Option<Bytes>),
    /// A streamed body (sent chunked).
    Stream(ChunkStream),
}

impl Body for SimBody {
    type Data = Bytes;
    type Error = StreamCut;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, StreamCut>>> {
        match self.get_mut() {
            SimBody::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            SimBody::Stream(stream) => stream
                .as_mut()
                .poll_next(cx)
                .map(|item| item.map(|chunk| chunk.map(Frame::data))),
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self, SimBody::Full(None))
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            SimBody::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            SimBody::Full(None) => SizeHint::with_exact(0),
            SimBody::Stream(_) => SizeHint::default(),
        }
    }
}

/// Reads a whole request body, refusing more than `MAX_BODY_BYTES`.
pub async fn read_limited(headers: &HeaderMap, body: Incoming) -> Result<Bytes, ApiError> {
    let too_large = ApiError::BodyTooLarge {
        limit: MAX_BODY_BYTES,
    };
    let declared = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > MAX_BODY_BYTES as u64) {
        return Err(too_large);
    }
    match Limited::new(body, MAX_BODY_BYTES).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<LengthLimitError>() => Err(too_large),
        Err(e) => Err(ApiError::BodyRead(e.to_string())),
    }
}

/// A JSON response.
pub fn json(status: StatusCode, value: &impl Serialize) -> Response<SimBody> {
    match serde_json::to_vec(value) {
        Ok(bytes) => with_type(status, "application/json", Bytes::from(bytes)),
        // Our own types always serialize; this keeps even a bug from panicking.
        Err(e) => with_type(
            StatusCode::INTERNAL_SERVER_ERROR,
            "text/plain",
            Bytes::from(format!("sim: cannot serialize response: {e}")),
        ),
    }
}

/// An OpenAI-shaped error response (with `Retry-After` for a rate limit). The error also rides
/// in the response's extensions, so a wire dialect can answer it in its own shape.
pub fn error(err: &ApiError) -> Response<SimBody> {
    let mut response = json(err.status(), &err.body());
    if let ApiError::RateLimited { retry_after_s } = err {
        response
            .headers_mut()
            .insert(RETRY_AFTER, HeaderValue::from(*retry_after_s));
    }
    response.extensions_mut().insert(err.clone());
    response
}

/// An error response whose body stalls halfway (the `error_body_stall` fault): its status,
/// headers and the first half of its JSON are sent, then nothing until `until_shutdown`
/// resolves, when the connection is dropped.
pub fn stalled_error(
    err: &ApiError,
    until_shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Response<SimBody> {
    stall_halfway(error(err), until_shutdown)
}

/// A complete response whose body stalls halfway, as [`stalled_error`] does.
pub fn stall_halfway(
    whole: Response<SimBody>,
    until_shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Response<SimBody> {
    let (parts, body) = whole.into_parts();
    let bytes = match body {
        SimBody::Full(Some(bytes)) => bytes,
        _ => Bytes::new(),
    };
    let half = bytes.slice(..bytes.len() / 2);
    let first = futures_util::stream::once(async move { Ok(half) });
    let rest = futures_util::stream::once(async move {
        until_shutdown.await;
        Err(StreamCut {
            chunks: 0,
            fault: "error_body_stall",
        })
    });
    let mut response = Response::from_parts(parts, SimBody::Stream(Box::pin(first.chain(rest))));
    response.headers_mut().remove(CONTENT_LENGTH);
    response
}

/// A streamed `text/event-stream` response.
pub fn event_stream(stream: ChunkStream) -> Response<SimBody> {
    let mut response = Response::new(SimBody::Stream(stream));
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    headers.insert("cache-control", HeaderValue::from_static("no-cache"));
    response
}

/// A complete response with a content type.
fn with_type(status: StatusCode, content_type: &'static str, body: Bytes) -> Response<SimBody> {
    let mut response = Response::new(SimBody::Full(Some(body)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}
