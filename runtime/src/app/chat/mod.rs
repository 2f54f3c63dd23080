//! The typed entry point of a chat completion: [`App::chat`] takes a [`ChatCall`] (what the
//! caller knows: the key, the request id, the trace, the headers that change how it runs, the
//! body) and returns a [`ChatOutcome`]: a whole answer, a stream to forward, or a typed
//! [`ChatError`], with the [`Report`] of what happened. The HTTP layer and background jobs
//! both call it; how the answer is rendered (JSON, SSE, a job's result) is theirs.
//!
//! One call: admission (the key's RPM) → parse → route → request phase → LLM step →
//! response phase, and the stages' fuel charged to the request. When the admission is a
//! round trip to the fleet's Redis, the request phase runs while it is on its way: nothing
//! leaves the node for the request before it is admitted ([`Meter::admitted`]), and a
//! refusal stops the request where it is, answered as if it came first.
//!
//! - `error`: [`ChatError`], [`UnknownModel`].
//! - `report`: [`Report`].
//! - `stream`: the upstream stream collected whole or relayed as SSE events.

mod error;
mod report;
mod stream;
#[cfg(test)]
mod tests;

use std::sync::Arc;

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use serde_json::{Value, json};
use tokio::sync::mpsc;

pub use error::{ChatError, UnknownModel};
pub use report::{Ended, Report};
pub use stream::StreamEnd;

use super::{App, Snapshot};
use crate::cache::CacheControl;
use crate::config::Config;
use crate::cost::{Account, CallLimiter, Meter};
use crate::error::ClientFacing;
use crate::llm::{Answer as StepAnswer, Call, LlmStep, StepReply};
use crate::openai::{ApiError, parse_request, response_to_json};
use crate::pipeline::{Forwarded, Pipeline, Responded};
use crate::telemetry::TraceParent;
use crate::wit::{ChatRequest, ChatResponse};

/// One chat completion to run, as the caller received it.
pub struct ChatCall {
    /// The snapshot the caller authenticated against: the whole request runs on it, whatever
    /// reloads happen meanwhile.
    pub snapshot: Arc<Snapshot>,
    /// The key it runs as; `None` when auth is off.
    pub account: Option<Arc<Account>>,
    /// The request id (`x-request-id`, sent upstream too).
    pub request_id: Arc<str>,
    /// The W3C trace the request joined; `None` (a background job) joins a new one.
    pub trace: Option<TraceParent>,
    /// The client's span (its `traceparent`), the request span's parent.
    pub parent: Option<[u8; 8]>,
    /// What the client's `Cache-Control` allows.
    pub cache_control: CacheControl,
    /// The client's `x-weir-deadline-ms` as sent. It is checked after admission, as the body
    /// is, so a request refused for it still counts against the key's RPM.
    pub deadline: Option<HeaderValue>,
    /// The client's `tracestate`, passed on upstream with weir's `traceparent`.
    pub tracestate: Option<HeaderValue>,
    /// The body of `/v1/chat/completions`, parsed after admission.
    pub body: Bytes,
}

/// What [`App::chat`] came to, and the report of how.
pub struct ChatOutcome {
    /// The answer, or why there is none.
    pub reply: Result<ChatReply, ChatError>,
    /// What happened (stages, cache, attempts, cost, why it was shed).
    pub report: Report,
}

/// An answer.
pub enum ChatReply {
    /// A whole response, through the response phase.
    Whole(Answer),
    /// A live stream: server-sent events (`data: ...\n\n` each), ending with
    /// `data: [DONE]` or an error event. Dropping the receiver stops the relay (the client
    /// went away): the stream is then settled and the upstream dropped.
    Stream(mpsc::Receiver<Bytes>),
}

/// A whole response and how the client asked for it.
pub struct Answer {
    /// The response, after the response phase.
    pub response: ChatResponse,
    /// What the request cost when it was answered, pico-dollars (`usage.cost`).
    pub cost_pico: u64,
    /// The client asked for a stream (`"stream": true`): send it as SSE.
    pub as_sse: bool,
    /// The client asked for the usage chunk (`stream_options.include_usage`).
    pub include_usage: bool,
}

impl Answer {
    /// The OpenAI JSON body, with the request's cost in `usage.cost`.
    pub fn to_json(&self) -> Value {
        let mut body = response_to_json(&self.response);
        if let Some(usage) = body.get_mut("usage").and_then(Value::as_object_mut) {
            usage.insert(
                "cost".into(),
                json!(crate::config::pico_to_usd(self.cost_pico)),
            );
        }
        body
    }
}

