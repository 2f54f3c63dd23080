//! `pii-redact`: a weir stage that replaces personal data and secrets in the prompt with
//! stable placeholders, and puts the originals back into the answer.
//!
//! In the request phase every piece of message text (the content string, or each text part
//! of a multimodal message; images and other parts are left alone) is scanned for e-mail
//! addresses, phone numbers, Luhn-valid card numbers, IP addresses and secrets, and each
//! value is replaced by `[EMAIL_1]`, `[PHONE_1]`, `[CREDIT_CARD_1]`, `[IP_1]` or
//! `[SECRET_1]`: numbered per kind in order of first appearance across the whole request,
//! the same value always getting the same placeholder. In the response phase (unless
//! `restore = false`) the placeholders in every choice's text are replaced by the originals,
//! so the model never sees the data and the client still gets a useful answer. A streamed
//! answer is restored chunk by chunk (`on-response-chunk`): text that may be the start of a
//! placeholder split across two chunks is held back until the next chunk completes it (at
//! most 22 bytes per choice), so the client gets as many chunks as the upstream sent.
//!
//! See `README.md` for the config keys.
//!
//! # Layout
//!
//! - [`kind`]: the kinds of data, their config names and placeholder labels.
//! - [`settings`]: the validated config.
//! - [`scan`]: one linear-time scanner per kind, and the overlap rules between them.
//! - [`vault`]: placeholders handed out in this request and the values behind them.
//! - this file: the [`Stage`] implementation, the only code that talks to the host.

pub mod kind;
pub mod scan;
pub mod settings;
pub mod vault;

#[cfg(test)]
mod testing;

use std::collections::BTreeMap;

use weir_sdk::{
    ChatRequest, ChatResponse, RequestContext, RequestOutcome, Stage, StageError, StageInfo,
    TextDelta,
};

use crate::settings::Settings;
use crate::vault::Vault;

/// The stage value of one request: what the request phase redacted, for the response phase.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct PiiRedact {
    /// Placeholders handed out in the request phase.
    vault: Vault,
    /// Whether the response phase restores the originals (the `restore` config key).
    restore: bool,
    /// Per choice of a streamed answer: the text held back because it may be the start of a
    /// placeholder that the next chunk completes.
    held: BTreeMap<u32, String>,
}

impl Stage for PiiRedact {
    // A key not listed here (a misspelling) is refused when the host loads the config.
    const CONFIG_KEYS: Option<&'static [&'static str]> = Some(&["kinds", "restore", "roles"]);

    fn info() -> StageInfo {
        // The request phase depends only on the request and the config. A stream is restored
        // chunk by chunk, holding back a placeholder split across two chunks.
        StageInfo::new("pii-redact", env!("CARGO_PKG_VERSION"))
            .on_request()
            .on_response()
            .on_response_chunk()
            .deterministic()
    }

    fn on_request(
        &mut self,
        ctx: &RequestContext,
        mut request: ChatRequest,
    ) -> Result<RequestOutcome, StageError> {
        let settings = Settings::load(weir_sdk::config::get)?;
        self.redact(&settings, &mut request);
        self.restore = settings.restore;
        let counts = self.vault.counts();
        if !counts.is_empty() {
            let summary: Vec<String> = counts
                .iter()
                .map(|(kind, count)| format!("{}={count}", kind.config_name()))
                .collect();
            weir_sdk::debug!("request {}: redacted {}", ctx.request_id, summary.join(" "));
        }
        Ok(RequestOutcome::Next(request))
    }

    fn on_response(
        &mut self,
        _ctx: &RequestContext,
        _request: &ChatRequest,
        mut response: ChatResponse,
    ) -> Result<ChatResponse, StageError> {
        if self.restore {
            self.restore_into(&mut response);
        }
        Ok(response)
    }

    fn on_response_chunk(
        &mut self,
        _ctx: &RequestContext,
        deltas: Vec<TextDelta>,
    ) -> Result<Vec<TextDelta>, StageError> {
        if !self.restore || self.vault.is_empty() {
            return Ok(deltas);
        }
        Ok(deltas
            .into_iter()
            .map(|delta| self.restore_delta(delta))
            .collect())
    }
}

impl PiiRedact {
    /// Restores one streamed delta: the text held back for its choice followed by its own,
    /// minus a new tail that may be the start of a placeholder (unless it is the choice's last).
    pub fn restore_delta(&mut self, mut delta: TextDelta) -> TextDelta {
        let mut text = self.held.remove(&delta.choice).unwrap_or_default();
        text.push_str(&delta.text);
        if !delta.last {
            let held = text.split_off(vault::placeholder_prefix_start(&text));
            if !held.is_empty() {
                self.held.insert(delta.choice, held);
            }
        }
        self.vault.restore(&mut text);
        delta.text = text;
        delta
    }

