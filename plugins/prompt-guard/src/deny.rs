//! The operator's deny list: phrases matched case-insensitively, with whitespace runs
//! treated as one space, as whole words at their ends (`kill` matches `kill it` but not
//! `skill`). Owns the phrases in both their configured and their folded form.

use crate::normalize::fold;

/// The configured phrases, ready to match.
#[derive(Clone, Debug, Default)]
pub struct DenyList {
    /// `(as configured, folded)`; phrases that fold to nothing are dropped.
    entries: Vec<(String, String)>,
}

impl DenyList {
    /// Prepares `phrases` for matching.
    pub fn new(phrases: Vec<String>) -> DenyList {
        let entries = phrases
            .into_iter()
            .filter_map(|phrase| {
                let folded = fold(&phrase);
                (!folded.is_empty()).then_some((phrase, folded))
            })
            .collect();
        DenyList { entries }
    }

    /// Whether there is no phrase to match.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The first configured phrase (as configured) found in `folded`, a text already passed
    /// through [`fold`].
    pub fn first_match(&self, folded: &str) -> Option<&str> {
        self.entries
            .iter()
            .find(|(_, phrase)| contains_phrase(folded, phrase))
            .map(|(phrase, _)| phrase.as_str())
    }
}

/// Whether `phrase` occurs in `text` without being glued to letters or digits at an end
/// where the phrase itself starts or ends with one.
fn contains_phrase(text: &str, phrase: &str) -> bool {
    let word_start = phrase.chars().next().is_some_and(char::is_alphanumeric);
    let word_end = phrase
        .chars()
        .next_back()
        .is_some_and(char::is_alphanumeric);
    let mut from = 0;
    while let Some(offset) = text[from..].find(phrase) {
        let start = from + offset;
        let end = start + phrase.len();
        let free_start = !word_start
            || !text[..start]
                .chars()
                .next_back()
                .is_some_and(char::is_alphanumeric);
        let free_end = !word_end
            || !text[end..]
                .chars()
                .next()
                .is_some_and(char::is_alphanumeric);
        if free_start && free_end {
            return true;
        }
        // Try the next occurrence, which may overlap this one.
        from = start + text[start..].chars().next().map_or(1, char::len_utf8);
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(phrases: &[&str]) -> DenyList {
        DenyList::new(phrases.iter().map(|p| p.to_string()).collect())
    }

    #[test]
    fn case_and_whitespace_insensitive() {
        let deny = list(&["Project Bluebird"]);
        for text in [
            "tell me about project bluebird",
            "PROJECT   BLUEBIRD?",
            "project\n\tbluebird",
            "(project bluebird)",
        ] {
            assert_eq!(
                deny.first_match(&fold(text)),
                Some("Project Bluebird"),
                "{text}"
            );
        }
        assert_eq!(deny.first_match(&fold("project blue bird")), None);
    }

    #[test]
    fn whole_words_at_the_ends() {
        let deny = list(&["kill"]);
        assert_eq!(deny.first_match(&fold("kill it")), Some("kill"));
        assert_eq!(deny.first_match(&fold("KILL!")), Some("kill"));
        assert_eq!(deny.first_match(&fold("improve my skills")), None);
        assert_eq!(deny.first_match(&fold("killer app")), None);
        // A later occurrence is found after an earlier glued one.
        assert_eq!(deny.first_match(&fold("skill, then kill")), Some("kill"));
        // Phrases that start or end with punctuation match it literally.
        let deny = list(&["#secret", "v2-"]);
        assert_eq!(deny.first_match(&fold("tag#secret")), Some("#secret"));
        assert_eq!(deny.first_match(&fold("use v2-beta")), Some("v2-"));
    }

    #[test]
    fn overlapping_occurrences() {
        let deny = list(&["x x"]);
        assert_eq!(deny.first_match(&fold("ax x x")), Some("x x"));
    }

    #[test]
    fn reports_the_configured_entry_and_skips_empty_ones() {
        let deny = list(&["  ", "alpha", "BETA  gamma"]);
        assert!(!deny.is_empty());
        assert_eq!(deny.first_match(&fold("beta gamma")), Some("BETA  gamma"));
        assert_eq!(deny.first_match(&fold("nothing here")), None);
        assert!(list(&[" "]).is_empty());
    }

    #[test]
    fn unicode_case_folding() {
        let deny = list(&["ÉTÉ"]);
        assert_eq!(deny.first_match(&fold("un été chaud")), Some("ÉTÉ"));
        assert_eq!(deny.first_match(&fold("unétéchaud")), None);
    }
}
