//! Stages as OCI artifacts: `oci://REGISTRY/REPOSITORY@sha256:DIGEST` stage paths, pulled,
//! verified and kept in a content-addressed store under `data_dir`, and `weir push`.
//!
//! Owns: references, talking to registries (through `oci-client`), the blob store and the
//! artifact layout. It hands verified component bytes to `stages`, which compiles them as it
//! compiles a file (so the blake3 artifact cache applies unchanged); it knows nothing of the
//! sandbox or of requests, and runs only at start and at reloads, never on the request path.
//!
//! Why pin by digest: the digest of the manifest names the bytes end to end (the manifest
//! names the layer's digest, and both are checked), so every node of a fleet runs exactly
//! the code the config names, a registry or a cache in between cannot change it, and a node
//! whose store already holds the digest restarts without the registry.
//!
//! - `reference`: parsing `oci://` references.
//! - `layout`: the Wasm OCI artifact layout (`wkg`'s), for pulls and pushes.
//! - `store`: the blob store (`data_dir/oci/sha256/<hex>`), checked on every read.
//! - `pull`: [`Puller`], one stage artifact from the store or the registry.
//! - `push`: [`push()`](push::push), for `weir push`.
//! - `auth`: registry credentials (environment variables, the Docker config).

pub mod auth;
mod layout;
mod pull;
pub mod push;
mod reference;
mod store;

pub use layout::{CONFIG_MEDIA_TYPE, LAYER_MEDIA_TYPE, MANIFEST_MEDIA_TYPE, WASM_LAYER_TYPES};
pub use pull::{Artifact, FetchedFrom, Pulled, Puller};
pub use reference::{Reference, SCHEME, check_registry, is_loopback};
pub use store::{BlobStore, sha256};

/// Why a stage artifact could not be fetched or pushed. Each message starts with the
/// reference.
#[derive(Debug, thiserror::Error)]
pub enum OciError {
    /// The registry did not answer in time (`[oci] pull_timeout_ms`).
    #[error("{reference}: the registry did not finish answering within {timeout_ms} ms")]
    Timeout {
        /// The reference.
        reference: String,
        /// The deadline, ms.
        timeout_ms: u64,
    },
    /// The registry has no manifest by that digest or tag.
    #[error("{reference}: the registry has no such manifest (unknown digest or tag): {reason}")]
    NotFound {
        /// The reference.
        reference: String,
        /// The registry's words.
        reason: String,
    },
    /// The registry could not be reached or refused the request.
    #[error("{reference}: {what}: {reason}")]
    Registry {
        /// The reference.
        reference: String,
        /// What was being done (`cannot pull the manifest`, …).
        what: &'static str,
        /// Why, with the causes.
        reason: String,
    },
    /// The manifest is not a wasm artifact weir can run.
    #[error("{reference}: {reason}")]
    Layout {
        /// The reference.
        reference: String,
        /// What is wrong.
        reason: String,
    },
    /// The wasm layer is larger than `[oci] max_blob_mib`.
    #[error(
        "{reference}: the wasm layer is {size} bytes, above [oci] max_blob_mib ({} MiB)",
        max >> 20
    )]
    TooLarge {
        /// The reference.
        reference: String,
        /// Its size (declared, or reached while downloading).
        size: u64,
        /// The cap, bytes.
        max: u64,
    },
    /// Bytes that do not hash to the digest that names them: a tampered or corrupt blob.
    #[error("{reference}: the {what} does not match its digest: expected {expected}, got {actual}")]
    Digest {
        /// The reference.
        reference: String,
        /// `manifest` or `wasm layer`.
        what: &'static str,
        /// The digest that names it.
        expected: String,
        /// The digest of the bytes received.
        actual: String,
    },
}

/// Bytes of any text from a registry an [`OciError`] keeps (a reason, a digest it quoted).
pub const MAX_REASON_BYTES: usize = 1024;

impl OciError {
    /// The error with every text in it cut to [`MAX_REASON_BYTES`]: a registry's answer
    /// (an error body of any size, a digest it made up) goes into logs, `/admin/stages`, a
    /// reload's answer and `weir check`'s output, and again at every retried pull (fourth
    /// probe, C1: a 256 MiB error body made 268 MB log lines and 5.5 GB of RSS).
    pub fn bounded(self) -> OciError {
        let cut = |text: String| match crate::host_api::truncate_for_log(&text, MAX_REASON_BYTES) {
            std::borrow::Cow::Borrowed(_) => text,
            std::borrow::Cow::Owned(short) => short,
        };
        match self {
            OciError::Timeout {
                reference,
                timeout_ms,
            } => OciError::Timeout {
                reference: cut(reference),
                timeout_ms,
            },
            OciError::NotFound { reference, reason } => OciError::NotFound {
                reference: cut(reference),
                reason: cut(reason),
            },
            OciError::Registry {
                reference,
                what,
                reason,
            } => OciError::Registry {
                reference: cut(reference),
                what,
                reason: cut(reason),
            },
            OciError::Layout { reference, reason } => OciError::Layout {
                reference: cut(reference),
                reason: cut(reason),
            },
            OciError::TooLarge {
                reference,
                size,
                max,
            } => OciError::TooLarge {
                reference: cut(reference),
                size,
                max,
            },
            OciError::Digest {
                reference,
                what,
                expected,
                actual,
            } => OciError::Digest {
                reference: cut(reference),
                what,
                expected: cut(expected),
                actual: cut(actual),
            },
        }
    }
}

/// `err` and its causes, joined by `: ` (a connection error's reason is in its causes).
pub(crate) fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// An oci-client client for `registry`: plain HTTP for loopback registries and those listed
/// in `insecure`, HTTPS otherwise; connection and read timeouts within `timeout`.
pub(crate) fn client(
    registry: &str,
    insecure: &[String],
    timeout: std::time::Duration,
) -> Result<oci_client::Client, String> {
    use oci_client::client::{ClientConfig, ClientProtocol};
    crate::tls::install_provider();
    let http = is_loopback(registry) || insecure.iter().any(|r| r == registry);
    let config = ClientConfig {
        protocol: match http {
            true => ClientProtocol::Http,
            false => ClientProtocol::Https,
        },
        connect_timeout: Some(timeout.min(std::time::Duration::from_secs(5))),
        read_timeout: Some(timeout),
        user_agent: concat!("weir/", env!("CARGO_PKG_VERSION")),
        ..Default::default()
    };
    oci_client::Client::try_from(config).map_err(|err| chain(&err))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_registry_s_words_are_kept_to_a_bounded_length() {
        let huge = "x".repeat(10 << 20);
        let errors = [
            OciError::Registry {
                reference: "oci://127.0.0.1:5000/a@sha256:00".into(),
                what: "cannot pull the manifest",
                reason: huge.clone(),
            },
            OciError::NotFound {
                reference: "r".into(),
                reason: huge.clone(),
            },
            OciError::Digest {
                reference: "r".into(),
                what: "wasm layer",
                expected: huge.clone(),
                actual: huge.clone(),
            },
        ];
        for err in errors {
            let text = err.bounded().to_string();
            assert!(text.len() < 3 * MAX_REASON_BYTES + 200, "{}", text.len());
        }
        let short = OciError::Layout {
            reference: "r".into(),
            reason: "no wasm layer".into(),
        };
        assert_eq!(short.bounded().to_string(), "r: no wasm layer");
    }
}
