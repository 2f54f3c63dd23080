//! Services: the HTTP dependencies stages call (`[services.NAME]`), each with its URLs, its
//! policy (the router's attempt loop: timeouts, retries with backoff, breakers, concurrency
//! limits, a total deadline), an optional response cache and an optional price per call.
//!
//! Owns: [`Service`] (one service's live state, kept across reloads while its settings do not
//! change), the call itself with its billing and its record ([`Service::call`], `call`), and
//! the `wasi:http` hooks and the `weir:stage/services` import through which a stage reaches
//! the services its config grants and nothing else ([`ServiceHooks`], [`call_all`]). Must not know about stages' phases or the LLM
//! step: a call is priced and noted on the request's [`Meter`](crate::cost::Meter) it is given.
//!
//! # Layout
//!
//! - `call`: one call (cache, the attempt loop, the price of every attempt that reached the
//!   service, settled exactly once even when the stage's deadline drops the call midway).
//! - `hooks`: [`ServiceHooks`], the `WasiHttpHooks` of a stage instance: authority → granted
//!   service, or `HTTP-request-denied` with nothing sent.
//! - `batch`: the `weir:stage/services` import ([`call_all`]): the same calls in one host call
//!   per batch, for `weir-sdk`'s helpers (`wasi:http` costs some thirty host calls each).

mod batch;
mod call;
mod hooks;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

pub use batch::call_all;
pub use call::{CallContext, ServiceRequest};
pub use hooks::{Grant, MAX_CALLS_PER_INSTANCE, ServiceHooks};

use http::header::{HeaderName, HeaderValue};

use crate::config::ServiceSettings;
use crate::cost::Ledger;
use crate::providers::{Dialect, ProviderClient, Upstream};
use crate::router::{RoutePlan, RoutePolicy, Router, ServiceReply, TargetState};

/// The services of one config, by name.
pub type Services = BTreeMap<String, Arc<Service>>;

/// One service's live state.
pub struct Service {
    /// Its name: the authority stages call.
    pub name: Arc<str>,
    /// Its validated settings (compared on reload: unchanged settings keep this state).
    pub settings: ServiceSettings,
    /// Its URLs as targets (breaker, concurrency limit, latency), in `urls` order.
    router: Router,
    /// Its chain (every URL, in order) and policy.
    plan: RoutePlan,
    /// Successful answers by blake3 of method + path + body, when `cache_ttl_s` is set.
    cache: Option<moka::sync::Cache<[u8; 32], Arc<ServiceReply>>>,
    /// Where each billed call is written.
    ledger: Ledger,
}

/// Bytes of answers one service's cache keeps at most.
const CACHE_MAX_BYTES: u64 = 64 << 20;

/// The header that carries a service's key, marked sensitive; none without a key.
fn signing(settings: &ServiceSettings) -> Vec<(HeaderName, HeaderValue)> {
    let Some(key) = &settings.api_key else {
        return Vec::new();
    };
    let Ok(name) = HeaderName::from_bytes(settings.api_key_header.as_bytes()) else {
        return Vec::new();
    };
    let value = match name == http::header::AUTHORIZATION {
        true => HeaderValue::from_str(&format!("Bearer {key}")),
        false => HeaderValue::from_str(key),
    };
    // The key was read from the environment and checked as a header value at load.
    match value {
        Ok(mut value) => {
            value.set_sensitive(true);
            vec![(name, value)]
        }
        Err(_) => Vec::new(),
    }
}

impl std::fmt::Debug for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Service").field("name", &self.name).finish()
    }
}

impl Service {
    /// A service with fresh breakers, reached through `client`, billed to `ledger`.
    pub fn new(settings: &ServiceSettings, client: ProviderClient, ledger: Ledger) -> Service {
        let name: Arc<str> = settings.name.as_str().into();
        let limits = crate::config::TargetLimits {
            max_concurrency: settings.max_concurrency,
            breaker: settings.breaker,
            ..crate::config::TargetLimits::default()
        };
        let signing = signing(settings);
        let targets = (settings.urls.iter().enumerate())
            .map(|(i, url)| {
                let upstream = Upstream {
                    name: format!("{name}[{i}]").into(),
                    base_url: url.clone(),
                    dialect: Dialect::OpenAi,
                    signing: signing.clone(),
                    model: None,
                    timeout: settings.timeout,
                    ttft_timeout: settings.timeout,
                    stream_json: false,
                    headers: Vec::new(),
                };
                Arc::new(TargetState::new(Arc::new(upstream), limits))
            })
            .collect::<Vec<_>>();
        let plan = RoutePlan {
            chain: (0..targets.len()).collect(),
            policy: RoutePolicy::new(settings.policy),
            strategy: settings.strategy,
            weights: settings.weights.clone(),
        };
        let cache = settings.cache_ttl_s.map(|ttl| {
            moka::sync::Cache::builder()
                .max_capacity(CACHE_MAX_BYTES)
                .weigher(|_: &[u8; 32], reply: &Arc<ServiceReply>| {
                    u32::try_from(reply.body.len().saturating_add(256)).unwrap_or(u32::MAX)
                })
                .time_to_live(Duration::from_secs(u64::from(ttl)))
                .build()
        });
        Service {
            name,
            settings: settings.clone(),
            router: Router::new(client, targets),
            plan,
            cache,
            ledger,
        }
    }

    /// Each URL's live state, in `urls` order (for `/admin/targets`-like views and tests).
    pub fn targets(&self) -> &[Arc<TargetState>] {
        self.router.targets()
    }
}
