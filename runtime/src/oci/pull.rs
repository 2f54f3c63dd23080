//! [`Puller`]: one stage artifact, from the blob store when it holds the pinned digest (no
//! network at all), else from the registry: the manifest (checked against the pinned digest),
//! then its one wasm layer (size-capped before and while downloading, checked against the
//! manifest's digest), both kept in the store.

use futures_util::StreamExt;
use oci_client::errors::{DigestError, OciDistributionError, OciErrorCode};
use oci_client::manifest::OciDescriptor;

use super::layout::{ACCEPTED_MANIFESTS, MAX_MANIFEST_BYTES, wasm_layer};
use super::{BlobStore, OciError, Reference, chain, sha256};
use crate::config::OciSettings;

/// Where a pulled artifact came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FetchedFrom {
    /// The blob store under `data_dir`: no network.
    Store,
    /// The registry.
    Registry,
}

impl FetchedFrom {
    /// `store` or `registry`.
    pub fn as_str(self) -> &'static str {
        match self {
            FetchedFrom::Store => "store",
            FetchedFrom::Registry => "registry",
        }
    }
}

/// What a stage version's artifact is, for `/admin/stages`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Artifact {
    /// The reference, pinned (a tag resolved to its digest).
    pub reference: Reference,
    /// The manifest's digest.
    pub manifest_digest: String,
    /// The wasm layer's digest.
    pub layer_digest: String,
    /// The layer's media type.
    pub media_type: String,
    /// Where its bytes came from.
    pub fetched_from: FetchedFrom,
}

/// A stage artifact's component, verified.
pub struct Pulled {
    /// The component's bytes.
    pub bytes: Vec<u8>,
    /// What it is.
    pub artifact: Artifact,
}

/// Fetches stage artifacts under one `[oci]` config.
pub struct Puller {
    /// `[oci]`.
    settings: OciSettings,
    /// The blob store; `None` without a `data_dir` (then every start pulls).
    store: Option<BlobStore>,
}

impl Puller {
    /// A puller for `settings`, keeping what it pulls in `store`.
    pub fn new(settings: OciSettings, store: Option<BlobStore>) -> Puller {
        Puller { settings, store }
    }

    /// The component `reference` names: from the store when pinned and held there, else
    /// pulled within `[oci] pull_timeout_ms`.
    pub async fn fetch(&self, reference: &Reference) -> Result<Pulled, OciError> {
        self.fetch_unbounded(reference)
            .await
            .map_err(OciError::bounded)
    }

    /// [`Puller::fetch`], its errors as long as the registry made them.
    async fn fetch_unbounded(&self, reference: &Reference) -> Result<Pulled, OciError> {
        if reference.digest.is_none() && !self.settings.allow_tags {
            return Err(OciError::Layout {
                reference: reference.to_string(),
                reason: "tags are refused; pin the artifact by digest, or set [oci] allow_tags"
                    .to_owned(),
            });
        }
        if let Some(digest) = &reference.digest
            && let Some(pulled) = self.stored(reference, digest).await
        {
            return Ok(pulled);
        }
        let timeout = self.settings.pull_timeout;
        match tokio::time::timeout(timeout, self.pull(reference)).await {
            Ok(pulled) => pulled,
            Err(_) => Err(OciError::Timeout {
                reference: reference.to_string(),
                timeout_ms: crate::config::value::millis(timeout),
            }),
        }
    }

    /// The pinned artifact from the store, when it holds the manifest and its layer whole.
    async fn stored(&self, reference: &Reference, digest: &str) -> Option<Pulled> {
        let store = self.store.clone()?;
        let (reference, digest) = (reference.clone(), digest.to_owned());
        let max = self.settings.max_blob_bytes;
        let found = tokio::task::spawn_blocking(move || {
            let manifest = store.get(&digest, MAX_MANIFEST_BYTES as u64)?;
            let layer = wasm_layer(&manifest).ok()?;
            let bytes = store.get(&layer.digest, max)?;
            Some(Pulled {
                bytes,
                artifact: Artifact {
                    reference,
                    manifest_digest: digest,
                    layer_digest: layer.digest,
                    media_type: layer.media_type,
                    fetched_from: FetchedFrom::Store,
                },
            })
        });
        found.await.ok().flatten()
    }

