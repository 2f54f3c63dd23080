//! The `weir:stage/host` import functions, implemented on the store data. A guest log line is
//! escaped, cut and counted against the call's budget (`guest_log`); `count-tokens` runs off
//! the async threads, on a bounded input (`cost::tokens::count_for_stage`). The linker serves
//! those two from `in_place`, which reads the guest's string without copying it first, and
//! `weir:stage/services` from there too.

use std::time::Duration;

use tokio::time::Instant;

use crate::sandbox::{DeclaredKeys, RetryAsk, StageState};
use crate::wit::weir::stage0_1_0::{host, types};
use crate::wit::{ChatRequest, ChatResponse, LlmError, LogLevel};

use super::{CallScope, fan_out, guest_log, truncate_for_log};

/// Longest `retry-response` reason kept, bytes (it reaches the log and the client's error).
const RETRY_REASON_MAX_BYTES: usize = 2048;
/// Longest `retry-response` feedback kept, bytes (it is sent to the model).
const RETRY_FEEDBACK_MAX_BYTES: usize = 16 << 10;

impl types::Host for StageState {}

impl host::Host for StageState {
    // `log` and `count-tokens` are shadowed in the linker by versions that read the guest's
    // string in place (`in_place`); these serve a linker built without them.
    async fn log(&mut self, level: LogLevel, message: String) {
        if self.log.admit() {
            guest_log::write(&self.host, level, &message);
        }
    }

    async fn config_get(&mut self, key: String) -> Option<String> {
        self.host.stage.config.get(&key).cloned()
    }

    async fn config_keys(&mut self, keys: Vec<String>) {
        if matches!(self.host.scope, CallScope::Describe) {
            self.config_keys = Some(DeclaredKeys::new(keys));
        }
    }

    async fn complete(&mut self, request: ChatRequest) -> Result<ChatResponse, LlmError> {
        let caller = self.host.caller()?;
        self.host.services.llm.complete(caller, request, None).await
    }

    async fn complete_all(
        &mut self,
        requests: Vec<ChatRequest>,
        deadline_ms: Option<u32>,
    ) -> Vec<Result<ChatResponse, LlmError>> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        let deadline = deadline_ms.map_or(left, |ms| Duration::from_millis(ms.into()).min(left));
        fan_out::complete_all(&self.host, requests, deadline).await
    }

    async fn retry_response(&mut self, reason: String, feedback: Option<String>) {
        self.retry = Some(RetryAsk {
            reason: truncate_for_log(&reason, RETRY_REASON_MAX_BYTES).into_owned(),
            feedback: feedback.map(|f| truncate_for_log(&f, RETRY_FEEDBACK_MAX_BYTES).into_owned()),
        });
    }

    async fn embed(
        &mut self,
        model: String,
        inputs: Vec<String>,
    ) -> Result<Vec<Vec<f32>>, LlmError> {
        let caller = self.host.caller()?;
        self.host.services.llm.embed(caller, model, inputs).await
    }

    async fn count_tokens(&mut self, model: String, text: String) -> u32 {
        crate::cost::tokens::count_for_stage(model, text).await
    }

    async fn cache_get(&mut self, key: String) -> Option<Vec<u8>> {
        let namespace = cache_namespace(&self.host);
        self.host.services.cache.get(&namespace, &key)
    }

    async fn cache_set(&mut self, key: String, value: Vec<u8>, ttl_seconds: Option<u32>) {
        let namespace = cache_namespace(&self.host);
        let stored = self
            .host
            .services
            .cache
            .set(&namespace, key, value, ttl_seconds);
        if !stored {
            tracing::debug!(
                target: "weir::guest",
                stage = &*self.host.stage.label,
                "cache-set ignored: key or value over the size limit"
            );
        }
    }
}

/// The stage cache namespace of an instance: its route and its stage's name there.
fn cache_namespace(host: &super::HostContext) -> super::cache::Namespace {
    super::cache::Namespace {
        route: host.route.clone(),
        stage: host.stage.name.clone(),
    }
}
