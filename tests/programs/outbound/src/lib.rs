//! `weir-test-outbound`: a guest test program for the host's outbound capabilities, driven by
//! its stage config key `mode`. Request phase only; it always answers by itself
//! ([`RequestOutcome::Respond`]) with one choice whose content is compact JSON reporting what
//! happened, so a host test reads the outcome from the chat response.
//!
//! - `mode = "http"`: one request through [`weir_sdk::service::send_with_limit`] (weir's
//!   `services` import), or with `transport = "wasi-http"` through
//!   [`weir_sdk::service::wasi_http::send_with_limit`] (standard `wasi:http`), to `url` (`http://AUTHORITY/PATH?QUERY`; the authority is used as it is, so
//!   `http://127.0.0.1:9/x` tests a refused authority), with `method` (default `GET`), `body`
//!   (a string, sent as is), `headers` (a table of strings) and `max_body` (the most bytes of
//!   the answer's body read, default [`MAX_RESPONSE_BODY`]). Content:
//!   `{"status":200,"body":"<body, UTF-8 lossy>"}`, or `{"error":"<kind>","detail":"<message>"}`
//!   with kind `denied`, `timeout`, `transport`, `body_too_large` or `invalid_request`
//!   ([`ServiceError::kind`]).
//! - `mode = "http-all"`: one [`weir_sdk::service::send_all`] (or, with `transport =
//!   "wasi-http"`, `wasi_http::send_all`) of a POST of `body` to each of `urls` (a list), all
//!   at once. Content: a JSON array of the `http` mode's reports, in order.
//! - `mode = "fields-flood"`: a hostile stage: creates `wasi:http` header sets of 4 KiB each
//!   and keeps every one, forever (the host must stop it: its resource table is bounded).
//! - `mode = "fanout"`: one [`weir_sdk::llm::complete_all`] with a request per model of
//!   `models` (a list of strings; each the incoming request with its model replaced and
//!   `stream` off), under `deadline_ms` when set. Content: a JSON array, one entry per model
//!   in order, `{"ok":"<answer text>"}` or
//!   `{"err":{"status":504,"code":"deadline_exceeded","message":"..."}}`.
//!
//! A missing or malformed key fails the stage (`outbound: ...`).

use std::time::Duration;

use serde::Serialize;
use weir_sdk::service::{MAX_RESPONSE_BODY, Method, ServiceError, ServiceResponse};
use weir_sdk::{
    ChatRequest, ChatResponse, LlmError, RequestContext, RequestOutcome, Stage, StageError,
    StageInfo,
};

/// Every mode.
pub const MODES: &[&str] = &["http", "http-all", "fanout", "fields-flood"];

/// The stage.
#[derive(Default, serde::Serialize, serde::Deserialize)]
struct Outbound;

impl Stage for Outbound {
    fn info() -> StageInfo {
        StageInfo::new("outbound", env!("CARGO_PKG_VERSION")).on_request()
    }

    fn on_request(
        &mut self,
        _ctx: &RequestContext,
        request: ChatRequest,
    ) -> Result<RequestOutcome, StageError> {
        let mode = weir_sdk::config::get("mode").unwrap_or_default();
        let content = match mode.as_str() {
            "http" => http()?,
            "http-all" => http_all()?,
            "fields-flood" => fields_flood(),
            "fanout" => fanout(&request)?,
            other => {
                return Err(StageError::fail(format!(
                    "outbound: unknown mode `{other}` (expected one of {MODES:?})"
                )));
            }
        };
        Ok(RequestOutcome::Respond(ChatResponse::from_text(
            "outbound", content,
        )))
    }
}

