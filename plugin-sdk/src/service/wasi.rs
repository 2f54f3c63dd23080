//! One `wasi:http` exchange: build the outgoing request, hand it to the host, stream the body
//! out, wait for the answer and read its body within a limit.
//!
//! The only code that touches `wasi:http` resources. Their order matters to the host: the body
//! is written after `handle` (the host starts reading it only then, and its buffer holds one
//! chunk), and every child resource is dropped before its parent (the stream before its body,
//! the body before its response), which a `wasi:http` host checks.

use wasip2::http::outgoing_handler;
use wasip2::http::types::{
    Fields, FutureIncomingResponse, IncomingBody, IncomingResponse, OutgoingBody, OutgoingRequest,
    Scheme,
};
use wasip2::io::streams::{InputStream, StreamError};

use super::{Call, Method, ServiceError, ServiceResponse};

/// Bytes asked of the answer's body stream per read.
const READ_CHUNK: u64 = 64 << 10;

/// Most bytes one `blocking-write-and-flush` takes (`wasi:io`'s own limit).
const WRITE_CHUNK: usize = 4096;

/// Sends `out` and reads the answer, its body up to `limit` bytes.
pub(super) fn exchange(out: &Call<'_>, limit: usize) -> Result<ServiceResponse, ServiceError> {
    start(out)?.finish(limit)
}

/// A request handed to the host (its body written), its answer not read yet: the host works
/// on every started request at once, so starting several before finishing any runs them
/// concurrently.
pub(super) struct Pending {
    /// The service, for errors.
    service: String,
    /// The answer to come.
    future: FutureIncomingResponse,
    /// Whether the body went out whole (looked at after the answer, which says why not).
    sent: Result<(), ServiceError>,
}

impl Pending {
    /// Waits for the answer and reads it, its body up to `limit` bytes.
    pub(super) fn finish(self, limit: usize) -> Result<ServiceResponse, ServiceError> {
        let response = wait(&self.service, &self.future)?;
        self.sent?;
        read(&self.service, response, limit)
    }
}

/// Hands `out` to the host and writes its body; the answer is read by [`Pending::finish`].
pub(super) fn start(out: &Call<'_>) -> Result<Pending, ServiceError> {
    let request = build(out)?;
    let body = match out.body {
        Some(_) => Some(request.body().map_err(|()| {
            ServiceError::InvalidRequest("the request body was already taken".to_string())
        })?),
        None => None,
    };
    let future = outgoing_handler::handle(request, None)
        .map_err(|code| ServiceError::from_code(out.service, &code))?;
    // A body the host stops reading (a denied request is dropped unread) fails the write; the
    // answer then says why, so it is looked at first.
    let sent = match (body, out.body) {
        (Some(body), Some(bytes)) => write_body(out.service, body, bytes),
        _ => Ok(()),
    };
    Ok(Pending {
        service: out.service.to_string(),
        future,
        sent,
    })
}

/// The outgoing request, headers and all, without its body.
fn build(out: &Call<'_>) -> Result<OutgoingRequest, ServiceError> {
    let invalid = |what: String| ServiceError::InvalidRequest(what);
    let mut entries: Vec<(String, Vec<u8>)> = out
        .headers
        .iter()
        .map(|(name, value)| (name.to_string(), value.as_bytes().to_vec()))
        .collect();
    if let Some(body) = out.body {
        entries.push(("content-length".to_string(), body.len().to_string().into()));
    }
    let headers = Fields::from_list(&entries)
        .map_err(|err| invalid(format!("the headers are not valid ({err:?})")))?;
    let request = OutgoingRequest::new(headers);
    request
        .set_method(&method(out.method))
        .map_err(|()| invalid(format!("the method {} is not valid", out.method)))?;
    request
        .set_scheme(Some(&Scheme::Http))
        .map_err(|()| invalid("the scheme http is not valid".to_string()))?;
    request
        .set_authority(Some(out.service))
        .map_err(|()| invalid(format!("`{}` is not a valid authority", out.service)))?;
    request
        .set_path_with_query(Some(out.path))
        .map_err(|()| invalid(format!("`{}` is not a valid path", out.path)))?;
    Ok(request)
}

fn method(method: Method) -> wasip2::http::types::Method {
    use wasip2::http::types::Method as Wasi;
    match method {
        Method::Get => Wasi::Get,
        Method::Head => Wasi::Head,
        Method::Post => Wasi::Post,
        Method::Put => Wasi::Put,
        Method::Patch => Wasi::Patch,
        Method::Delete => Wasi::Delete,
        Method::Options => Wasi::Options,
    }
}

