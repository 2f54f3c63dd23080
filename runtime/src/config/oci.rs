//! `[oci]`: pulling stages from OCI registries (`path = "oci://REGISTRY/REPO@sha256:…"`):
//! whether tags are accepted, which registries are reached over plain HTTP, a pull's deadline
//! and byte cap, and each registry's credentials (names of environment variables; a secret
//! never goes in the file).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize};

use super::check::Source;
use super::error::{ConfigError, key_segment};
use super::value::{Mib, Ms, env_var, mask, mib, ms, read_str, serde_default};

/// `[oci]`.
#[derive(Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub struct OciSettings {
    /// Accept `oci://…:TAG` stage paths, resolved to a digest at every load (and logged).
    /// Off by default: a tag moves, so nodes pinned to one can serve different code.
    #[serde(default)]
    pub allow_tags: bool,
    /// Registries (`host` or `host:port`) reached over plain HTTP. Loopback registries
    /// (`localhost`, `127.0.0.0/8`, `[::1]`) always are; every other one is HTTPS.
    #[serde(deserialize_with = "registries", default)]
    pub insecure_registries: Vec<String>,
    /// One pull (manifest and layer) at most this long (default 30 s, 100 ms to 10 min).
    /// A pull that runs out keeps the version serving.
    #[serde(rename = "pull_timeout_ms", with = "Ms::<100, 600_000>")]
    #[serde(default = "ms::<30_000>")]
    pub pull_timeout: Duration,
    /// The wasm layer's cap (default 128 MiB, 1 MiB to 2 GiB): a larger layer is refused
    /// before it is downloaded, and a download that runs past it is cut.
    #[serde(
        rename = "max_blob_mib",
        with = "Mib::<1, 2048>",
        default = "mib::<128>"
    )]
    pub max_blob_bytes: u64,
    /// `[oci.credentials."HOST[:PORT]"]`: a registry's username and password, each read from
    /// an environment variable at load. A registry with none here uses the Docker config
    /// (`$DOCKER_CONFIG/config.json` or `~/.docker/config.json`, credential helpers too), else
    /// no credentials.
    #[serde(default)]
    pub credentials: BTreeMap<String, RegistryCredentials>,
}

serde_default!(OciSettings);

impl std::fmt::Debug for OciSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        super::masked::debug(self, "OciSettings", f)
    }
}

/// `[oci.credentials."HOST"]`.
#[derive(Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub struct RegistryCredentials {
    /// Name of the environment variable holding the username.
    #[serde(deserialize_with = "env_var")]
    pub username_env: Option<String>,
    /// Name of the environment variable holding the password or token.
    #[serde(deserialize_with = "env_var")]
    pub password_env: Option<String>,
    /// The username read from [`Self::username_env`].
    #[serde(skip_deserializing, serialize_with = "mask")]
    pub username: Option<String>,
    /// The password read from [`Self::password_env`].
    #[serde(skip_deserializing, serialize_with = "mask")]
    pub password: Option<String>,
}

fn registries<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    struct Registry(String);
    impl<'de> Deserialize<'de> for Registry {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            read_str(d, |text| {
                crate::oci::check_registry(text).map(|()| Registry(text.to_owned()))
            })
        }
    }
    Ok(Vec::<Registry>::deserialize(d)?
        .into_iter()
        .map(|r| r.0)
        .collect())
}

/// The second pass: every credentials table names a valid registry and its secrets are set.
pub(super) fn check(oci: &mut OciSettings, src: &Source<'_>) -> Result<(), ConfigError> {
    for (registry, creds) in &mut oci.credentials {
        let key = format!("oci.credentials.{}", key_segment(registry));
        if let Err(message) = crate::oci::check_registry(registry) {
            return Err(src.error(&key, message));
        }
        let purpose = format!("the credentials for the registry {registry}");
        if let Some(var) = &creds.username_env {
            creds.username = Some(src.secret(&format!("{key}.username_env"), var, &purpose)?);
        }
        if let Some(var) = &creds.password_env {
            creds.password = Some(src.secret(&format!("{key}.password_env"), var, &purpose)?);
        }
    }
    Ok(())
}

/// A stage `path` that names an OCI artifact: parsed, with tags refused unless
/// `[oci] allow_tags`; the error is at `key` (the stage's `path`) and names the reference.
pub(super) fn stage_reference(
    text: &str,
    oci: &OciSettings,
    src: &Source<'_>,
    key: &str,
) -> Result<crate::oci::Reference, ConfigError> {
    let reference = crate::oci::Reference::parse(text)
        .map_err(|message| src.error(key, format!("{text}: {message}")))?;
    if reference.digest.is_none() && !oci.allow_tags {
        return Err(src.error(
            key,
            format!(
                "{text}: a tag can move, so nodes would not agree on the code they run; pin \
                 the artifact by digest (oci://{}/{}@sha256:…, which `weir push` prints), or \
                 set [oci] allow_tags = true for development",
                reference.registry, reference.repository
            ),
        ));
    }
    Ok(reference)
}
