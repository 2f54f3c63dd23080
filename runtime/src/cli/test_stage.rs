//! `weir test-stage STAGE.wasm`: a stage author's unit-test loop, no server needed. Loads the
//! stage as `weir serve` would, runs `on-request` on a request (a file, or a sample) and then
//! `on-response` on a response, each on the instance of that request in the real sandbox, and
//! prints each phase's outcome, fuel and time; the stage's log lines go to stderr.
//!
//! `complete()` answers with `--llm-answer` when given, else fails `llm_unavailable`; the
//! stage cache lives as long as the command (`--repeat` runs the request that many times, so a
//! stage's cache is seen warm).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use futures_util::future::BoxFuture;

use crate::config::{CallLimits, SandboxSettings};
use crate::host_api::{
    CallScope, Caller, HostContext, HostServices, LlmAccess, NoLlm, StageIdentity, log_line,
};
use crate::openai::{parse_request, parse_response, request_to_json, response_to_json};
use crate::sandbox::{Reaper, Sandbox};
use crate::stages::{LoadedStage, StageFailure, StageInstance};
use crate::wit::{
    ChatRequest, ChatResponse, Choice, LlmError, Message, Phases, RequestContext, RequestOutcome,
    StageError, Usage,
};

/// Largest request or response file read, bytes (the server's default body cap).
const MAX_FILE_BYTES: u64 = 1 << 20;

/// The request used when none is given: a user message with an e-mail address and a phone
/// number, the kind of text first-party stages act on.
const SAMPLE_REQUEST: &str = r#"{"model":"demo","messages":[
  {"role":"user","content":"Hello! Mail me at jane@example.com or call +1 415 555 0100."}]}"#;

/// Arguments of `weir test-stage`.
#[derive(Debug, clap::Args)]
pub struct TestStageArgs {
    /// The stage component (`.wasm`).
    pub stage: PathBuf,
    /// The chat request (OpenAI JSON) for `on-request`; `-` reads stdin. Default: a sample
    /// user message with an e-mail address and a phone number.
    #[arg(long, value_name = "FILE")]
    pub request: Option<PathBuf>,
    /// The response (OpenAI JSON) for `on-response`. Default: one answer that repeats the
    /// last user message of the request `on-request` passed on.
    #[arg(long, value_name = "FILE")]
    pub response: Option<PathBuf>,
    /// A stage config value, `key=value` (repeatable); the stage reads `value` as a string,
    /// as it would a TOML string (other TOML values reach a stage as JSON text: write them so).
    #[arg(long = "config", value_name = "KEY=VALUE")]
    pub config: Vec<String>,
    /// What `complete()` answers (the text of one choice); without it `complete()` fails with
    /// `llm_unavailable`.
    #[arg(long, value_name = "TEXT")]
    pub llm_answer: Option<String>,
    /// Fuel per phase call (0: unmetered). Default: the `[sandbox]` default, 100,000,000.
    #[arg(long)]
    pub fuel: Option<u64>,
    /// Deadline per phase call, milliseconds. Default: the `[sandbox]` default, 200.
    #[arg(long)]
    pub deadline_ms: Option<u64>,
    /// Memory cap of the instance, MiB. Default: the `[sandbox]` default, 64.
    #[arg(long)]
    pub memory_limit_mib: Option<u64>,
    /// Run the request this many times, each on a fresh instance (the stage cache is kept):
    /// the figures printed are the last run's, with the median time of all.
    #[arg(long, default_value_t = 1)]
    pub repeat: u32,
    /// `[sandbox] large_stage_mib`: stage files this big or bigger run with copy-on-write
    /// memory images (0: this stage does; 4096: it does not).
    #[arg(long, default_value_t = 1)]
    pub large_stage_mib: u32,
}

/// Runs the stage; exit 0 when every phase ran (an answer, a rewrite or a rejection), 1 when
/// the stage failed (a trap, a limit, `fail`) or its files are unusable.
pub fn run(args: TestStageArgs) -> ExitCode {
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_target(false)
        .without_time()
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "weir::guest=trace,warn".into()),
        )
        .try_init();
    let runtime = match super::one_thread_runtime() {
        Ok(runtime) => runtime,
        Err(code) => return code,
    };
    match runtime.block_on(test(&args)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(err) => {
            eprintln!("error: {}", log_line(&err, usize::MAX));
            ExitCode::FAILURE
        }
    }
}