impl App {
    /// Runs one chat completion: admission, the request phase, the LLM step and the response
    /// phase; then charges the stages' fuel to the request. A background job runs as the key
    /// that submitted it, without keeping the key itself.
    pub async fn chat(&self, call: ChatCall) -> ChatOutcome {
        let mut report = Report {
            // Not from the public listener (a background job): a trace of its own.
            trace: Some(
                call.trace
                    .unwrap_or_else(|| crate::telemetry::join_trace(None)),
            ),
            parent: call.parent,
            ..Report::default()
        };
        let snap = call.snapshot.clone();
        if let Some(account) = &call.account {
            report.key = Some(account.name().to_string());
        }
        let admission = match call.account.as_ref().map(Account::admit_ahead) {
            None | Some(Ok(None)) => None,
            Some(Ok(Some(admission))) => Some(admission),
            Some(Err(err)) => return ChatOutcome::failed(ChatError::Admission(err), report),
        };
        let meter = Meter::admitting(call.account.clone(), admission.clone());
        let reply = match admission {
            None => self.serve(&snap, call, &meter, &mut report).await,
            Some(admission) => {
                // The request phase runs while Redis answers; a refusal stops it there.
                let reply = {
                    let serve = self.serve(&snap, call, &meter, &mut report);
                    tokio::pin!(serve);
                    tokio::select! {
                        reply = &mut serve => admission.await.map(|()| reply),
                        admitted = admission.clone() => match admitted {
                            Ok(()) => Ok(serve.await),
                            Err(err) => Err(err),
                        },
                    }
                };
                match reply {
                    Ok(reply) => reply,
                    Err(err) => return ChatOutcome::failed(ChatError::Admission(err), report),
                }
            }
        };
        let fuel: u64 = report.fuel.iter().map(|(_, fuel)| fuel).sum();
        if let Some(route) = &report.route {
            snap.llm.costing().charge_fuel(&meter, route, fuel);
        }
        report.cost = Some(meter.total());
        report.services = meter.take_services();
        match reply {
            Ok(reply) => ChatOutcome {
                reply: Ok(reply),
                report,
            },
            Err(err) => ChatOutcome::failed(err, report),
        }
    }

    /// The admitted request: parse, route, request phase, LLM step, response phase.
    async fn serve(
        &self,
        snap: &Snapshot,
        call: ChatCall,
        meter: &Arc<Meter>,
        report: &mut Report,
    ) -> Result<ChatReply, ChatError> {
        let control = call.cache_control;
        let deadline = client_deadline(call.deadline.as_ref()).map_err(ChatError::Invalid)?;
        let chat = parse_request(&call.body).map_err(ChatError::Invalid)?;
        let Some(pipeline) = snap.routes.get(&chat.model) else {
            return Err(ChatError::UnknownModel(UnknownModel::new(
                snap,
                &chat.model,
            )));
        };
        report.route = Some(pipeline.route.clone());
        let (max_calls, limiter) = llm_call_limit(&snap.config, &pipeline.route);
        meter.limit_calls(max_calls, limiter);
        if snap.config.telemetry.log_inputs {
            tracing::info!(
                target: "weir::input",
                messages = %crate::openai::request_to_json(&chat, None)["messages"],
                "request messages"
            );
        }
        let wants_stream = chat.stream;
        let include_usage = client_wants_usage(&chat.extra);
        let mut fwd = pipeline
            .start(&self.env, call.request_id.clone(), chat)
            .with_meter(meter.clone());

        let result = fwd.on_request().await;
        report.note_stages(&fwd);
        result.map_err(ChatError::Pipeline)?;
        let finish = Finish {
            as_stream: wants_stream,
            include_usage,
            meter,
            log_answer: snap.config.telemetry.log_inputs,
        };
        if let Some(answer) = fwd.take_answer() {
            return finish.whole(&mut fwd, answer, None, report).await;
        }

        let forward = forward_headers(&call.request_id, report.trace, call.tracestate);
        let input = StepInput {
            pipeline,
            forward: &forward,
            deadline,
            control,
            meter,
        };
        let step = llm_step(&snap.llm, fwd.request(), &input, report).await;
        let response = match step.result {
            Err(err) => return Err(ChatError::Step(err)),
            Ok(StepAnswer::Whole(response)) => response,
            Ok(StepAnswer::Stream(stream)) => {
                if !fwd.needs_full_response() {
                    let (events, end) = stream::relay(fwd, stream, include_usage, meter.clone());
                    report.stream_end = Some(end);
                    return Ok(ChatReply::Stream(events));
                }
                // The stream settles its cost and fills the cache as it is collected.
                stream.collect().await.map_err(ChatError::Step)?
            }
        };
        let again = Again {
            llm: &snap.llm,
            input,
        };
        finish.whole(&mut fwd, response, Some(again), report).await
    }
}