    /// The manifest and the layer from the registry, verified and stored.
    async fn pull(&self, reference: &Reference) -> Result<Pulled, OciError> {
        let name = || reference.to_string();
        let timeout = self.settings.pull_timeout;
        let registry_err = |what: &'static str| {
            move |reason: String| OciError::Registry {
                reference: name(),
                what,
                reason,
            }
        };
        let client = super::client(
            &reference.registry,
            &self.settings.insecure_registries,
            timeout,
        )
        .map_err(registry_err("cannot make a registry client"))?;
        let auth = super::auth::for_serve(&self.settings, &reference.registry).await;
        let image = reference.to_client();
        let (manifest, _) = client
            .pull_manifest_raw(&image, &auth, &ACCEPTED_MANIFESTS)
            .await
            .map_err(|err| client_error(reference, Part::Manifest, err))?;
        let manifest_digest = sha256(&manifest);
        if let Some(pinned) = &reference.digest
            && *pinned != manifest_digest
        {
            return Err(OciError::Digest {
                reference: name(),
                what: "manifest",
                expected: pinned.clone(),
                actual: manifest_digest,
            });
        }
        let layer = wasm_layer(&manifest).map_err(|reason| OciError::Layout {
            reference: name(),
            reason,
        })?;
        let max = self.settings.max_blob_bytes;
        let declared = u64::try_from(layer.size).unwrap_or(u64::MAX);
        if declared > max {
            return Err(OciError::TooLarge {
                reference: name(),
                size: declared,
                max,
            });
        }
        let stored = self.store.as_ref().and_then(|s| s.get(&layer.digest, max));
        let (bytes, from) = match stored {
            Some(bytes) => (bytes, "the blob store"),
            None => (
                self.pull_layer(&client, reference, &layer).await?,
                "the registry",
            ),
        };
        if let Some(store) = &self.store {
            let kept = store
                .put(&layer.digest, &bytes)
                .and_then(|()| store.put(&manifest_digest, &manifest));
            if let Err(err) = kept {
                tracing::warn!(reference = %name(), error = %err, "cannot keep the pulled artifact on disk; a restart pulls it again");
            }
        }
        let pinned = reference.pinned(&manifest_digest);
        if reference.digest.is_none() {
            tracing::warn!(
                reference = %name(),
                pinned = %pinned,
                "resolved a tag; pin the digest in production"
            );
        }
        tracing::info!(reference = %pinned, bytes = bytes.len(), layer_from = from, "pulled a stage artifact");
        Ok(Pulled {
            bytes,
            artifact: Artifact {
                reference: pinned,
                manifest_digest,
                layer_digest: layer.digest,
                media_type: layer.media_type,
                fetched_from: FetchedFrom::Registry,
            },
        })
    }

    /// The layer's bytes, cut at its declared size and at `max_blob_mib`, checked against
    /// its digest.
    async fn pull_layer(
        &self,
        client: &oci_client::Client,
        reference: &Reference,
        layer: &OciDescriptor,
    ) -> Result<Vec<u8>, OciError> {
        let name = || reference.to_string();
        let image = reference.to_client();
        let mut stream = client
            .pull_blob_stream(&image, layer)
            .await
            .map_err(|err| client_error(reference, Part::Layer, err))?;
        let max = self.settings.max_blob_bytes;
        let declared = u64::try_from(layer.size).unwrap_or(u64::MAX);
        let mut bytes = Vec::with_capacity(usize::try_from(declared.min(max)).unwrap_or(0));
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|err| {
                // oci-client checks the digest as the stream ends and reports a mismatch
                // as the stream's error.
                let digest = err.get_ref().and_then(|e| e.downcast_ref::<DigestError>());
                match digest {
                    Some(DigestError::VerificationError { expected, actual }) => OciError::Digest {
                        reference: name(),
                        what: "wasm layer",
                        expected: expected.clone(),
                        actual: actual.clone(),
                    },
                    _ => OciError::Registry {
                        reference: name(),
                        what: "the wasm layer's download broke off",
                        reason: chain(&err),
                    },
                }
            })?;
            let size = (bytes.len() + chunk.len()) as u64;
            if size > max {
                return Err(OciError::TooLarge {
                    reference: name(),
                    size,
                    max,
                });
            }
            if size > declared {
                // More than the manifest promised: stop reading.
                return Err(wrong_size(
                    reference,
                    declared,
                    &format!("more than {declared}"),
                ));
            }
            bytes.extend_from_slice(&chunk);
        }
        // Fewer bytes than declared: the manifest does not describe this layer (fourth
        // probe, C8: it was accepted when the digest matched).
        if bytes.len() as u64 != declared {
            return Err(wrong_size(reference, declared, &bytes.len().to_string()));
        }
        let actual = sha256(&bytes);
        if actual != layer.digest {
            return Err(OciError::Digest {
                reference: name(),
                what: "wasm layer",
                expected: layer.digest.clone(),
                actual,
            });
        }
        Ok(bytes)
    }
}

/// A layer whose size is not the one its manifest declares.
fn wrong_size(reference: &Reference, declared: u64, got: &str) -> OciError {
    OciError::Layout {
        reference: reference.to_string(),
        reason: format!("the wasm layer is {got} bytes, but its manifest declares {declared}"),
    }
}

/// The two parts of an artifact a pull fetches.
#[derive(Clone, Copy)]
enum Part {
    Manifest,
    Layer,
}

impl Part {
    /// Its name in messages.
    fn name(self) -> &'static str {
        match self {
            Part::Manifest => "manifest",
            Part::Layer => "wasm layer",
        }
    }

    /// What failed when fetching it failed.
    fn failed(self) -> &'static str {
        match self {
            Part::Manifest => "cannot pull the manifest",
            Part::Layer => "cannot pull the wasm layer",
        }
    }
}

/// One of oci-client's errors, as weir's: an unknown manifest or blob is `NotFound`, a digest
/// mismatch is `Digest`, the rest names what failed and why.
fn client_error(reference: &Reference, part: Part, err: OciDistributionError) -> OciError {
    let reference_text = reference.to_string();
    match &err {
        OciDistributionError::ImageManifestNotFoundError(reason) => OciError::NotFound {
            reference: reference_text,
            reason: reason.clone(),
        },
        OciDistributionError::RegistryError { envelope, .. }
            if envelope.errors.iter().any(|e| {
                matches!(
                    e.code,
                    OciErrorCode::ManifestUnknown
                        | OciErrorCode::NameUnknown
                        | OciErrorCode::BlobUnknown
                )
            }) =>
        {
            OciError::NotFound {
                reference: reference_text,
                reason: chain(&err),
            }
        }
        OciDistributionError::DigestError(DigestError::VerificationError { expected, actual }) => {
            OciError::Digest {
                reference: reference_text,
                what: part.name(),
                expected: expected.clone(),
                actual: actual.clone(),
            }
        }
        _ => OciError::Registry {
            reference: reference_text,
            what: part.failed(),
            reason: chain(&err),
        },
    }
}