/// The limits of each phase call: the `[sandbox]` defaults under the flags given.
fn limits(args: &TestStageArgs) -> Result<CallLimits, String> {
    let mut limits = SandboxSettings::default().defaults;
    if let Some(fuel) = args.fuel {
        limits.fuel = (fuel > 0).then_some(fuel);
    }
    if let Some(ms) = args.deadline_ms {
        if !(1..=600_000).contains(&ms) {
            return Err(format!("--deadline-ms must be 1..=600000, got {ms}"));
        }
        limits.deadline = Duration::from_millis(ms);
    }
    if let Some(mib) = args.memory_limit_mib {
        if !(1..=4096).contains(&mib) {
            return Err(format!("--memory-limit-mib must be 1..=4096, got {mib}"));
        }
        limits.memory_bytes = mib << 20;
    }
    Ok(limits)
}

fn config(pairs: &[String]) -> Result<BTreeMap<String, String>, String> {
    pairs
        .iter()
        .map(|pair| match pair.split_once('=') {
            Some((key, value)) if !key.is_empty() => Ok((key.to_string(), value.to_string())),
            _ => Err(format!("--config expects KEY=VALUE, got {pair:?}")),
        })
        .collect()
}

/// Reads a JSON file (`-`: stdin) of at most [`MAX_FILE_BYTES`].
fn read(path: &Path) -> Result<Vec<u8>, String> {
    use std::io::Read;
    let mut bytes = Vec::new();
    let result = if path == Path::new("-") {
        std::io::stdin()
            .take(MAX_FILE_BYTES + 1)
            .read_to_end(&mut bytes)
    } else {
        std::fs::File::open(path).and_then(|f| f.take(MAX_FILE_BYTES + 1).read_to_end(&mut bytes))
    };
    result.map_err(|err| format!("{}: cannot read: {err}", path.display()))?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(format!(
            "{}: larger than {MAX_FILE_BYTES} bytes",
            path.display()
        ));
    }
    Ok(bytes)
}

async fn test(args: &TestStageArgs) -> Result<bool, String> {
    let limits = limits(args)?;
    let config = config(&args.config)?;
    let request = match &args.request {
        Some(path) => parse_request(&read(path)?)
            .map_err(|err| format!("{}: {}", path.display(), err.message))?,
        None => parse_request(SAMPLE_REQUEST.as_bytes()).map_err(|err| err.message)?,
    };
    let response = match &args.response {
        Some(path) => Some(parse_response(&read(path)?).ok_or_else(|| {
            format!(
                "{}: not a chat completion response (OpenAI JSON)",
                path.display()
            )
        })?),
        None => None,
    };

    let settings = SandboxSettings {
        pool_size: 4,
        max_memory_bytes: limits.memory_bytes,
        fuel_metering: limits.fuel.is_some() || args.fuel.is_none(),
        large_stage_mib: args.large_stage_mib.min(4096),
        ..SandboxSettings::default()
    };
    let sandbox = Sandbox::new(settings).map_err(|err| err.to_string())?;
    let llm: Arc<dyn LlmAccess> = match &args.llm_answer {
        Some(text) => Arc::new(Canned(text.clone())),
        None => Arc::new(NoLlm),
    };
    let services = Arc::new(HostServices::new(
        llm,
        sandbox.settings().log_line_max_bytes,
    ));
    let stage = LoadedStage::load(&sandbox, &services, &args.stage)
        .await
        .map_err(|err| err.to_string())?;
    let size = std::fs::metadata(&args.stage).map_or(0, |m| m.len());
    println!(
        "{}",
        log_line(&super::check::summary(&stage, &sandbox, size), usize::MAX)
    );

    let identity = Arc::new(StageIdentity {
        name: stage.info.name.as_str().into(),
        label: stage.label(&stage.info.name).into(),
        config,
        max_llm_calls: 16,
        services: Arc::default(),
    });
    let reaper = Reaper::inline();
    let mut times = Vec::new();
    let mut ok = true;
    for run in 1..=args.repeat.max(1) {
        let last = run == args.repeat.max(1);
        let host = HostContext {
            stage: identity.clone(),
            services: services.clone(),
            request_id: format!("test-{run}").into(),
            route: request.model.as_str().into(),
            scope: CallScope::Request(crate::cost::Meter::new(None)),
        };
        let ctx = RequestContext {
            request_id: host.request_id.to_string(),
            route: request.model.clone(),
            stage: stage.info.name.clone(),
        };
        let started = Instant::now();
        let mut instance = match stage.instantiate(&sandbox, host.clone(), &limits).await {
            Ok(instance) => instance,
            Err(failure) => {
                println!("instantiate: FAILED {}: {}", failure.kind, failure.detail);
                return Ok(false);
            }
        };
        let instantiated = started.elapsed();
        let fresh = Fresh {
            sandbox: &sandbox,
            host: &host,
            limits: &limits,
            reaper: &reaper,
        };
        let outcome = phases(
            &stage,
            &mut instance,
            &fresh,
            &ctx,
            &request,
            response.as_ref(),
            last,
        )
        .await;
        times.push(started.elapsed());
        if last {
            println!("instantiate: {}", millis(instantiated));
        }
        instance.release(&reaper);
        ok &= outcome;
    }
    if times.len() > 1 {
        times.sort();
        println!(
            "{} runs: median {} per request (instantiate + phases)",
            times.len(),
            millis(times[times.len() / 2])
        );
    }
    Ok(ok)
}

