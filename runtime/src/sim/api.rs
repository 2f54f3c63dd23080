//! The request path shared by the model endpoints (chat completions and embeddings): count,
//! read the bounded body, record it, parse it, let the fault dice speak, then answer. A chat
//! request is billed as soon as the dice accept it, before its latency (`stats::Billed`).
//!
//! Each handler is `receive` (body and ring) then an `answer_*` function that takes the bytes
//! and the key: the wire dialects (`dialects`) translate their request into OpenAI bytes and
//! call the same `answer_*`, so faults, billing, stats and pacing are the OpenAI path's.
//!
//! Faults are applied after parsing so that a `sim-error-NNN` model can be honoured and a
//! streamed request counted, but before a parse error is answered: like a real overloaded
//! provider, the simulator may rate-limit a request it would also have rejected.

use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response};
use hyper::body::Incoming;

use crate::sim::body::{self, SimBody};
use crate::sim::chaos;
use crate::sim::chat::{self, ChatRequest};
use crate::sim::conn::ConnControl;
use crate::sim::embeddings::{self, EmbeddingsRequest};
use crate::sim::error::ApiError;
use crate::sim::faults::Faults;
use crate::sim::ring::RecordedRequest;
use crate::sim::state::SimState;
use crate::sim::stats::bump;
use crate::sim::stream;

/// `POST /v1/chat/completions`.
pub async fn chat(
    request: Request<Incoming>,
    state: Arc<SimState>,
    conn: &ConnControl,
) -> Response<SimBody> {
    count_chat(&state);
    let bearer = bearer(&request);
    match receive(request, &state).await {
        Ok(bytes) => answer_chat(ChatRequest::parse(&bytes), bearer.as_deref(), state, conn).await,
        Err(err) => body::error(&err),
    }
}

/// Counts a chat request of any dialect, before its body is read.
pub fn count_chat(state: &SimState) {
    bump(&state.stats.requests);
    bump(&state.stats.chat_completions);
}

/// Answers a chat request that was received and parsed (or failed to parse): the `rpm_limit`
/// fault, the dice, billing, then the answer (JSON or SSE). `key` is the request's API key,
/// which an injected 401 quotes.
pub async fn answer_chat(
    parsed: Result<ChatRequest, ApiError>,
    key: Option<&str>,
    state: Arc<SimState>,
    conn: &ConnControl,
) -> Response<SimBody> {
    let faults = state.faults();
    if let Some(response) = over_rpm(&faults, &state) {
        return response;
    }
    if parsed.as_ref().is_ok_and(|r| r.stream) {
        bump(&state.stats.streams);
    }
    let model = parsed.as_ref().ok().and_then(|r| r.model.as_deref());
    let decision = chaos::decide(&faults, model);
    // Billed as soon as it is accepted, before its latency: a provider bills a request it
    // started on even if its client leaves.
    let accepted = match (&parsed, &decision.outcome) {
        (Ok(r), chaos::Outcome::Answer) => Some(chat::accept(r, &state, faults.usage())),
        (
            _,
            chaos::Outcome::Fail(ApiError::Injected {
                billed_tokens: billed @ 1..,
                ..
            }),
        ) => {
            state.stats.bill(u64::from(*billed), 0);
            None
        }
        _ => None,
    };
    if let Some(response) = chaos::carry_out(decision, &faults, key, &state, conn).await {
        return response;
    }
    let r = match parsed {
        Err(err) => return body::error(&err),
        Ok(r) => r,
    };
    // Only an accepted request gets here; accepting it now would be a bug, never a panic.
    let reply = accepted.unwrap_or_else(|| chat::accept(&r, &state, faults.usage()));
    if r.stream && !faults.json_for_streams {
        let early = match (faults.stream_cut_after, faults.stream_stall_after) {
            (Some(n), _) => stream::EarlyEnd::Cut(n),
            (None, Some(n)) => stream::EarlyEnd::Stall(n, Box::pin(conn.until_shutdown())),
            (None, None) => stream::EarlyEnd::None,
        };
        stream::respond(&r, &reply, Arc::clone(&state), early)
    } else {
        chat::respond(&r, &reply, &state)
    }
}

