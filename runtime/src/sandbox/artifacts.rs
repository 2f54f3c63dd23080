//! The precompiled-artifact cache: compiled stage components kept on disk so a restart with N
//! stages deserializes them (milliseconds) instead of recompiling them with cranelift
//! (hundreds of milliseconds each).
//!
//! An artifact is named `<blake3(wasm) hex>-<compat>.cwasm`, where `compat` is a blake3 of the
//! engine's [`Engine::precompile_compatibility_hash`] (target, cranelift flags, tunables, wasm
//! features and the full wasmtime version, since weir keeps wasmtime's default
//! `ModuleVersionStrategy`) and of [`FORMAT`]. A different wasmtime build or engine
//! configuration therefore looks for a different file and never sees this one.
//!
//! Deserializing an artifact maps its bytes as executable code, so the name is not trusted:
//! anyone who can write the directory could copy another stage's artifact there, or forge
//! one. Each file therefore carries a MAC that binds it to what it claims to be:
//! `keyed_blake3(key, FORMAT ‖ blake3(wasm) ‖ compat ‖ rest)`, where `rest` is the bytes of
//! `Component::serialize` and the key is an [`ArtifactKey`] kept outside the data directory
//! (every field before `rest` has a fixed length, so the encoding is prefix-free).
//!
//! File layout: the MAC (32 bytes) · `rest`. Writes go to a temporary file (mode 0600)
//! renamed into place, so a reader sees a whole file or none. The directory must be weir's,
//! 0700 (created so; refused when it is a symbolic link, someone else's or writable by
//! others: then stages compile at every load), and a file is read only when it is a regular
//! file of weir's user, not a link, at most [`MAX_ARTIFACT_BYTES`]. Anything else (missing,
//! refused, a wrong MAC, rejected by wasmtime) is a miss: the component is compiled and the
//! artifact rewritten, with a warning unless the file was simply missing. The cache never
//! fails a load that compiling alone would not fail; a write that fails is logged and skipped.
//!
//! One artifact per (stage version, engine configuration): a few MiB for a Rust stage, about
//! 40 MiB for a Python one. After each write the directory is held to `max_bytes`
//! (`sandbox.artifact_cache_max_mib`): the artifacts used least recently go first (a load
//! marks its file used), never the one just written; a stage whose artifact went compiles
//! again at its next load. Temporary files orphaned by a crash are swept when the cache is
//! opened.

use std::hash::{Hash, Hasher};
use std::io;
use std::path::{Path, PathBuf};

use wasmtime::Engine;
use wasmtime::component::Component;

use super::artifact_key::ArtifactKey;
use crate::fsutil;

/// Bumped when weir changes the artifact file layout, so old files are simply not found.
/// (2: the checksum became a keyed MAC over the wasm digest and the engine.)
const FORMAT: &[u8] = b"weir-cwasm-2";
/// Bytes of the MAC at the start of an artifact file.
const MAC_LEN: usize = 32;
/// Hex characters of the engine compatibility hash in a file name (64 bits: the MAC covers
/// the whole hash and wasmtime checks compatibility again on deserialize, so the name only has
/// to keep configurations apart).
const COMPAT_HEX_LEN: usize = 16;
/// Largest artifact file read, bytes (256 MiB; a first-party stage compiles to a few MiB).
/// A larger file is refused before it is read, and a larger component is not written.
pub const MAX_ARTIFACT_BYTES: u64 = 256 << 20;

/// How a component was obtained.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// Deserialized from a precompiled artifact.
    Cached,
    /// Compiled from the wasm bytes.
    Compiled,
}

/// A directory of precompiled stage components.
#[derive(Clone, Debug)]
pub struct ArtifactCache {
    /// Where the `.cwasm` files live.
    dir: PathBuf,
    /// Signs and checks every artifact.
    key: ArtifactKey,
    /// Bytes of artifacts kept at most (the least recently used go first).
    max_bytes: u64,
}

