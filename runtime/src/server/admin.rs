//! The admin listener: `/admin/config` (the effective config, secrets masked),
//! `/admin/stages` and `/admin/targets` (breaker state, in-flight and limits per target). Guarded by a bearer token when the config names one.

use std::sync::Arc;

use http::{Method, Request, Response};
use hyper::body::Incoming;
use serde_json::json;

use super::App;
use super::http_util::{self, Body};
use crate::openai::ApiError;

/// Dispatches one admin request.
pub async fn handle(app: Arc<App>, request: Request<Incoming>) -> Response<Body> {
    if let Some(token) = &app.config.server.admin_token {
        let given = request
            .headers()
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if given != Some(token.as_str()) {
            return http_util::error(&ApiError::new(
                401,
                "authentication_error",
                "invalid_admin_token",
                "the admin API needs `Authorization: Bearer <admin token>`",
            ));
        }
    }
    match (request.method(), request.uri().path()) {
        (&Method::GET, "/admin/config") => http_util::json(200, &app.config.to_masked_json()),
        (&Method::GET, "/admin/targets") => {
            let now = tokio::time::Instant::now();
            let targets: Vec<_> = app
                .llm
                .router()
                .targets()
                .iter()
                .map(|target| target.snapshot(now))
                .collect();
            http_util::json(200, &json!({ "targets": targets }))
        }
        (&Method::GET, "/admin/stages") => {
            let stages: Vec<_> = app
                .stages
                .iter()
                .map(|stage| {
                    json!({
                        "name": stage.info.name,
                        "path": stage.path.display().to_string(),
                        "version": stage.digest.to_hex().to_string(),
                        "stage_version": stage.info.version,
                    })
                })
                .collect();
            http_util::json(200, &json!({ "stages": stages }))
        }
        (_, path) => http_util::error(&ApiError::new(
            404,
            "invalid_request_error",
            "not_found",
            format!("no such admin endpoint: {path}"),
        )),
    }
}
