//! Shared helpers: one process-wide sandbox, loaded stages cached by path, pipelines built
//! from specs, and a stand-in LLM step that echoes the last user message.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Mutex, OnceCell};
use weir::config::{CallLimits, SandboxSettings};
use weir::host_api::{HostServices, LlmAccess, NoLlm, StageIdentity};
use weir::pipeline::{OnError, Pipeline, PipelineError, PipelineStage, StageEnv};
use weir::sandbox::{Reaper, Sandbox};
use weir::stages::LoadedStage;
use weir::wit::{ChatRequest, ChatResponse, Choice, Content, Message, Usage};

/// A stage as a test wants it in a pipeline.
#[derive(Clone)]
pub struct Spec {
    pub path: &'static str,
    pub name: String,
    pub config: BTreeMap<String, String>,
    pub on_error: OnError,
    pub limits: CallLimits,
}

impl Spec {
    pub fn new(path: &'static str, name: &str) -> Spec {
        Spec {
            path,
            name: name.to_string(),
            config: BTreeMap::new(),
            on_error: OnError::Fail,
            // The default 200 ms deadline is wall-clock time: on a loaded machine it could
            // stop a stage that is merely starved of CPU. Tests of the deadline set their own.
            limits: relaxed(),
        }
    }

    pub fn config(mut self, key: &str, value: &str) -> Spec {
        self.config.insert(key.to_string(), value.to_string());
        self
    }

    pub fn named(mut self, name: &str) -> Spec {
        self.name = name.to_string();
        self
    }

    pub fn skip_on_error(mut self) -> Spec {
        self.on_error = OnError::Skip;
        self
    }

    pub fn limits(mut self, limits: CallLimits) -> Spec {
        self.limits = limits;
        self
    }
}

/// The chaos test program in `mode` (the artifacts build checks every mode is used here).
pub fn chaos(mode: &str) -> Spec {
    Spec::new(weir_test_artifacts::CHAOS, &format!("chaos-{mode}")).config("mode", mode)
}

/// A host: sandbox + services + loaded stages.
pub struct TestHost {
    pub env: StageEnv,
    loaded: Mutex<HashMap<&'static str, Arc<LoadedStage>>>,
}

static SHARED: OnceCell<TestHost> = OnceCell::const_new();

impl TestHost {
    pub fn new(settings: SandboxSettings, llm: Arc<dyn LlmAccess>) -> TestHost {
        let sandbox = Sandbox::new(settings).expect("sandbox");
        let services = Arc::new(HostServices::new(
            llm,
            sandbox.settings().log_line_max_bytes,
        ));
        TestHost {
            env: StageEnv {
                sandbox: Arc::new(sandbox),
                services,
                reaper: Reaper::start(),
                outputs: weir::cache::StageOutputCache::default(),
            },
            loaded: Mutex::new(HashMap::new()),
        }
    }

    /// The process-wide host with default settings and a small pool, its LLM step refusing
    /// stage calls.
    pub async fn shared() -> &'static TestHost {
        SHARED
            .get_or_init(|| async {
                let settings = SandboxSettings {
                    pool_size: 64,
                    ..SandboxSettings::default()
                };
                TestHost::new(settings, Arc::new(NoLlm))
            })
            .await
    }

    pub async fn load(&self, path: &'static str) -> Arc<LoadedStage> {
        let mut loaded = self.loaded.lock().await;
        if let Some(stage) = loaded.get(path) {
            return stage.clone();
        }
        let stage = Arc::new(
            LoadedStage::load(&self.env.sandbox, &self.env.services, path.as_ref())
                .await
                .unwrap_or_else(|err| panic!("loading {path}: {err}")),
        );
        loaded.insert(path, stage.clone());
        stage
    }

    pub async fn pipeline(&self, specs: &[Spec]) -> Arc<Pipeline> {
        let mut stages = Vec::new();
        for spec in specs {
            let stage = self.load(spec.path).await;
            let label: Arc<str> = stage.label(&spec.name).into();
            stages.push(PipelineStage {
                identity: Arc::new(StageIdentity {
                    name: spec.name.as_str().into(),
                    label,
                    config: spec.config.clone(),
                    max_llm_calls: weir::config::DEFAULT_STAGE_LLM_CALLS,
                    services: Default::default(),
                }),
                stage,
                on_error: spec.on_error,
                limits: spec.limits,
            });
        }
        Arc::new(Pipeline {
            route: "test".into(),
            stages,
            max_output_retries: 0,
        })
    }

    /// Runs `request` through `specs` around the echo LLM step.
    pub async fn run(&self, specs: &[Spec], request: ChatRequest) -> Outcome {
        let pipeline = self.pipeline(specs).await;
        run_pipeline(&self.env, &pipeline, request).await
    }
}

