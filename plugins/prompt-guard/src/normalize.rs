//! Text normalisation, done once per scanned message: the folded form the deny list is
//! matched against, and the word list the injection patterns are matched against.

/// Lower-cases `text` and turns every run of whitespace into one space, trimming both ends.
/// `"  Project\n\tBLUEBIRD "` becomes `"project bluebird"`.
pub fn fold(text: &str) -> String {
    if text.is_ascii() {
        return fold_ascii(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut space = false;
    for c in text.chars() {
        if c.is_whitespace() {
            space = !out.is_empty();
            continue;
        }
        if space {
            out.push(' ');
            space = false;
        }
        push_lower(&mut out, c);
    }
    out
}

/// [`fold`] for ASCII text, byte by byte.
fn fold_ascii(text: &str) -> String {
    let mut out = Vec::with_capacity(text.len());
    let mut space = false;
    for &b in text.as_bytes() {
        // The ASCII characters `char::is_whitespace` accepts.
        if matches!(b, b' ' | b'\t' | b'\n' | b'\x0B' | b'\x0C' | b'\r') {
            space = !out.is_empty();
            continue;
        }
        if space {
            out.push(b' ');
            space = false;
        }
        out.push(b.to_ascii_lowercase());
    }
    // ASCII in, ASCII out: the conversion cannot fail.
    String::from_utf8(out).unwrap_or_default()
}

/// Appends the lower-case form of `c` (ASCII fast path).
fn push_lower(out: &mut String, c: char) {
    if c.is_ascii() {
        out.push(c.to_ascii_lowercase());
    } else {
        out.extend(c.to_lowercase());
    }
}

/// Characters that are dropped inside words rather than splitting them: apostrophes
/// (`don't` → `dont`, `you’re` → `youre`) and invisible characters that could be used to
/// break a phrase up (zero-width space and joiners, word joiner, BOM, soft hyphen).
fn is_invisible_in_word(c: char) -> bool {
    matches!(
        c,
        '\'' | '\u{2019}'
            | '\u{02BC}'
            | '\u{200B}'
            | '\u{200C}'
            | '\u{200D}'
            | '\u{2060}'
            | '\u{FEFF}'
            | '\u{00AD}'
    )
}

/// Calls `f` with each word of `text`, lower-cased: runs of letters and digits, everything
/// else (spaces, punctuation, symbols, underscores) being a separator. ASCII text takes a
/// fast path that hands out slices of `text` itself for words that are already lower case.
pub fn each_word(text: &str, f: impl FnMut(&str)) {
    if text.is_ascii() {
        each_ascii_word(text, f);
    } else {
        each_word_by_char(text, f);
    }
}

/// [`each_word`] for any text, one `char` at a time into a reused buffer.
fn each_word_by_char(text: &str, mut f: impl FnMut(&str)) {
    let mut word = String::new();
    for c in text.chars() {
        if c.is_alphanumeric() {
            push_lower(&mut word, c);
        } else if is_invisible_in_word(c) {
            continue;
        } else if !word.is_empty() {
            f(&word);
            word.clear();
        }
    }
    if !word.is_empty() {
        f(&word);
    }
}

/// [`each_word`] for ASCII text: the same words, without decoding or copying most of them.
fn each_ascii_word(text: &str, mut f: impl FnMut(&str)) {
    let bytes = text.as_bytes();
    let mut buffer = String::new();
    // The word being read: where it started, and whether it needs lower-casing or has an
    // apostrophe to drop.
    let mut start: Option<usize> = None;
    let mut plain = true;
    let mut emit = |start: usize, end: usize, plain: bool| {
        if plain {
            f(&text[start..end]);
        } else {
            buffer.clear();
            buffer.extend(
                bytes[start..end]
                    .iter()
                    .filter(|&&b| b != b'\'')
                    .map(|&b| char::from(b.to_ascii_lowercase())),
            );
            f(&buffer);
        }
    };
    for (i, &b) in bytes.iter().enumerate() {
        if b.is_ascii_alphanumeric() {
            if start.is_none() {
                start = Some(i);
                plain = true;
            }
            plain &= !b.is_ascii_uppercase();
        } else if b == b'\'' {
            // Dropped: inside a word it joins the two halves, elsewhere it is nothing.
            plain = false;
        } else if let Some(word_start) = start.take() {
            emit(word_start, i, plain);
        }
    }
    if let Some(word_start) = start {
        emit(word_start, bytes.len(), plain);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(text: &str) -> Vec<String> {
        let mut words = Vec::new();
        each_word(text, |word| words.push(word.to_string()));
        words
    }

    #[test]
    fn fold_fast_path_agrees_with_the_general_one() {
        for text in [" A\tb\x0B\x0Cc\r\n ", "MiXeD  case ", "", "   ", "x"] {
            let general: String = {
                let mut out = String::new();
                let mut space = false;
                for c in text.chars() {
                    if c.is_whitespace() {
                        space = !out.is_empty();
                        continue;
                    }
                    if space {
                        out.push(' ');
                        space = false;
                    }
                    push_lower(&mut out, c);
                }
                out
            };
            assert_eq!(fold_ascii(text), general, "{text:?}");
        }
    }

    #[test]
    fn fold_lowercases_and_collapses_whitespace() {
        assert_eq!(fold("  Project\n\tBLUEBIRD  now "), "project bluebird now");
        assert_eq!(fold("ÉTÉ  Straße"), "été straße");
        assert_eq!(fold(""), "");
        assert_eq!(fold(" \n "), "");
    }

    #[test]
    fn ascii_fast_path_agrees_with_the_general_one() {
        const PIECES: &[&str] = &[
            "a", "B", "z9", " ", "'", "''", "-", "_", ".", "Ignore", "you're", "\n", "0", "X'Y",
        ];
        let mut state = 0x2545_F491_4F6C_DD1Du64;
        for _ in 0..5_000 {
            let mut text = String::new();
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let len = (state % 12) as usize;
            for k in 0..len {
                text.push_str(PIECES[(state >> (k * 4)) as usize % PIECES.len()]);
            }
            let (mut fast, mut slow) = (Vec::new(), Vec::new());
            each_ascii_word(&text, |w| fast.push(w.to_string()));
            each_word_by_char(&text, |w| slow.push(w.to_string()));
            assert_eq!(fast, slow, "{text:?}");
        }
    }

    #[test]
    fn words_ignore_case_punctuation_and_apostrophes() {
        assert_eq!(
            words("IGNORE... all_previous—instructions!!"),
            vec!["ignore", "all", "previous", "instructions"]
        );
        assert_eq!(
            words("don't you’re OpenAI's"),
            vec!["dont", "youre", "openais"]
        );
        assert_eq!(
            words("ig\u{200B}nore pre\u{00AD}vious"),
            vec!["ignore", "previous"]
        );
        assert_eq!(words("Ünïcode 123abc"), vec!["ünïcode", "123abc"]);
        assert!(words(" ... ").is_empty());
        assert!(words("").is_empty());
    }
}
