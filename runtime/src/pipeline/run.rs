//! Driving one request through the request and response phases.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tracing::Instrument;

use super::size::{self, Size};
use super::{OnError, Pipeline, PipelineError, PipelineStage, StageEnv};
use crate::cache::{StageOutput, stage_input_key};
use crate::host_api::{CallScope, HostContext, log_line};
use crate::stages::{Contract, FailureKind, RequestPhase, StageFailure, StageInstance};
use crate::wit::v2::TextDelta;
use crate::wit::{
    ChatRequest, ChatResponse, Phases, Rejection, RequestContext, RequestOutcome, StageError,
};

/// Which phase a [`StageRun`] records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// `on-request`.
    Request,
    /// `on-response`.
    Response,
    /// `on-response-chunk`, every chunk of one stream in one record.
    Chunks,
}

impl Phase {
    /// `request`, `response` or `chunks`.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Request => "request",
            Phase::Response => "response",
            Phase::Chunks => "chunks",
        }
    }
}

/// What one stage phase did: for `x-weir-stages`, `Server-Timing`, traces and metrics.
#[derive(Clone, Debug)]
pub struct StageRun {
    /// `name@abcd1234`.
    pub label: Arc<str>,
    /// The phase.
    pub phase: Phase,
    /// When the phase started.
    pub started: Instant,
    /// Wall time of the phase, instantiation included.
    pub elapsed: Duration,
    /// Fuel the call consumed (`None` when unmetered or the call never started).
    pub fuel_used: Option<u64>,
    /// `next`, `respond`, `ok`, `rejected`, or the failure kind; `skipped:<kind>` under the
    /// `skip` policy.
    pub outcome: std::borrow::Cow<'static, str>,
}

/// How the response phase ended.
#[derive(Debug)]
pub enum Responded {
    /// With this response, every stage's response phase run.
    Done(ChatResponse),
    /// A stage asked for the model to be asked again (`retry-response`): the caller runs the
    /// LLM step again and then [`Forwarded::on_response`] on the new answer, on the same
    /// instances (kept for it).
    Retry {
        /// The stage's label.
        stage: Arc<str>,
        /// Why, and what to tell the model.
        ask: crate::sandbox::RetryAsk,
        /// The response as that stage saw it (the stages after it in the response phase
        /// already ran on it).
        refused: ChatResponse,
    },
}

/// A stage that ran its request phase and still has a response phase to run.
struct Held {
    /// Index into the pipeline's stages.
    index: usize,
    /// The live instance of a 0.1 stage; `None` for a 0.2 stage (its state is in `state`) and
    /// a response-only stage: a fresh instance is made when its response phase runs.
    instance: Option<StageInstance>,
    /// What a 0.2 stage's `on-request` handed over (then what its last chunk returned).
    state: Vec<u8>,
    /// The request as this stage passed it on.
    request: ChatRequest,
    /// Its `on-response-chunk` calls so far: count, time, fuel.
    chunks: ChunkTally,
}

/// A stage's `on-response-chunk` calls on one stream, recorded as one [`StageRun`].
#[derive(Default)]
struct ChunkTally {
    /// When the first call started.
    started: Option<Instant>,
    /// Calls made.
    calls: u32,
    /// Their wall time, instantiation included.
    elapsed: Duration,
    /// Their fuel.
    fuel: Option<u64>,
}

/// One request in flight through a pipeline. Dropping it releases every instance it holds.
pub struct Forwarded {
    /// The pipeline snapshot the request runs on, fixed for its whole life.
    pipeline: Arc<Pipeline>,
    /// Sandbox, services and reaper.
    env: StageEnv,
    /// The request id.
    request_id: Arc<str>,
    /// The request as it stands (after the request phase: what goes upstream).
    request: ChatRequest,
    /// A response a stage answered with (short-circuit), until taken.
    answer: Option<ChatResponse>,
    /// Stages waiting for their response phase, in request order.
    held: Vec<Held>,
    /// What ran, in order.
    runs: Vec<StageRun>,
    /// The request's meter, handed to its stages' LLM calls.
    meter: Option<Arc<crate::cost::Meter>>,
    /// The `weir.stage` span of the phase running now, closed when it is recorded.
    span: tracing::Span,
    /// The names of the stages whose failure the `degrade` policy passed over, in order.
    degraded: Vec<Arc<str>>,
}

