//! Configuration: the TOML schema, its validation, and the validated types the rest of weir
//! uses.
//!
//! Owns: parsing (strict, unknown keys are errors naming file, line and key), validation
//! and the validated [`Config`]. Everyone may read the validated types; nothing outside this
//! module sees raw TOML.
//!
//! Each key is declared once: one field of a validated struct, with its doc, its type, the
//! codec that checks its range while serde reads it and its default (`value.rs`). The same
//! structs serialize, secrets masked by attribute, into the output of `GET /admin/config`.
//!
//! # Layout
//!
//! - `value`: the self-checking value types and codecs (bounded numbers, durations, MiB,
//!   dollars, names, environment-variable names, choices), masking, defaults.
//! - `document`: the parsed file with positions; regrouping flat keys into nested structs.
//! - `check`: the second pass's helpers: cross-field checks, secrets, paths.
//! - `load`: [`Config`], [`Config::load`] and [`Config::parse`], which run the two passes.
//! - `error`: [`ConfigError`], printed as `{file}:{line}:{column}: {key}: {message}`.
//! - `server` + `connections` + `hosts`: `[server]` (listeners, admin hosts, client
//!   connections).
//! - `sandbox`: `[sandbox]` and the call limits a stage may override.
//! - `target`, `route`, `routing`: `[targets.NAME]`, `[[routes]]` and their limits, breakers
//!   and retry policy.
//! - `cache`, `cost`, `jobs`, `telemetry`: one table (or two) each.
//! - `state`: `[state]`, where state shared by a fleet lives (local or Redis).
//! - `oci`: `[oci]`, pulling stages from OCI registries, and `oci://` stage paths.
//! - `stage_config`: a stage's `config` table rendered as strings for `config-get`.
//! - `masked`: [`Config::to_masked_json`] for `GET /admin/config`.
//!
//! Error snapshot cases live in `tests/config/invalid/` (a `NAME.toml` next to the expected
//! `NAME.err`) and are checked by this module's unit tests.

mod cache;
pub(crate) mod check;
mod connections;
mod cost;
pub(crate) mod document;
mod error;
mod hosts;
mod jobs;
mod load;
mod masked;
mod oci;
mod route;
mod routing;
mod sandbox;
mod server;
mod service;
mod stage_config;
mod state;
mod target;
mod telemetry;
pub(crate) mod value;

#[cfg(test)]
mod snapshots;

pub use cache::*;
pub use check::{MAX_NAME_LEN, is_valid_name};
pub use connections::*;
pub use cost::*;
pub use error::{ConfigError, NO_KEY};
pub use hosts::HostName;
pub use jobs::*;
pub use load::Config;
pub use oci::{OciSettings, RegistryCredentials};
pub use route::{DEFAULT_STAGE_LLM_CALLS, OnErrorSetting, RouteSettings, StageSettings};
pub use routing::*;
pub use sandbox::{Allocator, CallLimits, SandboxSettings};
pub use server::{DEFAULT_LISTEN, LogFormat, ServerSettings, exposed_admin_message};
pub use service::{SERVICE_DEADLINE, ServiceSettings};
pub use state::{Backend, BudgetMode, OnUnavailable, Policies, StateSettings, mask_password};
pub use target::{ANTHROPIC_VERSION, AZURE_API_VERSION, ProviderKind, TargetSettings};
pub use telemetry::*;
pub use value::MASK;
