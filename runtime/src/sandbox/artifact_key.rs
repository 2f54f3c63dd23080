//! The key that signs precompiled artifacts, so weir deserializes (and so runs as native
//! code) only an artifact that weir itself wrote for that stage version.
//!
//! The key is 32 random bytes in a file **outside** the data directory, mode 0600 in a 0700
//! directory: whoever can write the artifact directory (another local user, a shared volume,
//! a restored backup) still cannot produce a file that passes the MAC. It is read from
//! `sandbox.artifact_key_file`, else `$XDG_STATE_HOME/weir/artifact.key`, else
//! `$HOME/.local/state/weir/artifact.key`, and generated there (from the OS-seeded CSPRNG,
//! created exclusively) when missing. A key file weir cannot trust (a symbolic link, not a
//! regular file, owned by another user, readable or writable by others, the wrong size, or
//! in a directory others may write) turns the artifact cache off with a warning; when there
//! is no place for a key at all, a key held in memory serves this process only, so the cache
//! still works but does not survive a restart.

use std::fmt;
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::fsutil;

/// Bytes of a key (blake3's key size).
pub const KEY_LEN: usize = 32;

/// The key's file name under the state directory.
const FILE_NAME: &str = "artifact.key";

/// A secret key for the artifact MAC. `Debug` does not show it.
#[derive(Clone)]
pub struct ArtifactKey([u8; KEY_LEN]);

impl fmt::Debug for ArtifactKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ArtifactKey(..)")
    }
}

/// Why a key file was not used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The file (or its directory) exists but cannot be trusted: the cache must stay off.
    #[error("artifact key {path} refused: {reason}")]
    Refused {
        /// The key file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The file could not be read or created (a permission, a read-only file system).
    #[error("artifact key {path}: {source}")]
    Io {
        /// The key file.
        path: PathBuf,
        /// The failure.
        source: io::Error,
    },
}

impl ArtifactKey {
    /// A fresh random key held in memory only (artifacts signed with it are recompiled by
    /// the next process).
    pub fn ephemeral() -> ArtifactKey {
        // `rand::random` draws from the thread-local ChaCha CSPRNG seeded by the OS.
        ArtifactKey(rand::random())
    }

    /// A keyed blake3 hasher: the MAC of whatever is fed to it.
    pub(super) fn hasher(&self) -> blake3::Hasher {
        blake3::Hasher::new_keyed(&self.0)
    }

    /// Reads the key at `path`, or generates it there when the file is missing: created
    /// exclusively with mode 0600, its missing directories 0700. The file and its directory
    /// must pass the checks in the module docs.
    pub fn load_or_create(path: &Path) -> Result<ArtifactKey, KeyError> {
        let refused = |reason: String| KeyError::Refused {
            path: path.to_path_buf(),
            reason,
        };
        let io_error = |source: io::Error| KeyError::Io {
            path: path.to_path_buf(),
            source,
        };
        if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
            fsutil::private::create_dirs(dir).map_err(io_error)?;
            check_dir(dir).map_err(refused)?;
        }
        // Twice at most: when another process creates the file between our read and our
        // create, read it again.
        for _ in 0..2 {
            match fsutil::read_owned(path, KEY_LEN as u64, fsutil::OPEN_TO_OTHERS) {
                Ok(bytes) => {
                    let key: [u8; KEY_LEN] = bytes.as_slice().try_into().map_err(|_| {
                        refused(format!("holds {} bytes, expected {KEY_LEN}", bytes.len()))
                    })?;
                    return Ok(ArtifactKey(key));
                }
                Err(err) if err.kind() == io::ErrorKind::NotFound => match create(path) {
                    Ok(key) => {
                        tracing::info!(path = %path.display(), "generated a new artifact key");
                        return Ok(key);
                    }
                    Err(err) if err.kind() == io::ErrorKind::AlreadyExists => continue,
                    Err(err) => return Err(io_error(err)),
                },
                Err(err) if err.kind() == io::ErrorKind::InvalidData => {
                    return Err(refused(err.to_string()));
                }
                Err(err) => return Err(io_error(err)),
            }
        }
        Err(refused("appeared and vanished while being read".into()))
    }
}

/// Writes a new random key to `path`, which must not exist (`O_EXCL`: a link planted there
/// is not followed). A failed write removes the file.
fn create(path: &Path) -> io::Result<ArtifactKey> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    let key = ArtifactKey::ephemeral();
    let written = file.write_all(&key.0).and_then(|()| file.sync_all());
    if let Err(err) = written {
        let _ = std::fs::remove_file(path);
        return Err(err);
    }
    Ok(key)
}

/// The key's directory must be weir's or root's and not writable by others (unless sticky,
/// like `/tmp`, where others cannot replace weir's file): else someone else could swap the key.
fn check_dir(dir: &Path) -> Result<(), String> {
    let meta = std::fs::metadata(dir).map_err(|err| format!("{}: {err}", dir.display()))?;
    if !meta.is_dir() {
        return Err(format!("{} is not a directory", dir.display()));
    }
    let owner = meta.uid();
    if owner != fsutil::euid() && owner != 0 {
        return Err(format!(
            "its directory {} is owned by uid {owner}, not by weir's user or root",
            dir.display()
        ));
    }
    let mode = meta.permissions().mode();
    const STICKY: u32 = 0o1000;
    if mode & fsutil::WRITABLE_BY_OTHERS != 0 && mode & STICKY == 0 {
        return Err(format!(
            "its directory {} has mode {:o}: other users may replace the key",
            dir.display(),
            mode & 0o777
        ));
    }
    Ok(())
}

