//! `weir push STAGE.wasm oci://REGISTRY/REPO:TAG`: the component laid out as `wkg` lays it
//! out (so `wkg oci pull` fetches it, and weir pulls what `wkg oci push` wrote), uploaded,
//! and the digest of the manifest returned: the pin for `weir.toml`.
//!
//! The manifest's digest is the sha256 of the exact bytes uploaded, so it is known without
//! asking the registry back.

use std::time::Duration;

use oci_client::secrets::RegistryAuth;

use super::layout::{MANIFEST_MEDIA_TYPE, artifact};
use super::{OciError, Reference, chain, sha256};

/// What a push uploaded.
#[derive(Debug)]
pub struct Pushed {
    /// The reference pushed to, pinned to the manifest's digest.
    pub pinned: Reference,
    /// The manifest's digest.
    pub manifest_digest: String,
    /// The component's digest (the layer).
    pub layer_digest: String,
    /// The component's size, bytes.
    pub bytes: usize,
}

/// Pushes `component` (whose file name is `title`) to `reference` (a tag, a digest or
/// both), with `auth`, within `timeout`; `insecure` lists registries reached over plain HTTP
/// besides loopback ones.
pub async fn push(
    component: &[u8],
    title: &str,
    reference: &Reference,
    auth: &RegistryAuth,
    insecure: &[String],
    timeout: Duration,
) -> Result<Pushed, OciError> {
    // Every text a registry put in the error is cut (see `OciError::bounded`).
    let pushed = async {
        let name = || reference.to_string();
        let created = crate::cost::clock::rfc3339(crate::clock::unix_ms() / 1000);
        let laid_out = artifact(component, title, &created).map_err(|reason| OciError::Layout {
            reference: name(),
            reason,
        })?;
        let manifest_digest = sha256(&laid_out.manifest);
        if let Some(digest) = &reference.digest
            && *digest != manifest_digest
        {
            return Err(OciError::Digest {
                reference: name(),
                what: "manifest",
                expected: digest.clone(),
                actual: manifest_digest,
            });
        }
        let registry_err = |what: &'static str| {
            move |err: oci_client::errors::OciDistributionError| OciError::Registry {
                reference: name(),
                what,
                reason: chain(&err),
            }
        };
        let upload = async {
            let client =
                super::client(&reference.registry, insecure, timeout).map_err(|reason| {
                    OciError::Registry {
                        reference: name(),
                        what: "cannot make a registry client",
                        reason,
                    }
                })?;
            // Tagged uploads go to the tag; a digest-only reference to the digest.
            let image = match &reference.tag {
                Some(tag) => oci_client::Reference::with_tag(
                    reference.registry.clone(),
                    reference.repository.clone(),
                    tag.clone(),
                ),
                None => reference.pinned(&manifest_digest).to_client(),
            };
            client
                .store_auth_if_needed(image.resolve_registry(), auth)
                .await;
            client
                .push_blob(&image, component.to_vec(), &laid_out.layer_digest)
                .await
                .map_err(registry_err("cannot upload the component"))?;
            let config_digest = sha256(&laid_out.config);
            client
                .push_blob(&image, laid_out.config.clone(), &config_digest)
                .await
                .map_err(registry_err("cannot upload the config"))?;
            let content_type = http::HeaderValue::from_static(MANIFEST_MEDIA_TYPE);
            client
                .push_manifest_raw(&image, laid_out.manifest.clone(), content_type)
                .await
                .map_err(registry_err("cannot upload the manifest"))?;
            Ok::<(), OciError>(())
        };
        match tokio::time::timeout(timeout, upload).await {
            Ok(result) => result?,
            Err(_) => {
                return Err(OciError::Timeout {
                    reference: name(),
                    timeout_ms: crate::config::value::millis(timeout),
                });
            }
        }
        Ok(Pushed {
            pinned: Reference {
                tag: None,
                ..reference.pinned(&manifest_digest)
            },
            manifest_digest,
            layer_digest: laid_out.layer_digest,
            bytes: component.len(),
        })
    };
    pushed.await.map_err(OciError::bounded)
}