impl ArtifactCache {
    /// Opens the cache in `dir`, creating the directory (mode 0700), with `key` signing the
    /// artifacts. Refuses (a `PermissionDenied` error saying why) a directory that is a
    /// symbolic link, someone else's or writable by others; sweeps orphaned temporary files
    /// and tightens artifacts others may read.
    pub fn open(dir: &Path, key: ArtifactKey) -> io::Result<ArtifactCache> {
        fsutil::trusted_dir(dir)?;
        fsutil::tidy(dir);
        Ok(ArtifactCache {
            dir: dir.to_path_buf(),
            key,
            max_bytes: u64::MAX,
        })
    }

    /// The same cache holding at most `max_bytes` of artifacts.
    pub fn with_max_bytes(mut self, max_bytes: u64) -> ArtifactCache {
        self.max_bytes = max_bytes;
        self
    }

    /// The cache directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The file that holds (or would hold) the artifact of `digest` for `engine`.
    pub fn path(&self, engine: &Engine, digest: &blake3::Hash) -> PathBuf {
        self.file(digest, &compat(engine))
    }

    /// The file of `digest` for an engine whose [`compat`] hash is `compat`.
    fn file(&self, digest: &blake3::Hash, compat: &blake3::Hash) -> PathBuf {
        let compat = compat.to_hex();
        self.dir.join(format!(
            "{}-{}.cwasm",
            digest.to_hex(),
            &compat[..COMPAT_HEX_LEN]
        ))
    }

    /// The MAC of an artifact whose serialized component is `rest`, claiming to be `digest`
    /// compiled for an engine whose [`compat`] hash is `compat`.
    fn mac(&self, digest: &blake3::Hash, compat: &blake3::Hash, rest: &[u8]) -> blake3::Hash {
        let mut mac = self.key.hasher();
        mac.update(FORMAT);
        mac.update(digest.as_bytes());
        mac.update(compat.as_bytes());
        mac.update(rest);
        mac.finalize()
    }

    /// The component for `bytes` (whose blake3 is `digest`): deserialized from its artifact
    /// when there is a sound one, else compiled and its artifact written. Blocking (compiling
    /// takes up to seconds): call off the async threads. Errors only when compiling fails.
    pub fn component(
        &self,
        engine: &Engine,
        digest: &blake3::Hash,
        bytes: &[u8],
    ) -> wasmtime::Result<(Component, Origin)> {
        let compat = compat(engine);
        let path = self.file(digest, &compat);
        if let Some(component) = self.load(engine, &path, digest, &compat) {
            // Used now: the last to go when the directory is over its size.
            if let Ok(file) = std::fs::File::options().append(true).open(&path) {
                let _ = file.set_modified(std::time::SystemTime::now());
            }
            return Ok((component, Origin::Cached));
        }
        let component = Component::new(engine, bytes)?;
        self.store(&path, digest, &compat, &component);
        Ok((component, Origin::Compiled))
    }

    /// The artifact at `path`, or `None` (a miss) when there is none or it is unsound; an
    /// unsound file is logged and removed.
    fn load(
        &self,
        engine: &Engine,
        path: &Path,
        digest: &blake3::Hash,
        compat: &blake3::Hash,
    ) -> Option<Component> {
        let file = match fsutil::read_owned(path, MAX_ARTIFACT_BYTES, fsutil::WRITABLE_BY_OTHERS) {
            Ok(file) => file,
            Err(err) if err.kind() == io::ErrorKind::NotFound => return None,
            Err(err) if err.kind() == io::ErrorKind::InvalidData => {
                tracing::warn!(
                    path = %path.display(),
                    error = %err,
                    "stage artifact refused; removed, compiling"
                );
                let _ = std::fs::remove_file(path);
                return None;
            }
            Err(err) => {
                tracing::warn!(
                    path = %path.display(),
                    error = %err,
                    "stage artifact unreadable; compiling"
                );
                return None;
            }
        };
        let Some(artifact) = self.verified(&file, digest, compat) else {
            tracing::warn!(
                path = %path.display(),
                "stage artifact does not match its stage version (corrupted, copied from \
                 another stage or written without weir's artifact key); removed, compiling"
            );
            let _ = std::fs::remove_file(path);
            return None;
        };
        match deserialize(engine, artifact) {
            Ok(component) => Some(component),
            Err(err) => {
                tracing::warn!(
                    path = %path.display(),
                    error = %format!("{err:#}"),
                    "stage artifact rejected by wasmtime; removed, compiling"
                );
                let _ = std::fs::remove_file(path);
                None
            }
        }
    }

