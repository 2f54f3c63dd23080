//! HTTP only: the public listener (`/v1/*`, health) and a separate admin listener
//! (`/admin/*`, `/metrics`), like Envoy's admin port, so operational endpoints are never
//! exposed where clients connect.
//!
//! Owns: the listeners, connection handling (per-connection deadlines and the connection
//! cap: `conn`, `listener`), who may use the admin listener (`admin_auth`), graceful
//! shutdown, reading bodies within their bounds, authentication from `Authorization`, the
//! headers that change how a request runs, rendering answers as JSON or SSE, the
//! OpenAI-shaped error bodies (every layer's error mapped once, through
//! `ApiError::from_facing`), the response headers and the request record, the `/v1/jobs` API
//! and the callback sender (an HTTP client). It holds no state and makes no decision of its
//! own about a request: a chat completion is one call to `App::chat` (the `app` module, the
//! composition root), and nothing below knows about HTTP.
//!
//! - `listener`, `conn`: accepting, per-connection deadlines, shutdown.
//! - `public`: the public routes, response headers, metrics and the request record.
//! - `chat`: `POST /v1/chat/completions` → `App::chat` → JSON or SSE.
//! - `fronts`: `/v1/messages` (Anthropic) and `/v1/responses` (OpenAI Responses), translated
//!   to and from a chat completion around the same `App::chat`.
//! - `embeddings`: `POST /v1/embeddings` → `App::embeddings`.
//! - `jobs`: `/v1/jobs`, and starting the workers; `callback`: the callback sender.
//! - `admin`, `admin_auth`: the admin routes and who may call them.
//! - `http_util`: the body type, JSON and error responses, bounded body reads.

mod admin;
mod admin_auth;
mod callback;
mod chat;
mod conn;
mod console;
mod embeddings;
mod fronts;
mod http_util;
mod jobs;
mod listener;
mod public;

pub use listener::{ServeError, serve};

use crate::app::App;
