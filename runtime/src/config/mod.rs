//! Configuration: the TOML schema, its validation, and the validated types the rest of weir
//! uses.
//!
//! Owns: parsing (strict, unknown keys are errors naming file, line and key), validation
//! (cross-field checks, newtypes for durations, sizes and ids) and the validated [`Config`].
//! Everyone may read the validated types; nothing outside this module sees raw TOML.

mod limits;

pub use limits::*;