impl Pipeline {
    /// Starts `request` on this pipeline snapshot; nothing runs until
    /// [`Forwarded::on_request`].
    pub fn start(
        self: &Arc<Self>,
        env: &StageEnv,
        request_id: Arc<str>,
        request: ChatRequest,
    ) -> Forwarded {
        Forwarded {
            pipeline: self.clone(),
            env: env.clone(),
            request_id,
            request,
            answer: None,
            held: Vec::new(),
            runs: Vec::with_capacity(self.stages.len() * 2),
            meter: None,
            span: tracing::Span::none(),
            degraded: Vec::new(),
        }
    }
}

impl Forwarded {
    /// Meters the stages' LLM calls with `meter` (the request's).
    pub fn with_meter(mut self, meter: Arc<crate::cost::Meter>) -> Forwarded {
        self.meter = Some(meter);
        self
    }

    /// Fuel each stage burned so far, by stage label, in run order (both phases summed).
    pub fn fuel_by_stage(&self) -> Vec<(Arc<str>, u64)> {
        let mut out: Vec<(Arc<str>, u64)> = Vec::new();
        for run in &self.runs {
            let Some(fuel) = run.fuel_used else { continue };
            match out.iter_mut().find(|(label, _)| *label == run.label) {
                Some((_, total)) => *total += fuel,
                None => out.push((run.label.clone(), fuel)),
            }
        }
        out
    }