/// The default key file from the environment: `$XDG_STATE_HOME/weir/artifact.key`, else
/// `$HOME/.local/state/weir/artifact.key`; `None` when neither is set to an absolute path.
pub fn default_path(env: &dyn Fn(&str) -> Option<String>) -> Option<PathBuf> {
    let absolute = |name: &str| {
        env(name)
            .map(PathBuf::from)
            .filter(|path| path.is_absolute())
    };
    if let Some(state) = absolute("XDG_STATE_HOME") {
        return Some(state.join("weir").join(FILE_NAME));
    }
    absolute("HOME").map(|home| home.join(".local/state/weir").join(FILE_NAME))
}

/// The key for the artifact cache: from `configured`, else from the default location in the
/// process environment; a key in memory when there is no usable location; `None` (the
/// cache must stay off) when a key file exists but is refused. Logs which it is, and warns
/// when the key file lies inside `data_dir` (a backup or a shared volume of the data
/// directory would then carry the key along with the artifacts).
pub fn resolve(configured: Option<&Path>, data_dir: Option<&Path>) -> Option<ArtifactKey> {
    let path = match configured {
        Some(path) => path.to_path_buf(),
        None => match default_path(&|name| std::env::var(name).ok()) {
            Some(path) => path,
            None => {
                tracing::warn!(
                    "neither sandbox.artifact_key_file, XDG_STATE_HOME nor HOME is set: the \
                     artifact key is kept in memory, so compiled stages are not reused after a \
                     restart"
                );
                return Some(ArtifactKey::ephemeral());
            }
        },
    };
    if data_dir.is_some_and(|dir| path.starts_with(dir)) {
        tracing::warn!(
            path = %path.display(),
            "the artifact key file is inside server.data_dir; keep it outside, so that whoever \
             gets the data directory cannot sign artifacts"
        );
    }
    match ArtifactKey::load_or_create(&path) {
        Ok(key) => Some(key),
        Err(err @ KeyError::Refused { .. }) => {
            tracing::warn!(
                error = %err,
                "no artifact cache: stages compile at every start (fix or remove the key file)"
            );
            None
        }
        Err(err @ KeyError::Io { .. }) => {
            tracing::warn!(
                error = %err,
                "the artifact key is kept in memory, so compiled stages are not reused after a \
                 restart"
            );
            Some(ArtifactKey::ephemeral())
        }
    }
}

#[cfg(test)]
mod tests {
    use std::fs::Permissions;

    use super::*;
    use crate::fsutil::testing::mode;

    fn scratch() -> PathBuf {
        crate::fsutil::testing::scratch("key")
    }

    #[test]
    fn a_missing_key_is_generated_private_and_read_back() {
        let root = scratch();
        let path = root.join("state/weir/artifact.key");
        let first = ArtifactKey::load_or_create(&path).unwrap();
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(&root.join("state/weir")), 0o700);
        assert_eq!(std::fs::read(&path).unwrap().len(), KEY_LEN);
        let again = ArtifactKey::load_or_create(&path).unwrap();
        assert_eq!(first.0, again.0);
        assert_ne!(first.0, ArtifactKey::ephemeral().0);
        assert_eq!(format!("{first:?}"), "ArtifactKey(..)");
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn an_untrustworthy_key_file_is_refused() {
        let root = scratch();
        let path = root.join("artifact.key");
        std::fs::set_permissions(&root, Permissions::from_mode(0o700)).unwrap();
        let refused = |path: &Path| match ArtifactKey::load_or_create(path) {
            Err(KeyError::Refused { reason, .. }) => reason,
            other => panic!("expected a refusal, got {other:?}"),
        };

        std::fs::write(&path, [7u8; KEY_LEN]).unwrap();
        std::fs::set_permissions(&path, Permissions::from_mode(0o644)).unwrap();
        assert!(refused(&path).contains("mode 644"));

        std::fs::set_permissions(&path, Permissions::from_mode(0o600)).unwrap();
        assert_eq!(
            ArtifactKey::load_or_create(&path).unwrap().0,
            [7u8; KEY_LEN]
        );

        std::fs::write(&path, [7u8; KEY_LEN - 1]).unwrap();
        assert!(refused(&path).contains("expected 32"));

        let link = root.join("link.key");
        std::fs::write(&path, [7u8; KEY_LEN]).unwrap();
        std::os::unix::fs::symlink(&path, &link).unwrap();
        assert!(refused(&link).contains("symbolic link"));

        std::fs::set_permissions(&root, Permissions::from_mode(0o777)).unwrap();
        assert!(refused(&path).contains("replace the key"));
        std::fs::set_permissions(&root, Permissions::from_mode(0o700)).unwrap();
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn the_default_path_follows_xdg_then_home() {
        let env = |vars: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                vars.iter()
                    .find(|(n, _)| *n == name)
                    .map(|(_, v)| v.to_string())
            }
        };
        assert_eq!(
            default_path(&env(&[("XDG_STATE_HOME", "/s"), ("HOME", "/h")])),
            Some(PathBuf::from("/s/weir/artifact.key"))
        );
        assert_eq!(
            default_path(&env(&[("XDG_STATE_HOME", "relative"), ("HOME", "/h")])),
            Some(PathBuf::from("/h/.local/state/weir/artifact.key"))
        );
        assert_eq!(default_path(&env(&[("HOME", "")])), None);
        assert_eq!(default_path(&env(&[])), None);
    }
}