    /// The serialized component in `file` when its MAC proves it was written with this
    /// cache's key for `digest` and `compat`. (`blake3::Hash` compares in constant time.)
    fn verified<'a>(
        &self,
        file: &'a [u8],
        digest: &blake3::Hash,
        compat: &blake3::Hash,
    ) -> Option<&'a [u8]> {
        let (mac, rest) = file.split_at_checked(MAC_LEN)?;
        let mac: [u8; MAC_LEN] = mac.try_into().ok()?;
        (self.mac(digest, compat, rest) == blake3::Hash::from(mac)).then_some(rest)
    }

    /// Writes the artifact of `component` (compiled from the wasm whose blake3 is `digest`)
    /// to `path`. A failure is logged, never an error: the component is in memory already and
    /// the next start compiles again.
    fn store(
        &self,
        path: &Path,
        digest: &blake3::Hash,
        compat: &blake3::Hash,
        component: &Component,
    ) {
        let written = component
            .serialize()
            .map_err(|err| format!("{err:#}"))
            .and_then(|rest| {
                let size = (MAC_LEN + rest.len()) as u64;
                if size > MAX_ARTIFACT_BYTES {
                    return Err(format!(
                        "{size} bytes, more than the {MAX_ARTIFACT_BYTES} an artifact may have"
                    ));
                }
                let mut file = Vec::with_capacity(MAC_LEN + rest.len());
                file.extend_from_slice(self.mac(digest, compat, &rest).as_bytes());
                file.extend_from_slice(&rest);
                fsutil::write_atomically(path, &file).map_err(|err| err.to_string())
            });
        if let Err(error) = written {
            tracing::warn!(path = %path.display(), %error, "stage artifact not written");
            return;
        }
        self.trim(path);
    }

    /// Removes the artifacts used least recently until the directory holds at most
    /// `max_bytes` of them, never `keep` (the one just written). Only regular `.cwasm` files
    /// are counted and removed.
    fn trim(&self, keep: &Path) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        let mut files: Vec<(std::time::SystemTime, u64, PathBuf)> = entries
            .flatten()
            .filter(|entry| entry.path().extension().is_some_and(|ext| ext == "cwasm"))
            .filter_map(|entry| {
                // `DirEntry::metadata` does not follow a symbolic link.
                let meta = entry.metadata().ok().filter(|m| m.is_file())?;
                Some((meta.modified().ok()?, meta.len(), entry.path()))
            })
            .collect();
        let mut total: u64 = files.iter().map(|(_, len, _)| len).sum();
        files.sort();
        for (_, len, path) in files {
            if total <= self.max_bytes {
                break;
            }
            if path == keep {
                continue;
            }
            if std::fs::remove_file(&path).is_ok() {
                total = total.saturating_sub(len);
                tracing::info!(path = %path.display(), bytes = len, "stage artifact evicted (artifact_cache_max_mib)");
            }
        }
    }
}

/// The blake3 of [`FORMAT`] and `engine`'s compatibility hash: names the engine
/// configuration in file names and in the MAC.
fn compat(engine: &Engine) -> blake3::Hash {
    let mut hasher = Blake3Hasher(blake3::Hasher::new());
    hasher.write(FORMAT);
    engine.precompile_compatibility_hash().hash(&mut hasher);
    hasher.0.finalize()
}

/// Deserializes an artifact whose MAC [`ArtifactCache::verified`] accepted.
#[allow(unsafe_code)]
fn deserialize(engine: &Engine, artifact: &[u8]) -> wasmtime::Result<Component> {
    // SAFETY: `Component::deserialize` is unsafe because it trusts the bytes to be machine
    // code that wasmtime itself produced; it cannot validate them. These bytes are sound
    // because of one invariant, checked just before this call: their keyed MAC verified.
    // - The MAC is keyed with the artifact key, which lives outside the data directory in a
    //   0600 file of weir's user (or only in this process's memory), so only a weir process
    //   holding the key can produce it, and weir produces it only in `store`, over the output
    //   of `Component::serialize`. Whoever can merely write the artifact directory cannot
    //   forge a file that passes.
    // - The MAC covers the blake3 of the wasm the caller is loading and the engine's
    //   compatibility hash, so an artifact that weir wrote for another stage, another version
    //   of it or another engine configuration does not pass under this name either.
    // - The MAC was checked over this very buffer (the file was read once into memory: not a
    //   link, a regular file of weir's user, size capped), so nothing changes between the
    //   check and this call.
    // - wasmtime still checks the header (its version and engine configuration) and rejects
    //   an artifact from another version or configuration with an error, which is a miss.
    // The bytes are copied into wasmtime's own mapping, so the buffer is not borrowed beyond
    // this call.
    unsafe { Component::deserialize(engine, artifact) }
}

