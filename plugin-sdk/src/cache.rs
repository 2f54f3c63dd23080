//! A key-value cache private to the stage, kept by the host across requests.
//!
//! Keys are namespaced by stage, so two stages never see each other's entries. Values are
//! bytes; [`get_json`] / [`set_json`] store serde values.
//!
//! ```no_run
//! weir_sdk::cache::set("greeting", b"hello", Some(60));
//! assert_eq!(weir_sdk::cache::get("greeting").as_deref(), Some(&b"hello"[..]));
//! weir_sdk::cache::set_json("counts", &vec![1, 2, 3], None);
//! let counts: Option<Vec<u32>> = weir_sdk::cache::get_json("counts");
//! ```

use serde::Serialize;
use serde::de::DeserializeOwned;

/// The value stored under `key`, if any and not expired.
pub fn get(key: &str) -> Option<Vec<u8>> {
    crate::bindings::weir::stage0_1_0::host::cache_get(key)
}

/// Stores `value` under `key` for at most `ttl_seconds` (the host default when `None`).
pub fn set(key: &str, value: &[u8], ttl_seconds: Option<u32>) {
    crate::bindings::weir::stage0_1_0::host::cache_set(key, value, ttl_seconds);
}

/// The JSON value stored under `key`; `None` when absent or not of type `T`.
pub fn get_json<T: DeserializeOwned>(key: &str) -> Option<T> {
    get(key).and_then(|bytes| serde_json::from_slice(&bytes).ok())
}

/// Stores `value` as JSON under `key`.
pub fn set_json<T: Serialize>(key: &str, value: &T, ttl_seconds: Option<u32>) {
    if let Ok(bytes) = serde_json::to_vec(value) {
        set(key, &bytes, ttl_seconds);
    }
}
