//! [`App::chat`] in process: an app built from a config whose target is a `weir sim` served
//! by this test, driven without a listener of its own. Each answer shape is checked: a whole
//! answer, a stream of events, and typed errors (an unknown model; a key over its RPM, shed
//! before its body is even parsed).

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use serde_json::{Value, json};
use tokio::sync::oneshot;

use super::{ChatCall, ChatError, ChatOutcome, ChatReply};
use crate::app::App;
use crate::cache::CacheControl;
use crate::config::Config;
use crate::error::{ClientFacing, ShedReason};
use crate::openai::ApiError;
use crate::sim::{Sim, SimConfig};

/// The key the config knows.
const SECRET: &str = "sk-app-chat-test";

/// An app whose route `demo` goes to a simulator served by this test, with one key `team`
/// limited to `rpm` requests a minute. Dropping the sender stops the simulator.
async fn app(rpm: u32) -> (App, oneshot::Sender<()>) {
    let sim = Sim::bind(SimConfig::new("127.0.0.1:0".parse().unwrap()))
        .await
        .unwrap();
    let addr = sim.local_addr();
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(sim.serve(async move {
        let _ = stopped.await;
    }));
    let hash = blake3::Hash::from(crate::config::hash_key(SECRET)).to_hex();
    let text = format!(
        r#"
[targets.sim]
base_url = "http://{addr}/v1"
timeout_ms = 5000

[[routes]]
model = "demo"
targets = ["sim"]
max_attempts = 1

[[keys]]
name = "team"
hash = "blake3:{hash}"
rpm = {rpm}
"#
    );
    let config = Config::parse(&text, Path::new("weir.toml"), &|_| None).unwrap();
    let app = App::build(config, None).await.unwrap();
    (app, stop)
}

/// A call as the key `team` with `body`.
fn call(app: &App, body: &Value) -> ChatCall {
    let snapshot = app.snapshot();
    let account = snapshot.accounts.authenticate(SECRET);
    assert!(account.is_some(), "the key is configured");
    ChatCall {
        snapshot,
        account,
        request_id: Arc::from("req-test"),
        trace: None,
        parent: None,
        cache_control: CacheControl::default(),
        deadline: None,
        tracestate: None,
        body: Bytes::from(body.to_string()),
    }
}

fn chat(model: &str, text: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": text}]})
}

/// The text of an answer's first choice, from its JSON.
fn text(body: &Value) -> &str {
    body["choices"][0]["message"]["content"].as_str().unwrap()
}

#[tokio::test]
async fn a_whole_answer_comes_with_its_cost_and_report() {
    let (app, _stop) = app(100).await;
    let ChatOutcome { reply, report } = app.chat(call(&app, &chat("demo", "hello"))).await;
    let Ok(ChatReply::Whole(answer)) = reply else {
        panic!("a whole answer expected");
    };
    assert!(!answer.as_sse);
    let body = answer.to_json();
    assert_eq!(body["object"], "chat.completion");
    assert!(!text(&body).is_empty());
    assert!(body["usage"]["cost"].is_f64(), "usage.cost: {body}");
    assert_eq!(report.route.as_deref(), Some("demo"));
    assert_eq!(report.key.as_deref(), Some("team"));
    assert_eq!(report.attempts.len(), 1);
    assert!(
        report.trace.is_some(),
        "a call without a trace joins a new one"
    );
    // No stage burned fuel: the request cost what the answer says.
    assert_eq!(report.cost, Some(answer.cost_pico));
    assert_eq!(report.shed, None);
}

#[tokio::test]
async fn a_stream_is_forwarded_as_events_ending_in_done() {
    let (app, _stop) = app(100).await;
    let whole = app.chat(call(&app, &chat("demo", "stream me"))).await;
    let Ok(ChatReply::Whole(whole)) = whole.reply else {
        panic!("a whole answer expected");
    };
    let mut body = chat("demo", "stream me");
    body["stream"] = json!(true);
    let ChatOutcome { reply, report } = app.chat(call(&app, &body)).await;
    let Ok(ChatReply::Stream(mut events)) = reply else {
        panic!("a stream expected");
    };
    assert_eq!(report.route.as_deref(), Some("demo"));
    let mut received = Vec::new();
    while let Some(event) = events.recv().await {
        received.push(String::from_utf8(event.to_vec()).unwrap());
    }
    assert_eq!(
        received.last().map(String::as_str),
        Some("data: [DONE]\n\n")
    );
    let mut streamed = String::new();
    for event in &received[..received.len() - 1] {
        let data = event
            .strip_prefix("data: ")
            .and_then(|e| e.strip_suffix("\n\n"))
            .unwrap();
        let chunk: Value = serde_json::from_str(data).unwrap();
        assert_eq!(chunk["object"], "chat.completion.chunk");
        if let Some(delta) = chunk["choices"][0]["delta"]["content"].as_str() {
            streamed.push_str(delta);
        }
    }
    // The simulator answers a prompt deterministically: the stream carries the same text.
    assert_eq!(streamed, text(&whole.to_json()));
}

#[tokio::test]
async fn an_unknown_model_is_a_typed_404_naming_the_routes() {
    let (app, _stop) = app(100).await;
    let ChatOutcome { reply, report } = app.chat(call(&app, &chat("nope", "hi"))).await;
    let Err(err) = reply else {
        panic!("an error expected");
    };
    let ChatError::UnknownModel(unknown) = &err else {
        panic!("UnknownModel expected, got {err:?}");
    };
    assert_eq!(unknown.model, "nope");
    assert_eq!(unknown.known, ["demo"]);
    let api = ApiError::from_facing(&err);
    assert_eq!(
        (api.status, api.error_type.as_str(), api.code.as_str()),
        (404, "invalid_request_error", "model_not_found")
    );
    assert_eq!(api.param.as_deref(), Some("model"));
    assert_eq!(
        api.message,
        "the model `nope` does not exist; available: demo"
    );
    assert!(
        !err.retryable(),
        "the same request will not find the model later"
    );
    assert_eq!(report.route, None);
    assert_eq!(report.shed, None);
}

#[tokio::test]
async fn a_key_over_its_rpm_is_shed_before_its_body_is_parsed() {
    let (app, _stop) = app(1).await;
    // The one request of the minute: admitted, then refused for its body.
    let first = app.chat(ChatCall {
        body: Bytes::from_static(b"not json"),
        ..call(&app, &Value::Null)
    });
    let ChatOutcome { reply, report } = first.await;
    let Err(ChatError::Invalid(invalid)) = reply else {
        panic!("an invalid body expected");
    };
    assert_eq!(invalid.status, 400);
    assert!(report.cost.is_some(), "admitted");
    // The next one is refused at admission, whatever its body.
    let ChatOutcome { reply, report } = app
        .chat(ChatCall {
            body: Bytes::from_static(b"not json either"),
            ..call(&app, &Value::Null)
        })
        .await;
    let Err(err) = reply else {
        panic!("an error expected");
    };
    assert!(matches!(err, ChatError::Admission(_)), "{err:?}");
    assert_eq!(report.shed, Some(ShedReason::RateLimited));
    assert_eq!(report.cost, None, "not admitted");
    let api = ApiError::from_facing(&err);
    assert_eq!(
        (api.status, api.error_type.as_str(), api.code.as_str()),
        (429, "rate_limit_error", "rate_limit_exceeded")
    );
    assert!(api.retry_after_s.is_some_and(|s| s >= 1));
    assert!(err.retryable(), "a background job tries again later");
}