/// The `http` mode.
fn http() -> Result<String, StageError> {
    let url = weir_sdk::config::get("url")
        .ok_or_else(|| StageError::fail("outbound: config key `url` is required"))?;
    let (authority, path) = split_url(&url).map_err(StageError::fail)?;
    let method = match weir_sdk::config::get("method") {
        None => Method::Get,
        Some(name) => name
            .parse()
            .map_err(|err| StageError::fail(format!("outbound: {err}")))?,
    };
    let body = weir_sdk::config::get("body");
    let headers: Vec<(String, String)> =
        weir_sdk::config::get_json::<std::collections::BTreeMap<String, String>>("headers")?
            .unwrap_or_default()
            .into_iter()
            .collect();
    let headers: Vec<(&str, &str)> = headers
        .iter()
        .map(|(name, value)| (name.as_str(), value.as_str()))
        .collect();
    let limit = weir_sdk::config::get_or("max_body", MAX_RESPONSE_BODY)?;
    let call = weir_sdk::service::Call {
        method,
        service: authority,
        path,
        headers: &headers,
        body: body.as_deref().map(str::as_bytes),
    };
    let outcome = match wasi_http()? {
        true => weir_sdk::service::wasi_http::send_with_limit(&call, limit),
        false => weir_sdk::service::send_with_limit(
            call.method,
            call.service,
            call.path,
            call.headers,
            call.body,
            limit,
        ),
    };
    Ok(http_report(&outcome))
}

/// The `http-all` mode.
fn http_all() -> Result<String, StageError> {
    let urls: Vec<String> = weir_sdk::config::get_json("urls")?
        .ok_or_else(|| StageError::fail("outbound: config key `urls` is required"))?;
    let body = weir_sdk::config::get("body");
    let split = urls
        .iter()
        .map(|url| split_url(url))
        .collect::<Result<Vec<_>, _>>()
        .map_err(StageError::fail)?;
    let calls: Vec<weir_sdk::service::Call<'_>> = split
        .iter()
        .map(|(authority, path)| weir_sdk::service::Call {
            method: Method::Post,
            service: authority,
            path,
            headers: &[("content-type", "application/json")],
            body: body.as_deref().map(str::as_bytes),
        })
        .collect();
    let outcomes = match wasi_http()? {
        true => weir_sdk::service::wasi_http::send_all(&calls, MAX_RESPONSE_BODY),
        false => weir_sdk::service::send_all(&calls, MAX_RESPONSE_BODY),
    };
    let reports: Vec<serde_json::Value> = outcomes
        .iter()
        .map(|outcome| serde_json::from_str(&http_report(outcome)).unwrap_or_default())
        .collect();
    Ok(serde_json::Value::Array(reports).to_string())
}

/// Whether the `http` modes go over `wasi:http` (`transport = "wasi-http"`) rather than the
/// SDK's default, weir's `services` import (`transport = "import"`, or no key).
fn wasi_http() -> Result<bool, StageError> {
    match weir_sdk::config::get("transport").as_deref() {
        None | Some("import") => Ok(false),
        Some("wasi-http") => Ok(true),
        Some(other) => Err(StageError::fail(format!(
            "outbound: `transport` is `import` or `wasi-http` (got `{other}`)"
        ))),
    }
}

/// The `fields-flood` mode: never returns unless the host lets it hold a million header sets.
fn fields_flood() -> String {
    let value = vec![b'x'; 4000];
    let mut held = Vec::new();
    for _ in 0..1_000_000 {
        let entries = [("x-flood".to_string(), value.clone())];
        match wasip2::http::types::Fields::from_list(&entries) {
            Ok(fields) => held.push(fields),
            Err(_) => break,
        }
    }
    format!("held {} header sets", held.len())
}

/// `http://AUTHORITY/PATH` → (`AUTHORITY`, `/PATH`); the path is `/` when the URL has none.
fn split_url(url: &str) -> Result<(&str, &str), String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("outbound: `url` must start with http:// (got `{url}`)"))?;
    Ok(match rest.find(['/', '?']) {
        Some(at) if rest[at..].starts_with('/') => (&rest[..at], &rest[at..]),
        Some(_) => {
            return Err(format!(
                "outbound: `url` needs a path before its query (got `{url}`)"
            ));
        }
        None => (rest, "/"),
    })
}

