//! Configuration: the TOML schema, its validation, and the validated types the rest of weir
//! uses.
//!
//! Owns: parsing (strict, unknown keys are errors naming file, line and key), validation
//! (cross-field checks, newtypes for durations, sizes and ids) and the validated [`Config`].
//! Everyone may read the validated types; nothing outside this module sees raw TOML.
//!
//! # Layout
//!
//! - `raw`: the TOML schema as serde structs (`deny_unknown_fields`, spans kept).
//! - `load`: [`Config`], [`Config::load`] and [`Config::parse`], which run the two passes.
//! - `error`: [`ConfigError`], printed as `{file}:{line}:{column}: {key}: {message}`.
//! - `check`: range, name and environment-variable checks shared by every table.
//! - `server`, `limits` + `sandbox`, `target`, `route`: one validated table each.
//! - `connections`: `[server]`'s client-connection timeouts and connection cap.
//! - `hosts`: host names in normal form (`server.admin_allowed_hosts`, admin `Host` checks).
//! - `cost`: prices (inline or from a price file), `[cost]` and `[[keys]]`.
//! - `jobs`: `[jobs]` (the background queue) and a route's `jobs` table.
//! - `routing`: target limits, breaker thresholds and route retry policy (validated data).
//! - `stage_config`: a stage's `config` table rendered as strings for `config-get`.
//! - `telemetry`: `[telemetry]` (metrics, the recent-requests ring, input logging, OTLP).
//! - `masked`: [`Config::to_masked_json`] for `GET /admin/config`.
//!
//! Error snapshot cases live in `tests/config/invalid/` (a `NAME.toml` next to the expected
//! `NAME.err`) and are checked by this module's unit tests.

mod cache;
mod check;
mod connections;
mod cost;
mod error;
mod hosts;
mod jobs;
mod limits;
mod load;
mod masked;
mod raw;
mod route;
mod routing;
mod sandbox;
mod server;
mod stage_config;
mod target;
mod telemetry;

#[cfg(test)]
mod snapshots;

pub use cache::*;
pub use check::{MAX_NAME_LEN, is_valid_name};
pub use connections::*;
pub use cost::*;
pub use error::{ConfigError, NO_KEY};
pub use hosts::HostName;
pub use jobs::*;
pub use limits::*;
pub use load::Config;
pub use masked::MASK;
pub use route::{OnErrorSetting, RouteSettings, StageSettings};
pub use routing::*;
pub use server::{
    DEFAULT_ADMIN_LISTEN, DEFAULT_DRAIN_TIMEOUT, DEFAULT_LISTEN, DEFAULT_MAX_BODY_BYTES,
    LARGEST_MAX_BODY_BYTES, LogFormat, MAX_DRAIN_TIMEOUT, ServerSettings, exposed_admin_message,
};
pub use target::{DEFAULT_TARGET_TIMEOUT, MAX_TARGET_TIMEOUT, TargetSettings};
pub use telemetry::*;
