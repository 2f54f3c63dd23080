//! Small file-system helpers shared by the modules that keep state on disk (the data
//! directory's redb files, the cache's disk tier, the sandbox's artifact cache).
//!
//! Everything weir writes holds prompts, answers, spend or code, so it is private to weir's
//! user: directories are created 0700 and files 0600, and older files found with looser modes
//! are tightened at start ([`private`]). Temporary files written by [`write_atomically`] and
//! orphaned by a crash are swept at start by [`tidy`], which knows their name pattern and
//! touches nothing else.

pub mod private;
#[cfg(test)]
pub mod testing;

use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

pub use private::{
    OPEN_TO_OTHERS, WRITABLE_BY_OTHERS, euid, private_dir, private_file, read_owned, read_regular,
    trusted_dir,
};

/// The largest stage file read (a Python stage's component is about 40 MiB).
pub const MAX_STAGE_FILE_BYTES: u64 = 256 << 20;

/// The largest config or price file read.
pub const MAX_CONFIG_FILE_BYTES: u64 = 16 << 20;

/// Age after which a temporary file is an orphan: a write takes milliseconds, so an older one
/// was left by a process that died mid-write. The margin keeps a sweep from removing the
/// temporary file of another process writing to the same directory right now.
pub const ORPHANED_AFTER: Duration = Duration::from_secs(60);

/// Writes `bytes` to `path` so that a reader sees the old file or the whole new one, never a
/// part: a temporary file beside it (created new, mode 0600, so it neither follows a link
/// planted at its name nor is readable by others), renamed over it (the temporary is removed
/// on failure). Missing parent directories are created 0700.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    if let Some(parent) = path.parent() {
        private::create_dirs(parent)?;
    }
    let tmp = temp_name(path);
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .and_then(|mut file| file.write_all(bytes))
        .and_then(|()| std::fs::rename(&tmp, path));
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

/// The temporary file [`write_atomically`] writes before renaming it to `path`:
/// `path` with its extension replaced by `tmp<random digits>`.
fn temp_name(path: &Path) -> PathBuf {
    path.with_extension(format!("tmp{}", rand::random::<u32>()))
}

/// True when `name` has the shape of a `temp_name`: an extension `tmp` followed by digits.
pub fn is_temp_name(name: &str) -> bool {
    name.rsplit_once('.').is_some_and(|(stem, ext)| {
        !stem.is_empty()
            && ext
                .strip_prefix("tmp")
                .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
    })
}

/// What [`tidy`] did in one directory.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tidied {
    /// Orphaned temporary files removed.
    pub swept: usize,
    /// Files of weir's user whose mode was tightened to owner-only.
    pub tightened: usize,
}

impl Tidied {
    /// Tidies one entry of one of weir's own directories, `path` described by `meta` (not
    /// following a link), as of `now`: an orphaned temporary file (the [`is_temp_name`]
    /// pattern, older than [`ORPHANED_AFTER`]) is removed, a regular file of weir's user that
    /// others may read is tightened, anything else is left alone. Returns true when the entry
    /// is still there and is not a temporary file.
    pub fn entry(&mut self, path: &Path, meta: &std::fs::Metadata, now: SystemTime) -> bool {
        if meta.is_dir() {
            return true;
        }
        let temp = path
            .file_name()
            .and_then(|name| name.to_str())
            .is_some_and(is_temp_name);
        if temp {
            let age = meta
                .modified()
                .ok()
                .and_then(|at| now.duration_since(at).ok());
            if age.is_some_and(|age| age >= ORPHANED_AFTER) && std::fs::remove_file(path).is_ok() {
                self.swept += 1;
            }
            return false;
        }
        if meta.is_file() && private::tighten(path, meta) {
            self.tightened += 1;
        }
        true
    }

    /// Logs the orphans removed from `dir`, if any (each tightened file is logged already).
    pub fn log(&self, dir: &Path) {
        if self.swept > 0 {
            tracing::info!(
                dir = %dir.display(),
                files = self.swept,
                "removed temporary files orphaned by an earlier crash"
            );
        }
    }
}

/// Tidies the files directly in `dir`, one of weir's own directories (subdirectories are
/// not entered), with [`Tidied::entry`], and logs it. A missing or unreadable directory is
/// nothing to do.
pub fn tidy(dir: &Path) -> Tidied {
    let mut done = Tidied::default();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return done;
    };
    let now = SystemTime::now();
    for entry in entries.flatten() {
        // `DirEntry::metadata` does not follow a symbolic link.
        if let Ok(meta) = entry.metadata() {
            done.entry(&entry.path(), &meta, now);
        }
    }
    done.log(dir);
    done
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::testing::{mode, scratch};
    use super::*;

    #[test]
    fn temp_names_are_recognised_and_nothing_else() {
        let name = temp_name(Path::new("/x/abc-01.cwasm"));
        assert!(is_temp_name(name.file_name().unwrap().to_str().unwrap()));
        let name = temp_name(Path::new("/x/ab/0123abcd"));
        assert!(is_temp_name(name.file_name().unwrap().to_str().unwrap()));
        for other in [
            "abc.cwasm",
            "abc.tmp",
            ".tmp12",
            "abc.tmpx1",
            "abc.tmp12.cwasm",
            "jobs.redb",
            "0123abcd",
        ] {
            assert!(!is_temp_name(other), "{other}");
        }
    }

    #[test]
    fn written_files_and_created_directories_are_private() {
        let dir = scratch("write");
        let path = dir.join("new/deeper/file.bin");
        write_atomically(&path, b"hello").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"hello");
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(&dir.join("new")), 0o700);
        assert_eq!(mode(&dir.join("new/deeper")), 0o700);
        // Overwriting keeps the mode and leaves no temporary behind.
        write_atomically(&path, b"again").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"again");
        assert_eq!(
            std::fs::read_dir(dir.join("new/deeper")).unwrap().count(),
            1
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn tidy_removes_old_orphans_only_and_tightens_loose_files() {
        let dir = scratch("tidy");
        let old = SystemTime::now() - Duration::from_secs(3600);
        let plant = |name: &str, age: Option<SystemTime>, mode: u32| {
            let path = dir.join(name);
            let file = std::fs::File::create(&path).unwrap();
            if let Some(at) = age {
                file.set_modified(at).unwrap();
            }
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            path
        };
        let orphan = plant("abc.cwasm.tmp123", Some(old), 0o600);
        let orphan2 = plant("0123.tmp9", Some(old), 0o644);
        let fresh = plant("abc.tmp77", None, 0o600);
        let stranger = plant("notes.txt", Some(old), 0o644);
        let ours = plant("abc.cwasm", None, 0o640);
        std::fs::create_dir(dir.join("sub.tmp1")).unwrap();

        let done = tidy(&dir);
        assert_eq!(
            done,
            Tidied {
                swept: 2,
                tightened: 2
            }
        );
        assert!(!orphan.exists() && !orphan2.exists());
        assert!(fresh.exists(), "a temporary being written now is kept");
        assert!(stranger.exists(), "other files are kept");
        assert!(dir.join("sub.tmp1").is_dir(), "directories are not touched");
        assert_eq!(mode(&stranger), 0o600);
        assert_eq!(mode(&ours), 0o600);
        assert_eq!(tidy(&dir), Tidied::default());
        assert_eq!(tidy(&dir.join("missing")), Tidied::default());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