/// What the `http` mode reports.
#[derive(Serialize)]
#[serde(untagged)]
enum HttpReport {
    /// The service answered.
    Answer { status: u16, body: String },
    /// The call failed.
    Error { error: &'static str, detail: String },
}

/// The `http` mode's content for `outcome`.
fn http_report(outcome: &Result<ServiceResponse, ServiceError>) -> String {
    let report = match outcome {
        Ok(answer) => HttpReport::Answer {
            status: answer.status,
            body: answer.text().into_owned(),
        },
        Err(err) => HttpReport::Error {
            error: err.kind(),
            detail: err.to_string(),
        },
    };
    serde_json::to_string(&report).unwrap_or_default()
}

/// The `fanout` mode.
fn fanout(incoming: &ChatRequest) -> Result<String, StageError> {
    let models: Vec<String> = weir_sdk::config::get_json("models")?
        .ok_or_else(|| StageError::fail("outbound: config key `models` is required"))?;
    let deadline = weir_sdk::config::get_parsed::<u64>("deadline_ms")?.map(Duration::from_millis);
    let requests = requests_for(incoming, &models);
    let results = weir_sdk::llm::complete_all(&requests, deadline);
    Ok(fanout_report(&results))
}

/// One request per model: `incoming` with its model replaced and `stream` off.
fn requests_for(incoming: &ChatRequest, models: &[String]) -> Vec<ChatRequest> {
    models
        .iter()
        .map(|model| ChatRequest {
            model: model.clone(),
            stream: false,
            ..incoming.clone()
        })
        .collect()
}

/// One entry of the `fanout` mode's report.
#[derive(Serialize)]
enum FanoutEntry {
    /// The model answered this text.
    #[serde(rename = "ok")]
    Ok(String),
    /// The call failed.
    #[serde(rename = "err")]
    Err {
        status: u16,
        code: String,
        message: String,
    },
}

/// The `fanout` mode's content for `results`.
fn fanout_report(results: &[Result<ChatResponse, LlmError>]) -> String {
    let entries: Vec<FanoutEntry> = results
        .iter()
        .map(|result| match result {
            Ok(response) => FanoutEntry::Ok(response.text()),
            Err(err) => FanoutEntry::Err {
                status: err.status,
                code: err.code.clone(),
                message: err.message.clone(),
            },
        })
        .collect();
    serde_json::to_string(&entries).unwrap_or_default()
}

weir_sdk::export_stage!(Outbound);

#[cfg(test)]
mod tests {
    use weir_sdk::Message;

    use super::*;

    #[test]
    fn urls_split_into_authority_and_path() {
        assert_eq!(
            split_url("http://search/v1/thing?q=1"),
            Ok(("search", "/v1/thing?q=1"))
        );
        assert_eq!(split_url("http://127.0.0.1:9/x"), Ok(("127.0.0.1:9", "/x")));
        assert_eq!(split_url("http://search"), Ok(("search", "/")));
        assert!(split_url("https://search/x").is_err());
        assert!(split_url("http://search?q=1").is_err());
    }

    #[test]
    fn http_reports_are_compact_json_with_status_first() {
        let answer = Ok(ServiceResponse {
            status: 200,
            headers: Vec::new(),
            body: b"hi \"there\"".to_vec(),
        });
        assert_eq!(
            http_report(&answer),
            r#"{"status":200,"body":"hi \"there\""}"#
        );
        let denied = Err(ServiceError::Denied {
            service: "127.0.0.1:9".to_string(),
        });
        assert_eq!(
            http_report(&denied),
            r#"{"error":"denied","detail":"service `127.0.0.1:9` is not granted to this stage (HTTP-request-denied)"}"#
        );
    }

    #[test]
    fn fanout_asks_each_model_with_the_same_messages() {
        let mut incoming = ChatRequest::new("route", vec![Message::user("2+2?")]);
        incoming.stream = true;
        incoming.temperature = Some(0.5);
        let models = ["a".to_string(), "b".to_string()];
        let requests = requests_for(&incoming, &models);
        assert_eq!(requests.len(), 2);
        for (request, model) in requests.iter().zip(models) {
            assert_eq!(request.model, model);
            assert!(!request.stream);
            assert_eq!(request.temperature, Some(0.5));
            assert_eq!(request.messages.len(), 1);
            assert_eq!(request.messages[0].text(), "2+2?");
        }
    }

    #[test]
    fn fanout_reports_one_entry_per_model_in_order() {
        let results = vec![
            Ok(ChatResponse::from_text("a", "four")),
            Err(LlmError {
                status: 504,
                code: "deadline_exceeded".to_string(),
                message: "too slow".to_string(),
            }),
        ];
        assert_eq!(
            fanout_report(&results),
            r#"[{"ok":"four"},{"err":{"status":504,"code":"deadline_exceeded","message":"too slow"}}]"#
        );
        assert_eq!(fanout_report(&[]), "[]");
    }
}
