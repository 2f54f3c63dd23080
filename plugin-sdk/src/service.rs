//! HTTP calls to the services the host grants this stage.
//!
//! The host config declares services (`[services.search]`, with their URLs, timeouts, retries,
//! breaker and cache) and grants some to a stage (`services = ["search"]`). A stage names a
//! service, never a URL: the request goes to `http://<service><path>`, and the host sends it to
//! one of that service's upstreams under the service's policy. Any other authority (a service
//! not granted, a host name, an IP address, a port) fails with [`ServiceError::Denied`] and
//! nothing is sent. When every upstream of a service fails, the host answers with an ordinary
//! 5xx (or 429) response whose body is an OpenAI-shaped error
//! (`{"error": {"message", "type", "code"}}`, see [`ServiceResponse::error_message`]), so a
//! status check is the one way to see a failed call.
//!
//! ```no_run
//! use serde::Deserialize;
//! use serde_json::json;
//!
//! #[derive(Deserialize)]
//! struct Hits {
//!     ids: Vec<Vec<String>>,
//! }
//!
//! # fn demo() -> Result<(), weir_sdk::service::ServiceError> {
//! let health = weir_sdk::service::get("search", "/api/v2/heartbeat")?;
//! let answer = weir_sdk::service::post_json("search", "/query", &json!({"q": "refunds"}))?;
//! if answer.is_success() {
//!     let hits: Hits = answer.json()?;
//!     # let _ = hits;
//! } else {
//!     weir_sdk::warn!("search answered {}: {:?}", answer.status, answer.error_message());
//! }
//! # let _ = health; Ok(()) }
//! ```
//!
//! Calls block the stage until the answer is read whole; the host bounds them by the
//! stage's call deadline. The answer's body is read up to [`MAX_RESPONSE_BODY`] bytes
//! ([`send_with_limit`] sets another bound); a longer one is [`ServiceError::BodyTooLarge`].
//!
//! These calls go through weir's `weir:stage/services` import, a whole batch in one host call.
//! [`wasi_http`] makes the same calls over the standard `wasi:http/outgoing-handler`, as any
//! `wasi:http` client does: the host treats both alike (grant, policy, deadline, answers), but
//! a `wasi:http` exchange is some thirty host calls and costs about 50 µs more.
//!
//! # Layout
//!
//! - this file: the calls ([`get`], [`post_json`], [`send`], [`send_with_limit`], and
//!   [`send_all`] for several at once) and [`Method`];
//! - `reply`: [`ServiceResponse`], the answer read whole;
//! - `error`: [`ServiceError`], and how `wasi:http` error codes map onto it;
//! - `host`: the calls through `weir:stage/services`;
//! - `wasi`: the `wasi:http` exchange itself, the only code that touches its resources.

mod error;
mod host;
mod reply;
mod wasi;

use std::fmt;
use std::str::FromStr;

use serde::Serialize;

pub use error::ServiceError;
pub use reply::ServiceResponse;

/// The most bytes of an answer's body [`get`], [`post_json`] and [`send`] read: 4 MiB. A
/// longer body fails the call with [`ServiceError::BodyTooLarge`] rather than filling the
/// stage's memory (which the host caps).
pub const MAX_RESPONSE_BODY: usize = 4 << 20;

/// An HTTP method.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Method {
    /// `GET`.
    Get,
    /// `HEAD`.
    Head,
    /// `POST`.
    Post,
    /// `PUT`.
    Put,
    /// `PATCH`.
    Patch,
    /// `DELETE`.
    Delete,
    /// `OPTIONS`.
    Options,
}

impl Method {
    /// Every method, for parsing.
    const ALL: [Method; 7] = [
        Method::Get,
        Method::Head,
        Method::Post,
        Method::Put,
        Method::Patch,
        Method::Delete,
        Method::Options,
    ];

    /// The method's name, upper case.
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Head => "HEAD",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Patch => "PATCH",
            Method::Delete => "DELETE",
            Method::Options => "OPTIONS",
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A method name that is not one of [`Method`]'s.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown HTTP method `{0}` (expected GET, HEAD, POST, PUT, PATCH, DELETE or OPTIONS)")]
pub struct UnknownMethod(pub String);

impl FromStr for Method {
    type Err = UnknownMethod;