    /// Runs every stage's `on-request` in order, stopping at a short-circuit.
    pub async fn on_request(&mut self) -> Result<(), PipelineError> {
        let pipeline = self.pipeline.clone();
        for (index, spec) in pipeline.stages.iter().enumerate() {
            let phases = spec.stage.info.phases;
            if !phases.contains(Phases::REQUEST) {
                if phases.contains(Phases::RESPONSE) {
                    self.held.push(Held {
                        index,
                        instance: None,
                        state: Vec::new(),
                        request: self.request.clone(),
                        chunks: ChunkTally::default(),
                    });
                }
                continue;
            }
            let started = Instant::now();
            self.span = stage_span(spec, Phase::Request);
            // A deterministic stage's outcome may come from the output cache when the outcome
            // is all its request phase leaves behind (see `cache::stage`).
            let cacheable =
                phases == Phases::REQUEST || matches!(spec.stage.contract, Contract::V2 { .. });
            let output_key = (cacheable && spec.stage.info.deterministic).then(|| {
                stage_input_key(
                    spec.stage.digest.as_bytes(),
                    &spec.identity.config,
                    &self.pipeline.route,
                    &self.request,
                )
            });
            if let Some(cached) = output_key.as_ref().and_then(|k| self.env.outputs.get(k)) {
                match &*cached {
                    StageOutput::Next { request, state } => {
                        self.record(spec, Phase::Request, started, None, "next (cached)");
                        self.request = request.clone();
                        if phases.contains(Phases::RESPONSE) {
                            // Its response phase runs on a fresh instance from the state.
                            self.held.push(Held {
                                index,
                                instance: None,
                                state: state.clone(),
                                request: self.request.clone(),
                                chunks: ChunkTally::default(),
                            });
                        }
                        continue;
                    }
                    StageOutput::Respond(response) => {
                        self.record(spec, Phase::Request, started, None, "respond (cached)");
                        self.answer = Some(response.clone());
                        return Ok(());
                    }
                    StageOutput::Reject(rejection) => {
                        return Err(self.rejected(
                            spec,
                            Phase::Request,
                            started,
                            None,
                            rejection.clone(),
                        ));
                    }
                }
            }
            let mut instance = match instantiate(
                &self.env,
                &self.request_id,
                &self.pipeline.route,
                &self.meter,
                spec,
            )
            .instrument(self.span.clone())
            .await
            {
                Ok(instance) => instance,
                Err(failure) => {
                    self.apply_policy(spec, Phase::Request, started, None, failure)?;
                    continue;
                }
            };
            let ctx = self.context(spec);
            let input = self.request.size();
            let result = instance
                .on_request(&ctx, &self.request)
                .instrument(self.span.clone())
                .await;
            let result = size::bound(&spec.identity.label, self.output_cap(), input, result);
            let fuel = fuel_used(&instance);
            match result {
                Ok(Ok(RequestPhase {
                    outcome: RequestOutcome::Next(request),
                    state,
                })) => {
                    self.record(spec, Phase::Request, started, fuel, "next");
                    if let Some(key) = output_key {
                        let state = state.clone().unwrap_or_default();
                        let output = StageOutput::Next {
                            request: request.clone(),
                            state,
                        };
                        self.env.outputs.put(key, output);
                    }
                    self.request = request;
                    if phases.contains(Phases::RESPONSE) {
                        // A 0.2 stage handed its state over: unless the pool has room to
                        // spare, its instance goes back now, so a slow model holds bytes, not
                        // an instance.
                        let (instance, state) = match state {
                            Some(state) if !self.env.sandbox.has_headroom() => {
                                instance.release(&self.env.reaper);
                                (None, state)
                            }
                            Some(state) => (Some(instance), state),
                            None => (Some(instance), Vec::new()),
                        };
                        self.held.push(Held {
                            index,
                            instance,
                            state,
                            request: self.request.clone(),
                            chunks: ChunkTally::default(),
                        });
                    } else {
                        instance.release(&self.env.reaper);
                    }
                }
                Ok(Ok(RequestPhase {
                    outcome: RequestOutcome::Respond(response),
                    ..
                })) => {
                    self.record(spec, Phase::Request, started, fuel, "respond");
                    instance.release(&self.env.reaper);
                    if let Some(key) = output_key {
                        self.env
                            .outputs
                            .put(key, StageOutput::Respond(response.clone()));
                    }
                    self.answer = Some(response);
                    return Ok(());
                }
                Ok(Err(StageError::Reject(rejection))) => {
                    instance.release(&self.env.reaper);
                    if let Some(key) = output_key {
                        self.env
                            .outputs
                            .put(key, StageOutput::Reject(rejection.clone()));
                    }
                    return Err(self.rejected(spec, Phase::Request, started, fuel, rejection));
                }
                Ok(Err(StageError::Fail(message))) => {
                    instance.release(&self.env.reaper);
                    let failure =
                        StageFailure::new(&spec.identity.label, FailureKind::Failed, message);
                    self.apply_policy(spec, Phase::Request, started, fuel, failure)?;
                }
                Err(failure) => {
                    instance.release(&self.env.reaper);
                    self.apply_policy(spec, Phase::Request, started, fuel, failure)?;
                }
            }
        }
        Ok(())
    }

    /// The request as the stages left it: what the LLM step should send.
    pub fn request(&self) -> &ChatRequest {
        &self.request
    }

    /// The response a stage answered with instead of the model, if any.
    pub fn take_answer(&mut self) -> Option<ChatResponse> {
        self.answer.take()
    }

    /// True when some stage still has a response phase to run.
    pub fn has_response_phase(&self) -> bool {
        !self.held.is_empty()
    }

    /// True when a stage waiting for its response phase must see the whole response even
    /// for a stream (the caller then buffers the stream).
    pub fn needs_full_response(&self) -> bool {
        self.held
            .iter()
            .any(|h| self.pipeline.stages[h.index].stage.info.needs_full_response)
    }

