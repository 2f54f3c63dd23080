//! `POST /v1/embeddings` over HTTP: authenticate, read the body → [`App::embeddings`] →
//! the OpenAI body, or the error as OpenAI-shaped JSON.

use std::sync::Arc;

use http::{Request, Response};
use hyper::body::Incoming;

use super::App;
use super::chat::read_call;
use super::http_util::{self, Body};
use crate::app::Report;
use crate::openai::ApiError;

/// Handles one embeddings call, filling `report` for the response headers and the record.
pub async fn handle(
    app: &Arc<App>,
    request: Request<Incoming>,
    request_id: &Arc<str>,
    report: &mut Report,
) -> Response<Body> {
    let call = match read_call(app, request, request_id, report).await {
        Ok(call) => call,
        Err(err) => return http_util::error(&err),
    };
    let outcome = app.embeddings(call).await;
    *report = outcome.report;
    match outcome.reply {
        Ok(body) => http_util::json(200, &body),
        Err(err) => http_util::error(&ApiError::from_facing(&err)),
    }
}
