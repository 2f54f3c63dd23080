//! Small HTTP helpers: the response body type, JSON and error responses, body reads bounded
//! in size and time.

use std::convert::Infallible;

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE, HeaderValue};
use http::{Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;

use crate::config::ServerSettings;
use crate::openai::ApiError;

/// Every response body weir sends.
pub type Body = UnsyncBoxBody<Bytes, Infallible>;

/// A full body from bytes.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).boxed_unsync()
}

/// A JSON response.
pub fn json(status: u16, value: &serde_json::Value) -> Response<Body> {
    let mut response = Response::new(full(crate::openai::to_bytes(value)));
    *response.status_mut() =
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// An error response's code and message, kept in its extensions for the request record.
#[derive(Clone, Debug)]
pub struct Failure {
    /// `error.code`.
    pub code: String,
    /// `error.message`.
    pub message: String,
}

/// An OpenAI-shaped error response. A 408 also closes the connection: the rest of a body
/// that came too slowly is never read.
pub fn error(err: &ApiError) -> Response<Body> {
    let mut response = json(err.status, &err.to_json());
    response.extensions_mut().insert(Failure {
        code: err.code.clone(),
        message: err.message.clone(),
    });
    if let Some(seconds) = err.retry_after() {
        response
            .headers_mut()
            .insert(http::header::RETRY_AFTER, HeaderValue::from(seconds));
    }
    if err.status == 408 {
        response
            .headers_mut()
            .insert(http::header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

/// Reads a request body of at most `server.max_body_bytes` (a larger one is a 413) that must
/// arrive whole within `server.body_read_timeout_ms` (else 408, and the connection closes).
/// Authenticate before calling this: an unauthenticated client must not make weir buffer.
pub async fn read_body(
    body: Incoming,
    headers: &http::HeaderMap,
    server: &ServerSettings,
) -> Result<Bytes, ApiError> {
    let max = server.max_body_bytes;
    let timeout = server.connections.body_read_timeout;
    let too_large = || {
        ApiError::new(
            413,
            "invalid_request_error",
            "request_too_large",
            format!("the request body is larger than the limit of {max} bytes"),
        )
    };
    if let Some(len) = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        && len > max as u64
    {
        return Err(too_large());
    }
    let collected = tokio::time::timeout(timeout, Limited::new(body, max).collect()).await;
    let Ok(collected) = collected else {
        return Err(ApiError::new(
            408,
            "invalid_request_error",
            "request_timeout",
            format!(
                "the request body did not arrive within {} ms",
                timeout.as_millis()
            ),
        ));
    };
    match collected {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(err)
            if err
                .downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            Err(too_large())
        }
        Err(err) => Err(ApiError::invalid(
            "invalid_body",
            None,
            format!("cannot read the request body: {err}"),
        )),
    }
}
