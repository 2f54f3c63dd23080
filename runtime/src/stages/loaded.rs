//! Loading one stage file: read, recognise, compile (or load its precompiled artifact), check
//! against the world, describe.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use wasmtime::component::Component;

use crate::config::CallLimits;
use crate::host_api::{CallScope, HostContext, HostServices, StageIdentity};
use crate::sandbox::{DeclaredKeys, Origin, Sandbox, StageState};
use crate::wit::{Phases, StageBindingsPre, StageInfo, v2};

use super::StageFailure;

/// The first eight bytes of a core wasm module.
const CORE_MODULE_HEADER: [u8; 8] = *b"\0asm\x01\0\0\0";
/// Longest stage name `describe` may return.
const MAX_NAME_LEN: usize = 64;
/// Longest stage version `describe` may return, in bytes.
const MAX_VERSION_LEN: usize = 128;

/// Why a stage file could not be loaded. Each message names the file and the problem.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file could not be read.
    #[error("{}: cannot read: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The bytes are not WebAssembly at all.
    #[error("{}: not a WebAssembly file (no `\\0asm` header)", path.display())]
    NotWasm {
        /// The file.
        path: PathBuf,
    },
    /// A core module where a component is needed.
    #[error(
        "{}: a core WebAssembly module, not a component; build stages with \
         `cargo build --release --target wasm32-wasip2`",
        path.display()
    )]
    CoreModule {
        /// The file.
        path: PathBuf,
    },
    /// The component does not compile.
    #[error("{}: not a valid component: {reason}", path.display())]
    Compile {
        /// The file.
        path: PathBuf,
        /// wasmtime's reason.
        reason: String,
    },
    /// The component does not target the `weir:stage` world (a missing export or an import
    /// the host does not grant).
    #[error(
        "{}: not a weir stage (world weir:stage/stage@0.2.0 or @0.1.0): {reason}",
        path.display()
    )]
    World {
        /// The file.
        path: PathBuf,
        /// What does not match.
        reason: String,
    },
    /// An `oci://` stage's artifact could not be fetched (the message names the reference).
    #[error(transparent)]
    Fetch(Box<crate::oci::OciError>),
    /// `describe` trapped, failed or returned something unusable.
    #[error("{}: describe() failed: {reason}", path.display())]
    Describe {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

impl From<crate::oci::OciError> for LoadError {
    fn from(err: crate::oci::OciError) -> LoadError {
        LoadError::Fetch(Box::new(err))
    }
}

/// Which version of the stage contract a component exports, and so how the host drives it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Contract {
    /// `weir:stage@0.1.0`: the phases are world exports, and a stage with both phases keeps
    /// one instance from its `on-request` to its `on-response`.
    V1,
    /// `weir:stage/handler@0.2.0`: `on-request` hands its state over as bytes, so no instance
    /// is held between the phases; a streamed answer may go through `on-response-chunk`.
    V2 {
        /// It implements `on-response` (whole answers; a stream buffered unless `chunks`).
        whole: bool,
        /// It implements `on-response-chunk`.
        chunks: bool,
    },
}

impl Contract {
    /// `0.1` or `0.2`.
    pub fn version(self) -> &'static str {
        match self {
            Contract::V1 => "0.1",
            Contract::V2 { .. } => "0.2",
        }
    }
}

/// A stage version's pre-instantiated component, by contract.
pub(crate) enum StagePre {
    /// A 0.1 component.
    V1(StageBindingsPre<StageState>),
    /// A 0.2 component.
    V2(v2::StagePre<StageState>),
}

impl StagePre {
    /// The engine it was compiled for.
    pub(crate) fn engine(&self) -> &wasmtime::Engine {
        match self {
            StagePre::V1(pre) => pre.engine(),
            StagePre::V2(pre) => pre.engine(),
        }
    }
}