    /// Runs the held stages' `on-response` in reverse order on `response`. Unless
    /// `may_retry`, each instance is released as soon as its phase has run, and a stage that
    /// asks for a retry (`retry-response`) ends the request with
    /// [`PipelineError::InvalidOutput`] after `retries` retries. With `may_retry` the
    /// instances are kept until the phase ends, and an ask stops the phase at once:
    /// [`Responded::Retry`], with every held stage ready to run again on the next answer.
    pub async fn on_response(
        &mut self,
        response: ChatResponse,
        may_retry: bool,
        retries: u32,
    ) -> Result<Responded, PipelineError> {
        let mut ran = Vec::new();
        let mut response = response;
        let result = self
            .response_phase(&mut response, may_retry, retries, &mut ran)
            .await;
        match result {
            Ok(Some((stage, ask))) => {
                // Popped last-first: back in request order after the stages not yet run.
                self.held.extend(ran.into_iter().rev());
                Ok(Responded::Retry {
                    stage,
                    ask,
                    refused: response,
                })
            }
            Ok(None) => {
                for held in ran {
                    if let Some(instance) = held.instance {
                        instance.release(&self.env.reaper);
                    }
                }
                Ok(Responded::Done(response))
            }
            Err(err) => {
                // Released by `Drop`.
                self.held.extend(ran);
                Err(err)
            }
        }
    }

    /// The response phase proper: `Some` with the stage and its ask when one asked for a
    /// retry and `may_retry`. The stages that ran are in `ran` (with their instances when
    /// `may_retry`), last-run last.
    async fn response_phase(
        &mut self,
        response: &mut ChatResponse,
        may_retry: bool,
        retries: u32,
        ran: &mut Vec<Held>,
    ) -> Result<Option<(Arc<str>, crate::sandbox::RetryAsk)>, PipelineError> {
        let pipeline = self.pipeline.clone();
        while let Some(mut held) = self.held.pop() {
            let spec = &pipeline.stages[held.index];
            if let Contract::V2 { whole: false, .. } = spec.stage.contract {
                // Only a chunk hook: a whole answer passes it by.
                ran.push(held);
                continue;
            }
            let started = Instant::now();
            self.span = stage_span(spec, Phase::Response);
            let mut instance = match held.instance.take() {
                Some(instance) => instance,
                None => match instantiate(
                    &self.env,
                    &self.request_id,
                    &self.pipeline.route,
                    &self.meter,
                    spec,
                )
                .instrument(self.span.clone())
                .await
                {
                    Ok(instance) => instance,
                    Err(failure) => {
                        ran.push(held);
                        self.apply_policy(spec, Phase::Response, started, None, failure)?;
                        continue;
                    }
                },
            };
            let ctx = self.context(spec);
            let input = response.size();
            let result = instance
                .on_response(&ctx, &held.state, &held.request, response)
                .instrument(self.span.clone())
                .await;
            let result = size::bound(&spec.identity.label, self.output_cap(), input, result);
            let fuel = fuel_used(&instance);
            let ask = instance.take_retry();
            // A 0.2 stage runs again from its state on a fresh instance.
            if may_retry && spec.stage.contract == Contract::V1 {
                held.instance = Some(instance);
            } else {
                instance.release(&self.env.reaper);
            }
            ran.push(held);
            match result {
                Ok(Ok(rewritten)) => match ask {
                    None => {
                        self.record(spec, Phase::Response, started, fuel, "ok");
                        *response = rewritten;
                    }
                    Some(ask) => {
                        self.record(spec, Phase::Response, started, fuel, "retry");
                        tracing::info!(
                            stage = &*spec.identity.label,
                            request_id = &*self.request_id,
                            reason = %self.loggable(&ask.reason),
                            retries,
                            "a stage refused the model's answer"
                        );
                        if may_retry {
                            return Ok(Some((spec.identity.label.clone(), ask)));
                        }
                        return Err(PipelineError::InvalidOutput {
                            stage: spec.identity.label.to_string(),
                            retries,
                            reason: ask.reason,
                        });
                    }
                },
                Ok(Err(StageError::Reject(rejection))) => {
                    return Err(self.rejected(spec, Phase::Response, started, fuel, rejection));
                }
                Ok(Err(StageError::Fail(message))) => {
                    let failure =
                        StageFailure::new(&spec.identity.label, FailureKind::Failed, message);
                    self.apply_policy(spec, Phase::Response, started, fuel, failure)?;
                }
                Err(failure) => self.apply_policy(spec, Phase::Response, started, fuel, failure)?,
            }
        }
        Ok(None)
    }