/// What asking the model again needs (a response-phase stage's `retry-response`).
struct Again<'a> {
    /// The LLM step.
    llm: &'a LlmStep,
    /// What the first call was made with.
    input: StepInput<'a>,
}

impl Again<'_> {
    /// The LLM step again, on the request the stages passed on followed by the refused answer
    /// and the stage's feedback; a streamed answer is collected whole.
    async fn ask(
        &self,
        request: &ChatRequest,
        refused: Option<crate::wit::Message>,
        ask: &crate::sandbox::RetryAsk,
        report: &mut Report,
    ) -> Result<ChatResponse, ChatError> {
        let mut request = request.clone();
        if let Some(feedback) = &ask.feedback {
            if let Some(refused) = refused {
                request.messages.push(refused);
            }
            request.messages.push(crate::wit::Message {
                role: "user".to_string(),
                content: Some(crate::wit::Content::Text(feedback.clone())),
                name: None,
                extra: "{}".to_string(),
            });
        }
        let input = StepInput {
            // The same request asked again must not be answered by the cache.
            control: CacheControl {
                no_cache: self.input.control.no_cache || ask.feedback.is_none(),
                ..self.input.control
            },
            ..self.input
        };
        let step = llm_step(self.llm, &request, &input, report).await;
        match step.result {
            Err(err) => Err(ChatError::Step(err)),
            Ok(StepAnswer::Whole(response)) => Ok(response),
            Ok(StepAnswer::Stream(stream)) => stream.collect().await.map_err(ChatError::Step),
        }
    }
}

impl ChatOutcome {
    /// No answer: `err`, noted in the report when it shed the request.
    fn failed(err: ChatError, mut report: Report) -> ChatOutcome {
        report.shed = err.shed();
        ChatOutcome {
            reply: Err(err),
            report,
        }
    }
}

/// What the LLM step is called with, besides the request itself.
#[derive(Clone, Copy)]
struct StepInput<'a> {
    /// The route's pipeline (its alias names the step's plan).
    pipeline: &'a Pipeline,
    /// Headers every upstream call carries.
    forward: &'a [(HeaderName, HeaderValue)],
    /// The client's deadline, when it set one.
    deadline: Option<std::time::Duration>,
    /// What the client's `Cache-Control` allows.
    control: CacheControl,
    /// The request's meter.
    meter: &'a Arc<Meter>,
}

/// The LLM step for `request` (as the request phase left it), which runs in its own
/// `weir.llm` span; notes its time, attempts and cache involvement in `report`.
async fn llm_step(
    llm: &LlmStep,
    request: &ChatRequest,
    input: &StepInput<'_>,
    report: &mut Report,
) -> StepReply {
    let StepInput {
        pipeline,
        forward,
        deadline,
        control,
        meter,
    } = *input;
    let llm_started = tokio::time::Instant::now();
    report.llm_call = Some((llm_started, request.model.clone()));
    let mut step = llm
        .complete(Call {
            route: &pipeline.route,
            request,
            forward,
            deadline,
            control,
            meter,
        })
        .await;
    // A retried answer adds its time and attempts to the first call's.
    report.llm = Some(report.llm.unwrap_or_default() + llm_started.elapsed());
    report.attempts.append(&mut step.attempts);
    report.cache = Some((step.cache, step.similarity));
    report.cache_key = step.key;
    step
}

/// How to answer with a whole response.
struct Finish<'a> {
    /// As SSE rather than JSON.
    as_stream: bool,
    /// Whether the client asked for the usage chunk.
    include_usage: bool,
    /// The request's meter, for `usage.cost`.
    meter: &'a Arc<Meter>,
    /// Log the answer's text (`telemetry.log_inputs`).
    log_answer: bool,
}

