//! Callback signatures: when a job ends, its result is POSTed to the `callback_url` it was
//! submitted with, signed, and redelivered with backoff until the receiver answers 2xx (or
//! the deliveries allowed run out). Where a callback may go is `destination`'s concern.
//!
//! The signature is Stripe-style: `x-weir-signature: t=<unix seconds>,v1=<hex>` where the hex
//! is HMAC-SHA256, keyed with `jobs.callback_secret_env`'s secret, over `"<t>.<body>"` (the
//! timestamp's decimal digits, a dot, the exact body bytes). Each delivery is signed afresh.
//! Why the timestamp: a body-only signature stays valid forever, so anyone who once saw a
//! delivery could replay it; with `t` signed too, a receiver rejects deliveries older than its
//! replay window (5 minutes is usual) and remembers the ids it has seen within it.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The header that carries the signature.
pub const SIGNATURE_HEADER: &str = "x-weir-signature";

/// `t=<timestamp_s>,v1=<hex of HMAC-SHA256(secret, "<timestamp_s>.<body>")>`.
pub fn sign(secret: &[u8], timestamp_s: u64, body: &[u8]) -> String {
    // HMAC takes a key of any length, so this cannot fail.
    let mut mac = match <Hmac<Sha256> as Mac>::new_from_slice(secret) {
        Ok(mac) => mac,
        Err(_) => return String::new(),
    };
    let t = timestamp_s.to_string();
    mac.update(t.as_bytes());
    mac.update(b".");
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    let mut out = String::with_capacity(t.len() + 6 + digest.len() * 2);
    out.push_str("t=");
    out.push_str(&t);
    out.push_str(",v1=");
    for byte in digest {
        out.push_str(&format!("{byte:02x}"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_hmac_sha256_over_the_timestamp_a_dot_and_the_body() {
        // HMAC-SHA256("Jefe", "1700000000.what do ya want for nothing?"), computed
        // independently (Python's hmac module).
        assert_eq!(
            sign(b"Jefe", 1_700_000_000, b"what do ya want for nothing?"),
            "t=1700000000,v1=1cdd0650c8be1cb0974b1788d458b1e781206cfef59b85faafc582d2e182c57e"
        );
    }

    #[test]
    fn another_timestamp_gives_another_signature() {
        let a = sign(b"k", 1, b"{}");
        let b = sign(b"k", 2, b"{}");
        assert_ne!(
            a.split_once(",v1=").unwrap().1,
            b.split_once(",v1=").unwrap().1
        );
    }
}
