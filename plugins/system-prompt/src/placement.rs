//! Putting the rendered prompt into the conversation according to the [`Mode`].

use weir_sdk::{Content, ContentPart, Message};

use crate::settings::Mode;

/// The roles that `replace` removes.
const SYSTEM_ROLES: [&str; 2] = ["system", "developer"];

/// Puts `prompt` into `messages` as `mode` says.
pub fn apply(messages: &mut Vec<Message>, prompt: String, mode: Mode) {
    match mode {
        Mode::Prepend => messages.insert(0, Message::system(prompt)),
        Mode::Replace => {
            messages.retain(|m| !SYSTEM_ROLES.contains(&m.role.as_str()));
            messages.insert(0, Message::system(prompt));
        }
        Mode::Merge => match messages.iter_mut().find(|m| m.role == "system") {
            Some(message) => merge_into(message, prompt),
            None => messages.insert(0, Message::system(prompt)),
        },
    }
}

/// Puts `prompt` and a blank line before the text of `message`. With a list of parts, the
/// prompt goes into the first part when that is a text part, or becomes a new first part.
fn merge_into(message: &mut Message, prompt: String) {
    match &mut message.content {
        None => message.content = Some(Content::Text(prompt)),
        Some(Content::Text(text)) => prefix(text, prompt),
        Some(Content::Parts(parts)) => match parts.first_mut().and_then(|p| p.text.as_mut()) {
            Some(text) => prefix(text, prompt),
            None => parts.insert(
                0,
                ContentPart {
                    kind: "text".to_string(),
                    text: Some(prompt),
                    extra: "{}".to_string(),
                },
            ),
        },
    }
}

/// `text` becomes `prompt`, a blank line, and the old text (just `prompt` if it was empty).
fn prefix(text: &mut String, mut prompt: String) {
    if !text.is_empty() {
        prompt.push_str("\n\n");
        prompt.push_str(text);
    }
    *text = prompt;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roles_and_texts(messages: &[Message]) -> Vec<(String, String)> {
        messages
            .iter()
            .map(|m| (m.role.clone(), m.text()))
            .collect()
    }

    fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
        items
            .iter()
            .map(|(r, t)| (r.to_string(), t.to_string()))
            .collect()
    }

    fn conversation() -> Vec<Message> {
        vec![
            Message::system("Old rules."),
            Message::user("Hi"),
            Message::new("developer", "Dev note."),
            Message::system("Second system."),
        ]
    }

    #[test]
    fn prepend_inserts_first_and_keeps_the_rest() {
        let mut messages = conversation();
        apply(&mut messages, "New.".to_string(), Mode::Prepend);
        assert_eq!(
            roles_and_texts(&messages),
            pairs(&[
                ("system", "New."),
                ("system", "Old rules."),
                ("user", "Hi"),
                ("developer", "Dev note."),
                ("system", "Second system."),
            ])
        );
    }

    #[test]
    fn replace_drops_system_and_developer_messages() {
        let mut messages = conversation();
        apply(&mut messages, "New.".to_string(), Mode::Replace);
        assert_eq!(
            roles_and_texts(&messages),
            pairs(&[("system", "New."), ("user", "Hi")])
        );
    }

    #[test]
    fn merge_prefixes_the_first_system_message() {
        let mut messages = conversation();
        apply(&mut messages, "New.".to_string(), Mode::Merge);
        assert_eq!(
            roles_and_texts(&messages),
            pairs(&[
                ("system", "New.\n\nOld rules."),
                ("user", "Hi"),
                ("developer", "Dev note."),
                ("system", "Second system."),
            ])
        );
    }

    #[test]
    fn merge_finds_a_later_system_message_or_inserts_one() {
        let mut messages = vec![Message::user("Hi"), Message::system("Late.")];
        apply(&mut messages, "New.".to_string(), Mode::Merge);
        assert_eq!(
            roles_and_texts(&messages),
            pairs(&[("user", "Hi"), ("system", "New.\n\nLate.")])
        );
        let mut messages = vec![Message::user("Hi")];
        apply(&mut messages, "New.".to_string(), Mode::Merge);
        assert_eq!(
            roles_and_texts(&messages),
            pairs(&[("system", "New."), ("user", "Hi")])
        );
        let mut messages = Vec::new();
        apply(&mut messages, "New.".to_string(), Mode::Merge);
        assert_eq!(roles_and_texts(&messages), pairs(&[("system", "New.")]));
    }

    #[test]
    fn merge_into_empty_or_missing_content() {
        let mut messages = vec![Message::system("")];
        apply(&mut messages, "New.".to_string(), Mode::Merge);
        assert_eq!(messages[0].text(), "New.");
        let mut message = Message::system("x");
        message.content = None;
        let mut messages = vec![message];
        apply(&mut messages, "New.".to_string(), Mode::Merge);
        assert_eq!(messages[0].text(), "New.");
    }

    #[test]
    fn merge_into_parts() {
        let text_part = |text: &str| ContentPart {
            kind: "text".to_string(),
            text: Some(text.to_string()),
            extra: "{}".to_string(),
        };
        let image = ContentPart {
            kind: "image_url".to_string(),
            text: None,
            extra: r#"{"image_url":{"url":"https://x.example/a.png"}}"#.to_string(),
        };
        let mut message = Message::system("");
        message.content = Some(Content::Parts(vec![text_part("Old."), image.clone()]));
        let mut messages = vec![message];
        apply(&mut messages, "New.".to_string(), Mode::Merge);
        let Some(Content::Parts(parts)) = &messages[0].content else {
            panic!("parts were replaced");
        };
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0].text.as_deref(), Some("New.\n\nOld."));
        assert_eq!(parts[1].extra, image.extra);

        let mut message = Message::system("");
        message.content = Some(Content::Parts(vec![image.clone(), text_part("Old.")]));
        let mut messages = vec![message];
        apply(&mut messages, "New.".to_string(), Mode::Merge);
        let Some(Content::Parts(parts)) = &messages[0].content else {
            panic!("parts were replaced");
        };
        assert_eq!(parts.len(), 3);
        assert_eq!(parts[0].kind, "text");
        assert_eq!(parts[0].text.as_deref(), Some("New."));
        assert_eq!(parts[1].kind, "image_url");
    }
}
