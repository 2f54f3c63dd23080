//! Helpers for a stage's native unit tests.
//!
//! Host imports cannot run in `cargo test` (the test binary is not a component), so a stage
//! reads its config through a getter it is handed (`Settings::load(weir_sdk::config::get)` in
//! the component) and its tests hand it [`config`] instead:
//!
//! ```
//! use weir_sdk::StageError;
//! use weir_sdk::testing::{config, fail_message};
//!
//! fn load(get: impl Fn(&str) -> Option<String>) -> Result<u32, StageError> {
//!     let max = get("max").ok_or_else(|| StageError::fail("`max` is required"))?;
//!     max.parse().map_err(|_| StageError::fail("`max` is not a number"))
//! }
//!
//! assert_eq!(load(config(&[("max", "3")])).ok(), Some(3));
//! assert_eq!(fail_message(load(config(&[]))), "`max` is required");
//! ```
//!
//! A plain module rather than a feature: it has no dependencies and no host calls, and a
//! feature turned on only by the stages' dev-dependencies would give weir-sdk two feature
//! sets to build.

use std::fmt::Debug;

use crate::{Stage, StageError};

/// A config getter over `pairs` (key, raw value), as [`crate::config::get`] would answer for a
/// stage whose config table holds exactly those keys.
pub fn config<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
    move |key| {
        pairs
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.to_string())
    }
}

/// The message of a [`StageError::Fail`]; panics (failing the test) on success or on a
/// rejection.
pub fn fail_message<T: Debug>(result: Result<T, StageError>) -> String {
    match result {
        Err(StageError::Fail(message)) => message,
        Err(StageError::Reject(rejection)) => panic!("unexpected rejection {rejection:?}"),
        Ok(value) => panic!("unexpected success {value:?}"),
    }
}

/// `stage` as the response phase will see it: encoded into the state the host keeps between
/// the phases and decoded again, as the SDK does (a field marked `#[serde(skip)]` comes back as
/// its default). Fails the test when the type does not survive the trip.
///
/// ```
/// #[derive(Default, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
/// struct Seen { names: Vec<String> }
/// # impl weir_sdk::Stage for Seen {
/// #     fn info() -> weir_sdk::StageInfo { weir_sdk::StageInfo::new("seen", "1").on_request() }
/// # }
/// let seen = Seen { names: vec!["a".into()] };
/// assert_eq!(weir_sdk::testing::round_trip(&seen), seen);
/// ```
pub fn round_trip<S: Stage>(stage: &S) -> S {
    let state = match crate::stage::save(stage) {
        Ok(state) => state,
        Err(err) => panic!("the stage state does not encode: {err:?}"),
    };
    match crate::stage::load::<S>(&state) {
        Ok(stage) => stage,
        Err(err) => panic!("the stage state does not decode: {err:?}"),
    }
}
