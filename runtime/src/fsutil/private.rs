//! Ownership and modes: weir's directories are 0700 and its files 0600, created so and
//! tightened so when an older weir (or a lax umask) left them open to others.
//!
//! Two levels of trust:
//! - [`private_dir`] / [`private_file`] for state weir reads as data (the redb files, the
//!   response cache): created private, tightened when ours, a warning when someone else owns
//!   them, never a refusal (an operator may have placed the directory deliberately).
//! - [`trusted_dir`] / [`read_owned`] for what weir runs or trusts (precompiled stages, the
//!   key that signs them): like ssh's StrictModes, a symbolic link, a foreign owner or a
//!   mode that lets others write is refused, and a file is read only when it is a regular
//!   file of bounded size, opened without following a link.

use std::fs::{DirBuilder, File, Metadata, Permissions};
use std::io::{self, Read};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use rustix::fs::{Mode, OFlags};

/// The permission bits of group and others: none may be set on a secret.
pub const OPEN_TO_OTHERS: u32 = 0o077;
/// The write bits of group and others: none may be set on what weir trusts.
pub const WRITABLE_BY_OTHERS: u32 = 0o022;

/// The effective user id of this process: the owner weir expects of its files.
pub fn euid() -> u32 {
    rustix::process::geteuid().as_raw()
}

/// Creates `dir` and its missing parents with mode 0700.
pub(crate) fn create_dirs(dir: &Path) -> io::Result<()> {
    DirBuilder::new().recursive(true).mode(0o700).create(dir)
}

/// An error refusing `path` for `reason` (kind `PermissionDenied`).
fn refused(path: &Path, reason: impl std::fmt::Display) -> io::Error {
    io::Error::new(
        io::ErrorKind::PermissionDenied,
        format!("{} {reason}", path.display()),
    )
}

/// Removes the group and other bits of `path` (described by `meta`) when it is weir's and has
/// any; true when it changed. Someone else's path open to others is only logged.
pub(crate) fn tighten(path: &Path, meta: &Metadata) -> bool {
    let mode = meta.permissions().mode() & 0o7777;
    if mode & OPEN_TO_OTHERS == 0 {
        return false;
    }
    if meta.uid() != euid() {
        tracing::warn!(
            path = %path.display(),
            mode = %format!("{:o}", mode & 0o777),
            owner = meta.uid(),
            "not owned by weir's user and open to other users; weir cannot tighten it"
        );
        return false;
    }
    let tightened = mode & !OPEN_TO_OTHERS;
    match std::fs::set_permissions(path, Permissions::from_mode(tightened)) {
        Ok(()) => {
            tracing::warn!(
                path = %path.display(),
                from = %format!("{:o}", mode & 0o777),
                to = %format!("{:o}", tightened & 0o777),
                "was open to other users; permissions tightened"
            );
            true
        }
        Err(err) => {
            tracing::warn!(path = %path.display(), error = %err, "cannot tighten permissions");
            false
        }
    }
}

/// Makes `dir` a private directory: creates it (and missing parents) 0700, or tightens it
/// when it exists, is weir's and others may use it. Follows a symbolic link (a data
/// directory placed elsewhere on purpose). Errors only when it cannot be created or is not a
/// directory.
pub fn private_dir(dir: &Path) -> io::Result<()> {
    create_dirs(dir)?;
    let meta = std::fs::metadata(dir)?;
    if !meta.is_dir() {
        return Err(refused(dir, "is not a directory"));
    }
    tighten(dir, &meta);
    Ok(())
}

/// Makes `path` a private file before a library opens it (redb creates files with the
/// process umask): creates it empty with mode 0600 when missing, or tightens it when it
/// exists, is weir's and others may read it. Never truncates.
pub fn private_file(path: &Path) -> io::Result<()> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(refused(path, "is not a regular file"));
    }
    tighten(path, &meta);
    Ok(())
}

/// Makes `dir` a directory weir may trust with code: creates it 0700 when missing (parents
/// too), then refuses it (a `PermissionDenied` error naming the reason) when it is a symbolic
/// link, not a directory, not owned by weir's user, or writable by group or others. A mode
/// that only lets others read or enter it is tightened.
pub fn trusted_dir(dir: &Path) -> io::Result<()> {
    match std::fs::symlink_metadata(dir) {
        Err(err) if err.kind() == io::ErrorKind::NotFound => create_dirs(dir)?,
        Err(err) => return Err(err),
        Ok(_) => {}
    }
    let meta = std::fs::symlink_metadata(dir)?;
    if meta.file_type().is_symlink() {
        return Err(refused(dir, "is a symbolic link"));
    }
    if !meta.is_dir() {
        return Err(refused(dir, "is not a directory"));
    }
    check_owner_and_mode(dir, &meta, WRITABLE_BY_OTHERS)?;
    tighten(dir, &meta);
    Ok(())
}

