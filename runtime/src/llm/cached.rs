//! The cached part of the step: exact and semantic lookups, single-flight for identical
//! misses (across nodes too, with a shared tier: `state::SharedCache`), and the fill that
//! stores a fetched answer.

use std::sync::Arc;

use super::step::Opened;
use super::{Answer, Call, LlmStep, RouteStep, StepError, StepReply};
use crate::cache::{CacheKey, CacheStatus, Flight, Outcome, ResponseCache};
use crate::router::RouteError;
use crate::state::Coalesce;
use crate::wit::ChatResponse;

/// A pending cache fill for an answer.
pub(super) struct Fill {
    /// Where to store.
    pub(super) cache: ResponseCache,
    /// Under which key.
    pub(super) key: CacheKey,
    /// For which route.
    pub(super) route: String,
    /// For how long.
    pub(super) ttl: std::time::Duration,
    /// The semantic namespace and embedding, when the route has a semantic tier.
    pub(super) semantic: Option<(CacheKey, Vec<f32>)>,
}

impl Fill {
    /// Stores `response` under the exact key and, for a semantic route, remembers its
    /// embedding.
    pub(super) fn store(self, response: ChatResponse) {
        self.cache.put(self.key, &self.route, response, self.ttl);
        if let Some((namespace, vector)) = self.semantic {
            self.cache
                .semantic
                .remember(namespace, vector, self.key, self.ttl);
        }
    }
}

