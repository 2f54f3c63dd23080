//! One call of the LLM step: the route, the (stage-processed) request, and everything about
//! the client that the call must honour.

use std::sync::Arc;
use std::time::Duration;

use http::header::{HeaderName, HeaderValue};

use super::CallSite;
use crate::cache::{CacheControl, CacheStatus};
use crate::cost::Meter;
use crate::wit::ChatRequest;

/// What the LLM step is asked to do: send `request` along `route`, for the client described
/// by the other fields.
#[derive(Clone, Copy)]
pub struct Call<'a> {
    /// The route (alias) whose chain and cache policy apply.
    pub route: &'a str,
    /// The request, after the request phase.
    pub request: &'a ChatRequest,
    /// Headers every upstream attempt carries (`x-request-id`, trace context).
    pub forward: &'a [(HeaderName, HeaderValue)],
    /// The client's own deadline (`x-weir-deadline-ms`): it may shorten the route's deadline,
    /// never lengthen it.
    pub deadline: Option<Duration>,
    /// What the client's `Cache-Control` allows. A stage's call never uses the cache, so
    /// [`LlmStep::chat`](super::LlmStep::chat) does not read it.
    pub control: CacheControl,
    /// The request's meter: its key, limits and spend.
    pub meter: &'a Arc<Meter>,
}

impl<'a> Call<'a> {
    /// Where this call is accounted, with the cache's part in it.
    pub(super) fn site(&self, cache: CacheStatus) -> CallSite<'a> {
        CallSite {
            meter: self.meter,
            route: self.route,
            cache,
        }
    }
}