    /// True when some held stage sees a streamed answer chunk by chunk (`on-response-chunk`).
    pub fn has_chunk_hooks(&self) -> bool {
        self.held.iter().any(|h| self.chunk_hook(h))
    }

    fn chunk_hook(&self, held: &Held) -> bool {
        matches!(
            self.pipeline.stages[held.index].stage.contract,
            Contract::V2 { chunks: true, .. }
        )
    }

    /// Runs the held stages' `on-response-chunk`, in reverse order, on one chunk's `deltas`:
    /// what the client gets of them. Each call is a fresh instance with the state the stage's
    /// last call returned. A stage passed over by its failure policy sees no more chunks (text
    /// it held back is lost).
    pub async fn on_chunk(
        &mut self,
        mut deltas: Vec<TextDelta>,
    ) -> Result<Vec<TextDelta>, PipelineError> {
        let pipeline = self.pipeline.clone();
        let mut at = self.held.len();
        while at > 0 {
            at -= 1;
            if !self.chunk_hook(&self.held[at]) {
                continue;
            }
            let spec = &pipeline.stages[self.held[at].index];
            let started = Instant::now();
            let instance = match self.held[at].instance.take() {
                Some(instance) => Ok(instance),
                None => {
                    instantiate(
                        &self.env,
                        &self.request_id,
                        &self.pipeline.route,
                        &self.meter,
                        spec,
                    )
                    .await
                }
            };
            let mut instance = match instance {
                Ok(instance) => instance,
                Err(failure) => {
                    self.chunk_failed(at, spec, started, None, failure)?;
                    continue;
                }
            };
            let ctx = self.context(spec);
            // The state the stage was given does not count as input: what it returns (state
            // and text) is bounded by this chunk's text plus the cap, so a stage cannot grow
            // its state by the cap on every chunk of a long stream.
            let input: usize = deltas.iter().map(|d| d.text.len()).sum();
            let result = instance
                .on_response_chunk(&ctx, &self.held[at].state, &deltas)
                .await;
            let result = size::bound(&spec.identity.label, self.output_cap(), input, result);
            let fuel = fuel_used(&instance);
            // Kept for the next chunk only while the pool has room to spare.
            if matches!(result, Ok(Ok(_))) && self.env.sandbox.has_headroom() {
                self.held[at].instance = Some(instance);
            } else {
                instance.release(&self.env.reaper);
            }
            let tally = &mut self.held[at].chunks;
            tally.started.get_or_insert(started);
            tally.calls += 1;
            tally.elapsed += started.elapsed();
            if let Some(fuel) = fuel {
                *tally.fuel.get_or_insert(0) += fuel;
            }
            match result {
                Ok(Ok(done)) => {
                    self.held[at].state = done.state;
                    deltas = done.deltas;
                }
                Ok(Err(StageError::Reject(rejection))) => {
                    self.end_chunks();
                    return Err(self.rejected(spec, Phase::Chunks, started, fuel, rejection));
                }
                Ok(Err(StageError::Fail(message))) => {
                    let failure =
                        StageFailure::new(&spec.identity.label, FailureKind::Failed, message);
                    self.chunk_failed(at, spec, started, fuel, failure)?;
                }
                Err(failure) => self.chunk_failed(at, spec, started, fuel, failure)?,
            }
        }
        Ok(deltas)
    }

    /// A chunk hook failed: the stage's policy decides; passed over, it sees no more chunks.
    fn chunk_failed(
        &mut self,
        at: usize,
        spec: &PipelineStage,
        started: Instant,
        fuel: Option<u64>,
        failure: StageFailure,
    ) -> Result<(), PipelineError> {
        let held = self.held.remove(at);
        if let Some(instance) = held.instance {
            instance.release(&self.env.reaper);
        }
        self.record_chunks(spec, &held.chunks);
        let result = self.apply_policy(spec, Phase::Chunks, started, fuel, failure);
        if result.is_err() {
            self.end_chunks();
        }
        result
    }

