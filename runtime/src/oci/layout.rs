//! The Wasm OCI artifact layout the ecosystem shares (the CNCF TAG Runtime "wasm-oci" spec
//! that `wkg oci push`, `oci-wasm` and wasmCloud use): an image manifest with one config of
//! type `application/vnd.wasm.config.v0+json` and one layer of type `application/wasm` holding
//! the component. What `weir push` writes and what a pull accepts.

use std::collections::BTreeMap;

use oci_client::manifest::{OciDescriptor, OciImageManifest};
use serde::Serialize;

/// The manifest's media type.
pub const MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
/// The config's media type.
pub const CONFIG_MEDIA_TYPE: &str = "application/vnd.wasm.config.v0+json";
/// The layer's media type, as `weir push` and `wkg` write it.
pub const LAYER_MEDIA_TYPE: &str = "application/wasm";

/// Layer media types a pull accepts: `wkg`'s and the spec's, Spin's, and wasmCloud's.
pub const WASM_LAYER_TYPES: [&str; 3] = [
    LAYER_MEDIA_TYPE,
    "application/vnd.wasm.content.layer.v1+wasm",
    "application/vnd.module.wasm.content.layer.v1+wasm",
];

/// The manifest types a pull asks for. An image index (several platforms) is not a stage.
pub const ACCEPTED_MANIFESTS: [&str; 2] = [
    MANIFEST_MEDIA_TYPE,
    "application/vnd.docker.distribution.manifest.v2+json",
];

/// Longest manifest a pull accepts. A wasm artifact's is under 1 KiB.
pub const MAX_MANIFEST_BYTES: usize = 256 << 10;

/// The one wasm layer of the manifest `bytes`. Refused: anything but an image manifest with
/// exactly one layer, of a wasm media type, with a sha256 digest and a size.
pub fn wasm_layer(bytes: &[u8]) -> Result<OciDescriptor, String> {
    if bytes.len() > MAX_MANIFEST_BYTES {
        return Err(format!(
            "the manifest is {} bytes, above the {MAX_MANIFEST_BYTES} a wasm artifact needs",
            bytes.len()
        ));
    }
    let value: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|err| format!("the manifest is not JSON: {err}"))?;
    if value.get("manifests").is_some() {
        return Err(
            "the reference names an image index (one manifest per platform), not a wasm \
             artifact; pin the digest of the wasm artifact's own manifest"
                .to_owned(),
        );
    }
    let manifest: OciImageManifest =
        serde_json::from_value(value).map_err(|err| format!("not an OCI image manifest: {err}"))?;
    if manifest.schema_version != 2 {
        return Err(format!(
            "expected manifest schemaVersion 2, got {}",
            manifest.schema_version
        ));
    }
    let found = || {
        let types: Vec<_> = manifest
            .layers
            .iter()
            .map(|l| l.media_type.as_str())
            .collect();
        match types.is_empty() {
            true => "none".to_owned(),
            false => types.join(", "),
        }
    };
    let [layer] = manifest.layers.as_slice() else {
        return Err(format!(
            "a stage artifact has exactly one layer, of type {LAYER_MEDIA_TYPE}; this manifest's \
             layers: {}",
            found()
        ));
    };
    if !WASM_LAYER_TYPES.contains(&layer.media_type.as_str()) {
        return Err(format!(
            "the manifest has no wasm layer (expected one of type {}); its layers: {}",
            WASM_LAYER_TYPES.join(" or "),
            found()
        ));
    }
    super::reference::check_digest(&layer.digest)
        .map_err(|err| format!("the wasm layer's digest: {err}"))?;
    if layer.size < 0 {
        return Err(format!("the wasm layer's size is {}", layer.size));
    }
    Ok(layer.clone())
}

/// The config blob of the layout (`application/vnd.wasm.config.v0+json`).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct WasmConfig<'a> {
    /// RFC 3339.
    created: &'a str,
    /// Always `wasm`.
    architecture: &'static str,
    /// `wasip2` for a component.
    os: &'static str,
    /// The layers' digests, in order: makes the config (and so the manifest) unique per
    /// component.
    layer_digests: [&'a str; 1],
    /// The component's world, as its import and export names.
    component: WorldNames<'a>,
}

#[derive(Serialize)]
struct WorldNames<'a> {
    exports: &'a [String],
    imports: &'a [String],
    target: Option<String>,
}

/// The artifact of one component: its config blob, and the manifest (as the bytes pushed,
/// whose sha256 is the digest to pin).
pub struct Artifact {
    /// The config blob.
    pub config: Vec<u8>,
    /// The manifest's bytes.
    pub manifest: Vec<u8>,
    /// sha256 of the component.
    pub layer_digest: String,
}

/// Lays `component` out as a wasm artifact; `title` names the file (`org.opencontainers.image.title`
/// on the layer, as `wkg` sets it).
pub fn artifact(component: &[u8], title: &str, created: &str) -> Result<Artifact, String> {
    let (imports, exports) = world_names(component)?;
    let layer_digest = super::store::sha256(component);
    let config = serde_json::to_vec(&WasmConfig {
        created,
        architecture: "wasm",
        os: "wasip2",
        layer_digests: [&layer_digest],
        component: WorldNames {
            exports: &exports,
            imports: &imports,
            target: None,
        },
    })
    .map_err(|err| format!("cannot write the config: {err}"))?;
    let descriptor = |media_type: &str, bytes: &[u8], digest: String| OciDescriptor {
        media_type: media_type.to_owned(),
        digest,
        size: i64::try_from(bytes.len()).unwrap_or(i64::MAX),
        ..Default::default()
    };
    let mut layer = descriptor(LAYER_MEDIA_TYPE, component, layer_digest.clone());
    layer.annotations = Some(BTreeMap::from([(
        oci_client::annotations::ORG_OPENCONTAINERS_IMAGE_TITLE.to_owned(),
        title.to_owned(),
    )]));
    let manifest = OciImageManifest {
        schema_version: 2,
        media_type: Some(MANIFEST_MEDIA_TYPE.to_owned()),
        config: descriptor(CONFIG_MEDIA_TYPE, &config, super::store::sha256(&config)),
        layers: vec![layer],
        ..Default::default()
    };
    let manifest =
        serde_json::to_vec(&manifest).map_err(|err| format!("cannot write the manifest: {err}"))?;
    Ok(Artifact {
        config,
        manifest,
        layer_digest,
    })
}

