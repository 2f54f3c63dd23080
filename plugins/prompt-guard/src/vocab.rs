//! The vocabulary of the injection patterns: every word any pattern mentions gets a small
//! number ([`WordId`]), word sets are bit sets over those numbers ([`WordSet`]), and an input
//! word is turned into its number once ([`lookup`]). Matching then compares numbers and tests
//! bits instead of comparing strings, which keeps the matcher cheap on text full of "you" and
//! "your".
//!
//! Everything except [`lookup`] is `const`: the sets in [`patterns`](crate::patterns) are
//! built at compile time, and naming a word that is not in [`VOCAB`] there is a compile
//! error.

use crate::patterns::VOCAB;

/// A word's position in [`VOCAB`].
pub type WordId = u8;

/// Longest vocabulary word the quick filter can hold.
const FILTER_MAX_LEN: usize = 16;

/// A set of vocabulary words.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WordSet([u64; 4]);

impl WordSet {
    /// The empty set.
    pub const EMPTY: WordSet = WordSet([0; 4]);

    /// The set of `words`. Every word must be in [`VOCAB`] (checked at compile time when
    /// used in a `const`).
    pub const fn of(words: &[&str]) -> WordSet {
        let mut bits = [0u64; 4];
        let mut i = 0;
        while i < words.len() {
            let id = match id_of(words[i]) {
                Some(id) => id as usize,
                None => panic!("a pattern word is missing from VOCAB"),
            };
            bits[id / 64] |= 1 << (id % 64);
            i += 1;
        }
        WordSet(bits)
    }

    /// The words in either set.
    pub const fn union(self, other: WordSet) -> WordSet {
        let mut bits = self.0;
        let mut i = 0;
        while i < 4 {
            bits[i] |= other.0[i];
            i += 1;
        }
        WordSet(bits)
    }

    /// Whether `id` is in the set.
    pub fn contains(self, id: WordId) -> bool {
        let id = usize::from(id);
        self.0[id / 64] & (1 << (id % 64)) != 0
    }
}

/// The number of `word` (lower case), if it is a vocabulary word.
pub fn lookup(word: &str) -> Option<WordId> {
    let bytes = word.as_bytes();
    let (&first, &last) = (bytes.first()?, bytes.last()?);
    if bytes.len() >= FILTER_MAX_LEN || !first.is_ascii_lowercase() || !last.is_ascii_lowercase() {
        return None;
    }
    // Most words of ordinary text fail this one table lookup.
    if FILTER[bytes.len()][usize::from(first - b'a')] & (1 << (last - b'a')) == 0 {
        return None;
    }
    id_of(word)
}

/// Bit `last - 'a'` of `FILTER[len][first - 'a']` is set when some vocabulary word has that
/// length, first letter and last letter.
const FILTER: [[u32; 26]; FILTER_MAX_LEN] = build_filter();

/// Builds [`FILTER`].
const fn build_filter() -> [[u32; 26]; FILTER_MAX_LEN] {
    let mut table = [[0u32; 26]; FILTER_MAX_LEN];
    let mut i = 0;
    while i < VOCAB.len() {
        let bytes = VOCAB[i].as_bytes();
        let (first, last) = (bytes[0], bytes[bytes.len() - 1]);
        assert!(
            bytes.len() < FILTER_MAX_LEN && first.is_ascii_lowercase() && last.is_ascii_lowercase(),
            "vocabulary words are short lower-case ASCII words"
        );
        table[bytes.len()][(first - b'a') as usize] |= 1 << (last - b'a');
        i += 1;
    }
    table
}

/// The position of `word` in [`VOCAB`] (a binary search; `const` so sets build at compile
/// time).
const fn id_of(word: &str) -> Option<WordId> {
    assert!(VOCAB.len() <= 256, "WordId is a u8");
    let word = word.as_bytes();
    let (mut low, mut high) = (0, VOCAB.len());
    while low < high {
        let mid = (low + high) / 2;
        match compare(VOCAB[mid].as_bytes(), word) {
            Ordering::Less => low = mid + 1,
            Ordering::Greater => high = mid,
            Ordering::Equal => return Some(mid as WordId),
        }
    }
    None
}

use std::cmp::Ordering;

/// Byte-wise comparison usable in `const` (`Ord` is not).
const fn compare(a: &[u8], b: &[u8]) -> Ordering {
    let mut i = 0;
    while i < a.len() && i < b.len() {
        if a[i] < b[i] {
            return Ordering::Less;
        }
        if a[i] > b[i] {
            return Ordering::Greater;
        }
        i += 1;
    }
    if a.len() < b.len() {
        Ordering::Less
    } else if a.len() > b.len() {
        Ordering::Greater
    } else {
        Ordering::Equal
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vocab_is_sorted_unique_and_small() {
        assert!(
            VOCAB.windows(2).all(|w| w[0] < w[1]),
            "VOCAB must be sorted"
        );
        assert!(VOCAB.len() <= 256);
    }

    #[test]
    fn every_vocab_word_is_found_and_others_are_not() {
        for (i, word) in VOCAB.iter().enumerate() {
            assert_eq!(lookup(word), Some(i as WordId), "{word}");
        }
        for word in [
            "",
            "the",
            "yo",
            "youu",
            "ignored",
            "Ignore",
            "ignorE",
            "é",
            "x",
            "zzzz",
            "averyveryverylongword",
        ] {
            if VOCAB.contains(&word) {
                continue;
            }
            assert_eq!(lookup(word), None, "{word}");
        }
    }

    #[test]
    fn sets() {
        let set = WordSet::of(&["ignore", "you"]);
        let ignore = lookup("ignore").unwrap_or(0);
        let you = lookup("you").unwrap_or(0);
        let your = lookup("your").unwrap_or(0);
        assert!(set.contains(ignore) && set.contains(you) && !set.contains(your));
        assert!(!WordSet::EMPTY.contains(you));
        assert!(WordSet::of(&["your"]).union(set).contains(your));
    }

    #[test]
    fn compare_matches_ord() {
        for (a, b) in [("a", "b"), ("ab", "a"), ("a", "a"), ("", "a"), ("ba", "b")] {
            assert_eq!(compare(a.as_bytes(), b.as_bytes()), a.cmp(b), "{a} {b}");
        }
    }
}