    /// The stream is over: records each chunk hook's calls as one run, and lets the stages
    /// go (those with only a chunk hook, and 0.2 ones, are done; a 0.1 stage stays for its
    /// observe-only `on-response`).
    pub fn end_chunks(&mut self) {
        let pipeline = self.pipeline.clone();
        let mut held = std::mem::take(&mut self.held);
        let mut done = Vec::new();
        for h in held.drain(..) {
            let spec = &pipeline.stages[h.index];
            if spec.stage.contract == Contract::V1 {
                self.held.push(h);
                continue;
            }
            self.record_chunks(spec, &h.chunks);
            done.push(h);
        }
        for h in done {
            if let Some(instance) = h.instance {
                instance.release(&self.env.reaper);
            }
        }
    }

    fn record_chunks(&mut self, spec: &PipelineStage, tally: &ChunkTally) {
        let Some(started) = tally.started else {
            return;
        };
        let outcome = format!("chunks:{}", tally.calls);
        crate::telemetry::stage(
            &spec.identity.name,
            Phase::Chunks.as_str(),
            "ok",
            tally.elapsed,
            tally.fuel,
        );
        self.runs.push(StageRun {
            label: spec.identity.label.clone(),
            phase: Phase::Chunks,
            started,
            elapsed: tally.elapsed,
            fuel_used: tally.fuel,
            outcome: outcome.into(),
        });
    }

    /// The names of the stages whose failure the `degrade` policy passed over, in order.
    pub fn degraded(&self) -> &[Arc<str>] {
        &self.degraded
    }

    /// What ran so far, in order.
    pub fn runs(&self) -> &[StageRun] {
        &self.runs
    }

    /// The labels of the stages that ran, each once, in request order (`x-weir-stages`).
    pub fn stage_labels(&self) -> Vec<Arc<str>> {
        let mut labels: Vec<Arc<str>> = Vec::with_capacity(self.runs.len());
        for run in &self.runs {
            if !labels
                .iter()
                .any(|l| Arc::ptr_eq(l, &run.label) || **l == *run.label)
            {
                labels.push(run.label.clone());
            }
        }
        labels
    }

