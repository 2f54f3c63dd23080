//! `POST /v1/embeddings` over HTTP: authenticate, read the body → [`App::embeddings`] →
//! the OpenAI body, or the error as OpenAI-shaped JSON.

use std::sync::Arc;

use http::{Request, Response};
use hyper::body::Incoming;

use super::App;
use super::chat::authenticate;
use super::http_util::{self, Body};
use crate::app::{ChatCall, Report};
use crate::cache::CacheControl;
use crate::openai::ApiError;

/// Handles one embeddings call, filling `report` for the response headers and the record.
pub async fn handle(
    app: &Arc<App>,
    request: Request<Incoming>,
    request_id: &Arc<str>,
    report: &mut Report,
) -> Response<Body> {
    let (parts, body) = request.into_parts();
    let snap = app.snapshot();
    let account = match authenticate(&snap, &parts.headers) {
        Ok(account) => account,
        Err(err) => return http_util::error(&err),
    };
    let body = match http_util::read_body(body, &parts.headers, &snap.config.server).await {
        Ok(body) => body,
        Err(err) => return http_util::error(&err),
    };
    let call = ChatCall {
        snapshot: snap,
        account,
        request_id: request_id.clone(),
        trace: report.trace,
        parent: report.parent,
        cache_control: parts
            .headers
            .get(http::header::CACHE_CONTROL)
            .and_then(|v| v.to_str().ok())
            .map(CacheControl::parse)
            .unwrap_or_default(),
        deadline: None,
        tracestate: None,
        body,
    };
    let outcome = app.embeddings(call).await;
    *report = outcome.report;
    match outcome.reply {
        Ok(body) => http_util::json(200, &body),
        Err(err) => http_util::error(&ApiError::from_facing(&err)),
    }
}