/// Refuses `meta` (of `path`) when it is not owned by weir's user or has any of `forbidden`
/// among its permission bits.
fn check_owner_and_mode(path: &Path, meta: &Metadata, forbidden: u32) -> io::Result<()> {
    let me = euid();
    if meta.uid() != me {
        return Err(refused(
            path,
            format!(
                "is owned by uid {}, not by weir's user (uid {me})",
                meta.uid()
            ),
        ));
    }
    let mode = meta.permissions().mode() & 0o777;
    if mode & forbidden != 0 {
        return Err(refused(
            path,
            format!("has mode {mode:o}, open to other users"),
        ));
    }
    Ok(())
}

/// Reads the file at `path` when it can be trusted: opened without following a symbolic link
/// (and without blocking on a FIFO), a regular file, owned by weir's user, with none of
/// `forbidden` among its permission bits, at most `max_bytes` long. A refusal is an
/// `InvalidData` error naming the reason; a missing file is `NotFound`.
pub fn read_owned(path: &Path, max_bytes: u64, forbidden: u32) -> io::Result<Vec<u8>> {
    let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY;
    let fd = match rustix::fs::open(path, flags | OFlags::CLOEXEC, Mode::empty()) {
        Ok(fd) => fd,
        Err(rustix::io::Errno::LOOP) => return Err(invalid(path, "is a symbolic link")),
        Err(errno) => return Err(errno.into()),
    };
    let file = File::from(fd);
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(invalid(path, "is not a regular file"));
    }
    check_owner_and_mode(path, &meta, forbidden)
        .map_err(|err| io::Error::new(io::ErrorKind::InvalidData, err.to_string()))?;
    read_bounded(path, file, &meta, max_bytes)
}

/// Reads the file at `path` (a symbolic link is followed: deployments swap one) when it is a
/// regular file of at most `max_bytes`: opened without blocking (a FIFO would wait for a
/// writer forever), checked on the open file (so a swap after the check changes nothing),
/// read no further than the bound (a character device such as `/dev/zero` never ends). For
/// the files an operator names: stage files, the config, the price file. A refusal is an
/// `InvalidData` error naming the reason. Blocking: call it off the async threads.
pub fn read_regular(path: &Path, max_bytes: u64) -> io::Result<Vec<u8>> {
    let flags = OFlags::RDONLY | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC;
    let file = File::from(rustix::fs::open(path, flags, Mode::empty())?);
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(invalid(path, "is not a regular file"));
    }
    read_bounded(path, file, &meta, max_bytes)
}

