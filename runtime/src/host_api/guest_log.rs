//! Guest log lines: how much a stage may write to the host log and in what form.
//!
//! A guest's message is untrusted text bound for an operator's log files and terminal, so:
//! - it is escaped: control characters (`\n`, `\r`, ESC, ...), the Unicode line and paragraph
//!   separators and the bidirectional-text controls are written as escapes (`\n`, `\u{1b}`),
//!   so a message can neither start a forged line in the human log format nor drive a
//!   terminal;
//! - it is cut to `sandbox.log_line_max_bytes` (escapes included), marking the cut;
//! - a phase call may write `sandbox.log_lines_per_call` lines: later ones are dropped, and
//!   counted ([`LogBudget`]); the count is reported once when the call ends, as a log line and
//!   in `weir_guest_log_lines_dropped_total`.

use std::borrow::Cow;
use std::fmt::Write as _;

use super::HostContext;
use crate::wit::LogLevel;

/// The guest log lines one phase call may still write, and those it could not.
#[derive(Debug)]
pub struct LogBudget {
    /// Lines a phase call may write.
    per_call: u32,
    /// Lines written in the call in progress.
    written: u32,
    /// Lines dropped in the call in progress.
    dropped: u64,
}

impl LogBudget {
    /// A budget of `per_call` lines per phase call.
    pub fn new(per_call: u32) -> Self {
        LogBudget {
            per_call,
            written: 0,
            dropped: 0,
        }
    }

    /// Takes one line from the budget: false (and the line is counted as dropped) when the
    /// call has written its share.
    pub fn admit(&mut self) -> bool {
        if self.written < self.per_call {
            self.written += 1;
            true
        } else {
            self.dropped = self.dropped.saturating_add(1);
            false
        }
    }

    /// Ends the call in progress: the lines it dropped, with the budget full again for the
    /// next one.
    pub fn end_call(&mut self) -> u64 {
        self.written = 0;
        std::mem::take(&mut self.dropped)
    }
}

/// Writes one guest log line of the stage `host` serves (the caller took it from the budget):
/// escaped and cut to `log_line_max_bytes`, at `level`, target `weir::guest`, with the stage's
/// name and version and the request id.
pub(crate) fn write(host: &HostContext, level: LogLevel, message: &str) {
    let line = log_line(message, host.services.log_line_max_bytes);
    let stage = &*host.stage.name;
    let version = host
        .stage
        .label
        .rsplit_once('@')
        .map_or("", |(_, version)| version);
    let request_id = &*host.request_id;
    match level {
        LogLevel::Trace => {
            tracing::trace!(target: "weir::guest", stage, version, request_id, "{line}")
        }
        LogLevel::Debug => {
            tracing::debug!(target: "weir::guest", stage, version, request_id, "{line}")
        }
        LogLevel::Info => {
            tracing::info!(target: "weir::guest", stage, version, request_id, "{line}")
        }
        LogLevel::Warn => {
            tracing::warn!(target: "weir::guest", stage, version, request_id, "{line}")
        }
        LogLevel::Error => {
            tracing::error!(target: "weir::guest", stage, version, request_id, "{line}")
        }
    }
}

/// Whether `c` is written as an escape: controls (C0, DEL, C1), the line and paragraph
/// separators, and the bidirectional-text controls that reorder what a terminal shows.
fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{2028}' | '\u{2029}' | '\u{061c}' | '\u{200e}' | '\u{200f}'
                | '\u{202a}'..='\u{202e}'
                | '\u{2066}'..='\u{2069}'
        )
}

/// `text` as one safe log line: escaped (see the module docs) and cut to at most `max` bytes
/// on a character boundary (escapes never split), with `… [N bytes cut]` after a cut, N
/// counting the bytes of `text` not shown. Borrowed when nothing had to change.
pub fn log_line(text: &str, max: usize) -> Cow<'_, str> {
    if text.len() <= max && !text.chars().any(needs_escape) {
        return Cow::Borrowed(text);
    }
    let mut line = String::with_capacity(text.len().min(max));
    for (at, c) in text.char_indices() {
        let before = line.len();
        if needs_escape(c) {
            match c {
                '\n' => line.push_str("\\n"),
                '\r' => line.push_str("\\r"),
                '\t' => line.push_str("\\t"),
                _ => {
                    let _ = write!(line, "\\u{{{:x}}}", u32::from(c));
                }
            }
        } else {
            line.push(c);
        }
        if line.len() > max {
            line.truncate(before);
            let _ = write!(line, "… [{} bytes cut]", text.len() - at);
            break;
        }
    }
    Cow::Owned(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plain_line_is_borrowed_as_it_is() {
        assert!(matches!(
            log_line("hello wörld", 64),
            Cow::Borrowed("hello wörld")
        ));
    }

    #[test]
    fn control_characters_cannot_forge_lines_or_drive_a_terminal() {
        let forged = "ok\n2026-12-03T10:00:00Z  INFO weir: admin login\r\x1b]0;x\x07\u{202e}txt";
        let line = log_line(forged, 4096);
        assert_eq!(
            line,
            "ok\\n2026-12-03T10:00:00Z  INFO weir: admin login\\r\\u{1b}]0;x\\u{7}\\u{202e}txt"
        );
        assert!(!line.chars().any(needs_escape));
        assert_eq!(
            log_line("a\u{85}b\u{2028}c\td", 64),
            "a\\u{85}b\\u{2028}c\\td"
        );
    }

    #[test]
    fn a_long_line_is_cut_on_a_boundary_with_its_escapes_counted() {
        assert_eq!(log_line("abcdef", 4), "abcd… [2 bytes cut]");
        // "é" is two bytes: the cut never splits it.
        assert_eq!(log_line("abcé", 4), "abc… [2 bytes cut]");
        // An escape counts with its written length and is never split.
        assert_eq!(log_line("ab\ncd", 3), "ab… [3 bytes cut]");
        assert_eq!(log_line("ab\ncd", 4), "ab\\n… [2 bytes cut]");
        let huge = "\x1b".repeat(1 << 20);
        let line = log_line(&huge, 4096);
        assert!(line.len() < 4096 + 32, "{}", line.len());
    }

    #[test]
    fn a_call_writes_its_share_and_the_rest_is_counted() {
        let mut budget = LogBudget::new(3);
        let admitted = (0..10).filter(|_| budget.admit()).count();
        assert_eq!(admitted, 3);
        assert_eq!(budget.end_call(), 7);
        // The next call has its whole share again and nothing dropped yet.
        assert!(budget.admit());
        assert_eq!(budget.end_call(), 0);
        let mut silent = LogBudget::new(0);
        assert!(!silent.admit());
        assert_eq!(silent.end_call(), 1);
    }
}
