//! Registry credentials. Never in `weir.toml`: `weir serve` reads them from the environment
//! variables its `[oci.credentials."HOST"]` names, `weir push` from `WEIR_REGISTRY_USERNAME`
//! and `WEIR_REGISTRY_PASSWORD`; both then fall back to the Docker config
//! (`$DOCKER_CONFIG/config.json` or `~/.docker/config.json`, credential helpers included,
//! through the `docker_credential` crate), and then to no credentials.

use std::time::Duration;

use oci_client::secrets::RegistryAuth;

use crate::config::OciSettings;

/// Longest a Docker credential helper may take (it is another program).
const HELPER_TIMEOUT: Duration = Duration::from_secs(10);

/// The credentials `weir serve` uses for `registry`.
pub async fn for_serve(settings: &OciSettings, registry: &str) -> RegistryAuth {
    match settings.credentials.get(registry) {
        Some(creds) => match (&creds.username, &creds.password) {
            (Some(user), Some(password)) => RegistryAuth::Basic(user.clone(), password.clone()),
            _ => RegistryAuth::Anonymous,
        },
        None => docker_config(registry).await,
    }
}

/// The credentials `weir push` uses for `registry`.
pub async fn for_push(registry: &str) -> RegistryAuth {
    let user = std::env::var("WEIR_REGISTRY_USERNAME").ok();
    let password = std::env::var("WEIR_REGISTRY_PASSWORD").ok();
    match (user, password) {
        (Some(user), Some(password)) if !user.is_empty() => RegistryAuth::Basic(user, password),
        _ => docker_config(registry).await,
    }
}

/// What the Docker config holds for `registry`; anonymous when it holds nothing usable (an
/// identity token is an OAuth refresh token this client cannot exchange: logged).
async fn docker_config(registry: &str) -> RegistryAuth {
    use docker_credential::{CredentialRetrievalError, DockerCredential};
    // No config file is the common case (a server): no credentials, nothing to warn about.
    let dir = match std::env::var_os("DOCKER_CONFIG") {
        Some(dir) => Some(std::path::PathBuf::from(dir)),
        None => std::env::var_os("HOME").map(|home| std::path::PathBuf::from(home).join(".docker")),
    };
    if !dir.is_some_and(|dir| dir.join("config.json").is_file()) {
        return RegistryAuth::Anonymous;
    }
    let server = registry.to_owned();
    let lookup = tokio::task::spawn_blocking(move || docker_credential::get_credential(&server));
    match tokio::time::timeout(HELPER_TIMEOUT, lookup).await {
        Ok(Ok(Ok(DockerCredential::UsernamePassword(user, password)))) => {
            RegistryAuth::Basic(user, password)
        }
        Ok(Ok(Ok(DockerCredential::IdentityToken(_)))) => {
            tracing::warn!(
                registry,
                "the Docker config holds an identity token for this registry, which weir cannot \
                 use; pulling without credentials"
            );
            RegistryAuth::Anonymous
        }
        Ok(Ok(Err(
            CredentialRetrievalError::ConfigNotFound
            | CredentialRetrievalError::NoCredentialConfigured,
        ))) => RegistryAuth::Anonymous,
        Ok(Ok(Err(CredentialRetrievalError::HelperFailure { helper, .. }))) => {
            // Its output is not logged: a helper may print secrets.
            tracing::warn!(
                registry,
                helper,
                "the Docker credential helper failed; going without credentials"
            );
            RegistryAuth::Anonymous
        }
        Ok(Ok(Err(err))) => {
            tracing::warn!(registry, error = %err, "cannot read the Docker config's credentials; going without");
            RegistryAuth::Anonymous
        }
        Ok(Err(_)) | Err(_) => {
            tracing::warn!(
                registry,
                "the Docker credential helper did not answer; going without credentials"
            );
            RegistryAuth::Anonymous
        }
    }
}