/// One compiled, checked and described stage version.
pub struct LoadedStage {
    /// The file it was loaded from.
    pub path: PathBuf,
    /// blake3 of the component bytes: the stage version.
    pub digest: blake3::Hash,
    /// What `describe` returned at load.
    pub info: StageInfo,
    /// Whether the component was compiled or deserialized from the sandbox's artifact cache.
    pub origin: Origin,
    /// Time spent compiling or deserializing the component (not reading, checking the world
    /// or describing).
    pub load_time: Duration,
    /// The keys its config table may have, when `describe` declared them (`config-keys`).
    pub config_keys: Option<BTreeSet<String>>,
    /// The contract version it exports. `info` is in 0.1's terms for both: a 0.2 stage's
    /// `response` phase means either response hook, and `needs_full_response` that it has
    /// `on-response` but no chunk hook.
    pub contract: Contract,
    /// The OCI artifact it came from, for an `oci://` stage.
    pub artifact: Option<crate::oci::Artifact>,
    /// The pre-instantiated component with its exports looked up, built once per version.
    pub(crate) pre: StagePre,
}

impl std::fmt::Debug for LoadedStage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedStage")
            .field("path", &self.path)
            .field("digest", &self.digest.to_hex().as_str())
            .field("info", &self.info)
            .field("origin", &self.origin)
            .field("contract", &self.contract)
            .field("load_time", &self.load_time)
            .finish()
    }
}

impl LoadedStage {
    /// Reads and loads the stage at `path`.
    pub async fn load(
        sandbox: &Sandbox,
        services: &Arc<HostServices>,
        path: &Path,
    ) -> Result<LoadedStage, LoadError> {
        let bytes = Self::read(path).await?;
        Self::from_bytes(sandbox, services, path, bytes).await
    }

    /// The bytes of the stage file at `path`: a regular file (a link to one is followed) of
    /// at most [`MAX_STAGE_FILE_BYTES`](crate::fsutil::MAX_STAGE_FILE_BYTES), read off the
    /// async threads. A link to `/dev/zero` filled memory until the kernel killed weir, and
    /// one to a FIFO stopped every reload after it (third probe, B1, B2).
    pub async fn read(path: &Path) -> Result<Vec<u8>, LoadError> {
        let owned = path.to_path_buf();
        let read = tokio::task::spawn_blocking(move || {
            crate::fsutil::read_regular(&owned, crate::fsutil::MAX_STAGE_FILE_BYTES)
        })
        .await
        .unwrap_or_else(|join| Err(std::io::Error::other(join.to_string())));
        read.map_err(|source| LoadError::Read {
            path: path.to_path_buf(),
            source,
        })
    }

    /// Loads a stage from `bytes` (`path` names it in errors): recognise the format, compile
    /// (off the async threads; from the sandbox's artifact cache when it has one), check the
    /// world, then instantiate once and call `describe`.
    pub async fn from_bytes(
        sandbox: &Sandbox,
        services: &Arc<HostServices>,
        path: &Path,
        bytes: Vec<u8>,
    ) -> Result<LoadedStage, LoadError> {
        let path = path.to_path_buf();
        if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
            return Err(LoadError::NotWasm { path });
        }
        if bytes[..8] == CORE_MODULE_HEADER {
            return Err(LoadError::CoreModule { path });
        }
        let digest = blake3::hash(&bytes);

        let lane = sandbox
            .lane_for(bytes.len())
            .map_err(|err| LoadError::Compile {
                path: path.clone(),
                reason: format!("{err:#}"),
            })?
            .clone();
        let engine = lane.engine().clone();
        let images = lane.has_images();
        let artifacts = sandbox.artifacts().cloned();
        let compiled = tokio::task::spawn_blocking(move || {
            let started = Instant::now();
            let component = match &artifacts {
                Some(artifacts) => artifacts.component(&engine, &digest, &bytes),
                None => Component::new(&engine, &bytes).map(|c| (c, Origin::Compiled)),
            };
            component.and_then(|(component, origin)| {
                // Build the memory images now, not on the first request.
                if images {
                    component.initialize_copy_on_write_image()?;
                }
                Ok((component, origin, started.elapsed()))
            })
        })
        .await;
        let (component, origin, load_time) = match compiled {
            Ok(Ok(loaded)) => loaded,
            Ok(Err(err)) => {
                return Err(LoadError::Compile {
                    path,
                    reason: format!("{err:#}"),
                });
            }
            Err(join) => {
                return Err(LoadError::Compile {
                    path,
                    reason: format!("compiler task failed: {join}"),
                });
            }
        };

