//! The `weir:stage/services` import: a batch of service calls in one host call.
//!
//! The same calls as `wasi:http` to `http://NAME/...` ([`ServiceHooks`]): the same grant, call
//! count, deadline, [`call`] and answers (a failure after the service's retries is a synthetic
//! error answer), without `wasi:http`'s resources. A `wasi:http` exchange is some thirty host
//! calls (fields, request, body stream, future, pollable, response, body, trailers), a spawned
//! task and a body channel: about 53 µs more per call than this path in
//! `cargo bench -p weir --bench service_call` (`stage-wasi-http` against `stage-http`). Every
//! call of a batch runs at once; the results come back in order.
//!
//! Guest values are checked before anything is sent: the method and each header must parse,
//! the path must start with `/`, the headers fit [`HTTP_FIELDS_MAX_BYTES`] (as a `wasi:http`
//! fields resource must), the body fits the service's `max_request_bytes`. The answer's body is
//! copied into the guest only when it fits the request's `max-body`.

use std::sync::Arc;

use futures_util::future::join_all;
use http::header::{HeaderName, HeaderValue};

use super::hooks::{call, outgoing_headers};
use super::{CallContext, Service, ServiceHooks, ServiceRequest};
use crate::router::ServiceReply;
use crate::sandbox::HTTP_FIELDS_MAX_BYTES;
use crate::wit::v2::weir::stage0_2_0::services::{
    ErrorKind, ServiceError, ServiceRequest as Request, ServiceResponse,
};

/// One call's result as the guest gets it.
pub type Outcome = Result<ServiceResponse, ServiceError>;

/// One call of a batch, checked and admitted (or already answered).
enum Ready {
    /// Send it.
    Call {
        service: Arc<Service>,
        request: ServiceRequest,
        ctx: CallContext,
        max_body: u32,
    },
    /// Answered without sending (past the instance's call limit).
    Answered(ServiceReply, u32),
}

/// Runs `requests` for the instance whose hooks are `hooks` (its grant, call count and the
/// deadline of the guest call in progress), all at once; one result per request, in order.
pub async fn call_all(hooks: &mut ServiceHooks, requests: Vec<Request>) -> Vec<Outcome> {
    let ready: Vec<Result<Ready, ServiceError>> = requests
        .into_iter()
        .map(|request| admit(hooks, request))
        .collect();
    join_all(ready.into_iter().map(|ready| async move {
        match ready? {
            Ready::Answered(reply, max_body) => respond(reply, max_body),
            Ready::Call {
                service,
                request,
                ctx,
                max_body,
            } => respond(call(&service, request, &ctx).await, max_body),
        }
    }))
    .await
}

/// Checks `request` and admits it as `wasi:http`'s hooks would.
fn admit(hooks: &mut ServiceHooks, request: Request) -> Result<Ready, ServiceError> {
    let method = http::Method::from_bytes(request.method.as_bytes())
        .map_err(|_| invalid(format!("the method `{}` is not valid", request.method)))?;
    if !request.path.starts_with('/') {
        return Err(invalid(format!(
            "the path `{}` does not start with `/`",
            request.path
        )));
    }
    let path = http::uri::PathAndQuery::try_from(request.path.as_str())
        .map_err(|_| invalid(format!("`{}` is not a valid path", request.path)))?;
    let headers = headers(&request.headers)?;
    let Some((service, ctx)) = hooks.granted(&request.service) else {
        tracing::debug!(
            target: "weir::guest",
            service = %request.service,
            "service call to a service the stage is not granted; denied"
        );
        return Err(ServiceError {
            kind: ErrorKind::Denied,
            detail: format!("service `{}` is not granted to this stage", request.service),
        });
    };
    if let Some(refused) = hooks.count(&service) {
        return Ok(Ready::Answered(refused, request.max_body));
    }
    let body = request.body.unwrap_or_default();
    if body.len() as u64 > service.settings.max_request_bytes {
        return Err(ServiceError {
            kind: ErrorKind::Transport,
            detail: format!(
                "HTTP-request-body-size: {}",
                service.settings.max_request_bytes
            ),
        });
    }
    let (ctx, _) = hooks.bound(ctx);
    Ok(Ready::Call {
        service,
        request: ServiceRequest {
            method,
            path: path.as_str().to_string(),
            headers: outgoing_headers(headers.iter().map(|(n, v)| (n, v))),
            body: body.into(),
        },
        ctx,
        max_body: request.max_body,
    })
}

/// The guest's headers, parsed and within [`HTTP_FIELDS_MAX_BYTES`] (names and values, as
/// wasmtime-wasi-http counts a fields resource).
fn headers(raw: &[(String, Vec<u8>)]) -> Result<Vec<(HeaderName, HeaderValue)>, ServiceError> {
    let size: usize = raw.iter().map(|(n, v)| n.len() + v.len()).sum();
    if size > HTTP_FIELDS_MAX_BYTES {
        return Err(invalid(format!(
            "the headers are {size} bytes; at most {HTTP_FIELDS_MAX_BYTES}"
        )));
    }
    raw.iter()
        .map(|(name, value)| {
            let bad = || invalid(format!("the header `{name}` is not valid"));
            Ok((
                HeaderName::from_bytes(name.as_bytes()).map_err(|_| bad())?,
                HeaderValue::from_bytes(value).map_err(|_| bad())?,
            ))
        })
        .collect()
}

/// `reply` as the guest gets it: whole, or `body-too-large` past `max_body` (nothing copied).
fn respond(reply: ServiceReply, max_body: u32) -> Outcome {
    if reply.body.len() as u64 > u64::from(max_body) {
        return Err(ServiceError {
            kind: ErrorKind::BodyTooLarge,
            detail: format!(
                "the answer's body is {} bytes; max-body is {max_body}",
                reply.body.len()
            ),
        });
    }
    Ok(ServiceResponse {
        status: reply.status,
        headers: (reply.headers.iter())
            .map(|(name, value)| (name.as_str().to_string(), value.as_bytes().to_vec()))
            .collect(),
        body: reply.body.to_vec(),
    })
}

fn invalid(detail: String) -> ServiceError {
    ServiceError {
        kind: ErrorKind::InvalidRequest,
        detail,
    }
}
