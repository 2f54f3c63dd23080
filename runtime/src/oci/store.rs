//! The content-addressed store of pulled blobs: `DIR/sha256/<hex>`, one file per manifest or
//! layer, named by the sha256 of its bytes.
//!
//! Why it exists: a stage pinned by digest and already on disk needs no registry, so an edge
//! node restarts while its registry is down. Every read is checked against its name (a file
//! edited on disk, or cut short by a crash, is a miss and is removed, never served), and
//! writes are atomic, so the store never holds a part of a blob under its final name.

use std::io;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::fsutil::{WRITABLE_BY_OTHERS, read_owned, trusted_dir, write_atomically};

/// `sha256:<hex>` of `bytes`.
pub fn sha256(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    let mut out = String::with_capacity(7 + 64);
    out.push_str("sha256:");
    for byte in digest {
        out.push(char::from(b"0123456789abcdef"[usize::from(byte >> 4)]));
        out.push(char::from(b"0123456789abcdef"[usize::from(byte & 15)]));
    }
    out
}

/// Blobs by digest, under one directory.
#[derive(Clone, Debug)]
pub struct BlobStore {
    /// `DIR/sha256`.
    dir: PathBuf,
}

impl BlobStore {
    /// Opens (creating, 0700) the store under `dir`. Refuses a directory weir cannot trust with
    /// code (a link, another owner, writable by others): it holds what stages are built from.
    pub fn open(dir: &Path) -> io::Result<BlobStore> {
        let dir = dir.join("sha256");
        trusted_dir(&dir)?;
        crate::fsutil::tidy(&dir);
        Ok(BlobStore { dir })
    }

    /// The file of `digest` (`sha256:<hex>`, checked by the caller).
    fn path(&self, digest: &str) -> Option<PathBuf> {
        let hex = digest.strip_prefix("sha256:")?;
        (hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit())).then(|| self.dir.join(hex))
    }

    /// The bytes of `digest`, when the store has them whole and at most `max_bytes` long. A
    /// file whose bytes do not hash to its name is removed and reported as a miss.
    pub fn get(&self, digest: &str, max_bytes: u64) -> Option<Vec<u8>> {
        let path = self.path(digest)?;
        let bytes = match read_owned(&path, max_bytes, WRITABLE_BY_OTHERS) {
            Ok(bytes) => bytes,
            Err(err) if err.kind() == io::ErrorKind::NotFound => return None,
            Err(err) => {
                tracing::warn!(file = %path.display(), error = %err, "a stored blob is unreadable; pulling it again");
                return None;
            }
        };
        if sha256(&bytes) != digest {
            tracing::warn!(
                file = %path.display(),
                "a stored blob does not match its digest (edited or cut short); removed, pulling it again"
            );
            let _ = std::fs::remove_file(&path);
            return None;
        }
        Some(bytes)
    }

    /// Keeps `bytes` under `digest`, which the caller verified is theirs.
    pub fn put(&self, digest: &str, bytes: &[u8]) -> io::Result<()> {
        let path = self.path(digest).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("not a sha256 digest: {digest}"),
            )
        })?;
        write_atomically(&path, bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_blob_comes_back_whole_and_a_tampered_one_never() {
        let dir = crate::fsutil::testing::scratch("oci-store");
        let store = BlobStore::open(&dir).unwrap();
        let bytes = b"\0asm component bytes".to_vec();
        let digest = sha256(&bytes);
        assert_eq!(store.get(&digest, 1 << 20), None);
        store.put(&digest, &bytes).unwrap();
        assert_eq!(store.get(&digest, 1 << 20), Some(bytes.clone()));
        // Over the cap: a miss, and the file stays.
        assert_eq!(store.get(&digest, 4), None);
        let file = dir.join("sha256").join(&digest[7..]);
        assert!(file.exists());
        // One byte flipped on disk: a miss, and the file is gone.
        let mut tampered = bytes.clone();
        tampered[3] ^= 1;
        std::fs::write(&file, &tampered).unwrap();
        assert_eq!(store.get(&digest, 1 << 20), None);
        assert!(!file.exists());
    }

    #[test]
    fn the_digest_is_sha256_in_lowercase_hex() {
        assert_eq!(
            sha256(b""),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        let dir = crate::fsutil::testing::scratch("oci-store-names");
        let store = BlobStore::open(&dir).unwrap();
        assert!(store.put("sha256:../../etc/passwd", b"x").is_err());
        assert_eq!(store.get("md5:abc", 10), None);
    }
}