/// The component's top-level import and export names (its world), read without compiling it.
fn world_names(component: &[u8]) -> Result<(Vec<String>, Vec<String>), String> {
    use wasmparser::{Parser, Payload};
    let not_component = "not a WebAssembly component (build stages for wasm32-wasip2)";
    if component.len() < 8 || &component[..4] != b"\0asm" || component[4..8] == [1, 0, 0, 0] {
        return Err(not_component.to_owned());
    }
    let (mut imports, mut exports) = (Vec::new(), Vec::new());
    // Nested modules and components have sections of their own; only the outer ones count.
    let mut depth = 0usize;
    for payload in Parser::new(0).parse_all(component) {
        let payload = payload.map_err(|err| format!("{not_component}: {err}"))?;
        match payload {
            Payload::ModuleSection { .. } | Payload::ComponentSection { .. } => depth += 1,
            Payload::End(_) => depth = depth.saturating_sub(1),
            Payload::ComponentImportSection(section) if depth == 0 => {
                for import in section {
                    let import = import.map_err(|err| format!("{not_component}: {err}"))?;
                    imports.push(import.name.name.to_owned());
                }
            }
            Payload::ComponentExportSection(section) if depth == 0 => {
                for export in section {
                    let export = export.map_err(|err| format!("{not_component}: {err}"))?;
                    exports.push(export.name.name.to_owned());
                }
            }
            _ => {}
        }
    }
    Ok((imports, exports))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(layers: serde_json::Value) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": MANIFEST_MEDIA_TYPE,
            "config": {
                "mediaType": CONFIG_MEDIA_TYPE,
                "digest": super::super::store::sha256(b"{}"),
                "size": 2,
            },
            "layers": layers,
        }))
        .unwrap()
    }

    fn layer(media_type: &str) -> serde_json::Value {
        serde_json::json!({
            "mediaType": media_type,
            "digest": super::super::store::sha256(b"x"),
            "size": 1,
        })
    }

    #[test]
    fn one_wasm_layer_is_the_stage() {
        for media_type in WASM_LAYER_TYPES {
            let found = wasm_layer(&manifest(serde_json::json!([layer(media_type)]))).unwrap();
            assert_eq!(found.media_type, media_type);
            assert_eq!(found.size, 1);
        }
    }

    #[test]
    fn anything_else_is_refused_with_what_was_found() {
        let tar = "application/vnd.oci.image.layer.v1.tar+gzip";
        for (bytes, expected) in [
            (manifest(serde_json::json!([])), "layers: none"),
            (manifest(serde_json::json!([layer(tar)])), "no wasm layer"),
            (
                manifest(serde_json::json!([
                    layer(LAYER_MEDIA_TYPE),
                    layer(LAYER_MEDIA_TYPE)
                ])),
                "exactly one layer",
            ),
            (
                serde_json::to_vec(&serde_json::json!({"schemaVersion": 2, "manifests": []}))
                    .unwrap(),
                "image index",
            ),
            (b"not json".to_vec(), "not JSON"),
            (vec![b' '; MAX_MANIFEST_BYTES + 1], "bytes, above"),
        ] {
            let err = wasm_layer(&bytes).err().unwrap_or_default();
            assert!(err.contains(expected), "{expected}: {err}");
        }
        let mut bad_digest = layer(LAYER_MEDIA_TYPE);
        bad_digest["digest"] = "sha512:abcd".into();
        let err = wasm_layer(&manifest(serde_json::json!([bad_digest])))
            .err()
            .unwrap_or_default();
        assert!(err.contains("digest"), "{err}");
    }

    #[test]
    fn a_pushed_artifact_reads_back_as_its_own_layer() {
        let component = std::fs::read(weir_test_artifacts::PASSTHROUGH).unwrap();
        let artifact = artifact(&component, "passthrough.wasm", "2026-12-05T00:00:00Z").unwrap();
        let layer = wasm_layer(&artifact.manifest).unwrap();
        assert_eq!(layer.digest, artifact.layer_digest);
        assert_eq!(layer.size as usize, component.len());
        let config: serde_json::Value = serde_json::from_slice(&artifact.config).unwrap();
        assert_eq!(config["os"], "wasip2");
        assert_eq!(config["layerDigests"][0], artifact.layer_digest.as_str());
        let exports = config["component"]["exports"].as_array().unwrap();
        assert!(
            exports.iter().any(|e| e.as_str().is_some_and(|e| e.starts_with("weir:stage"))
                || e == "describe"),
            "{exports:?}"
        );
        let manifest: serde_json::Value = serde_json::from_slice(&artifact.manifest).unwrap();
        assert_eq!(manifest["config"]["mediaType"], CONFIG_MEDIA_TYPE);
        assert_eq!(
            manifest["layers"][0]["annotations"]["org.opencontainers.image.title"],
            "passthrough.wasm"
        );
        assert!(super::artifact(b"\0asm\x01\0\0\0", "core.wasm", "now").is_err());
    }
}