    /// Redacts the text of every message whose role `settings` selects.
    pub fn redact(&mut self, settings: &Settings, request: &mut ChatRequest) {
        for message in &mut request.messages {
            if settings.redacts_role(&message.role) {
                message.for_each_text_mut(|text| self.vault.redact(text, settings.kinds));
            }
        }
    }

    /// Puts the originals back into the text of every choice.
    pub fn restore_into(&self, response: &mut ChatResponse) {
        if self.vault.is_empty() {
            return;
        }
        for choice in &mut response.choices {
            choice
                .message
                .for_each_text_mut(|text| self.vault.restore(text));
        }
    }
}

weir_sdk::export_stage!(PiiRedact);

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use weir_sdk::{Content, ContentPart, Message};

    use super::*;
    use crate::kind::{Kind, Kinds};

    fn settings(kinds: Kinds, roles: Option<&[&str]>) -> Settings {
        Settings {
            kinds,
            restore: true,
            roles: roles.map(|roles| roles.iter().map(|r| r.to_string()).collect()),
        }
    }

    fn request(messages: Vec<Message>) -> ChatRequest {
        ChatRequest::new("m", messages)
    }

    #[test]
    fn numbering_spans_the_whole_request() {
        let mut stage = PiiRedact::default();
        let mut req = request(vec![
            Message::system("Support contact: help@corp.example"),
            Message::user("I am a@b.com, cc help@corp.example and x@y.org"),
            Message::assistant("Noted a@b.com."),
        ]);
        stage.redact(&settings(Kinds::ALL, None), &mut req);
        let texts: Vec<String> = req.messages.iter().map(Message::text).collect();
        assert_eq!(
            texts,
            vec![
                "Support contact: [EMAIL_1]",
                "I am [EMAIL_2], cc [EMAIL_1] and [EMAIL_3]",
                "Noted [EMAIL_2]."
            ]
        );
    }

    #[test]
    fn roles_limit_what_is_redacted() {
        let mut stage = PiiRedact::default();
        let mut req = request(vec![
            Message::system("Escalate to boss@corp.example"),
            Message::user("I am a@b.com"),
        ]);
        stage.redact(&settings(Kinds::ALL, Some(&["user"])), &mut req);
        assert_eq!(req.messages[0].text(), "Escalate to boss@corp.example");
        assert_eq!(req.messages[1].text(), "I am [EMAIL_1]");
    }

    #[test]
    fn kinds_limit_what_is_redacted() {
        let mut stage = PiiRedact::default();
        let mut req = request(vec![Message::user("a@b.com from 10.1.2.3")]);
        stage.redact(&settings(Kinds::of(&[Kind::Ip]), None), &mut req);
        assert_eq!(req.messages[0].text(), "a@b.com from [IP_1]");
    }

    #[test]
    fn multimodal_parts_survive() {
        let mut stage = PiiRedact::default();
        let image = ContentPart {
            kind: "image_url".to_string(),
            text: None,
            extra: r#"{"image_url":{"url":"https://x.example/a@b.com.png"}}"#.to_string(),
        };
        let mut message = Message::user("");
        message.content = Some(Content::Parts(vec![
            ContentPart {
                kind: "text".to_string(),
                text: Some("who is a@b.com?".to_string()),
                extra: "{}".to_string(),
            },
            image.clone(),
        ]));
        let mut req = request(vec![message]);
        stage.redact(&settings(Kinds::ALL, None), &mut req);
        let Some(Content::Parts(parts)) = &req.messages[0].content else {
            panic!("content is no longer a list of parts");
        };
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0].text.as_deref(), Some("who is [EMAIL_1]?"));
        assert_eq!(parts[1].kind, image.kind);
        assert_eq!(parts[1].text, None);
        assert_eq!(parts[1].extra, image.extra);
    }

    #[test]
    fn response_gets_the_originals_back() {
        let mut stage = PiiRedact {
            restore: true,
            ..PiiRedact::default()
        };
        let mut req = request(vec![Message::user(
            "Email a@b.com and call +1 415 555 0100",
        )]);
        stage.redact(&settings(Kinds::ALL, None), &mut req);
        assert_eq!(req.messages[0].text(), "Email [EMAIL_1] and call [PHONE_1]");
        let mut response =
            ChatResponse::from_text("m", "I will email [EMAIL_1] and call [PHONE_1].");
        stage.restore_into(&mut response);
        assert_eq!(
            response.text(),
            "I will email a@b.com and call +1 415 555 0100."
        );
    }

    #[test]
    fn info_declares_both_phases() {
        let info = PiiRedact::info();
        assert_eq!(info.name, "pii-redact");
        assert!(
            info.phases
                .contains(weir_sdk::Phases::REQUEST | weir_sdk::Phases::RESPONSE)
        );
        assert!(info.deterministic);
        assert!(info.phases.contains(weir_sdk::Phases::RESPONSE_CHUNK));
    }

    /// `answer` streamed in `chunks` through the chunk hook, the stage value travelling
    /// through its JSON state between chunks as it does through the host: what the client
    /// reads, chunk by chunk.
    fn stream_through(stage: &PiiRedact, answer: &str, cuts: &[usize]) -> Vec<String> {
        let ctx = RequestContext {
            request_id: "r".into(),
            route: "m".into(),
            stage: "pii".into(),
        };
        let mut state = weir_sdk::testing::round_trip(stage);
        let mut out = Vec::new();
        let mut from = 0;
        let ends: Vec<usize> = cuts.iter().copied().chain([answer.len()]).collect();
        for (i, &end) in ends.iter().enumerate() {
            let delta = TextDelta {
                choice: 0,
                text: answer[from..end].to_string(),
                last: i + 1 == ends.len(),
            };
            from = end;
            let mut sent = state.on_response_chunk(&ctx, vec![delta]).unwrap();
            state = weir_sdk::testing::round_trip(&state);
            assert_eq!(sent.len(), 1);
            out.push(sent.remove(0).text);
        }
        out
    }

    #[test]
    fn a_placeholder_split_across_chunks_is_restored() {
        let mut stage = PiiRedact {
            restore: true,
            ..PiiRedact::default()
        };
        let mut req = request(vec![Message::user("mail a@b.com or c@d.org")]);
        stage.redact(&settings(Kinds::ALL, None), &mut req);
        let answer = "Write to [EMAIL_1] and [EMAIL_2].";
        let chunks = stream_through(&stage, answer, &[10, 14, 24, 25]);
        assert_eq!(chunks.len(), 5, "one chunk out per chunk in");
        assert_eq!(chunks[0], "Write to ", "`[` is held back");
        assert_eq!(chunks.concat(), "Write to a@b.com and c@d.org.");
        // Text that only looks like the start of a placeholder is released at the end.
        assert_eq!(
            stream_through(&stage, "odd [EMA", &[5]).concat(),
            "odd [EMA"
        );
    }

    #[test]
    fn streamed_restore_equals_whole_restore_over_random_chunkings() {
        let mut rng = crate::testing::Rng::new();
        for _ in 0..3_000 {
            let mut stage = PiiRedact {
                restore: true,
                ..PiiRedact::default()
            };
            let original = rng.text(false);
            let mut req = request(vec![Message::user(&original)]);
            stage.redact(&settings(Kinds::ALL, None), &mut req);
            // The model repeats the redacted text, with some bracket noise around it.
            let answer = format!(
                "{}{}{}",
                rng.text(true),
                req.messages[0].text(),
                rng.text(true)
            );
            let mut whole = ChatResponse::from_text("m", answer.clone());
            stage.restore_into(&mut whole);
            let boundaries: Vec<usize> = answer
                .char_indices()
                .map(|(i, _)| i)
                .filter(|&i| i > 0)
                .collect();
            let mut cuts: Vec<usize> = boundaries
                .iter()
                .copied()
                .filter(|_| rng.next().is_multiple_of(4))
                .collect();
            cuts.dedup();
            let chunks = stream_through(&stage, &answer, &cuts);
            assert_eq!(chunks.len(), cuts.len() + 1);
            assert_eq!(
                chunks.concat(),
                whole.text(),
                "answer {answer:?} cuts {cuts:?}"
            );
            assert!(stage.held.is_empty());
        }
    }

    #[test]
    fn the_state_carries_the_originals_only() {
        let mut stage = PiiRedact {
            restore: true,
            ..PiiRedact::default()
        };
        let mut req = request(vec![Message::user("a@b.com")]);
        stage.redact(&settings(Kinds::ALL, None), &mut req);
        let back = weir_sdk::testing::round_trip(&stage);
        assert!(back.restore);
        let mut text = "[EMAIL_1]".to_string();
        back.vault.restore(&mut text);
        assert_eq!(text, "a@b.com");
        assert!(
            back.vault.counts().is_empty(),
            "counts stay in the request phase"
        );
    }
}
