//! # weir-sdk: write weir pipeline stages in Rust
//!
//! A stage is a WebAssembly component that the weir host runs for every request of a route,
//! sandboxed with fuel, a deadline and a memory cap. This crate wraps the generated bindings of
//! the `weir:stage` WIT world (`wit/stage.wit`, the single source of truth) so that a stage is
//! a plain Rust type:
//!
//! 1. implement [`Stage`] — every method but [`Stage::info`] defaults to pass-through;
//! 2. export it with [`export_stage!`];
//! 3. build with `cargo build --release --target wasm32-wasip2` (no cargo-component needed)
//!    and point the host config at `target/wasm32-wasip2/release/<crate>.wasm`.
//!
//! ```no_run
//! use weir_sdk::{ChatRequest, RequestContext, RequestOutcome, Stage, StageError, StageInfo};
//!
//! /// Refuses requests that mention a secret project name taken from the stage config.
//! #[derive(Default, serde::Serialize, serde::Deserialize)]
//! struct CodenameGuard;
//!
//! impl Stage for CodenameGuard {
//!     fn info() -> StageInfo {
//!         StageInfo::new("codename-guard", env!("CARGO_PKG_VERSION")).on_request()
//!     }
//!
//!     fn on_request(
//!         &mut self,
//!         _ctx: &RequestContext,
//!         request: ChatRequest,
//!     ) -> Result<RequestOutcome, StageError> {
//!         let codename: String = weir_sdk::config::get_or("codename", "bluebird".to_string())?;
//!         if request.messages.iter().any(|m| m.text().contains(&codename)) {
//!             weir_sdk::warn!("refused a request naming {codename}");
//!             return Err(StageError::reject(403, "codename", "that project is confidential"));
//!         }
//!         Ok(RequestOutcome::Next(request))
//!     }
//! }
//!
//! weir_sdk::export_stage!(CodenameGuard);
//! ```
//!
//! # Layout
//!
//! - [`bindings`]: the raw generated bindings (rarely needed directly).
//! - [`Stage`] and [`export_stage!`]: the trait an author implements and the macro that exports it.
//! - [`config`]: typed reading of the stage's own config table.
//! - [`log`](crate::info): `trace!` .. `error!` macros writing to the host log.
//! - [`llm`]: `complete()`, `complete_all()` (several at once, with a deadline) and `embed()`
//!   through the host's LLM step.
//! - [`response`]: `retry()`, from `on_response`: have the host ask the model again.
//! - [`service`]: HTTP calls to the services the host grants the stage (weir's `services`
//!   import; [`service::wasi_http`] for the same calls over standard `wasi:http`).
//! - [`cache`]: a key-value cache private to the stage.
//! - [`tokens`]: token counts with the model's real tokenizer, and the host's prompt-token
//!   formula ([`tokens::Tokens`], from the `weir-tokens` crate the host uses too).
//! - [`testing`]: a config getter and an error helper for a stage's native unit tests.
//! - [`build`]: builders for messages, responses and errors (inherent methods on the WIT types).
//!
//! The `Stage` value is created with `Default` for each request and lives for the request
//! phase and the response phase of that request only. Keep per-request state in `self`; keep
//! cross-request state in [`cache`]. Between the phases the host keeps no instance: the SDK
//! hands `self` to the host as bytes (serde, encoded with postcard) when `on_request` returns
//! and gets it back for `on_response`, so a slow model holds bytes, not an instance, and the
//! stage type derives `Serialize` and `Deserialize` (fields that need not survive:
//! `#[serde(skip)]`; postcard is not self-describing, so no `skip_serializing_if`).
//! [`testing::round_trip`] checks a value survives.

#![warn(missing_docs)]

// `#[weir_sdk::stage]` names `::weir_sdk::Phases`, which must resolve in this crate's own tests.
extern crate self as weir_sdk;

/// Raw bindings generated from `wit/stage.wit` by `wit-bindgen`.
#[allow(missing_docs, clippy::all, unsafe_code)]
pub mod bindings {
    wit_bindgen::generate!({
        world: "weir:stage/stage@0.2.0",
        generate_all,
        path: "../wit",
        pub_export_macro: true,
        export_macro_name: "__export_stage_bindings",
        default_bindings_module: "weir_sdk::bindings",
    });
}

pub mod build;
pub mod cache;
pub mod config;
pub mod llm;
mod log;
pub mod response;
pub mod service;
mod stage;
pub mod testing;
pub mod tokens;