/// `POST /v1/embeddings`.
pub async fn embeddings(
    request: Request<Incoming>,
    state: Arc<SimState>,
    conn: &ConnControl,
) -> Response<SimBody> {
    count_embeddings(&state);
    let bearer = bearer(&request);
    match receive(request, &state).await {
        Ok(bytes) => answer_embeddings(&bytes, bearer.as_deref(), &state, conn).await,
        Err(err) => body::error(&err),
    }
}

/// `POST /api/v2/.../query`: a vector search (`search`), under the same fault dice as the
/// model endpoints.
pub async fn search(
    request: Request<Incoming>,
    state: Arc<SimState>,
    conn: &ConnControl,
) -> Response<SimBody> {
    bump(&state.stats.requests);
    bump(&state.stats.searches);
    let bearer = bearer(&request);
    let bytes = match receive(request, &state).await {
        Ok(bytes) => bytes,
        Err(err) => return body::error(&err),
    };
    let faults = state.faults();
    if let Some(response) = over_rpm(&faults, &state) {
        return response;
    }
    if let Some(response) = chaos::apply(&faults, None, bearer.as_deref(), &state, conn).await {
        return response;
    }
    crate::sim::search::respond(&bytes)
}

/// Counts an embeddings request of any dialect, before its body is read.
pub fn count_embeddings(state: &SimState) {
    bump(&state.stats.requests);
    bump(&state.stats.embeddings);
}

/// Answers a received embeddings request body: the `rpm_limit` fault, the dice, then the
/// vectors. `key` is the request's API key, which an injected 401 quotes.
pub async fn answer_embeddings(
    bytes: &[u8],
    key: Option<&str>,
    state: &SimState,
    conn: &ConnControl,
) -> Response<SimBody> {
    let faults = state.faults();
    if let Some(response) = over_rpm(&faults, state) {
        return response;
    }
    let parsed = EmbeddingsRequest::parse(bytes);
    let model = parsed.as_ref().ok().and_then(|r| r.model.as_deref());
    if let Some(response) = chaos::apply(&faults, model, key, state, conn).await {
        return response;
    }
    match parsed {
        Err(err) => body::error(&err),
        Ok(r) => embeddings::respond(&r, state),
    }
}

/// The `rpm_limit` fault: a 429 with `Retry-After` when the account's minute is full (the
/// request is then not billed and no other fault applies).
fn over_rpm(faults: &Faults, state: &SimState) -> Option<Response<SimBody>> {
    let limit = faults.rpm_limit?;
    let retry_after_s = state
        .minute
        .admit(limit, tokio::time::Instant::now())
        .err()?;
    bump(&state.stats.rate_limited);
    Some(body::error(&ApiError::RateLimited { retry_after_s }))
}

/// The request's bearer key (`Authorization: Bearer <key>`), which an injected 401 quotes.
fn bearer(request: &Request<Incoming>) -> Option<String> {
    request
        .headers()
        .get(http::header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::to_owned)
}

/// The value of header `name`, when it is text.
pub fn header(request: &Request<Incoming>, name: &str) -> Option<String> {
    let value = request.headers().get(name)?.to_str().ok()?;
    Some(value.to_owned())
}

/// Reads the body (bounded) and records the request in the ring, as received (path, query,
/// headers and body).
pub async fn receive(request: Request<Incoming>, state: &SimState) -> Result<Bytes, ApiError> {
    let (parts, incoming) = request.into_parts();
    let bytes = body::read_limited(&parts.headers, incoming).await?;
    let record = RecordedRequest::new(parts.method, &parts.uri, parts.headers, &bytes);
    state.ring.push(record);
    Ok(bytes)
}