    /// A failure's detail as a log field: it may be the guest's own `fail` message, so it is
    /// escaped and cut like a guest log line.
    fn loggable<'a>(&self, detail: &'a str) -> std::borrow::Cow<'a, str> {
        log_line(detail, self.env.services.log_line_max_bytes)
    }

    /// `sandbox.stage_output_max_bytes`.
    fn output_cap(&self) -> usize {
        self.env.sandbox.settings().stage_output_max_bytes
    }

    fn context(&self, spec: &PipelineStage) -> RequestContext {
        RequestContext {
            request_id: self.request_id.to_string(),
            route: self.pipeline.route.to_string(),
            stage: spec.identity.name.to_string(),
        }
    }

    fn record(
        &mut self,
        spec: &PipelineStage,
        phase: Phase,
        started: Instant,
        fuel_used: Option<u64>,
        outcome: impl Into<std::borrow::Cow<'static, str>>,
    ) {
        let outcome = outcome.into();
        let elapsed = started.elapsed();
        let span = std::mem::replace(&mut self.span, tracing::Span::none());
        if let Some(fuel) = fuel_used {
            span.record("weir.fuel", fuel);
        }
        span.record("weir.outcome", &*outcome);
        drop(span);
        crate::telemetry::stage(
            &spec.identity.name,
            phase.as_str(),
            &outcome,
            elapsed,
            fuel_used,
        );
        self.runs.push(StageRun {
            label: spec.identity.label.clone(),
            phase,
            started,
            elapsed,
            fuel_used,
            outcome,
        });
    }

    fn rejected(
        &mut self,
        spec: &PipelineStage,
        phase: Phase,
        started: Instant,
        fuel: Option<u64>,
        rejection: Rejection,
    ) -> PipelineError {
        self.record(spec, phase, started, fuel, "rejected");
        if !(400..=599).contains(&rejection.status) {
            return PipelineError::Stage(StageFailure::new(
                &spec.identity.label,
                FailureKind::Failed,
                format!(
                    "rejected with status {}, outside 400..=599 (code {:?})",
                    rejection.status, rejection.code
                ),
            ));
        }
        PipelineError::Rejected {
            stage: spec.identity.label.to_string(),
            status: rejection.status,
            code: rejection.code,
            message: rejection.message,
        }
    }

    /// Applies the stage's `on_error` policy: `Err` to end the request, `Ok` to go on.
    /// An exhausted pool always ends the request (shed), whatever the policy.
    fn apply_policy(
        &mut self,
        spec: &PipelineStage,
        phase: Phase,
        started: Instant,
        fuel: Option<u64>,
        failure: StageFailure,
    ) -> Result<(), PipelineError> {
        if failure.kind != FailureKind::PoolExhausted && spec.on_error != OnError::Fail {
            let degrade = spec.on_error == OnError::Degrade;
            tracing::warn!(
                stage = &*spec.identity.label,
                request_id = &*self.request_id,
                kind = failure.kind.code(),
                detail = %self.loggable(&failure.detail),
                policy = if degrade { "degrade" } else { "skip" },
                "stage failed; passed over by its on_error policy"
            );
            let verb = if degrade { "degraded" } else { "skipped" };
            self.record(
                spec,
                phase,
                started,
                fuel,
                format!("{verb}:{}", failure.kind),
            );
            if degrade && !self.degraded.contains(&spec.identity.name) {
                crate::telemetry::degraded(&self.pipeline.route, &spec.identity.name);
                self.degraded.push(spec.identity.name.clone());
            }
            return Ok(());
        }
        tracing::warn!(
            stage = &*spec.identity.label,
            request_id = &*self.request_id,
            kind = failure.kind.code(),
            detail = %self.loggable(&failure.detail),
            "stage failed"
        );
        self.record(spec, phase, started, fuel, failure.kind.code());
        Err(PipelineError::Stage(failure))
    }
}

impl Drop for Forwarded {
    fn drop(&mut self) {
        for held in self.held.drain(..) {
            if let Some(instance) = held.instance {
                instance.release(&self.env.reaper);
            }
        }
    }
}

/// A fresh instance of `spec` for this request. A free function over the fields it needs, so
/// the future borrows no `Forwarded` (which is `Send` but not `Sync`).
async fn instantiate(
    env: &StageEnv,
    request_id: &Arc<str>,
    route: &Arc<str>,
    meter: &Option<Arc<crate::cost::Meter>>,
    spec: &PipelineStage,
) -> Result<StageInstance, StageFailure> {
    let host = HostContext {
        stage: spec.identity.clone(),
        services: env.services.clone(),
        request_id: request_id.clone(),
        route: route.clone(),
        // Without the request's meter (a run outside `App::chat`: tests), each instance is
        // metered on its own, under the default limits.
        scope: CallScope::Request(
            meter
                .clone()
                .unwrap_or_else(|| crate::cost::Meter::new(None)),
        ),
    };
    spec.stage
        .instantiate(&env.sandbox, host, &spec.limits)
        .await
}

/// The `weir.stage` span of one stage phase.
fn stage_span(spec: &PipelineStage, phase: Phase) -> tracing::Span {
    let label = &*spec.identity.label;
    let version = label.rsplit_once('@').map_or("", |(_, version)| version);
    tracing::debug_span!(
        target: "weir::stage",
        "weir.stage",
        otel.name = %format_args!("stage {} {}", spec.identity.name, phase.as_str()),
        weir.stage = &*spec.identity.name,
        weir.stage.version = version,
        weir.phase = phase.as_str(),
        weir.fuel = tracing::field::Empty,
        weir.outcome = tracing::field::Empty,
    )
}

fn fuel_used(instance: &StageInstance) -> Option<u64> {
    Some(
        instance
            .fuel_budget()?
            .saturating_sub(instance.fuel_remaining()?),
    )
}
