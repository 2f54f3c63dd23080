//! The first-party stages through the real host (filled in with the plugins).