        let pre = lane
            .linker()
            .instantiate_pre(&component)
            .map_err(|err| LoadError::World {
                path: path.clone(),
                reason: format!("{err:#}"),
            })?;
        // A 0.2 handler export wins; otherwise the 0.1 world's exports, whose error names what
        // is missing when neither matches.
        let (pre, contract) = match v2::StagePre::new(pre.clone()) {
            Ok(pre) => (
                StagePre::V2(pre),
                Contract::V2 {
                    whole: false,
                    chunks: false,
                },
            ),
            Err(_) => match StageBindingsPre::new(pre) {
                Ok(pre) => (StagePre::V1(pre), Contract::V1),
                Err(err) => {
                    return Err(LoadError::World {
                        path: path.clone(),
                        reason: format!("{err:#}"),
                    });
                }
            },
        };

        let mut stage = LoadedStage {
            path,
            digest,
            info: StageInfo {
                name: String::new(),
                version: String::new(),
                phases: Phases::empty(),
                deterministic: false,
                needs_full_response: false,
            },
            origin,
            load_time,
            config_keys: None,
            contract,
            artifact: None,
            pre,
        };
        (stage.info, stage.contract, stage.config_keys) = stage.describe(sandbox, services).await?;
        Ok(stage)
    }

    /// `name@<first 8 hex of the digest>`.
    pub fn label(&self, name: &str) -> String {
        format!("{name}@{}", &self.digest.to_hex()[..8])
    }

    async fn describe(
        &self,
        sandbox: &Sandbox,
        services: &Arc<HostServices>,
    ) -> Result<(StageInfo, Contract, Option<BTreeSet<String>>), LoadError> {
        let describe_err = |reason: String| LoadError::Describe {
            path: self.path.clone(),
            reason,
        };
        let file_name = self
            .path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "stage".to_string());
        let label: Arc<str> = self.label(&file_name).into();
        let host = HostContext {
            stage: Arc::new(StageIdentity {
                name: label.clone(),
                label,
                config: BTreeMap::new(),
                max_llm_calls: 0,
                services: Arc::default(),
            }),
            services: services.clone(),
            request_id: "describe".into(),
            route: "".into(),
            // Not a request: an LLM call is refused, never made.
            scope: CallScope::Describe,
        };
        let limits = CallLimits {
            memory_bytes: sandbox.settings().max_memory_bytes,
            ..sandbox.settings().defaults
        };
        let mut instance = self
            .instantiate(sandbox, host, &limits)
            .await
            .map_err(|f: StageFailure| describe_err(format!("{}: {}", f.kind, f.detail)))?;
        let (info, contract) = instance
            .describe()
            .await
            .map_err(|f| describe_err(format!("{}: {}", f.kind, f.detail)))?;
        let config_keys = match instance.take_config_keys() {
            None => None,
            Some(DeclaredKeys::Keys(keys)) => Some(keys),
            Some(DeclaredKeys::Invalid(reason)) => return Err(describe_err(reason)),
        };
        if info.name.is_empty() || info.name.len() > MAX_NAME_LEN {
            return Err(describe_err(format!(
                "the stage name must be 1..={MAX_NAME_LEN} characters, got {:?}",
                info.name
            )));
        }
        // The name and version reach logs, `/admin/stages` and the operator's terminal
        // (`weir check`): no control characters (ANSI/OSC escapes), bounded length.
        if info.name.chars().any(char::is_control) {
            return Err(describe_err(format!(
                "the stage name must not contain control characters, got {:?}",
                info.name
            )));
        }
        if info.version.len() > MAX_VERSION_LEN || info.version.chars().any(char::is_control) {
            return Err(describe_err(format!(
                "the stage version must be at most {MAX_VERSION_LEN} bytes with no control \
                 characters, got {:?}",
                crate::host_api::truncate_for_log(&info.version, MAX_VERSION_LEN)
            )));
        }
        if info.phases == Phases::empty() {
            return Err(describe_err(
                "the stage implements no phase (set on-request and/or on-response)".to_string(),
            ));
        }
        Ok((info, contract, config_keys))
    }
}

