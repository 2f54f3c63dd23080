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
//! File layout: `blake3(rest)` (32 bytes) · `rest`, the bytes of `Component::serialize`.
//! Writes go to a temporary file renamed into place, so a reader sees a whole file or none;
//! the checksum catches what happens to the file afterwards (a torn disk write, a bad
//! sector, a stray edit). A missing, corrupted or rejected artifact is a miss: the component
//! is compiled and the artifact rewritten. The cache never fails a load that compiling alone
//! would not fail; a write that fails is logged and skipped.
//!
//! Nothing here evicts: one artifact per (stage version, engine configuration), a few MiB
//! each. Old ones stay until the directory is cleaned.

use std::hash::{Hash, Hasher};
use std::io;
use std::path::{Path, PathBuf};

use wasmtime::Engine;
use wasmtime::component::Component;

/// Bumped when weir changes the artifact file layout, so old files are simply not found.
const FORMAT: &[u8] = b"weir-cwasm-1";
/// Bytes of the checksum at the start of an artifact file.
const CHECKSUM_LEN: usize = 32;
/// Hex characters of the engine compatibility hash in a file name (64 bits: wasmtime checks
/// compatibility again on deserialize, so the name only has to keep configurations apart).
const COMPAT_HEX_LEN: usize = 16;

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
}

impl ArtifactCache {
    /// Opens the cache in `dir`, creating the directory.
    pub fn open(dir: &Path) -> io::Result<ArtifactCache> {
        std::fs::create_dir_all(dir)?;
        Ok(ArtifactCache {
            dir: dir.to_path_buf(),
        })
    }

    /// The cache directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The file that holds (or would hold) the artifact of `digest` for `engine`.
    pub fn path(&self, engine: &Engine, digest: &blake3::Hash) -> PathBuf {
        let mut hasher = Blake3Hasher(blake3::Hasher::new());
        hasher.write(FORMAT);
        engine.precompile_compatibility_hash().hash(&mut hasher);
        let compat = hasher.0.finalize().to_hex();
        self.dir.join(format!(
            "{}-{}.cwasm",
            digest.to_hex(),
            &compat[..COMPAT_HEX_LEN]
        ))
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
        let path = self.path(engine, digest);
        if let Some(component) = load(engine, &path) {
            return Ok((component, Origin::Cached));
        }
        let component = Component::new(engine, bytes)?;
        store(&path, &component);
        Ok((component, Origin::Compiled))
    }
}