pub use bindings::exports::weir::stage0_2_0::handler::{Phases, StageInfo, TextDelta};
pub use bindings::weir::stage0_1_0::types::{
    ChatRequest, ChatResponse, Choice, Content, ContentPart, LlmError, LogLevel, Message,
    Rejection, RequestContext, RequestOutcome, StageError, Usage,
};
pub use stage::Stage;
/// Put on `impl Stage for MyStage { ... }`: the phases the impl implements (`on_request`,
/// `on_response`, `on_response_chunk`) are added to what `info()` lists, so `info()` need not
/// list them and a phase cannot be implemented and never called.
///
/// ```no_run
/// use weir_sdk::{ChatRequest, RequestContext, RequestOutcome, Stage, StageError, StageInfo};
///
/// #[derive(Default, serde::Serialize, serde::Deserialize)]
/// struct Tagger;
///
/// #[weir_sdk::stage]
/// impl Stage for Tagger {
///     fn info() -> StageInfo {
///         StageInfo::new("tagger", "0.1.0") // phases: on-request, from the method below
///     }
///
///     fn on_request(&mut self, _: &RequestContext, r: ChatRequest) -> Result<RequestOutcome, StageError> {
///         Ok(RequestOutcome::Next(r))
///     }
/// }
/// weir_sdk::export_stage!(Tagger);
/// ```
pub use weir_sdk_macros::stage;

#[doc(hidden)]
pub use log::log as __log;

#[doc(hidden)]
pub mod __private {
    pub use crate::stage::{describe, on_request, on_response, on_response_chunk};
}

/// Exports a [`Stage`] implementation as the component's `weir:stage/stage` world.
///
/// Use it once per crate, at the top level, with a type that implements `Stage + Default`:
///
/// ```no_run
/// #[derive(Default, serde::Serialize, serde::Deserialize)]
/// struct PassThrough;
/// impl weir_sdk::Stage for PassThrough {
///     fn info() -> weir_sdk::StageInfo {
///         weir_sdk::StageInfo::new("pass-through", "1.0.0").on_request()
///     }
/// }
/// weir_sdk::export_stage!(PassThrough);
/// ```
#[macro_export]
macro_rules! export_stage {
    ($stage:ty) => {
        const _: () = {
            use $crate::bindings::exports::weir::stage0_2_0::handler as __handler;

            struct __WeirStageExport;

            impl __handler::Guest for __WeirStageExport {
                fn describe() -> $crate::StageInfo {
                    $crate::__private::describe::<$stage>()
                }

                fn on_request(
                    ctx: $crate::RequestContext,
                    request: $crate::ChatRequest,
                ) -> ::core::result::Result<__handler::RequestDone, $crate::StageError> {
                    $crate::__private::on_request::<$stage>(ctx, request)
                }

                fn on_response(
                    ctx: $crate::RequestContext,
                    state: ::std::vec::Vec<u8>,
                    request: $crate::ChatRequest,
                    response: $crate::ChatResponse,
                ) -> ::core::result::Result<$crate::ChatResponse, $crate::StageError> {
                    $crate::__private::on_response::<$stage>(ctx, state, request, response)
                }

                fn on_response_chunk(
                    ctx: $crate::RequestContext,
                    state: ::std::vec::Vec<u8>,
                    deltas: ::std::vec::Vec<$crate::TextDelta>,
                ) -> ::core::result::Result<__handler::ChunkDone, $crate::StageError> {
                    $crate::__private::on_response_chunk::<$stage>(ctx, state, deltas)
                }
            }

            // Exported only in the component: the export symbols' names
            // (`weir:stage/handler@0.2.0#describe`) are not valid in a native linker's version
            // script, and a stage's native build (its unit tests) exports nothing.
            #[cfg(target_family = "wasm")]
            $crate::bindings::__export_stage_bindings!(__WeirStageExport with_types_in $crate::bindings);
        };

        /// What the component exports, named in a native build (its unit tests, `cargo
        /// clippy`) so the stage type is not dead code there.
        #[cfg(not(target_family = "wasm"))]
        #[doc(hidden)]
        pub fn __weir_stage_exports() {
            let _ = (
                $crate::__private::describe::<$stage> as fn() -> _,
                $crate::__private::on_request::<$stage> as fn(_, _) -> _,
                $crate::__private::on_response::<$stage> as fn(_, _, _, _) -> _,
                $crate::__private::on_response_chunk::<$stage> as fn(_, _, _) -> _,
            );
        }
    };
}
