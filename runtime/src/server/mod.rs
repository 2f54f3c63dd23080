//! The HTTP surface: the public listener (`/v1/*`, health) and a separate admin listener
//! (`/admin/*`), like Envoy's admin port, so operational endpoints are never exposed where
//! clients connect.
//!
//! Owns: listeners, the `/v1/jobs` API (the queue itself is the `queue` module's), connection handling (per-connection deadlines and the connection cap: `conn`, `listener`), who may use the admin listener (`admin_auth`), graceful shutdown, request parsing into the WIT
//! types, OpenAI-shaped errors and the response headers. Everything below it is reached
//! through [`App`]; nothing below knows about HTTP status codes except through typed errors'
//! `status()`.

mod admin;
mod admin_auth;
mod callback;
mod chat;
mod conn;
mod http_util;
mod jobs;
mod listener;
mod public;

pub use listener::{ServeError, serve};

use crate::app::App;
