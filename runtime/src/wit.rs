//! Host-side bindings generated from `wit/stage.wit`, the single source of truth for the stage
//! contract. Every other module uses the types re-exported here; nothing else runs `bindgen!`.
//!
//! Two contract versions share the types and the host imports (`weir:stage/types@0.1.0`,
//! `weir:stage/host@0.1.0`): the 0.1 world exports its phases from the world; the 0.2 world
//! exports them from `weir:stage/handler@0.2.0` ([`v2`]) and hands per-request state over as
//! bytes.
//!
//! Imports and exports are async: a stage's `complete()` call awaits the LLM step, and a
//! phase call must be cancellable by the tokio timeout that backs the epoch deadline.

#![allow(missing_docs)]

use std::borrow::Cow;

wasmtime::component::bindgen!({
    world: "weir:stage/stage@0.1.0",
    path: "../wit",
    imports: { default: async },
    exports: { default: async },
});

/// The 0.2 world: the same types and host imports (mapped onto the 0.1 bindings, so one
/// `ChatRequest` type serves both), its own handler export.
pub mod v2 {
    wasmtime::component::bindgen!({
        world: "weir:stage/stage@0.2.0",
        path: "../wit",
        imports: { default: async },
        exports: { default: async },
        with: {
            "weir:stage/types@0.1.0": super::weir::stage0_1_0::types,
            "weir:stage/host@0.1.0": super::weir::stage0_1_0::host,
        },
    });

    pub use self::exports::weir::stage0_2_0::handler::{
        ChunkDone, Phases, RequestDone, StageInfo, TextDelta,
    };
}

// The world-level `use` already brings the types the exports name into this module.
pub use self::weir::stage0_1_0::types::{
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

#[cfg(test)]
impl ChatRequest {
    /// A request for `model` with one user message saying "hi" and nothing else set: the
    /// unit tests' starting point (`ChatRequest { stream: true, ..ChatRequest::hi("m") }`).
    pub(crate) fn hi(model: &str) -> ChatRequest {
        ChatRequest {
            model: model.to_string(),
            messages: vec![Message::text("user", "hi")],
            temperature: None,
            top_p: None,
            max_tokens: None,
            stream: false,
            user: None,
            metadata: Vec::new(),
            extra: "{}".to_string(),
        }
    }
}

/// The one way the host reads the text of content. Text parts are joined with nothing between
/// them (`""`, never `"\n"`), so every path counts the same tokens for the same text:
///
/// - a prompt is counted part by part with no separator tokens (`weir_tokens`, OpenAI's
///   per-message accounting that `count_prompt` and `context-trim` share);
/// - a streamed answer is its deltas concatenated as they arrive, so a whole answer and the
///   same answer streamed must join the same way.
///
/// A `"\n"` join would count newline tokens that neither of those counts, so the same answer
/// would be estimated differently by path.
impl Content {
    /// Each piece of text, in order: the content string, or each text part's text (non-text
    /// parts have none).
    pub fn texts(&self) -> impl Iterator<Item = &str> {
        let (text, parts) = match self {
            Content::Text(text) => (Some(text.as_str()), &[][..]),
            Content::Parts(parts) => (None, parts.as_slice()),
        };
        text.into_iter()
            .chain(parts.iter().filter_map(|part| part.text.as_deref()))
    }

    /// All the text, pieces concatenated (see the `impl` docs for why with no separator);
    /// borrowed unless there are several text parts.
    pub fn text(&self) -> Cow<'_, str> {
        concat(self.texts())
    }
}

impl ChatResponse {
    /// The answer's text: every choice's content text, concatenated in order (what completion
    /// tokens are counted on when the provider reports no usage).
    pub fn text(&self) -> Cow<'_, str> {
        concat(
            self.choices
                .iter()
                .filter_map(|choice| choice.message.content.as_ref())
                .flat_map(Content::texts),
        )
    }
}

/// `texts` concatenated; borrowed when there is at most one.
fn concat<'a>(mut texts: impl Iterator<Item = &'a str>) -> Cow<'a, str> {
    match (texts.next(), texts.next()) {
        (None, _) => Cow::Borrowed(""),
        (Some(only), None) => Cow::Borrowed(only),
        (Some(first), Some(second)) => {
            let mut all = String::from(first);
            all.push_str(second);
            all.extend(texts);
            Cow::Owned(all)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(text: Option<&str>) -> ContentPart {
        ContentPart {
            kind: if text.is_some() { "text" } else { "image_url" }.into(),
            text: text.map(Into::into),
            extra: "{}".into(),
        }
    }

    fn choice(content: Option<Content>) -> Choice {
        let mut message = Message::text("assistant", "");
        message.content = content;
        Choice {
            index: 0,
            message,
            finish_reason: None,
            extra: "{}".into(),
        }
    }

    #[test]
    fn content_text_joins_text_parts_with_nothing_between() {
        let plain = Content::Text("hello".into());
        assert_eq!(plain.texts().collect::<Vec<_>>(), ["hello"]);
        assert!(matches!(plain.text(), Cow::Borrowed("hello")));

        let parts = Content::Parts(vec![part(Some("look ")), part(None), part(Some("here"))]);
        assert_eq!(parts.texts().collect::<Vec<_>>(), ["look ", "here"]);
        assert_eq!(parts.text(), "look here");

        let one = Content::Parts(vec![part(None), part(Some("only"))]);
        assert!(matches!(one.text(), Cow::Borrowed("only")));
        assert_eq!(Content::Parts(vec![part(None)]).text(), "");
    }

    #[test]
    fn a_responses_text_is_every_choice_concatenated() {
        let mut response = ChatResponse {
            id: "c".into(),
            model: "m".into(),
            created: 0,
            choices: Vec::new(),
            usage: None,
            extra: "{}".into(),
        };
        assert_eq!(response.text(), "");
        response.choices = vec![
            choice(Some(Content::Text("a".into()))),
            choice(None),
            choice(Some(Content::Parts(vec![part(Some("b")), part(Some("c"))]))),
        ];
        assert_eq!(response.text(), "abc");
    }
}
