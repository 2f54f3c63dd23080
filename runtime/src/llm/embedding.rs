//! Embedding calls, metered like completions. A stage's `embed()` and the semantic tier's
//! probe count against the request's limit on LLM calls, reserve their worst case against
//! the key's budgets (the inputs' tokens at the priciest input price of the targets they
//! may go to), and settle at the usage the upstream reports, or at a local count marked
//! estimated, with one ledger row per billed attempt (model: the upstream embedding model).

use serde_json::Value;

use std::sync::Arc;

use super::{CallSite, Costing, LlmStep, RouteStep, StepError};
use crate::cache::{CacheControl, CacheKey, CacheStatus, embeddings_key};
use crate::cost::{Charge, CostError, Hold, Meter, tokens};
use crate::router::{Attempt, Router};
use crate::wit::{ChatResponse, Usage};

/// One embeddings call: what is embedded, where it may go and where it is accounted.
#[derive(Clone, Copy)]
pub(super) struct EmbedCall<'a> {
    /// Where the call is accounted (the request's meter, the route; the cache status is
    /// `bypass`: the call is not an answer).
    pub site: CallSite<'a>,
    /// The model asked for (`None`: the target's own); a target's pin replaces it.
    pub model: Option<&'a str>,
    /// The texts, in order.
    pub inputs: &'a [String],
    /// Only this target (the semantic tier's), instead of the route's chain.
    pub only: Option<usize>,
    /// Calls the request must still have left after this one (the semantic probe leaves
    /// one for the request's own call, so a tight limit skips the probe, not the answer).
    pub spare: u32,
    /// The client's own body (`/v1/embeddings`: `encoding_format`, `dimensions`, ...) sent
    /// as it is instead of one built from `model` and `inputs`.
    pub body: Option<&'a Value>,
    /// The client's own deadline (`x-weir-deadline-ms`), which may shorten the route's.
    pub deadline: Option<std::time::Duration>,
}

/// A client's `POST /v1/embeddings` on a route.
pub struct ClientEmbeddings<'a> {
    /// The route.
    pub route: &'a str,
    /// The request's meter.
    pub meter: &'a Arc<Meter>,
    /// The client's body, forwarded as it is (a target's `model` pin replaces `model`).
    pub body: &'a Value,
    /// Its inputs' texts, for budgets and local counts.
    pub inputs: &'a [String],
    /// What the client's `Cache-Control` allows.
    pub control: CacheControl,
    /// The client's own deadline (`x-weir-deadline-ms`), which may shorten the route's.
    pub deadline: Option<std::time::Duration>,
}

/// What a client's embeddings call came to.
pub struct EmbeddingsReply {
    /// The OpenAI body, or why there is none.
    pub result: Result<Value, StepError>,
    /// How the cache was involved.
    pub cache: CacheStatus,
    /// The cache entry it came from or went to.
    pub key: Option<CacheKey>,
    /// Each upstream attempt (none on a hit).
    pub attempts: Vec<Attempt>,
}

impl EmbedCall<'_> {
    /// The targets the call may go to along `step`.
    fn chain<'s>(&'s self, step: &'s RouteStep) -> &'s [usize] {
        match &self.only {
            Some(target) => std::slice::from_ref(target),
            None => &step.plan.chain,
        }
    }
}

impl LlmStep {
    /// Computes embeddings along `step` for `call`, counted, reserved, settled and ledgered
    /// like a completion. Returns the upstream's OpenAI body.
    pub(super) async fn embeddings(
        &self,
        step: &RouteStep,
        call: EmbedCall<'_>,
    ) -> Result<Value, StepError> {
        self.embeddings_attempts(step, call).await.0
    }

    /// [`LlmStep::embeddings`], with its attempts.
    async fn embeddings_attempts(
        &self,
        step: &RouteStep,
        call: EmbedCall<'_>,
    ) -> (Result<Value, StepError>, Vec<Attempt>) {
        let hold = match self
            .costing
            .open_embeddings(&self.router, call.chain(step), &call)
            .await
        {
            Ok(hold) => hold,
            Err(err) => return (Err(StepError::Cost(err)), Vec::new()),
        };
        let body = match call.body {
            Some(body) => body.clone(),
            None => {
                let mut body = serde_json::json!({ "input": call.inputs });
                if let Some(model) = call.model {
                    body["model"] = Value::from(model);
                }
                body
            }
        };
        let mut attempts = Vec::new();
        let result = self
            .router
            .embeddings(&step.plan, call.only, body, call.deadline, &mut attempts)
            .await;
        let charges = self
            .costing
            .embedding_charges(&attempts, call.inputs, result.as_ref().ok());
        self.costing.close(hold, charges, call.site);
        (result.map_err(StepError::Route), attempts)
    }

