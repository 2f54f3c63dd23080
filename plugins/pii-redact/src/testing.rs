//! Test support: random texts made of the pieces the scanners care about.

/// A tiny deterministic generator (xorshift), so the tests need no dependency.
pub struct Rng(u64);

/// Pieces that make scanners start, continue and stop.
const PIECES: &[&str] = &[
    "0",
    "1",
    "4",
    "7",
    "9",
    "12",
    "255",
    "4111",
    " ",
    "-",
    ".",
    ":",
    "::",
    "@",
    "+",
    "(",
    ")",
    "/",
    ",",
    "_",
    "a",
    "f",
    "x",
    "Z",
    "é",
    "✓",
    "\n",
    "sk-",
    "eyJ",
    "AKIA",
    "Bearer ",
    "ghp_",
    "-----BEGIN PRIVATE KEY-----",
    "-----END ",
    ".com",
    "[",
    "]",
    "EMAIL_1",
];

impl Rng {
    /// A generator with a fixed seed.
    pub fn new() -> Rng {
        Rng(0x9E37_79B9_7F4A_7C15)
    }

    /// The next pseudo-random number.
    pub fn next(&mut self) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 32) as usize
    }

    /// A text of up to 40 pieces; without brackets unless `brackets`.
    pub fn text(&mut self, brackets: bool) -> String {
        let len = self.next() % 40;
        (0..len)
            .map(|_| PIECES[self.next() % PIECES.len()])
            .filter(|piece| brackets || !piece.contains(['[', ']']))
            .collect()
    }
}