/// A [`Hasher`] over blake3, so the compatibility hash (a [`Hash`] value) names the same file
/// in every process of the same build, unlike `DefaultHasher` whose keys are unspecified.
struct Blake3Hasher(blake3::Hasher);

impl Hasher for Blake3Hasher {
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    fn finish(&self) -> u64 {
        let hash = self.0.finalize();
        let mut first = [0u8; 8];
        first.copy_from_slice(&hash.as_bytes()[..8]);
        u64::from_le_bytes(first)
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::fsutil::testing::mode;

    /// An engine configured like the sandbox's (component model, fuel, epochs).
    fn engine(fuel: bool) -> Engine {
        let mut config = wasmtime::Config::new();
        config
            .wasm_component_model(true)
            .consume_fuel(fuel)
            .epoch_interruption(true);
        Engine::new(&config).unwrap()
    }

    /// A fresh, empty cache directory with a fresh key.
    fn temp_cache() -> ArtifactCache {
        let dir = std::env::temp_dir().join(format!("weir-artifacts-{}", rand::random::<u64>()));
        ArtifactCache::open(&dir, ArtifactKey::ephemeral()).unwrap()
    }

    fn read_guest(path: &str) -> (Vec<u8>, blake3::Hash) {
        let bytes = std::fs::read(path).unwrap();
        let digest = blake3::hash(&bytes);
        (bytes, digest)
    }

    fn passthrough() -> (Vec<u8>, blake3::Hash) {
        read_guest(weir_test_artifacts::PASSTHROUGH)
    }

    /// The serialized component in an artifact file this cache wrote for `bytes`.
    fn verified(cache: &ArtifactCache, engine: &Engine, bytes: &[u8], file: &[u8]) -> Vec<u8> {
        cache
            .verified(file, &blake3::hash(bytes), &compat(engine))
            .expect("the MAC holds")
            .to_vec()
    }

    /// Export names of a component's type: what the linker checks the world against.
    fn exports(engine: &Engine, component: &Component) -> Vec<String> {
        let mut names: Vec<String> = component
            .component_type()
            .exports(engine)
            .map(|(name, _)| name.to_string())
            .collect();
        names.sort();
        names
    }

    /// Runs `f` with warnings captured; returns its result and the captured log text.
    fn capture_warnings<T>(f: impl FnOnce() -> T) -> (T, String) {
        #[derive(Clone, Default)]
        struct Buf(Arc<Mutex<Vec<u8>>>);
        impl io::Write for Buf {
            fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(bytes);
                Ok(bytes.len())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let buf = Buf::default();
        let writer = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::WARN)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        let out = tracing::subscriber::with_default(subscriber, f);
        let text = String::from_utf8_lossy(&buf.0.lock().unwrap()).into_owned();
        (out, text)
    }

    #[test]
    fn a_miss_compiles_and_writes_the_artifact_and_the_next_call_loads_it() {
        let engine = engine(true);
        let cache = temp_cache();
        assert_eq!(mode(cache.dir()), 0o700);
        let (bytes, digest) = passthrough();
        let path = cache.path(&engine, &digest);
        assert!(!path.exists());

        let (compiled, origin) = cache.component(&engine, &digest, &bytes).unwrap();
        assert_eq!(origin, Origin::Compiled);
        let name = path.file_name().unwrap().to_str().unwrap();
        assert!(name.starts_with(&format!("{}-", digest.to_hex())), "{name}");
        assert!(name.ends_with(".cwasm"), "{name}");
        assert_eq!(mode(&path), 0o600);
        let file = std::fs::read(&path).unwrap();
        assert_eq!(
            verified(&cache, &engine, &bytes, &file),
            compiled.serialize().unwrap()
        );
        let entries = std::fs::read_dir(cache.dir()).unwrap().count();
        assert_eq!(entries, 1, "no temporary file is left behind");

        let (cached, origin) = cache.component(&engine, &digest, &bytes).unwrap();
        assert_eq!(origin, Origin::Cached);
        assert_eq!(cached.serialize().unwrap(), compiled.serialize().unwrap());
        assert_eq!(exports(&engine, &cached), exports(&engine, &compiled));
        assert!(!exports(&engine, &cached).is_empty());
        let _ = std::fs::remove_dir_all(cache.dir());
    }

    #[test]
    fn past_its_size_the_least_recently_used_artifacts_go_never_the_new_one() {
        let engine = engine(true);
        let [pass, system, guard, pii] = [
            weir_test_artifacts::PASSTHROUGH,
            weir_test_artifacts::SYSTEM_PROMPT,
            weir_test_artifacts::PROMPT_GUARD,
            weir_test_artifacts::PII_REDACT,
        ]
        .map(read_guest);
        // The artifacts' sizes, from a scratch cache.
        let scratch = temp_cache();
        let size = |(bytes, digest): &(Vec<u8>, blake3::Hash)| {
            scratch.component(&engine, digest, bytes).unwrap();
            std::fs::metadata(scratch.path(&engine, digest))
                .unwrap()
                .len()
        };
        let room = size(&system) + size(&guard) + size(&pii);
        let _ = std::fs::remove_dir_all(scratch.dir());

        // Room for three of the four, once passthrough (used longest ago) is gone.
        let cache = temp_cache().with_max_bytes(room);
        let path = |(_, digest): &(Vec<u8>, blake3::Hash)| cache.path(&engine, digest);
        for guest in [&pass, &system, &guard] {
            let (_, origin) = cache.component(&engine, &guest.1, &guest.0).unwrap();
            assert_eq!(origin, Origin::Compiled);
        }
        let age = |guest: &(Vec<u8>, blake3::Hash), secs: u64| {
            let file = std::fs::File::options()
                .append(true)
                .open(path(guest))
                .unwrap();
            let at = std::time::SystemTime::now() - std::time::Duration::from_secs(secs);
            file.set_modified(at).unwrap();
        };
        // Written in the order guard, pass, system; loading pass again marks it used, so
        // system is now the one used longest ago.
        age(&guard, 300);
        age(&pass, 200);
        age(&system, 100);
        let (_, origin) = cache.component(&engine, &pass.1, &pass.0).unwrap();
        assert_eq!(origin, Origin::Cached);

        // A fourth: the least recently used go (guard first) until the rest fits; the new
        // one stays.
        let (_, origin) = cache.component(&engine, &pii.1, &pii.0).unwrap();
        assert_eq!(origin, Origin::Compiled);
        assert!(path(&pii).is_file(), "the new one stays");
        assert!(!path(&guard).exists(), "the least recently used went");
        let kept: u64 = [&pass, &system, &pii]
            .iter()
            .filter(|g| path(g).exists())
            .map(|g| size_of(&path(g)))
            .sum();
        assert!(kept <= cache.max_bytes, "{kept} > {}", cache.max_bytes);
        assert!(path(&pass).exists(), "the one loaded just now stays");
        let _ = std::fs::remove_dir_all(cache.dir());
    }

    fn size_of(path: &Path) -> u64 {
        std::fs::metadata(path).map_or(0, |m| m.len())
    }

    #[test]
    fn the_name_depends_on_the_engine_configuration_but_not_on_the_engine_instance() {
        let cache = temp_cache();
        let (_, digest) = passthrough();
        let a = cache.path(&engine(true), &digest);
        assert_eq!(a, cache.path(&engine(true), &digest));
        assert_ne!(a, cache.path(&engine(false), &digest));
        let _ = std::fs::remove_dir_all(cache.dir());
    }

    /// A damaged artifact is a miss with a warning; the file is replaced by a sound one.
    fn recovers_from(damage: impl FnOnce(&mut Vec<u8>), expect: &str) {
        let engine = engine(true);
        let cache = temp_cache();
        let (bytes, digest) = passthrough();
        let (first, _) = cache.component(&engine, &digest, &bytes).unwrap();
        let path = cache.path(&engine, &digest);
        let mut file = std::fs::read(&path).unwrap();
        damage(&mut file);
        std::fs::write(&path, &file).unwrap();

        let (result, logs) = capture_warnings(|| cache.component(&engine, &digest, &bytes));
        let (again, origin) = result.unwrap();
        assert_eq!(origin, Origin::Compiled);
        assert!(logs.contains("WARN") && logs.contains(expect), "{logs}");
        assert_eq!(exports(&engine, &again), exports(&engine, &first));

        let file = std::fs::read(&path).unwrap();
        assert_eq!(
            verified(&cache, &engine, &bytes, &file),
            again.serialize().unwrap(),
            "the file was replaced by a sound one"
        );
        let (_, origin) = cache.component(&engine, &digest, &bytes).unwrap();
        assert_eq!(origin, Origin::Cached);
        let _ = std::fs::remove_dir_all(cache.dir());
    }

    #[test]
    fn a_flipped_byte_is_recompiled_and_replaced() {
        recovers_from(
            |file| {
                let mid = file.len() / 2;
                file[mid] ^= 0x01;
            },
            "does not match",
        );
    }

    #[test]
    fn a_truncated_file_is_recompiled_and_replaced() {
        recovers_from(|file| file.truncate(file.len() / 2), "does not match");
    }

    #[test]
    fn a_file_shorter_than_the_mac_is_recompiled_and_replaced() {
        recovers_from(|file| file.truncate(MAC_LEN - 1), "does not match");
    }

    #[test]
    fn an_unkeyed_checksummed_artifact_is_recompiled_and_replaced() {
        // The old layout, `blake3(rest) ‖ rest`: anyone can compute it, so it proves nothing.
        recovers_from(
            |file| {
                let rest = file.split_off(MAC_LEN);
                file.clear();
                file.extend_from_slice(blake3::hash(&rest).as_bytes());
                file.extend_from_slice(&rest);
            },
            "does not match",
        );
    }

    #[test]
    fn an_artifact_signed_with_another_key_is_recompiled_and_replaced() {
        let (bytes, digest) = passthrough();
        let engine = engine(true);
        let elsewhere = temp_cache();
        elsewhere.component(&engine, &digest, &bytes).unwrap();
        let foreign = std::fs::read(elsewhere.path(&engine, &digest)).unwrap();
        let _ = std::fs::remove_dir_all(elsewhere.dir());
        recovers_from(move |file| *file = foreign, "does not match");
    }

    #[test]
    fn another_stages_artifact_under_this_name_is_recompiled_and_replaced() {
        // Validly signed with this cache's key, but for another wasm digest: copying one
        // stage's file over another's name must not run the first stage's code.
        let engine = engine(true);
        let cache = temp_cache();
        let (pass_bytes, pass_digest) = passthrough();
        let (pii_bytes, pii_digest) = read_guest(weir_test_artifacts::PII_REDACT);
        cache.component(&engine, &pii_digest, &pii_bytes).unwrap();
        cache.component(&engine, &pass_digest, &pass_bytes).unwrap();
        let pii_path = cache.path(&engine, &pii_digest);
        std::fs::copy(cache.path(&engine, &pass_digest), &pii_path).unwrap();

        let (result, logs) = capture_warnings(|| cache.component(&engine, &pii_digest, &pii_bytes));
        assert_eq!(result.unwrap().1, Origin::Compiled);
        assert!(logs.contains("does not match"), "{logs}");
        // Rewritten for the right stage (that the right stage runs: stages::loaded's tests).
        let file = std::fs::read(&pii_path).unwrap();
        verified(&cache, &engine, &pii_bytes, &file);
        let _ = std::fs::remove_dir_all(cache.dir());
    }

    #[test]
    fn an_artifact_for_another_engine_configuration_is_rejected_and_replaced() {
        // An artifact with a sound MAC but built for an engine without fuel metering, placed
        // under this engine's name and signed for it: wasmtime must refuse it.
        let (bytes, digest) = passthrough();
        let other = Component::new(&engine(false), &bytes)
            .unwrap()
            .serialize()
            .unwrap();
        let engine = engine(true);
        let cache = temp_cache();
        let path = cache.path(&engine, &digest);
        let mut file = cache
            .mac(&digest, &compat(&engine), &other)
            .as_bytes()
            .to_vec();
        file.extend_from_slice(&other);
        fsutil::write_atomically(&path, &file).unwrap();

        let (result, logs) = capture_warnings(|| cache.component(&engine, &digest, &bytes));
        let (_, origin) = result.unwrap();
        assert_eq!(origin, Origin::Compiled);
        assert!(logs.contains("rejected"), "{logs}");
        let (_, origin) = cache.component(&engine, &digest, &bytes).unwrap();
        assert_eq!(origin, Origin::Cached);
        let _ = std::fs::remove_dir_all(cache.dir());
    }

    #[test]
    fn a_link_or_a_fifo_in_place_of_an_artifact_is_refused_and_replaced() {
        let engine = engine(true);
        let cache = temp_cache();
        let (bytes, digest) = passthrough();
        let path = cache.path(&engine, &digest);
        let (first, _) = cache.component(&engine, &digest, &bytes).unwrap();
        let target = cache.dir().with_extension("elsewhere");
        std::fs::rename(&path, &target).unwrap();
        std::os::unix::fs::symlink(&target, &path).unwrap();

        let (result, logs) = capture_warnings(|| cache.component(&engine, &digest, &bytes));
        assert_eq!(result.unwrap().1, Origin::Compiled);
        assert!(
            logs.contains("refused") && logs.contains("symbolic link"),
            "{logs}"
        );
        assert!(
            !std::fs::symlink_metadata(&path)
                .unwrap()
                .file_type()
                .is_symlink()
        );
        let _ = std::fs::remove_file(&target);

        std::fs::remove_file(&path).unwrap();
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &path,
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        // Opening a FIFO must not block the load (nothing ever writes to it).
        let (result, logs) = capture_warnings(|| cache.component(&engine, &digest, &bytes));
        let (again, origin) = result.unwrap();
        assert_eq!(origin, Origin::Compiled);
        assert!(logs.contains("not a regular file"), "{logs}");
        assert_eq!(exports(&engine, &again), exports(&engine, &first));
        let _ = std::fs::remove_dir_all(cache.dir());
    }

    #[test]
    fn a_directory_others_may_write_or_a_link_is_not_used() {
        let root = std::env::temp_dir().join(format!("weir-artifacts-{}", rand::random::<u64>()));
        let open = root.join("open");
        std::fs::create_dir_all(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
        let err = ArtifactCache::open(&open, ArtifactKey::ephemeral()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::PermissionDenied);
        let link = root.join("link");
        let real = root.join("real");
        std::fs::create_dir_all(&real).unwrap();
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let err = ArtifactCache::open(&link, ArtifactKey::ephemeral()).unwrap_err();
        assert!(err.to_string().contains("symbolic link"), "{err}");
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn an_unwritable_directory_does_not_fail_the_load() {
        let engine = engine(true);
        let cache = temp_cache();
        // A file where the directory was: writes fail even for root.
        std::fs::remove_dir_all(cache.dir()).unwrap();
        std::fs::write(cache.dir(), b"not a directory").unwrap();
        let (bytes, digest) = passthrough();

        let (result, logs) = capture_warnings(|| cache.component(&engine, &digest, &bytes));
        let (component, origin) = result.unwrap();
        assert_eq!(origin, Origin::Compiled);
        assert!(!exports(&engine, &component).is_empty());
        assert!(logs.contains("not written"), "{logs}");
        // A second load compiles again, still without an error.
        let (_, origin) = cache.component(&engine, &digest, &bytes).unwrap();
        assert_eq!(origin, Origin::Compiled);
        let _ = std::fs::remove_file(cache.dir());
    }

    #[test]
    fn invalid_wasm_is_an_error_and_writes_nothing() {
        let engine = engine(true);
        let cache = temp_cache();
        let bytes = b"\0asm\x0d\0\x01\0garbage".to_vec();
        let digest = blake3::hash(&bytes);
        assert!(cache.component(&engine, &digest, &bytes).is_err());
        assert_eq!(std::fs::read_dir(cache.dir()).unwrap().count(), 0);
        let _ = std::fs::remove_dir_all(cache.dir());
    }
}