/// What a pipeline run produced.
pub struct Outcome {
    pub result: Result<ChatResponse, PipelineError>,
    /// The request as it reached the LLM step (`None` when no LLM call happened).
    pub upstream: Option<ChatRequest>,
    pub labels: Vec<String>,
    pub runs: Vec<weir::pipeline::StageRun>,
}

impl Outcome {
    pub fn text(&self) -> String {
        match &self.result {
            Ok(response) => text_of(&response.choices[0].message),
            Err(err) => panic!("expected a response, got {err:?}"),
        }
    }

    pub fn err(&self) -> &PipelineError {
        match &self.result {
            Ok(response) => panic!("expected an error, got {response:?}"),
            Err(err) => err,
        }
    }
}

pub async fn run_pipeline(
    env: &StageEnv,
    pipeline: &Arc<Pipeline>,
    request: ChatRequest,
) -> Outcome {
    let mut fwd = pipeline.start(env, "req-1".into(), request);
    let mut upstream = None;
    let result = async {
        fwd.on_request().await?;
        let response = match fwd.take_answer() {
            Some(answer) => answer,
            None => {
                upstream = Some(fwd.request().clone());
                echo(fwd.request())
            }
        };
        match fwd.on_response(response, false, 0).await? {
            weir::pipeline::Responded::Done(response) => Ok(response),
            weir::pipeline::Responded::Retry { stage, ask, .. } => {
                Err(weir::pipeline::PipelineError::InvalidOutput {
                    stage: stage.to_string(),
                    retries: 0,
                    reason: ask.reason,
                })
            }
        }
    }
    .await;
    Outcome {
        result,
        upstream,
        labels: fwd.stage_labels().iter().map(|l| l.to_string()).collect(),
        runs: fwd.runs().to_vec(),
    }
}

pub fn text_of(message: &Message) -> String {
    match &message.content {
        Some(Content::Text(text)) => text.clone(),
        Some(Content::Parts(parts)) => parts
            .iter()
            .filter_map(|p| p.text.clone())
            .collect::<Vec<_>>()
            .join("\n"),
        None => String::new(),
    }
}

pub fn message(role: &str, text: &str) -> Message {
    Message::text(role, text)
}

pub fn request(messages: Vec<Message>) -> ChatRequest {
    ChatRequest {
        model: "test".to_string(),
        messages,
        temperature: None,
        top_p: None,
        max_tokens: None,
        stream: false,
        user: None,
        metadata: Vec::new(),
        extra: "{}".to_string(),
    }
}

pub fn user(text: &str) -> ChatRequest {
    request(vec![message("user", text)])
}

/// The stand-in LLM step: answers `echo: <last message text>`.
pub fn echo(request: &ChatRequest) -> ChatResponse {
    let last = request.messages.last().map(text_of).unwrap_or_default();
    ChatResponse {
        id: "chatcmpl-echo".to_string(),
        model: request.model.clone(),
        created: 0,
        choices: vec![Choice {
            index: 0,
            message: message("assistant", &format!("echo: {last}")),
            finish_reason: Some("stop".to_string()),
            extra: "{}".to_string(),
        }],
        usage: Some(Usage {
            prompt_tokens: 1,
            completion_tokens: 1,
            total_tokens: 2,
            cached_tokens: 0,
        }),
        extra: "{}".to_string(),
    }
}

/// Limits with a generous deadline, for tests that must not hit it.
pub fn relaxed() -> CallLimits {
    CallLimits {
        deadline: Duration::from_secs(10),
        ..CallLimits::default()
    }
}