impl LlmStep {
    /// The cached part of [`LlmStep::complete`] for a request under `key`: exact and
    /// semantic lookups, then a stream or a single-flight fetch that fills the cache.
    pub(super) async fn cached(
        &self,
        step: &RouteStep,
        call: &Call<'_>,
        key: CacheKey,
    ) -> StepReply {
        let policy = step.cache;
        let control = call.control;
        let tenant = policy.per_key.then(|| call.meter.key_name());
        // A whole answer on a route without a semantic tier reads the fleet's tier in the
        // same Redis call that takes the fleet's lease on a miss (`lead_or_wait`): this
        // node's tiers first, then one round trip.
        let folded = !call.request.stream && policy.semantic_threshold.is_none();
        let found = match (control.no_cache, folded) {
            (true, _) => None,
            (false, true) => self.cache.get(&key).await,
            (false, false) => self.cache.lookup(&key, call.route).await,
        };
        if let Some(response) = found {
            self.costing
                .record_free(&response, call.site(CacheStatus::Hit));
            return StepReply::new(Ok(Answer::Whole(response)), CacheStatus::Hit);
        }
        // The semantic tier: the same conversation but for a nearly identical last message.
        let semantic = match policy.semantic_threshold {
            Some(threshold) => self
                .semantic_probe(
                    step,
                    call.site(CacheStatus::Bypass),
                    tenant,
                    policy.semantic_embeddings,
                    call.request,
                )
                .await
                .map(|p| (p, threshold.as_f32())),
            None => None,
        };
        if !control.no_cache
            && let Some(((namespace, vector), threshold)) = &semantic
            && let Some((exact, similarity)) =
                self.cache.semantic.nearest(namespace, vector, *threshold)
            && let Some(response) = self.cache.lookup(&exact, call.route).await
        {
            self.costing
                .record_free(&response, call.site(CacheStatus::SemanticHit));
            return StepReply {
                similarity: Some(similarity),
                key: Some(exact),
                ..StepReply::new(Ok(Answer::Whole(response)), CacheStatus::SemanticHit)
            };
        }
        let fill = Fill {
            cache: self.cache.clone(),
            key,
            route: call.route.to_string(),
            ttl: policy.ttl,
            semantic: semantic.map(|(probe, _)| probe),
        };
        // A fetched answer: a miss, or a bypass when the client refused a cached one.
        let fetched = if control.no_cache {
            CacheStatus::Bypass
        } else {
            CacheStatus::Miss
        };
        if call.request.stream {
            // A stream is relayed as it comes; it is stored once it ended cleanly.
            let mut reply = self.metered(step, call, fetched).await;
            match &mut reply.result {
                Ok(Answer::Whole(response)) => fill.store(response.clone()),
                Ok(Answer::Stream(stream)) => stream.fill_with(fill),
                Err(_) => {}
            }
            return reply;
        }
        loop {
            match self.cache.flights.join(key) {
                Flight::Lead(leader) => {
                    // This node's leader for the key; across nodes, one node fetches it.
                    let mut lease = None;
                    let mut opened = None;
                    let mut call = *call;
                    if !control.no_cache
                        && let Some(shared) = self.cache.shared()
                    {
                        let start = tokio::time::Instant::now();
                        let wait = [
                            Some(shared.flight_wait()),
                            Some(step.plan.policy.settings.deadline),
                            call.deadline,
                        ];
                        let wait = wait.into_iter().flatten().min().unwrap_or_default();
                        let flight = shared.lead_or_wait(call.route, &key, wait);
                        // When reserving is a Redis call too (a strict budget), it goes with the
                        // fleet's lookup in one round trip, and is withdrawn if the fleet had the
                        // answer: a hit is never charged, and never refused for the budget. A
                        // node that waits for another node's fill holds its reservation while it
                        // waits (at most the wait above).
                        let flight = match call.meter.account.as_ref() {
                            Some(account) if account.reserves_on_redis() => {
                                let (flight, hold) = tokio::join!(flight, self.open(step, &call));
                                opened = Some(hold);
                                flight
                            }
                            _ => flight.await,
                        };
                        match flight {
                            Coalesce::Lead(held) => lease = Some(held),
                            Coalesce::Filled {
                                response,
                                ttl,
                                waited,
                            } => {
                                // The first target's permit, if taken, is given back
                                // with the drop of `opened`.
                                if let Some(Opened { hold: Ok(hold), .. }) = opened {
                                    hold.withdraw();
                                }
                                self.cache.keep(key, call.route, response.clone(), ttl);
                                leader.finish(Ok(Arc::new(response.clone())));
                                let status = match waited {
                                    true => CacheStatus::Coalesced,
                                    false => CacheStatus::Hit,
                                };
                                self.costing.record_free(&response, call.site(status));
                                return StepReply::new(Ok(Answer::Whole(response)), status);
                            }
                            Coalesce::Alone => {}
                        }
                        // Time spent waiting comes out of the client's deadline.
                        call.deadline = call
                            .deadline
                            .map(|d| d.saturating_sub(start.elapsed()).max(MIN_LEFT));
                    }
                    let call = &call;
                    let opened = match opened {
                        Some(opened) => opened,
                        None => self.open(step, call).await,
                    };
                    let reply = self.metered_with(call, fetched, opened).await;
                    let shared = match &reply.result {
                        Ok(Answer::Whole(response)) => {
                            fill.store(response.clone());
                            // The fill wrote the entry and ended the lease in one step.
                            if let Some(lease) = lease.take() {
                                lease.filled();
                            }
                            Some(Ok(Arc::new(response.clone())))
                        }
                        Ok(Answer::Stream(_)) => Some(Err(RouteError::AllFailed {
                            attempts: reply.attempts.clone(),
                        })),
                        Err(StepError::Route(err)) => {
                            // Other nodes waiting for it call upstream themselves now.
                            if let Some(lease) = lease.take() {
                                lease.failed();
                            }
                            Some(Err(err.clone()))
                        }
                        // A refusal by the leader's own key says nothing about the followers'.
                        Err(
                            StepError::Cost(_)
                            | StepError::UnknownRoute { .. }
                            | StepError::Interrupted { .. },
                        ) => None,
                    };
                    match shared {
                        Some(outcome) => leader.finish(outcome),
                        None => drop(leader),
                    }
                    return reply;
                }
                Flight::Follow(follower) => match follower.wait().await {
                    Outcome::Done(Ok(response)) => {
                        self.costing
                            .record_free(&response, call.site(CacheStatus::Coalesced));
                        return StepReply::new(
                            Ok(Answer::Whole((*response).clone())),
                            CacheStatus::Coalesced,
                        );
                    }
                    Outcome::Done(Err(err)) => {
                        return StepReply::new(Err(StepError::Route(err)), CacheStatus::Coalesced);
                    }
                    // The leader's client went away: look again, and lead if nobody does.
                    Outcome::Abandoned => {
                        if let Some(response) = self.cache.lookup(&key, call.route).await {
                            self.costing
                                .record_free(&response, call.site(CacheStatus::Hit));
                            return StepReply::new(Ok(Answer::Whole(response)), CacheStatus::Hit);
                        }
                    }
                },
            }
        }
    }
}

/// The least deadline left to a request that waited for another node (so that it still
/// makes its own call rather than failing at once).
const MIN_LEFT: std::time::Duration = std::time::Duration::from_millis(1);