/// One human line describing a loaded stage (what `weir check` prints).
pub fn describe_line(stage: &LoadedStage) -> String {
    let info = &stage.info;
    let mut phases = Vec::new();
    if info.phases.contains(Phases::REQUEST) {
        phases.push("on-request");
    }
    match stage.contract {
        Contract::V1 if info.phases.contains(Phases::RESPONSE) => phases.push("on-response"),
        Contract::V1 => {}
        Contract::V2 { whole, chunks } => {
            if whole {
                phases.push("on-response");
            }
            if chunks {
                phases.push("on-response-chunk");
            }
        }
    }
    format!(
        "{}: ok: stage {} {} (blake3 {}, weir:stage@{}), phases {}, deterministic {}, \
         needs-full-response {}",
        stage.path.display(),
        info.name,
        info.version,
        &stage.digest.to_hex()[..16],
        stage.contract.version(),
        phases.join("+"),
        info.deterministic,
        info.needs_full_response
    )
}

#[cfg(test)]
mod tests {
    use crate::config::SandboxSettings;
    use crate::host_api::NoLlm;
    use crate::sandbox::ArtifactKey;
    use wasmtime::Engine;

    use super::*;

    #[tokio::test]
    async fn a_stage_at_the_size_threshold_runs_in_the_lane_with_memory_images() {
        let services = Arc::new(HostServices::new(Arc::new(NoLlm), 4096));
        let path = Path::new(weir_test_artifacts::PII_REDACT);
        let len = std::fs::metadata(path).unwrap().len();
        assert!(len < 1 << 20, "pii-redact is a small stage ({len} bytes)");
        let sandbox = |large_stage_mib| {
            Sandbox::new(SandboxSettings {
                pool_size: 4,
                large_stage_mib,
                ..SandboxSettings::default()
            })
            .unwrap()
        };

        let small = sandbox(1);
        let stage = LoadedStage::load(&small, &services, path).await.unwrap();
        assert!(Engine::same(stage.pre.engine(), small.engine()));
        assert!(!small.lane_for(len as usize).unwrap().is_large());

        // 0: every stage is large. It loads (from its artifact too), describes and is
        // instantiated on the large lane's engine, whose pool is counted.
        let dir = std::env::temp_dir().join(format!("weir-lanes-{}", rand::random::<u64>()));
        let large = sandbox(0);
        large
            .set_artifact_dir(&dir, ArtifactKey::ephemeral())
            .unwrap();
        let lane = large.lane_for(len as usize).unwrap().clone();
        assert!(lane.is_large() && lane.has_images());
        assert!(!Engine::same(lane.engine(), large.engine()));
        for origin in [Origin::Compiled, Origin::Cached] {
            let stage = LoadedStage::load(&large, &services, path).await.unwrap();
            assert_eq!(stage.origin, origin);
            assert_eq!(stage.info.name, "pii-redact");
            assert!(Engine::same(stage.pre.engine(), lane.engine()));
        }
        assert_eq!(
            large.live_instances(),
            0,
            "describe's instance was returned"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn artifacts_a_second_load_of_the_same_stage_is_deserialized_and_describes_the_same() {
        let dir = std::env::temp_dir().join(format!("weir-loaded-{}", rand::random::<u64>()));
        let settings = SandboxSettings {
            pool_size: 4,
            ..SandboxSettings::default()
        };
        let services = Arc::new(HostServices::new(Arc::new(NoLlm), 4096));
        let path = Path::new(weir_test_artifacts::PII_REDACT);

        let plain = Sandbox::new(settings.clone()).unwrap();
        let uncached = LoadedStage::load(&plain, &services, path).await.unwrap();
        assert_eq!(uncached.origin, Origin::Compiled);
        assert!(plain.artifacts().is_none());

        let key = ArtifactKey::ephemeral();
        let first = Sandbox::new(settings.clone()).unwrap();
        first.set_artifact_dir(&dir, key.clone()).unwrap();
        first.set_artifact_dir(&dir, key.clone()).unwrap();
        let other = first
            .set_artifact_dir(&dir.join("elsewhere"), key.clone())
            .unwrap_err();
        assert_eq!(other.kind(), std::io::ErrorKind::AlreadyExists);
        let compiled = LoadedStage::load(&first, &services, path).await.unwrap();
        assert_eq!(compiled.origin, Origin::Compiled);
        drop(first);

        // A restart: a new engine with the same configuration finds the artifact.
        let second = Sandbox::new(settings).unwrap();
        second.set_artifact_dir(&dir, key).unwrap();
        let cached = LoadedStage::load(&second, &services, path).await.unwrap();
        assert_eq!(cached.origin, Origin::Cached);
        assert_eq!(cached.digest, compiled.digest);
        // `describe` ran on the deserialized component: it instantiates and behaves the same.
        assert_eq!(format!("{:?}", cached.info), format!("{:?}", uncached.info));
        assert_eq!(cached.info.name, "pii-redact");
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Another stage's artifact under pii-redact's name, in the old unkeyed layout
    /// (`blake3(rest) ‖ rest`) or validly signed by this cache for its own digest.
    async fn swapped_artifact_is_recompiled(forge: impl FnOnce(&Path, &Path)) {
        let dir = std::env::temp_dir().join(format!("weir-swapped-{}", rand::random::<u64>()));
        let settings = SandboxSettings {
            pool_size: 4,
            ..SandboxSettings::default()
        };
        let services = Arc::new(HostServices::new(Arc::new(NoLlm), 4096));
        let sandbox = Sandbox::new(settings).unwrap();
        sandbox
            .set_artifact_dir(&dir, ArtifactKey::ephemeral())
            .unwrap();
        let cache = sandbox.artifacts().unwrap();
        let pass = Path::new(weir_test_artifacts::PASSTHROUGH);
        let passthrough = LoadedStage::load(&sandbox, &services, pass).await.unwrap();
        let pii_bytes = std::fs::read(weir_test_artifacts::PII_REDACT).unwrap();
        let pii_path = cache.path(sandbox.engine(), &blake3::hash(&pii_bytes));
        let pass_path = cache.path(sandbox.engine(), &passthrough.digest);
        assert!(pass_path.is_file() && !pii_path.exists());
        forge(&pass_path, &pii_path);

        let path = Path::new(weir_test_artifacts::PII_REDACT);
        let loaded = LoadedStage::load(&sandbox, &services, path).await.unwrap();
        assert_eq!(loaded.origin, Origin::Compiled);
        assert_eq!(loaded.info.name, "pii-redact");
        assert_ne!(loaded.info.name, passthrough.info.name);
        // The rewritten artifact is pii-redact's own: the next load takes it.
        let again = LoadedStage::load(&sandbox, &services, path).await.unwrap();
        assert_eq!(again.origin, Origin::Cached);
        assert_eq!(again.info.name, "pii-redact");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn artifacts_an_unkeyed_artifact_of_another_stage_is_recompiled() {
        swapped_artifact_is_recompiled(|pass_path, pii_path| {
            // The serialized passthrough component, after its 32-byte MAC.
            let rest = std::fs::read(pass_path).unwrap().split_off(32);
            let mut file = blake3::hash(&rest).as_bytes().to_vec();
            file.extend_from_slice(&rest);
            std::fs::write(pii_path, file).unwrap();
        })
        .await;
    }

    #[tokio::test]
    async fn artifacts_a_signed_artifact_of_another_stage_is_recompiled() {
        swapped_artifact_is_recompiled(|pass_path, pii_path| {
            std::fs::copy(pass_path, pii_path).unwrap();
        })
        .await;
    }
}