/// The artifact at `path`, or `None` (a miss) when there is none or it is unsound; an unsound
/// file is logged and removed.
fn load(engine: &Engine, path: &Path) -> Option<Component> {
    let file = match std::fs::read(path) {
        Ok(file) => file,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return None,
        Err(err) => {
            tracing::warn!(
                path = %path.display(),
                error = %err,
                "stage artifact unreadable; compiling"
            );
            return None;
        }
    };
    let Some(artifact) = checked(&file) else {
        tracing::warn!(
            path = %path.display(),
            "stage artifact corrupted (checksum); removed, compiling"
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

/// The serialized component in `file` when its checksum holds.
fn checked(file: &[u8]) -> Option<&[u8]> {
    if file.len() < CHECKSUM_LEN {
        return None;
    }
    let (sum, rest) = file.split_at(CHECKSUM_LEN);
    (blake3::hash(rest).as_bytes() == sum).then_some(rest)
}

/// Deserializes an artifact that [`checked`] accepted.
#[allow(unsafe_code)]
fn deserialize(engine: &Engine, artifact: &[u8]) -> wasmtime::Result<Component> {
    // SAFETY: `Component::deserialize` is unsafe because it trusts the bytes to be machine
    // code that wasmtime itself produced; it cannot validate them. These bytes are sound:
    // - they come from weir's own artifact directory (under the operator's data dir, the same
    //   trust as the weir binary and its config), where only `store` below writes, with
    //   `Component::serialize` output for an engine whose compatibility hash is in the name;
    // - their blake3 checksum was verified just now, so a truncated, torn or corrupted file
    //   is never handed over (files are also written by temp file + rename, so a reader never
    //   sees a partial one);
    // - wasmtime still checks the header (its version and engine configuration) and rejects
    //   an artifact from another version or configuration with an error, which is a miss.
    // The bytes are copied into wasmtime's own mapping, so the buffer is not borrowed beyond
    // this call.
    unsafe { Component::deserialize(engine, artifact) }
}

/// Writes the artifact of `component` to `path`. A failure is logged, never an error: the
/// component is in memory already and the next start compiles again.
fn store(path: &Path, component: &Component) {
    let written = component
        .serialize()
        .map_err(|err| format!("{err:#}"))
        .and_then(|rest| {
            let mut file = Vec::with_capacity(CHECKSUM_LEN + rest.len());
            file.extend_from_slice(blake3::hash(&rest).as_bytes());
            file.extend_from_slice(&rest);
            crate::fsutil::write_atomically(path, &file).map_err(|err| err.to_string())
        });
    if let Err(error) = written {
        tracing::warn!(path = %path.display(), %error, "stage artifact not written");
    }
}

/// Writes `bytes` to a temporary file next to `path` and renames it into place, so a reader
/// sees the old file, the new one or none, never a partial one. (The cache's disk tier has the
/// same helper; the sandbox does not depend on the cache module for it.)
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
    use std::sync::{Arc, Mutex};

    use super::*;

    /// An engine configured like the sandbox's (component model, fuel, epochs).
    fn engine(fuel: bool) -> Engine {
        let mut config = wasmtime::Config::new();
        config
            .wasm_component_model(true)
            .consume_fuel(fuel)
            .epoch_interruption(true);
        Engine::new(&config).unwrap()
    }

    /// A fresh, empty cache directory.
    fn temp_cache() -> ArtifactCache {
        let dir = std::env::temp_dir().join(format!("weir-artifacts-{}", rand::random::<u64>()));
        ArtifactCache::open(&dir).unwrap()
    }

    fn passthrough() -> (Vec<u8>, blake3::Hash) {
        let bytes = std::fs::read(weir_test_artifacts::PASSTHROUGH).unwrap();
        let digest = blake3::hash(&bytes);
        (bytes, digest)
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
        let (bytes, digest) = passthrough();
        let path = cache.path(&engine, &digest);
        assert!(!path.exists());

        let (compiled, origin) = cache.component(&engine, &digest, &bytes).unwrap();
        assert_eq!(origin, Origin::Compiled);
        let name = path.file_name().unwrap().to_str().unwrap();
        assert!(name.starts_with(&format!("{}-", digest.to_hex())), "{name}");
        assert!(name.ends_with(".cwasm"), "{name}");
        let file = std::fs::read(&path).unwrap();
        assert_eq!(checked(&file), Some(&compiled.serialize().unwrap()[..]));
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
        assert!(
            checked(&file).is_some(),
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
            "corrupted",
        );
    }

    #[test]
    fn a_truncated_file_is_recompiled_and_replaced() {
        recovers_from(|file| file.truncate(file.len() / 2), "corrupted");
    }

    #[test]
    fn a_file_shorter_than_the_checksum_is_recompiled_and_replaced() {
        recovers_from(|file| file.truncate(CHECKSUM_LEN - 1), "corrupted");
    }

    #[test]
    fn an_artifact_for_another_engine_configuration_is_rejected_and_replaced() {
        // An artifact with a sound checksum but built for an engine without fuel metering,
        // placed under this engine's name: wasmtime must refuse it.
        let (bytes, _) = passthrough();
        let other = Component::new(&engine(false), &bytes)
            .unwrap()
            .serialize()
            .unwrap();
        recovers_from(
            move |file| {
                file.clear();
                file.extend_from_slice(blake3::hash(&other).as_bytes());
                file.extend_from_slice(&other);
            },
            "rejected",
        );
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