impl Finish<'_> {
    /// Runs the response phase on a whole response; the answer carries the request's cost
    /// so far for `usage.cost`. With `again` (an answer from the model), a stage may send
    /// it back (`retry-response`) up to the route's `max_output_retries` times: the model is
    /// asked again and the response phase runs on the new answer.
    async fn whole(
        &self,
        fwd: &mut Forwarded,
        mut response: ChatResponse,
        again: Option<Again<'_>>,
        report: &mut Report,
    ) -> Result<ChatReply, ChatError> {
        let most = again
            .as_ref()
            .map_or(0, |a| a.input.pipeline.max_output_retries);
        let mut retries = 0;
        let result = loop {
            let may_retry = retries < most;
            let (again, ask, refused) = match fwd.on_response(response, may_retry, retries).await {
                Ok(Responded::Done(response)) => break Ok(response),
                Err(err) => break Err(err),
                Ok(Responded::Retry {
                    ask,
                    stage,
                    refused,
                }) => match &again {
                    Some(again) => (again, ask, refused.choices.into_iter().next()),
                    // Not asked with `may_retry`, so `on_response` never answers this.
                    None => {
                        break Err(crate::pipeline::PipelineError::InvalidOutput {
                            stage: stage.to_string(),
                            retries,
                            reason: ask.reason,
                        });
                    }
                },
            };
            retries += 1;
            report.note_stages(fwd);
            let refused = refused.map(|choice| choice.message);
            response = match again.ask(fwd.request(), refused, &ask, report).await {
                Ok(response) => response,
                Err(err) => return Err(err),
            };
        };
        report.note_stages(fwd);
        let cost_pico = self.meter.total();
        if self.log_answer
            && let Ok(response) = &result
        {
            tracing::info!(target: "weir::input", answer = %response.text(), "answer");
        }
        let response = result.map_err(ChatError::Pipeline)?;
        Ok(ChatReply::Whole(Answer {
            response,
            cost_pico,
            as_sse: self.as_stream,
            include_usage: self.include_usage,
        }))
    }
}

/// The most LLM calls one request on `route` may make, before its key's limit: the route's
/// own limit, else the server's.
pub(super) fn llm_call_limit(config: &Config, route: &Arc<str>) -> (u32, CallLimiter) {
    let own = config
        .routes
        .iter()
        .find(|r| *r.model == **route)
        .and_then(|r| r.max_llm_calls_per_request);
    match own {
        Some(max) => (max, CallLimiter::Route(route.clone())),
        None => (config.cost.max_llm_calls_per_request, CallLimiter::Server),
    }
}

/// A client's `x-weir-deadline-ms`: it may shorten the route's deadline, never lengthen it.
pub fn client_deadline(
    value: Option<&HeaderValue>,
) -> Result<Option<std::time::Duration>, ApiError> {
    let Some(value) = value else {
        return Ok(None);
    };
    value
        .to_str()
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .filter(|ms| *ms > 0)
        .map(|ms| Some(std::time::Duration::from_millis(ms)))
        .ok_or_else(|| {
            ApiError::invalid(
                "invalid_deadline",
                None,
                "`x-weir-deadline-ms` must be a positive whole number of milliseconds",
            )
        })
}

/// Whether the client itself asked for the usage chunk (`stream_options.include_usage`).
fn client_wants_usage(extra: &str) -> bool {
    serde_json::from_str::<Value>(extra)
        .ok()
        .and_then(|v| v["stream_options"]["include_usage"].as_bool())
        .unwrap_or(false)
}

/// Headers every upstream call carries: `x-request-id`, and the W3C trace context
/// (`traceparent` naming weir's span, the client's `tracestate` passed on).
fn forward_headers(
    request_id: &str,
    trace: Option<TraceParent>,
    tracestate: Option<HeaderValue>,
) -> Vec<(HeaderName, HeaderValue)> {
    let mut out = Vec::with_capacity(3);
    if let Ok(value) = HeaderValue::from_str(request_id) {
        out.push((HeaderName::from_static("x-request-id"), value));
    }
    if let Some(trace) = trace
        && let Ok(value) = HeaderValue::from_str(&trace.header())
    {
        out.push((HeaderName::from_static("traceparent"), value));
        if let Some(state) = tracestate {
            out.push((HeaderName::from_static("tracestate"), state));
        }
    }
    out
}
