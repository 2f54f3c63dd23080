//! The `wasi:http` hooks of a stage instance: the only way out of the sandbox.
//!
//! `outgoing-handler.handle` hands every request here. Its authority names the service
//! (`http://search/v1/query` → `[services.search]`): a service the stage's config grants is
//! called through [`Service::call`] (its policy, cache and price, within what is left of the
//! stage's call deadline); any other authority, a port, an `https` scheme, or any call from
//! `describe()` fails with `HTTP-request-denied` before anything is sent. A service that
//! fails after its retries answers the stage with a synthetic response (the router's status:
//! 502, 503 or 429, an OpenAI-shaped error body and `x-weir-service-error`), so any language's
//! HTTP client sees an ordinary error response rather than a transport error.

use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HOST, HeaderName, HeaderValue};
use http_body_util::{BodyExt, Full, Limited};
use tokio::time::Instant;
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody, WasiHttpHooks};

use super::{CallContext, Service, ServiceRequest};
use crate::host_api::{CallScope, HostContext};
use crate::openai::ApiError;
use crate::router::{HOP_BY_HOP, ServiceReply};

/// The services one stage may call.
pub type Grant = Vec<Arc<Service>>;

/// Most service calls one stage instance may start (both phases of one request); past it
/// each call is answered at once with a synthetic 429 `service_calls_exceeded`, nothing
/// sent. Each call is also bounded by the stage's deadline and its service's concurrency
/// limit and queue; this keeps a guest looping on calls from billing without end.
pub const MAX_CALLS_PER_INSTANCE: u32 = 256;

/// The `WasiHttpHooks` of one stage instance.
pub struct ServiceHooks {
    /// The services granted, and who calls them; `None` in `describe()` or without a grant.
    reach: Option<(Arc<Grant>, CallContext)>,
    /// The deadline of the guest call in progress (set before each `wasi:http` call).
    pub(crate) deadline: Instant,
    /// Calls started so far, against [`MAX_CALLS_PER_INSTANCE`].
    calls: u32,
}

/// The outcome `send_request` hands back to wasmtime-wasi-http.
type Sent = Box<
    dyn Future<
            Output = Result<
                (
                    http::Response<WasiBody>,
                    Box<dyn Future<Output = Result<(), Error>> + Send>,
                ),
                Error,
            >,
        > + Send,
>;

impl ServiceHooks {
    /// The hooks of an instance serving `host`: its stage's grant, during a request only.
    pub fn new(host: &HostContext) -> ServiceHooks {
        let reach = match &host.scope {
            CallScope::Request(meter) if !host.stage.services.is_empty() => Some((
                host.stage.services.clone(),
                CallContext {
                    meter: meter.clone(),
                    stage: host.stage.label.clone(),
                    route: host.route.clone(),
                    deadline: None,
                },
            )),
            _ => None,
        };
        ServiceHooks {
            reach,
            deadline: Instant::now(),
            calls: 0,
        }
    }

    /// Hooks granting `grant` to calls made as `ctx`, as during a request.
    #[cfg(test)]
    pub(super) fn granting(grant: Grant, ctx: CallContext, deadline: Instant) -> ServiceHooks {
        ServiceHooks {
            reach: Some((Arc::new(grant), ctx)),
            deadline,
            calls: 0,
        }
    }

    /// The granted service `request` names, if any.
    fn resolve(&self, request: &http::Request<WasiBody>) -> Option<(Arc<Service>, CallContext)> {
        let uri = request.uri();
        if uri.scheme() != Some(&http::uri::Scheme::HTTP) {
            return None;
        }
        let authority = uri.authority()?;
        if authority.port().is_some() {
            return None;
        }
        self.granted(authority.host())
    }

    /// The granted service called `name`, if any (never in `describe()`).
    pub(super) fn granted(&self, name: &str) -> Option<(Arc<Service>, CallContext)> {
        let (grant, ctx) = self.reach.as_ref()?;
        let service = grant.iter().find(|s| *s.name == *name)?;
        Some((service.clone(), ctx.clone()))
    }

    /// Counts one more call to `service` from this instance; past
    /// [`MAX_CALLS_PER_INSTANCE`], the synthetic 429 to answer it with instead of sending it.
    pub(super) fn count(&mut self, service: &Service) -> Option<ServiceReply> {
        self.calls = self.calls.saturating_add(1);
        if self.calls <= MAX_CALLS_PER_INSTANCE {
            return None;
        }
        let message = format!(
            "service {}: a stage may make at most {MAX_CALLS_PER_INSTANCE} service calls per \
             request",
            service.name
        );
        let api = ApiError::new(429, "rate_limit_error", "service_calls_exceeded", message);
        Some(error_reply(&api, "service_calls_exceeded"))
    }

