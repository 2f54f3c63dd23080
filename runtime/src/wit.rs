//! Host-side bindings generated from `wit/stage.wit`, the single source of truth for the stage
//! contract. Every other module uses the types re-exported here; nothing else runs `bindgen!`.
//!
//! Imports and exports are async: a stage's `complete()` call awaits the LLM step, and a
//! phase call must be cancellable by the tokio timeout that backs the epoch deadline.

#![allow(missing_docs)]

wasmtime::component::bindgen!({
    world: "stage",
    path: "../wit",
    imports: { default: async },
    exports: { default: async },
});

// The world-level `use` already brings the types the exports name into this module.
pub use self::weir::stage::types::{
    Choice, Content, ContentPart, LlmError, LogLevel, Message, Phases, Rejection, Usage,
};

/// The generated world struct (an instantiated stage's export handles).
pub type StageBindings = Stage;
/// The generated pre-instantiated world (`InstancePre` with the exports looked up).
pub type StageBindingsPre<T> = StagePre<T>;

impl Message {
    /// A message of `role` whose content is plain `text`, with no name and no extra fields.
    pub fn text(role: &str, text: &str) -> Message {
        Message {
            role: role.to_string(),
            content: Some(Content::Text(text.to_string())),
            name: None,
            extra: "{}".to_string(),
        }
    }
}