    /// A client's `/v1/embeddings` along its route: the exact cache (embeddings are the most
    /// cacheable call there is: the same input always embeds the same), then the call,
    /// counted, reserved, settled and ledgered like a completion, and the fill.
    pub async fn client_embeddings(&self, call: ClientEmbeddings<'_>) -> EmbeddingsReply {
        let reply = |result, cache, key, attempts| EmbeddingsReply {
            result,
            cache,
            key,
            attempts,
        };
        let Some(step) = self.plans.get(call.route) else {
            let err = StepError::UnknownRoute {
                route: call.route.to_owned(),
            };
            return reply(Err(err), CacheStatus::Bypass, None, Vec::new());
        };
        let policy = step.cache;
        let cached = policy.enabled && !call.control.no_store;
        let key = cached.then(|| {
            let tenant = policy.per_key.then(|| call.meter.key_name());
            embeddings_key(call.route, tenant, call.body)
        });
        if let Some(key) = &key
            && !call.control.no_cache
            && let Some(stored) = self.cache.lookup(key, call.route).await
            && let Ok(body) = serde_json::from_str::<Value>(&stored.extra)
        {
            return reply(Ok(body), CacheStatus::Hit, Some(*key), Vec::new());
        }
        let site = CallSite {
            meter: call.meter,
            route: call.route,
            cache: if key.is_some() {
                CacheStatus::Miss
            } else {
                CacheStatus::Bypass
            },
        };
        let embed = EmbedCall {
            site,
            model: call.body["model"].as_str(),
            inputs: call.inputs,
            only: None,
            spare: 0,
            body: Some(call.body),
            deadline: call.deadline,
        };
        let (result, attempts) = self.embeddings_attempts(step, embed).await;
        if let (Some(key), Ok(body)) = (&key, &result) {
            // Stored as an answer whose `extra` is the body: the cache's tiers, TTL and
            // invalidation serve embeddings as they serve chat.
            let entry = ChatResponse {
                id: String::new(),
                model: body["model"].as_str().unwrap_or_default().to_owned(),
                created: 0,
                choices: Vec::new(),
                usage: None,
                extra: body.to_string(),
            };
            self.cache.put(*key, call.route, entry, policy.ttl);
        }
        reply(result, site.cache, key, attempts)
    }
}

impl Costing {
    /// Counts an embeddings call against the request's limit and reserves its worst case
    /// (every input's tokens at the priciest input price of `chain`) against the key's
    /// budgets. Without a key limiting spend nothing is reserved (or counted in tokens).
    async fn open_embeddings(
        &self,
        router: &Router,
        chain: &[usize],
        call: &EmbedCall<'_>,
    ) -> Result<Hold, CostError> {
        let meter = call.site.meter;
        meter.begin_call_leaving(call.spare)?;
        let account = match &meter.account {
            Some(account) if account.key.limits_spend() => account,
            _ => {
                meter.admitted().await?;
                return meter.reserve(0).await;
            }
        };
        let requested = call.model.unwrap_or_default();
        let (price, model) = self.worst_price_of(router, chain, requested);
        let prompt = input_tokens(&model, call.inputs);
        let worst = u64::from(prompt).saturating_mul(price.input);
        // One pipelined round trip on a fleet, as for chat (`Costing::open`).
        let (admitted, tokens, hold) = tokio::join!(
            meter.admitted(),
            account.check_tokens(prompt),
            meter.reserve(worst)
        );
        admitted?;
        tokens?;
        hold
    }

    /// The charges of an embeddings call's `attempts`: the usage each reported (failed
    /// attempts' only when configured), and for a successful `answer` without usage, the
    /// inputs counted locally, marked estimated.
    fn embedding_charges(
        &self,
        attempts: &[Attempt],
        inputs: &[String],
        answer: Option<&Value>,
    ) -> Vec<Charge> {
        let mut charges = Vec::new();
        for attempt in attempts {
            let ok = attempt.outcome.is_ok();
            if !ok && !self.count_failed_attempts {
                continue;
            }
            // An attempt that named no model (an unpinned target, no model asked for) is
            // billed under the model the upstream answered with.
            let answered = answer.filter(|_| ok).and_then(|a| a["model"].as_str());
            let model = match (attempt.model.as_str(), answered) {
                ("", Some(answered)) => answered.to_string(),
                (model, _) => model.to_string(),
            };
            let (usage, estimated) = match (attempt.usage, ok && answer.is_some()) {
                (Some(usage), _) => (usage, false),
                (None, true) => {
                    let prompt_tokens = input_tokens(&model, inputs);
                    let usage = Usage {
                        prompt_tokens,
                        completion_tokens: 0,
                        total_tokens: prompt_tokens,
                        cached_tokens: 0,
                    };
                    (usage, true)
                }
                (None, false) => continue,
            };
            charges.push(Charge {
                cost: self.prices.cost(&model, &usage, 0),
                model,
                usage,
                cache_writes: 0,
                estimated,
            });
        }
        charges
    }
}

/// Tokens of every input for `model`, counted locally.
fn input_tokens(model: &str, inputs: &[String]) -> u32 {
    inputs.iter().fold(0u32, |sum, text| {
        sum.saturating_add(tokens::count_text(model, text))
    })
}