/// The fuel and time of one `on-request` on the sample request, for `weir check`: one line.
pub(super) async fn sample(
    sandbox: &Sandbox,
    services: &Arc<HostServices>,
    stage: &LoadedStage,
) -> String {
    if !stage.info.phases.contains(Phases::REQUEST) {
        return "no on-request to sample".to_string();
    }
    let limits = sandbox.settings().defaults;
    let request = match parse_request(SAMPLE_REQUEST.as_bytes()) {
        Ok(request) => request,
        Err(err) => return err.message,
    };
    let host = HostContext {
        stage: Arc::new(StageIdentity {
            name: stage.info.name.as_str().into(),
            label: stage.label(&stage.info.name).into(),
            config: BTreeMap::new(),
            max_llm_calls: 0,
            services: Arc::default(),
        }),
        services: services.clone(),
        request_id: "check".into(),
        route: request.model.as_str().into(),
        scope: CallScope::Request(crate::cost::Meter::new(None)),
    };
    let ctx = RequestContext {
        request_id: "check".to_string(),
        route: request.model.clone(),
        stage: stage.info.name.clone(),
    };
    let started = Instant::now();
    let mut instance = match stage.instantiate(sandbox, host, &limits).await {
        Ok(instance) => instance,
        Err(failure) => return format!("sample request: instantiate failed: {}", failed(&failure)),
    };
    let instantiated = millis(started.elapsed());
    let started = Instant::now();
    let result = instance.on_request(&ctx, &request).await;
    let cost = cost(&instance, started);
    instance.release(&Reaper::inline());
    let outcome = match result.map(|r| r.map(|done| done.outcome)) {
        Ok(Ok(RequestOutcome::Next(_))) => "next".to_string(),
        Ok(Ok(RequestOutcome::Respond(_))) => "respond".to_string(),
        Ok(Err(err)) => stage_error(&err),
        Err(failure) => format!("FAILED {}", failed(&failure)),
    };
    format!(
        "sample on-request (weir test-stage's default request, empty config): {outcome}; \
         {cost}; instantiate {instantiated} (limits: fuel {}, deadline {} ms)",
        limits
            .fuel
            .map_or("unmetered".to_string(), |f| f.to_string()),
        limits.deadline.as_millis()
    )
}

/// What a fresh instance takes: a 0.2 stage's response phase runs on one, as in `weir serve`.
struct Fresh<'a> {
    sandbox: &'a Sandbox,
    host: &'a HostContext,
    limits: &'a CallLimits,
    reaper: &'a Reaper,
}

