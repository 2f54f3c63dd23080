//! Callbacks: when a job ends, its result is POSTed to the `callback_url` it was submitted
//! with, signed, and redelivered with backoff until the receiver answers 2xx (or the
//! deliveries allowed run out).
//!
//! The signature is HMAC-SHA256 over the exact body bytes with `jobs.callback_secret_env`'s
//! key, sent as `x-weir-signature: sha256=<hex>`; a receiver recomputes it over the bytes it
//! read and compares in constant time. Where a callback may go is checked at submission:
//! `http`/`https` to a loopback address or to a host in `jobs.callback_allow_hosts`, so a
//! client cannot make the host call arbitrary addresses.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The header that carries the signature.
pub const SIGNATURE_HEADER: &str = "x-weir-signature";

/// `sha256=<hex of HMAC-SHA256(secret, body)>`.
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    // HMAC takes a key of any length, so this cannot fail.
    let mut mac = match <Hmac<Sha256> as Mac>::new_from_slice(secret) {
        Ok(mac) => mac,
        Err(_) => return String::new(),
    };
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    let mut out = String::with_capacity(7 + digest.len() * 2);
    out.push_str("sha256=");
    for byte in digest {
        out.push_str(&format!("{byte:02x}"));
    }
    out
}

/// Why a `callback_url` is refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum CallbackUrlError {
    /// Not an absolute `http://` or `https://` URL.
    #[error("`callback_url` must be an absolute http:// or https:// URL")]
    NotHttp,
    /// Credentials in the URL.
    #[error("`callback_url` must not carry credentials")]
    Credentials,
    /// Neither loopback nor allow-listed.
    #[error("`callback_url` host `{0}` is neither loopback nor in jobs.callback_allow_hosts")]
    HostNotAllowed(String),
}

/// Checks `url` against the rules above; `allow` holds lowercase host names.
pub fn check_url(url: &str, allow: &[String]) -> Result<(), CallbackUrlError> {
    let uri: http::Uri = url.parse().map_err(|_| CallbackUrlError::NotHttp)?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) {
        return Err(CallbackUrlError::NotHttp);
    }
    let authority = uri.authority().ok_or(CallbackUrlError::NotHttp)?;
    if authority.as_str().contains('@') {
        return Err(CallbackUrlError::Credentials);
    }
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_ascii_lowercase();
    let loopback = host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    if loopback || allow.contains(&host) {
        Ok(())
    } else {
        Err(CallbackUrlError::HostNotAllowed(host))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_the_rfc_4231_hmac_sha256() {
        // RFC 4231 test case 2.
        assert_eq!(
            sign(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn only_loopback_and_allow_listed_hosts_are_accepted() {
        let allow = vec!["hooks.example.com".to_string()];
        for good in [
            "http://127.0.0.1:9000/hook",
            "http://localhost/x",
            "https://[::1]:8443/",
            "https://HOOKS.example.com/weir",
        ] {
            assert_eq!(check_url(good, &allow), Ok(()), "{good}");
        }
        assert_eq!(
            check_url("http://10.0.0.1/x", &allow),
            Err(CallbackUrlError::HostNotAllowed("10.0.0.1".into()))
        );
        assert_eq!(
            check_url("ftp://127.0.0.1/x", &allow),
            Err(CallbackUrlError::NotHttp)
        );
        assert_eq!(
            check_url("/relative", &allow),
            Err(CallbackUrlError::NotHttp)
        );
        assert_eq!(
            check_url("http://user:pw@127.0.0.1/", &allow),
            Err(CallbackUrlError::Credentials)
        );
        assert_eq!(
            check_url("http://hooks.example.com.evil.test/", &allow),
            Err(CallbackUrlError::HostNotAllowed(
                "hooks.example.com.evil.test".into()
            ))
        );
    }
}