    /// `ctx` bounded by what is left of the guest call in progress; the deadline itself.
    pub(super) fn bound(&self, mut ctx: CallContext) -> (CallContext, Instant) {
        ctx.deadline = Some(self.deadline.saturating_duration_since(Instant::now()));
        (ctx, self.deadline)
    }
}

impl WasiHttpHooks for ServiceHooks {
    /// Services are named, not located: a stage writes `http://NAME/...`, and the host picks
    /// the scheme of each URL.
    fn is_supported_scheme(&mut self, scheme: &http::uri::Scheme) -> bool {
        *scheme == http::uri::Scheme::HTTP
    }

    fn default_scheme(&mut self) -> Option<http::uri::Scheme> {
        Some(http::uri::Scheme::HTTP)
    }

    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        _options: Option<RequestOptions>,
        _fut: Box<dyn Future<Output = Result<(), Error>> + Send>,
    ) -> Sent {
        let Some((service, ctx)) = self.resolve(&request) else {
            tracing::debug!(
                target: "weir::guest",
                uri = %request.uri(),
                "wasi:http request to an authority the stage is not granted; denied"
            );
            return Box::new(async { Err(Error::HttpRequestDenied) });
        };
        if let Some(refused) = self.count(&service) {
            return Box::new(async move { Ok((answer(refused), done())) });
        }
        let (ctx, deadline) = self.bound(ctx);
        Box::new(async move {
            let (parts, body) = request.into_parts();
            let max = usize::try_from(service.settings.max_request_bytes).unwrap_or(usize::MAX);
            let body =
                match tokio::time::timeout_at(deadline, Limited::new(body, max).collect()).await {
                    Err(_) => return Err(Error::ConnectionWriteTimeout),
                    Ok(Err(err)) if err.is::<http_body_util::LengthLimitError>() => {
                        return Err(Error::HttpRequestBodySize(Some(max as u64)));
                    }
                    Ok(Err(err)) => return Err(Error::InternalError(Some(err.to_string()))),
                    Ok(Ok(collected)) => collected.to_bytes(),
                };
            let headers = outgoing_headers(parts.headers.iter());
            let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
            let request = ServiceRequest {
                method: parts.method,
                path: path.to_string(),
                headers,
                body,
            };
            Ok((answer(call(&service, request, &ctx).await), done()))
        })
    }
}

/// The headers a stage's request carries on: every one but `host` and hop-by-hop ones.
pub(super) fn outgoing_headers<'a>(
    headers: impl Iterator<Item = (&'a HeaderName, &'a HeaderValue)>,
) -> Vec<(HeaderName, HeaderValue)> {
    headers
        .filter(|(name, _)| **name != HOST && !HOP_BY_HOP.contains(&name.as_str()))
        .map(|(name, value)| (name.clone(), value.clone()))
        .collect()
}

/// Calls `service`: its answer, or a failure after its retries as an ordinary error answer
/// (the router's status, an OpenAI-shaped body naming the service, `x-weir-service-error`
/// with the code, `retry-after` when known), so any client sees a response it can read.
pub(super) async fn call(
    service: &Service,
    request: ServiceRequest,
    ctx: &CallContext,
) -> ServiceReply {
    match service.call(request, ctx).await {
        Ok(reply) => reply,
        Err(err) => {
            let mut api = ApiError::from_facing(&err);
            api.message = format!("service {}: {}", service.name, api.message);
            error_reply(&api, err.code())
        }
    }
}

/// The service's answer as the guest reads it.
fn answer(reply: ServiceReply) -> http::Response<WasiBody> {
    let mut response = http::Response::new(body(reply.body));
    *response.status_mut() =
        http::StatusCode::from_u16(reply.status).unwrap_or(http::StatusCode::BAD_GATEWAY);
    *response.headers_mut() = reply.headers;
    response
}

/// The response side's "nothing more to do".
fn done() -> Box<dyn Future<Output = Result<(), Error>> + Send> {
    Box::new(async { Ok(()) })
}

/// `api` as an answer with `x-weir-service-error: code`.
fn error_reply(api: &ApiError, code: &'static str) -> ServiceReply {
    let mut headers = http::HeaderMap::new();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(
        HeaderName::from_static("x-weir-service-error"),
        HeaderValue::from_static(code),
    );
    if let Some(seconds) = api.retry_after_s {
        headers.insert(http::header::RETRY_AFTER, HeaderValue::from(seconds));
    }
    ServiceReply {
        status: api.status,
        headers,
        body: Bytes::from(api.to_json().to_string()),
    }
}

fn body(bytes: Bytes) -> WasiBody {
    Full::new(bytes)
        .map_err(|never| match never {})
        .boxed_unsync()
}
