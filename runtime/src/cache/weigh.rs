//! What a WIT value weighs: the bytes of its strings plus a fixed overhead per record (the
//! struct itself, a list slot), summed without serialising. The byte-bounded caches charge
//! it, and the pipeline bounds a stage's output by it (`sandbox.stage_output_max_bytes`).
//!
//! Each record is destructured, so a field added to the WIT is a compile error here rather
//! than bytes the bound forgets.

use crate::wit::{ChatRequest, ChatResponse, Choice, Content, Message, Rejection};

/// Bytes charged per record on top of its strings (the struct, its list slot, allocator
/// headers): small values are not free.
pub const RECORD: usize = 64;

/// Bytes a request is charged for.
pub fn request(request: &ChatRequest) -> usize {
    let ChatRequest {
        model,
        messages,
        temperature: _,
        top_p: _,
        max_tokens: _,
        stream: _,
        user,
        metadata,
        extra,
    } = request;
    let metadata: usize = metadata
        .iter()
        .map(|(key, value)| key.len() + value.len() + RECORD)
        .sum();
    RECORD
        + model.len()
        + messages.iter().map(message).sum::<usize>()
        + user.as_ref().map_or(0, String::len)
        + metadata
        + extra.len()
}

/// Bytes a response is charged for.
pub fn response(response: &ChatResponse) -> usize {
    let ChatResponse {
        id,
        model,
        created: _,
        choices,
        usage: _,
        extra,
    } = response;
    RECORD + id.len() + model.len() + choices.iter().map(choice).sum::<usize>() + extra.len()
}

/// Bytes a rejection is charged for.
pub fn rejection(rejection: &Rejection) -> usize {
    let Rejection {
        status: _,
        code,
        message,
    } = rejection;
    RECORD + code.len() + message.len()
}

/// `bytes` as a moka weight (saturating: a value over 4 GiB weighs the most there is).
pub fn as_weight(bytes: usize) -> u32 {
    u32::try_from(bytes).unwrap_or(u32::MAX)
}

fn choice(choice: &Choice) -> usize {
    let Choice {
        index: _,
        message: text,
        finish_reason,
        extra,
    } = choice;
    RECORD + message(text) + finish_reason.as_ref().map_or(0, String::len) + extra.len()
}

fn message(message: &Message) -> usize {
    let Message {
        role,
        content,
        name,
        extra,
    } = message;
    let content = match content {
        None => 0,
        Some(Content::Text(text)) => text.len(),
        Some(Content::Parts(parts)) => parts
            .iter()
            .map(|part| {
                RECORD
                    + part.kind.len()
                    + part.text.as_ref().map_or(0, String::len)
                    + part.extra.len()
            })
            .sum(),
    };
    RECORD + role.len() + content + name.as_ref().map_or(0, String::len) + extra.len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wit::ContentPart;

    #[test]
    fn every_string_counts() {
        let small = ChatRequest::hi("m");
        let base = request(&small);
        let grown = |edit: &dyn Fn(&mut ChatRequest)| {
            let mut r = small.clone();
            edit(&mut r);
            request(&r) - base
        };
        assert_eq!(grown(&|r| r.model.push_str("0123456789")), 10);
        assert_eq!(grown(&|r| r.extra.push_str("0123456789")), 10);
        assert_eq!(grown(&|r| r.user = Some("0123456789".into())), 10);
        assert_eq!(
            grown(&|r| r.metadata.push(("k".into(), "v".into()))),
            2 + RECORD
        );
        assert_eq!(grown(&|r| r.messages[0].extra.push_str("0123456789")), 10);
        assert_eq!(
            grown(&|r| r.messages.push(Message::text("user", "0123456789"))),
            RECORD + 4 + 10 + 2
        );
        let parts = |r: &mut ChatRequest| {
            r.messages[0].content = Some(Content::Parts(vec![ContentPart {
                kind: "text".into(),
                text: Some("hi".into()),
                extra: "{}".into(),
            }]))
        };
        // "hi" as a part: the part's record, its kind and its extra on top of the text.
        assert_eq!(grown(&parts), RECORD + 4 + 2);
    }

    #[test]
    fn a_megabyte_request_weighs_a_megabyte() {
        let mut big = ChatRequest::hi("m");
        big.extra = format!("{{\"pad\":\"{}\"}}", "x".repeat(1 << 20));
        let weight = request(&big);
        assert!((1 << 20..(1 << 20) + 1024).contains(&weight), "{weight}");
        assert_eq!(as_weight(usize::MAX), u32::MAX);
    }
}