/// Runs the phases the stage implements, as the host would (a 0.1 stage on one instance, a 0.2
/// stage's response phase on a fresh one with the state its request phase handed over); prints
/// them when `print`. False when a phase failed.
async fn phases(
    stage: &LoadedStage,
    instance: &mut StageInstance,
    fresh: &Fresh<'_>,
    ctx: &RequestContext,
    request: &ChatRequest,
    response: Option<&ChatResponse>,
    print: bool,
) -> bool {
    let say = |line: String| {
        if print {
            println!("{line}");
        }
    };
    let mut passed = request.clone();
    let mut state = Vec::new();
    if stage.info.phases.contains(Phases::REQUEST) {
        let started = Instant::now();
        let result = instance.on_request(ctx, request).await;
        let cost = cost(instance, started);
        let handed = result
            .as_ref()
            .ok()
            .and_then(|r| r.as_ref().ok())
            .and_then(|done| done.state.as_ref())
            .map(|state| format!("; {} bytes of state handed to the host", state.len()))
            .unwrap_or_default();
        match result.map(|r| r.map(|done| (done.outcome, done.state))) {
            Ok(Ok((RequestOutcome::Next(next), handed_over))) => {
                say(format!("on-request: next ({cost}{handed})"));
                say(pretty(&request_to_json(&next, None)));
                passed = next;
                state = handed_over.unwrap_or_default();
            }
            Ok(Ok((RequestOutcome::Respond(answer), _))) => {
                say(format!(
                    "on-request: respond ({cost}); the model is not called and on-response \
                     does not run for this stage"
                ));
                say(pretty(&response_to_json(&answer)));
                return true;
            }
            Ok(Err(err)) => {
                say(format!("on-request: {} ({cost})", stage_error(&err)));
                return matches!(err, StageError::Reject(_));
            }
            Err(failure) => {
                say(format!("on-request: FAILED ({cost}): {}", failed(&failure)));
                return false;
            }
        }
    }
    if stage.info.phases.contains(Phases::RESPONSE) {
        // The default answer repeats what the model would have been asked, so a stage that
        // rewrites the request (pii-redact's placeholders) sees its own rewrite come back.
        let echoed;
        let response = match response {
            Some(response) => response,
            None => {
                echoed = echo(&passed.model, &last_user_text(&passed));
                &echoed
            }
        };
        if let crate::stages::Contract::V2 { .. } = stage.contract {
            // The host keeps no instance across the model call: neither does this.
            match stage
                .instantiate(fresh.sandbox, fresh.host.clone(), fresh.limits)
                .await
            {
                Ok(next) => std::mem::replace(instance, next).release(fresh.reaper),
                Err(failure) => {
                    say(format!(
                        "on-response: instantiate FAILED {}",
                        failed(&failure)
                    ));
                    return false;
                }
            }
        }
        let started = Instant::now();
        let result = instance.on_response(ctx, &state, &passed, response).await;
        let cost = cost(instance, started);
        if let Some(ask) = instance.take_retry() {
            say(format!(
                "on-response asked to retry: {:?}{}",
                ask.reason,
                ask.feedback
                    .map(|f| format!(" (feedback: {f:?})"))
                    .unwrap_or_default()
            ));
        }
        match result {
            Ok(Ok(answer)) => {
                say(format!("on-response: ok ({cost})"));
                say(pretty(&response_to_json(&answer)));
            }
            Ok(Err(err)) => {
                say(format!("on-response: {} ({cost})", stage_error(&err)));
                return matches!(err, StageError::Reject(_));
            }
            Err(failure) => {
                say(format!(
                    "on-response: FAILED ({cost}): {}",
                    failed(&failure)
                ));
                return false;
            }
        }
    }
    true
}

/// "fuel N, T ms" of the call just made.
fn cost(instance: &StageInstance, started: Instant) -> String {
    let time = millis(started.elapsed());
    match (instance.fuel_budget(), instance.fuel_remaining()) {
        (Some(budget), Some(left)) => format!("fuel {}, {time}", budget.saturating_sub(left)),
        _ => format!("unmetered, {time}"),
    }
}

fn millis(elapsed: Duration) -> String {
    format!("{:.3} ms", elapsed.as_secs_f64() * 1000.0)
}

fn stage_error(err: &StageError) -> String {
    match err {
        StageError::Reject(r) => format!("reject {} {}: {}", r.status, r.code, r.message),
        StageError::Fail(message) => format!("FAILED (the stage's fail): {message}"),
    }
}

fn failed(failure: &StageFailure) -> String {
    format!("{}: {}", failure.kind, failure.detail)
}

fn pretty(value: &serde_json::Value) -> String {
    serde_json::to_string_pretty(value).unwrap_or_default()
}

fn last_user_text(request: &ChatRequest) -> String {
    request
        .messages
        .iter()
        .rev()
        .find(|m| m.role == "user")
        .and_then(|m| m.content.as_ref())
        .map(|c| c.text().into_owned())
        .unwrap_or_default()
}

/// A response of one choice saying `text`.
fn echo(model: &str, text: &str) -> ChatResponse {
    ChatResponse {
        id: "chatcmpl-weir-test-stage".to_string(),
        model: model.to_string(),
        created: 0,
        choices: vec![Choice {
            index: 0,
            message: Message::text("assistant", text),
            finish_reason: Some("stop".to_string()),
            extra: "{}".to_string(),
        }],
        usage: Some(Usage {
            prompt_tokens: 10,
            completion_tokens: 10,
            total_tokens: 20,
            cached_tokens: 0,
        }),
        extra: "{}".to_string(),
    }
}

/// `complete()` answering every request with the same text (`--llm-answer`).
struct Canned(String);

impl LlmAccess for Canned {
    fn complete(
        &self,
        _caller: Caller,
        request: ChatRequest,
        _deadline: Option<Duration>,
    ) -> BoxFuture<'static, Result<ChatResponse, LlmError>> {
        let answer = echo(&request.model, &self.0);
        Box::pin(async move { Ok(answer) })
    }

    fn embed(
        &self,
        _caller: Caller,
        _model: String,
        inputs: Vec<String>,
    ) -> BoxFuture<'static, Result<Vec<Vec<f32>>, LlmError>> {
        // A fixed small vector per input: enough for a stage's control flow.
        let vectors = inputs.iter().map(|_| vec![0.0; 8]).collect();
        Box::pin(async move { Ok(vectors) })
    }
}