/// The contents of the open regular `file` (at `path`, of `meta`), at most `max_bytes`.
fn read_bounded(
    path: &Path,
    file: File,
    meta: &std::fs::Metadata,
    max_bytes: u64,
) -> io::Result<Vec<u8>> {
    if meta.len() > max_bytes {
        return Err(invalid(
            path,
            format!("is {} bytes, more than the {max_bytes} allowed", meta.len()),
        ));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.take(max_bytes.saturating_add(1))
        .read_to_end(&mut bytes)?;
    if bytes.len() as u64 > max_bytes {
        return Err(invalid(path, format!("grew past {max_bytes} bytes")));
    }
    Ok(bytes)
}

/// An `InvalidData` error: `path` refused for `reason`.
fn invalid(path: &Path, reason: impl std::fmt::Display) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("{} {reason}", path.display()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fsutil::testing::{mode, scratch};

    fn chmod(path: &Path, mode: u32) {
        std::fs::set_permissions(path, Permissions::from_mode(mode)).unwrap();
    }

    /// A named pipe at `path` (a read of it blocks until a writer comes).
    fn make_fifo(path: &Path) {
        rustix::fs::mknodat(
            rustix::fs::CWD,
            path,
            rustix::fs::FileType::Fifo,
            Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
    }

    /// Third probe, B1 and B2: a stage file that is a link to `/dev/zero` was read until the
    /// kernel killed weir; one that is a link to a FIFO blocked its reload, and every later
    /// one, for good.
    #[test]
    fn read_regular_follows_links_to_files_and_refuses_devices_fifos_dirs_and_big_files() {
        let dir = scratch("read-regular");
        let file = dir.join("stage.wasm");
        std::fs::write(&file, b"\0asm").unwrap();
        let link = dir.join("link.wasm");
        std::os::unix::fs::symlink(&file, &link).unwrap();
        assert_eq!(
            read_regular(&link, 16).unwrap(),
            b"\0asm",
            "a link to a file is read"
        );
        let zero = dir.join("zero.wasm");
        std::os::unix::fs::symlink("/dev/zero", &zero).unwrap();
        let fifo = dir.join("fifo.wasm");
        make_fifo(&fifo);
        let big = dir.join("big.wasm");
        std::fs::write(&big, vec![0u8; 17]).unwrap();
        for (path, says) in [
            (&zero, "not a regular file"),
            (&fifo, "not a regular file"),
            (&dir, "not a regular file"),
            (&big, "more than the 16 allowed"),
        ] {
            let err = read_regular(path, 16).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{err}");
            assert!(err.to_string().contains(says), "{err}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn private_dirs_and_files_are_created_private_and_tightened() {
        let root = scratch("create");
        let dir = root.join("a/b");
        private_dir(&dir).unwrap();
        assert_eq!((mode(&root.join("a")), mode(&dir)), (0o700, 0o700));
        let file = dir.join("jobs.redb");
        private_file(&file).unwrap();
        assert_eq!(mode(&file), 0o600);

        std::fs::write(&file, b"keep me").unwrap();
        chmod(&file, 0o644);
        chmod(&dir, 0o755);
        private_dir(&dir).unwrap();
        private_file(&file).unwrap();
        assert_eq!((mode(&dir), mode(&file)), (0o700, 0o600));
        assert_eq!(std::fs::read(&file).unwrap(), b"keep me", "never truncated");
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn a_trusted_dir_refuses_links_and_modes_that_let_others_write() {
        let root = scratch("trusted");
        let dir = root.join("artifacts");
        trusted_dir(&dir).unwrap();
        assert_eq!(mode(&dir), 0o700);

        chmod(&dir, 0o755);
        trusted_dir(&dir).unwrap();
        assert_eq!(mode(&dir), 0o700, "read access for others is tightened");

        chmod(&dir, 0o777);
        let err = trusted_dir(&dir).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::PermissionDenied);
        assert!(err.to_string().contains("mode 777"), "{err}");
        chmod(&dir, 0o770);
        assert!(trusted_dir(&dir).is_err(), "group-writable");

        let link = root.join("link");
        std::os::unix::fs::symlink(&dir, &link).unwrap();
        let err = trusted_dir(&link).unwrap_err();
        assert!(err.to_string().contains("symbolic link"), "{err}");

        let file = root.join("file");
        std::fs::write(&file, b"x").unwrap();
        assert!(trusted_dir(&file).is_err());

        // Someone else's directory (only root can make one to test with).
        if euid() == 0 {
            chmod(&dir, 0o700);
            std::os::unix::fs::chown(&dir, Some(65534), None).unwrap();
            let err = trusted_dir(&dir).unwrap_err();
            assert!(err.to_string().contains("owned by uid 65534"), "{err}");
        }
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn read_owned_refuses_links_fifos_loose_modes_and_large_files() {
        let root = scratch("read");
        let file = root.join("a.bin");
        std::fs::write(&file, b"0123456789").unwrap();
        chmod(&file, 0o600);
        assert_eq!(
            read_owned(&file, 10, OPEN_TO_OTHERS).unwrap(),
            b"0123456789"
        );

        let err = read_owned(&file, 9, OPEN_TO_OTHERS).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert!(err.to_string().contains("more than"), "{err}");

        chmod(&file, 0o644);
        assert!(read_owned(&file, 10, WRITABLE_BY_OTHERS).is_ok());
        let err = read_owned(&file, 10, OPEN_TO_OTHERS).unwrap_err();
        assert!(err.to_string().contains("mode 644"), "{err}");

        let link = root.join("link");
        std::os::unix::fs::symlink(&file, &link).unwrap();
        let err = read_owned(&link, 10, WRITABLE_BY_OTHERS).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert!(err.to_string().contains("symbolic link"), "{err}");

        let fifo = root.join("fifo");
        make_fifo(&fifo);
        let err = read_owned(&fifo, 10, OPEN_TO_OTHERS).unwrap_err();
        assert!(err.to_string().contains("not a regular file"), "{err}");

        let err = read_owned(&root.join("missing"), 10, OPEN_TO_OTHERS).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        let _ = std::fs::remove_dir_all(&root);
    }
}
