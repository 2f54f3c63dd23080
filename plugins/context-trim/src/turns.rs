//! Splitting a conversation into the part that is always kept (the leading system and
//! developer messages) and turns, the units that are dropped whole.
//!
//! A turn starts at a `user` message and runs to the next one, so it carries the assistant's
//! answer and any tool calls and tool results in between: dropping a turn never orphans a
//! tool result from the assistant message that asked for it. Messages between the leading
//! system messages and the first `user` message form a turn of their own. A system message
//! later in the conversation belongs to the turn it sits in.

use std::ops::Range;

use weir_sdk::Message;

/// The roles of the leading messages that are always kept.
pub const LEADING_ROLES: [&str; 2] = ["system", "developer"];

/// A conversation's shape, as positions in its message list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Turns {
    /// How many messages at the start are system or developer messages (kept always).
    pub leading: usize,
    /// The turns after them, oldest first: contiguous, non-empty, and together covering
    /// `leading..len`.
    pub turns: Vec<Range<usize>>,
}

/// The shape of `messages`.
pub fn split(messages: &[Message]) -> Turns {
    let leading = messages
        .iter()
        .take_while(|m| LEADING_ROLES.contains(&m.role.as_str()))
        .count();
    let mut turns = Vec::new();
    let mut start = leading;
    // The message at `leading` opens the first turn whatever its role.
    for (index, message) in messages.iter().enumerate().skip(leading + 1) {
        if message.role == "user" {
            turns.push(start..index);
            start = index;
        }
    }
    if start < messages.len() {
        turns.push(start..messages.len());
    }
    Turns { leading, turns }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(roles: &[&str]) -> Turns {
        let messages: Vec<Message> = roles.iter().map(|role| Message::new(role, "x")).collect();
        split(&messages)
    }

    /// A shape with turns given as (start, end) pairs.
    fn turns(leading: usize, turns: &[(usize, usize)]) -> Turns {
        Turns {
            leading,
            turns: turns.iter().map(|&(start, end)| start..end).collect(),
        }
    }

    #[test]
    fn user_messages_open_turns() {
        assert_eq!(
            shape(&["system", "user", "assistant", "user", "assistant", "user"]),
            turns(1, &[(1, 3), (3, 5), (5, 6)])
        );
        assert_eq!(
            shape(&["user", "assistant", "user", "assistant"]),
            turns(0, &[(0, 2), (2, 4)])
        );
    }

    #[test]
    fn tool_messages_stay_in_their_turn() {
        assert_eq!(
            shape(&[
                "system",
                "user",
                "assistant",
                "tool",
                "tool",
                "assistant",
                "user",
                "assistant",
            ]),
            turns(1, &[(1, 6), (6, 8)])
        );
    }

    #[test]
    fn every_leading_system_and_developer_message_is_kept() {
        assert_eq!(
            shape(&["system", "developer", "system", "user", "assistant"]),
            turns(3, &[(3, 5)])
        );
        assert_eq!(shape(&["system", "developer"]), turns(2, &[]));
    }

    #[test]
    fn messages_before_the_first_user_message_form_their_own_turn() {
        assert_eq!(
            shape(&["system", "assistant", "tool", "user", "assistant"]),
            turns(1, &[(1, 3), (3, 5)])
        );
        assert_eq!(shape(&["assistant", "assistant"]), turns(0, &[(0, 2)]));
    }

    #[test]
    fn a_later_system_message_belongs_to_its_turn() {
        assert_eq!(
            shape(&["user", "assistant", "system", "user", "developer"]),
            turns(0, &[(0, 3), (3, 5)])
        );
    }

    #[test]
    fn empty_and_consecutive_user_messages() {
        assert_eq!(shape(&[]), turns(0, &[]));
        assert_eq!(
            shape(&["user", "user", "user"]),
            turns(0, &[(0, 1), (1, 2), (2, 3)])
        );
    }
}