/// Writes `bytes` into `body` and finishes it.
fn write_body(service: &str, body: OutgoingBody, bytes: &[u8]) -> Result<(), ServiceError> {
    let written = match body.write() {
        Ok(stream) => {
            let result = bytes
                .chunks(WRITE_CHUNK)
                .try_for_each(|chunk| stream.blocking_write_and_flush(chunk));
            drop(stream);
            result.map_err(|err| stream_error(service, "writing the request body", err))
        }
        Err(()) => Err(ServiceError::Transport {
            service: service.to_string(),
            detail: "the request body stream was already taken".to_string(),
        }),
    };
    let finished =
        OutgoingBody::finish(body, None).map_err(|code| ServiceError::from_code(service, &code));
    written.and(finished)
}

/// Waits for the answer's status and headers.
fn wait(service: &str, future: &FutureIncomingResponse) -> Result<IncomingResponse, ServiceError> {
    loop {
        match future.get() {
            Some(Ok(Ok(response))) => return Ok(response),
            Some(Ok(Err(code))) => return Err(ServiceError::from_code(service, &code)),
            Some(Err(())) => {
                return Err(ServiceError::Transport {
                    service: service.to_string(),
                    detail: "the answer was already taken".to_string(),
                });
            }
            None => future.subscribe().block(),
        }
    }
}

/// Reads the answer whole: status, headers, and the body up to `limit` bytes.
fn read(
    service: &str,
    response: IncomingResponse,
    limit: usize,
) -> Result<ServiceResponse, ServiceError> {
    let status = response.status();
    let headers = response.headers().entries();
    let too_large = || ServiceError::BodyTooLarge {
        service: service.to_string(),
        limit,
    };
    if declared_length(&headers).is_some_and(|length| length > limit as u64) {
        return Err(too_large());
    }
    let body = response.consume().map_err(|()| ServiceError::Transport {
        service: service.to_string(),
        detail: "the answer's body was already taken".to_string(),
    })?;
    let bytes = match body.stream() {
        Ok(stream) => {
            let bytes = read_stream(service, &stream, limit);
            drop(stream);
            bytes
        }
        Err(()) => Err(ServiceError::Transport {
            service: service.to_string(),
            detail: "the answer's body stream was already taken".to_string(),
        }),
    };
    drop(IncomingBody::finish(body));
    drop(response);
    Ok(ServiceResponse {
        status,
        headers,
        body: bytes?,
    })
}

/// Reads `stream` to its end, failing past `limit` bytes.
fn read_stream(service: &str, stream: &InputStream, limit: usize) -> Result<Vec<u8>, ServiceError> {
    let mut bytes = Vec::new();
    loop {
        match stream.blocking_read(READ_CHUNK) {
            Ok(chunk) => {
                if bytes.len() + chunk.len() > limit {
                    return Err(ServiceError::BodyTooLarge {
                        service: service.to_string(),
                        limit,
                    });
                }
                bytes.extend_from_slice(&chunk);
            }
            Err(StreamError::Closed) => return Ok(bytes),
            Err(err) => return Err(stream_error(service, "reading the answer's body", err)),
        }
    }
}

/// The `content-length` the answer declares, if it declares one that parses.
pub(super) fn declared_length(headers: &[(String, Vec<u8>)]) -> Option<u64> {
    let (_, value) = headers
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case("content-length"))?;
    std::str::from_utf8(value).ok()?.trim().parse().ok()
}

/// A stream error while `doing`: the `wasi:http` error code behind it when there is one.
fn stream_error(service: &str, doing: &str, err: StreamError) -> ServiceError {
    match err {
        StreamError::Closed => ServiceError::Transport {
            service: service.to_string(),
            detail: format!("{doing}: the stream closed"),
        },
        StreamError::LastOperationFailed(io) => match wasip2::http::types::http_error_code(&io) {
            Some(code) => with_context(ServiceError::from_code(service, &code), doing),
            None => ServiceError::Transport {
                service: service.to_string(),
                detail: format!("{doing}: {}", io.to_debug_string()),
            },
        },
    }
}

/// Prefixes the detail of a timeout or transport error with what was being done.
fn with_context(err: ServiceError, doing: &str) -> ServiceError {
    match err {
        ServiceError::Timeout { service, detail } => ServiceError::Timeout {
            service,
            detail: format!("{doing}: {detail}"),
        },
        ServiceError::Transport { service, detail } => ServiceError::Transport {
            service,
            detail: format!("{doing}: {detail}"),
        },
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> Vec<(String, Vec<u8>)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
            .collect()
    }

    #[test]
    fn declared_length_reads_a_valid_content_length_only() {
        assert_eq!(
            declared_length(&headers(&[("content-length", "42")])),
            Some(42)
        );
        assert_eq!(
            declared_length(&headers(&[("Content-Length", " 7 ")])),
            Some(7)
        );
        assert_eq!(
            declared_length(&headers(&[("content-type", "text/plain")])),
            None
        );
        assert_eq!(
            declared_length(&headers(&[("content-length", "lots")])),
            None
        );
        assert_eq!(declared_length(&headers(&[("content-length", "-1")])), None);
    }
}