    /// Parses a method name in any case (`post`, `POST`).
    fn from_str(name: &str) -> Result<Method, UnknownMethod> {
        Method::ALL
            .into_iter()
            .find(|method| method.as_str().eq_ignore_ascii_case(name))
            .ok_or_else(|| UnknownMethod(name.to_string()))
    }
}

/// `GET http://<service><path>`.
pub fn get(service: &str, path: &str) -> Result<ServiceResponse, ServiceError> {
    send(Method::Get, service, path, &[], None)
}

/// `POST http://<service><path>` with `body` as JSON (`content-type: application/json`).
pub fn post_json<T: Serialize + ?Sized>(
    service: &str,
    path: &str,
    body: &T,
) -> Result<ServiceResponse, ServiceError> {
    let body = serde_json::to_vec(body).map_err(|err| ServiceError::Json(err.to_string()))?;
    send(
        Method::Post,
        service,
        path,
        &[("content-type", "application/json")],
        Some(&body),
    )
}

/// Sends `method http://<service><path>` with `headers` and `body` (`None`: no body) and reads
/// the answer whole, up to [`MAX_RESPONSE_BODY`] bytes of body.
///
/// `path` is the path and query, starting with `/`. The host drops `host` and hop-by-hop
/// headers, and sets `content-length` itself from `body`.
pub fn send(
    method: Method,
    service: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> Result<ServiceResponse, ServiceError> {
    send_with_limit(method, service, path, headers, body, MAX_RESPONSE_BODY)
}

/// [`send`], reading at most `limit` bytes of the answer's body ([`ServiceError::BodyTooLarge`]
/// past it).
pub fn send_with_limit(
    method: Method,
    service: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
    limit: usize,
) -> Result<ServiceResponse, ServiceError> {
    let call = Call {
        method,
        service,
        path,
        headers,
        body,
    };
    // One answer per call, always (`host::call_all`).
    let mut answers = host::call_all(&[call], limit);
    answers.swap_remove(0)
}

/// One call of [`send_all`].
#[derive(Clone, Copy, Debug)]
pub struct Call<'a> {
    /// The method.
    pub method: Method,
    /// The service's name.
    pub service: &'a str,
    /// Path and query, starting with `/`.
    pub path: &'a str,
    /// Extra headers.
    pub headers: &'a [(&'a str, &'a str)],
    /// The body, if any.
    pub body: Option<&'a [u8]>,
}

/// Sends every call at once and returns each answer in order (bodies up to `limit` bytes):
/// the host runs them concurrently, each under its own service's policy, so retrieving from
/// two indexes takes as long as the slower one, not both. A call that cannot start (a bad
/// path, a service not granted) fails alone.
///
/// ```no_run
/// use weir_sdk::service::{Call, MAX_RESPONSE_BODY, Method};
///
/// let body = br#"{"q": "refunds"}"#;
/// let calls = [
///     Call { method: Method::Post, service: "docs", path: "/query", headers: &[], body: Some(body) },
///     Call { method: Method::Post, service: "tickets", path: "/query", headers: &[], body: Some(body) },
/// ];
/// for answer in weir_sdk::service::send_all(&calls, MAX_RESPONSE_BODY) {
///     match answer {
///         Ok(answer) if answer.is_success() => { /* merge its hits */ }
///         Ok(answer) => weir_sdk::warn!("an index answered {}", answer.status),
///         Err(err) => weir_sdk::warn!("an index failed: {err}"),
///     }
/// }
/// ```
pub fn send_all(calls: &[Call<'_>], limit: usize) -> Vec<Result<ServiceResponse, ServiceError>> {
    host::call_all(calls, limit)
}

/// The same calls over the standard `wasi:http/outgoing-handler`, as any `wasi:http` client
/// makes them: the host treats them exactly as the calls above (grant, policy, deadline,
/// answers), at some thirty host calls per request instead of one per batch.
pub mod wasi_http {
    use super::{Call, ServiceError, ServiceResponse, check_path, wasi};

    /// [`send_with_limit`](super::send_with_limit) over `wasi:http`.
    pub fn send_with_limit(call: &Call<'_>, limit: usize) -> Result<ServiceResponse, ServiceError> {
        check_path(call.path)?;
        wasi::exchange(call, limit)
    }

    /// [`send_all`](super::send_all) over `wasi:http`: every request is handed to the host
    /// before any answer is read, so they run concurrently.
    pub fn send_all(
        calls: &[Call<'_>],
        limit: usize,
    ) -> Vec<Result<ServiceResponse, ServiceError>> {
        let started: Vec<_> = calls
            .iter()
            .map(|call| {
                check_path(call.path)?;
                wasi::start(call)
            })
            .collect();
        started
            .into_iter()
            .map(|pending| pending.and_then(|p| p.finish(limit)))
            .collect()
    }
}

/// A path must be absolute (`/...`): `http://search` + `v1` would name another authority.
fn check_path(path: &str) -> Result<(), ServiceError> {
    if path.starts_with('/') {
        Ok(())
    } else {
        Err(ServiceError::InvalidRequest(format!(
            "the path `{path}` does not start with `/`"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_parse_in_any_case_and_print_upper_case() {
        for method in Method::ALL {
            assert_eq!(method.as_str().parse(), Ok(method));
            assert_eq!(method.as_str().to_lowercase().parse(), Ok(method));
            assert_eq!(method.to_string(), method.as_str());
        }
        assert_eq!("Post".parse(), Ok(Method::Post));
        let err = "FETCH".parse::<Method>().unwrap_err();
        assert_eq!(err, UnknownMethod("FETCH".to_string()));
        assert!(err.to_string().starts_with("unknown HTTP method `FETCH`"));
    }

    #[test]
    fn paths_must_be_absolute() {
        assert!(check_path("/").is_ok());
        assert!(check_path("/api/v2/query?x=1").is_ok());
        for bad in ["", "api", "@evil/x", "?q=1"] {
            match check_path(bad) {
                Err(ServiceError::InvalidRequest(message)) => {
                    assert!(message.contains(&format!("`{bad}`")), "{message}")
                }
                other => panic!("{bad:?}: expected InvalidRequest, got {other:?}"),
            }
        }
    }
}
