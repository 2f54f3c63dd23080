//! Small file-system helpers shared by the modules that keep state on disk (the cache's disk
//! tier, the sandbox's artifact cache).

use std::io;
use std::path::Path;

/// Writes `bytes` to `path` so that a reader sees the old file or the whole new one, never a
/// part: a temporary file beside it, renamed over it (the temporary is removed on failure).
pub fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let tmp = path.with_extension(format!("tmp{}", rand::random::<u32>()));
    let written = std::fs::write(&tmp, bytes).and_then(|()| std::fs::rename(&tmp, path));
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}
