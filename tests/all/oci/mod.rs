//! Stages as OCI artifacts, through the real binaries and a real registry (Debian's
//! `docker-registry`): `weir push`, serving by digest, restarting with the registry down,
//! refusing tags, tampered blobs, unknown digests, manifests without a wasm layer and
//! oversized layers, a registry that never answers, `wkg` interoperability, and rolling to a
//! new digest under load with no failed request.

mod registry;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use serde_json::{Value, json};

use crate::procs::{Proc, post, serve_file, serve_file_with_env, sim};
use crate::reload::{admin_stages, until_admin};
use registry::{
    PASSWORD, Registry, USER, push, push_output, push_with_env, rebuilt, scratch, serve_fails, wkg,
};

/// A config with one route `demo` over `up` whose one stage `s` is at `path`; `data_dir` under
/// `dir`; `extra` appended (an `[oci]` table).
fn config(up: &Proc, dir: &Path, path: &str, extra: &str) -> String {
    format!(
        r#"
[server]
data_dir = "{data}"

[targets.up]
base_url = "http://{up}/v1"

[[routes]]
model = "demo"
targets = ["up"]

[[routes.stages]]
name = "s"
path = "{path}"

{extra}
"#,
        data = dir.join("data").display(),
        up = up.addr,
    )
}

fn write_config(dir: &Path, text: &str) -> PathBuf {
    let path = dir.join("weir.toml");
    let tmp = dir.join("weir.toml.tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, &path).unwrap();
    path
}

fn chat() -> Value {
    json!({"model": "demo", "messages": [{"role": "user", "content": "hi"}]})
}

/// `s@<blake3 prefix>`: the `x-weir-stages` label of stage `s` with these bytes.
fn label(bytes: &[u8]) -> String {
    format!("s@{}", &blake3::hash(bytes).to_hex()[..8])
}

/// One request; its `x-weir-stages` header (the stage version that ran).
async fn serving(weir: &Proc) -> String {
    let answer = post(weir.addr, "/v1/chat/completions", &chat()).await;
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    answer.headers["x-weir-stages"].to_str().unwrap().to_owned()
}

/// The `/admin/stages` row of stage `s`.
async fn stage_row(weir: &Proc) -> Value {
    admin_stages(weir).await["stages"][0].clone()
}

fn component(path: &str) -> Vec<u8> {
    std::fs::read(path).unwrap()
}

/// Writes `bytes` to `dir/name` and returns the path.
fn file(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

#[tokio::test]
async fn a_pushed_stage_serves_by_digest_and_restarts_with_the_registry_down() {
    let mut registry = Registry::start();
    let up = sim(&[]);
    let dir = scratch("serve");
    let bytes = component(weir_test_artifacts::PASSTHROUGH);
    let stage = file(&dir, "passthrough.wasm", &bytes);
    let pushed = push(&stage, &format!("oci://{}/t/pass:v1", registry.host()));
    let path = write_config(&dir, &config(&up, &dir, &pushed.pinned, ""));

    let weir = serve_file(&path);
    assert_eq!(serving(&weir).await, label(&bytes));
    let row = stage_row(&weir).await;
    assert_eq!(row["path"], pushed.pinned.as_str());
    assert_eq!(row["source"]["kind"], "oci");
    assert_eq!(row["source"]["fetched_from"], "registry");
    assert_eq!(row["source"]["layer_digest"], pushed.layer.as_str());
    assert_eq!(row["source"]["media_type"], "application/wasm");
    let digest = pushed.pinned.rsplit('@').next().unwrap();
    assert_eq!(row["source"]["manifest_digest"], digest);
    // Both blobs are in the store under data_dir, named by their digests.
    let store = dir.join("data/oci/sha256");
    for blob in [digest, pushed.layer.as_str()] {
        assert!(store.join(&blob[7..]).is_file(), "{blob} not in {store:?}");
    }
    drop(weir);

    // The registry is gone; the pinned digest is on disk: the node still starts and serves.
    registry.stop();
    let weir = serve_file(&path);
    assert_eq!(serving(&weir).await, label(&bytes));
    assert_eq!(stage_row(&weir).await["source"]["fetched_from"], "store");
    drop(weir);

    // A blob in the store edited on disk is never served: it is dropped and pulled again.
    let layer_file = store.join(&pushed.layer[7..]);
    let mut edited = std::fs::read(&layer_file).unwrap();
    let last = edited.len() - 1;
    edited[last] ^= 0xff;
    std::fs::write(&layer_file, &edited).unwrap();
    registry.restart();
    let weir = serve_file(&path);
    assert_eq!(serving(&weir).await, label(&bytes));
    assert_eq!(stage_row(&weir).await["source"]["fetched_from"], "registry");
    assert_eq!(std::fs::read(&layer_file).unwrap(), bytes);
}

#[tokio::test]
async fn wkg_pulls_what_weir_pushed_and_weir_serves_what_wkg_pushed() {
    let registry = Registry::start();
    let dir = scratch("wkg");
    let ours = component(weir_test_artifacts::PASSTHROUGH);
    let stage = file(&dir, "ours.wasm", &ours);
    push(&stage, &format!("oci://{}/t/ours:v1", registry.host()));
    let pulled = dir.join("pulled.wasm");
    let out = std::process::Command::new(wkg())
        .args(["oci", "pull", "--insecure", &registry.host()])
        .arg(format!("{}/t/ours:v1", registry.host()))
        .arg("-o")
        .arg(&pulled)
        .output()
        .expect("wkg runs");
    assert!(
        out.status.success(),
        "wkg oci pull: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        std::fs::read(&pulled).unwrap(),
        ours,
        "wkg pulled other bytes"
    );

    let theirs = component(weir_test_artifacts::PII_REDACT);
    let theirs_file = file(&dir, "theirs.wasm", &theirs);
    let out = std::process::Command::new(wkg())
        .args(["oci", "push", "--insecure", &registry.host()])
        .arg(format!("{}/t/theirs:w1", registry.host()))
        .arg(&theirs_file)
        .output()
        .expect("wkg runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "wkg oci push: {stdout}");
    let digest = stdout
        .lines()
        .find_map(|l| l.strip_prefix("digest: "))
        .unwrap_or_else(|| panic!("no digest in wkg's output: {stdout}"))
        .trim();
    let up = sim(&[]);
    let reference = format!("oci://{}/t/theirs@{digest}", registry.host());
    let path = write_config(&dir, &config(&up, &dir, &reference, ""));
    let weir = serve_file(&path);
    assert_eq!(serving(&weir).await, label(&theirs));
}

#[tokio::test]
async fn a_tag_serves_only_when_allowed_and_is_shown_pinned() {
    let registry = Registry::start();
    let up = sim(&[]);
    let dir = scratch("tag");
    let bytes = component(weir_test_artifacts::PASSTHROUGH);
    let pushed = push(
        &file(&dir, "s.wasm", &bytes),
        &format!("oci://{}/t/tagged:dev", registry.host()),
    );
    let tagged = format!("oci://{}/t/tagged:dev", registry.host());
    let path = write_config(&dir, &config(&up, &dir, &tagged, ""));
    let err = serve_fails(&path);
    assert!(
        err.contains("weir.toml:") && err.contains(&tagged) && err.contains("allow_tags"),
        "{err}"
    );

    let path = write_config(
        &dir,
        &config(&up, &dir, &tagged, "[oci]\nallow_tags = true\n"),
    );
    let weir = serve_file(&path);
    assert_eq!(serving(&weir).await, label(&bytes));
    let row = stage_row(&weir).await;
    assert_eq!(row["path"], tagged.as_str());
    // The tag resolved: what serves is named by its digest.
    let pinned_tagged = format!(
        "oci://{}/t/tagged:dev@{}",
        registry.host(),
        pushed.pinned.rsplit('@').next().unwrap()
    );
    assert_eq!(row["source"]["reference"], pinned_tagged.as_str());
}

#[tokio::test]
async fn bad_artifacts_are_refused_with_an_error_naming_the_reference() {
    let mut registry = Registry::start();
    let up = sim(&[]);
    let dir = scratch("bad");
    let bytes = component(weir_test_artifacts::PASSTHROUGH);

    // A digest the registry does not have.
    let unknown = format!("oci://{}/t/pass@sha256:{}", registry.host(), "0".repeat(64));
    let err = serve_fails(&write_config(&dir, &config(&up, &dir, &unknown, "")));
    assert!(
        err.contains(&unknown) && err.contains("no such manifest"),
        "{err}"
    );

    // A tampered blob in the registry: the digest check refuses it.
    let pushed = push(
        &file(&dir, "s.wasm", &bytes),
        &format!("oci://{}/t/pass:v1", registry.host()),
    );
    let blob = registry.blob_file(&pushed.layer);
    let mut tampered = std::fs::read(&blob).unwrap();
    tampered[100] ^= 1;
    std::fs::write(&blob, &tampered).unwrap();
    let err = serve_fails(&write_config(&dir, &config(&up, &dir, &pushed.pinned, "")));
    assert!(
        err.contains(&pushed.pinned) && err.contains("does not match its digest"),
        "{err}"
    );
    assert!(
        !dir.join("data/oci/sha256")
            .join(&pushed.layer[7..])
            .exists(),
        "a tampered blob was stored"
    );

    // A layer above [oci] max_blob_mib: refused before it is downloaded.
    let big = rebuilt(&bytes, "big", 2 << 20);
    let pushed = push(
        &file(&dir, "big.wasm", &big),
        &format!("oci://{}/t/big:v1", registry.host()),
    );
    let capped = config(&up, &dir, &pushed.pinned, "[oci]\nmax_blob_mib = 1\n");
    let err = serve_fails(&write_config(&dir, &capped));
    assert!(
        err.contains(&pushed.pinned) && err.contains("above [oci] max_blob_mib (1 MiB)"),
        "{err}"
    );

    // An image whose only layer is not wasm (a tarball).
    let not_wasm = push_tarball_image(&registry).await;
    let err = serve_fails(&write_config(&dir, &config(&up, &dir, &not_wasm, "")));
    assert!(
        err.contains(&not_wasm) && err.contains("no wasm layer"),
        "{err}"
    );

    // A malformed reference is a config error at its line.
    let err = serve_fails(&write_config(
        &dir,
        &config(&up, &dir, "oci://127.0.0.1:1/T/x@sha256:00", ""),
    ));
    assert!(
        err.contains("weir.toml:14:") && err.contains("routes[0].stages[0].path"),
        "{err}"
    );

    // The registry down and nothing on disk: the start fails naming the reference.
    registry.stop();
    let fresh = scratch("bad-fresh");
    let err = serve_fails(&write_config(
        &fresh,
        &config(&up, &fresh, &pushed.pinned, ""),
    ));
    assert!(
        err.contains(&pushed.pinned) && err.contains("cannot pull the manifest"),
        "{err}"
    );
}

/// Pushes an image with one tar layer (not a stage) with oci-client; its pinned reference.
async fn push_tarball_image(registry: &Registry) -> String {
    use oci_client::client::{ClientConfig, ClientProtocol, Config, ImageLayer};
    weir::tls::install_provider();
    let client = oci_client::Client::new(ClientConfig {
        protocol: ClientProtocol::Http,
        ..Default::default()
    });
    let image: oci_client::Reference = format!("{}/t/tarball:v1", registry.host()).parse().unwrap();
    let layer = ImageLayer::new(
        b"not a component".to_vec(),
        "application/vnd.oci.image.layer.v1.tar+gzip".to_owned(),
        None,
    );
    let config = Config::oci_v1(b"{}".to_vec(), None);
    let response = client
        .push(
            &image,
            &[layer],
            config,
            &oci_client::secrets::RegistryAuth::Anonymous,
            None,
        )
        .await
        .expect("push the tarball image");
    let digest = response.manifest_url.rsplit('/').next().unwrap().to_owned();
    format!("oci://{}/t/tarball@{digest}", registry.host())
}

/// The connections a [`hung_registry`] accepted (held open, never answered).
type Held = Arc<std::sync::Mutex<Vec<tokio::net::TcpStream>>>;

/// A "registry" that accepts connections and never says a word: its address, and the
/// connections it holds.
async fn hung_registry() -> (std::net::SocketAddr, Held) {
    let hung = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = hung.local_addr().unwrap();
    let held = Held::default();
    let keep = held.clone();
    tokio::spawn(async move {
        while let Ok((socket, _)) = hung.accept().await {
            keep.lock().unwrap().push(socket);
        }
    });
    (addr, held)
}

#[tokio::test]
async fn a_registry_that_never_answers_keeps_the_old_version_serving() {
    let registry = Registry::start();
    let up = sim(&[]);
    let dir = scratch("hang");
    let bytes = component(weir_test_artifacts::PASSTHROUGH);
    let pushed = push(
        &file(&dir, "s.wasm", &bytes),
        &format!("oci://{}/t/pass:v1", registry.host()),
    );
    let oci = "[oci]\npull_timeout_ms = 500\n";
    let path = write_config(&dir, &config(&up, &dir, &pushed.pinned, oci));
    let weir = serve_file(&path);
    assert_eq!(serving(&weir).await, label(&bytes));

    let (hung_addr, held) = hung_registry().await;
    let wanted = format!("oci://{hung_addr}/t/pass@sha256:{}", "1".repeat(64));
    write_config(&dir, &config(&up, &dir, &wanted, oci));
    let stages = until_admin(&weir, "the pull to time out", |stages| {
        stages["stages"][0]["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("within 500 ms"))
    })
    .await;
    let row = &stages["stages"][0];
    assert_eq!(row["path"], pushed.pinned.as_str(), "{row}");
    assert_eq!(row["wanted"], wanted.as_str(), "{row}");
    let error = row["last_error"].as_str().unwrap();
    assert!(
        error.starts_with(&wanted) && error.contains("keeps serving"),
        "{error}"
    );
    assert_eq!(serving(&weir).await, label(&bytes));
    assert!(
        !held.lock().unwrap().is_empty(),
        "weir never tried the hung registry"
    );
}

#[tokio::test]
async fn a_new_digest_rolls_out_under_load_with_no_failed_request() {
    let registry = Registry::start();
    let up = sim(&[]);
    let dir = scratch("roll");
    let v1 = component(weir_test_artifacts::PASSTHROUGH);
    let v2 = rebuilt(&v1, "v2", 0);
    let reference = format!("oci://{}/t/roll", registry.host());
    let p1 = push(&file(&dir, "v1.wasm", &v1), &format!("{reference}:v1"));
    let p2 = push(&file(&dir, "v2.wasm", &v2), &format!("{reference}:v2"));
    let path = write_config(&dir, &config(&up, &dir, &p1.pinned, ""));
    let weir = Arc::new(serve_file(&path));
    assert_eq!(serving(&weir).await, label(&v1));

    let stop = Arc::new(AtomicBool::new(false));
    let (sent, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut clients = Vec::new();
    for _ in 0..4 {
        let (weir, stop, sent, failed) = (weir.clone(), stop.clone(), sent.clone(), failed.clone());
        clients.push(tokio::spawn(async move {
            let mut seen = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let answer = post(weir.addr, "/v1/chat/completions", &chat()).await;
                sent.fetch_add(1, Ordering::Relaxed);
                if answer.status != 200 {
                    failed.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                let label = answer.headers["x-weir-stages"].to_str().unwrap().to_owned();
                if seen.last() != Some(&label) {
                    seen.push(label);
                }
            }
            seen
        }));
    }
    crate::wait::until("some load before the roll", || async {
        let n = sent.load(Ordering::Relaxed);
        crate::wait::check(n >= 20, n)
    })
    .await;
    write_config(&dir, &config(&up, &dir, &p2.pinned, ""));
    until_admin(&weir, "the new digest to serve", |stages| {
        stages["stages"][0]["path"] == p2.pinned.as_str()
    })
    .await;
    let at_roll = sent.load(Ordering::Relaxed);
    crate::wait::until("some load after the roll", || async {
        let n = sent.load(Ordering::Relaxed);
        crate::wait::check(n >= at_roll + 20, n)
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    let mut sequences = Vec::new();
    for client in clients {
        sequences.push(client.await.unwrap());
    }
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "{} of {} requests failed during the roll",
        failed.load(Ordering::Relaxed),
        sent.load(Ordering::Relaxed)
    );
    // Every client saw v1, then v2, and never went back.
    for seen in &sequences {
        assert_eq!(seen.last(), Some(&label(&v2)), "{seen:?}");
        assert!(
            seen.len() <= 2 && seen.iter().all(|l| *l == label(&v1) || *l == label(&v2)),
            "{seen:?}"
        );
    }
    let row = stage_row(&weir).await;
    assert_eq!(row["source"]["fetched_from"], "registry");
    assert_eq!(row["last_error"], Value::Null);
}

#[tokio::test]
async fn credentials_come_from_the_environment_or_the_docker_config_never_the_file() {
    let registry = Registry::start_with_auth();
    let up = sim(&[]);
    let dir = scratch("auth");
    let bytes = component(weir_test_artifacts::PASSTHROUGH);
    let stage = file(&dir, "s.wasm", &bytes);
    let reference = format!("oci://{}/t/private:v1", registry.host());

    // No credentials: refused, and the error says by whom.
    let out = push_output(&stage, &reference, &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "an anonymous push was accepted");
    assert!(stderr.contains(&reference), "{stderr}");
    let creds = [
        ("WEIR_REGISTRY_USERNAME", USER),
        ("WEIR_REGISTRY_PASSWORD", PASSWORD),
    ];
    let pushed = push_with_env(&stage, &reference, &creds);

    // Serving without credentials fails naming the reference.
    let plain = config(&up, &dir, &pushed.pinned, "");
    let err = serve_fails(&write_config(&dir, &plain));
    assert!(err.contains(&pushed.pinned), "{err}");

    // From environment variables named in [oci.credentials."HOST"].
    let named = format!(
        "[oci.credentials.\"{}\"]\nusername_env = \"T_REG_USER\"\npassword_env = \"T_REG_PASSWORD\"\n",
        registry.host()
    );
    let path = write_config(&dir, &config(&up, &dir, &pushed.pinned, &named));
    let weir = serve_file_with_env(&path, &[("T_REG_USER", USER), ("T_REG_PASSWORD", PASSWORD)]);
    assert_eq!(serving(&weir).await, label(&bytes));
    drop(weir);

    // From a Docker config (a fresh data dir, so the store cannot answer).
    let docker = dir.join("docker");
    std::fs::create_dir_all(&docker).unwrap();
    let auth = base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        format!("{USER}:{PASSWORD}"),
    );
    std::fs::write(
        docker.join("config.json"),
        json!({"auths": {registry.host(): {"auth": auth}}}).to_string(),
    )
    .unwrap();
    let fresh = scratch("auth-docker");
    let path = write_config(&fresh, &config(&up, &fresh, &pushed.pinned, ""));
    let weir = serve_file_with_env(&path, &[("DOCKER_CONFIG", docker.to_str().unwrap())]);
    assert_eq!(serving(&weir).await, label(&bytes));
    assert_eq!(stage_row(&weir).await["source"]["fetched_from"], "registry");
}

#[tokio::test]
async fn a_digest_rolled_out_while_the_registry_is_down_serves_once_it_is_back() {
    let mut registry = Registry::start();
    let up = sim(&[]);
    let dir = scratch("retry");
    let v1 = component(weir_test_artifacts::PASSTHROUGH);
    let v2 = rebuilt(&v1, "v2", 0);
    let reference = format!("oci://{}/t/retry", registry.host());
    let p1 = push(&file(&dir, "v1.wasm", &v1), &format!("{reference}:v1"));
    let p2 = push(&file(&dir, "v2.wasm", &v2), &format!("{reference}:v2"));
    let path = write_config(&dir, &config(&up, &dir, &p1.pinned, ""));
    let weir = serve_file(&path);
    assert_eq!(serving(&weir).await, label(&v1));

    registry.stop();
    write_config(&dir, &config(&up, &dir, &p2.pinned, ""));
    let stages = until_admin(&weir, "the failed pull to show", |stages| {
        !stages["stages"][0]["last_error"].is_null()
    })
    .await;
    assert_eq!(stages["stages"][0]["wanted"], p2.pinned.as_str());
    assert_eq!(serving(&weir).await, label(&v1));

    // Nobody reloads: weir retries on its own once the registry is back.
    registry.restart();
    let stages = until_admin(&weir, "the retried pull to serve v2", |stages| {
        stages["stages"][0]["path"] == p2.pinned.as_str()
    })
    .await;
    assert_eq!(stages["stages"][0]["last_error"], Value::Null);
    assert_eq!(stages["stages"][0]["wanted"], Value::Null);
    let history = stages["reloads"]["history"].as_array().unwrap();
    assert!(
        history
            .iter()
            .any(|r| r["trigger"] == "pull-retry" && r["ok"] == true),
        "{history:?}"
    );
    assert_eq!(serving(&weir).await, label(&v2));
}

/// `weir check ARGS`, with no registry credentials in its environment.
fn check(args: &[&str]) -> std::process::Output {
    registry::weir_without_credentials("check")
        .args(args)
        .output()
        .expect("weir check runs")
}

#[tokio::test]
async fn weir_check_pulls_an_artifact_and_checks_it_before_it_is_rolled_out() {
    let registry = Registry::start();
    let dir = scratch("check");
    let bytes = component(weir_test_artifacts::PASSTHROUGH);
    let tagged = format!("oci://{}/t/check:v1", registry.host());
    let pushed = push(&file(&dir, "s.wasm", &bytes), &tagged);

    // By digest and by tag: the stage describes itself, the tag is printed pinned.
    for reference in [pushed.pinned.as_str(), tagged.as_str()] {
        let out = check(&[reference]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            stdout.contains(&format!("pulled {}", pushed.pinned)),
            "{stdout}"
        );
        assert!(stdout.contains(&pushed.layer), "{stdout}");
        assert!(stdout.contains("passthrough"), "{stdout}");
        assert!(stdout.contains("MiB"), "{stdout}");
    }

    // An unknown digest and a malformed reference fail, naming the reference.
    let unknown = format!(
        "oci://{}/t/check@sha256:{}",
        registry.host(),
        "0".repeat(64)
    );
    let out = check(&[&unknown]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains(&unknown), "{stderr}");
    let out = check(&["oci://Bad Registry/x"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("oci://Bad Registry/x"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Fourth probe, C4: the pulls of one reload ran one after another, so k stages on a hung
/// registry cost the reload k × `pull_timeout_ms` (a file fix or a config change waited that
/// long behind them). They run side by side: one `pull_timeout_ms`.
#[tokio::test]
async fn a_reload_pulls_its_artifacts_side_by_side() {
    let up = sim(&[]);
    let dir = scratch("side-by-side");
    let bytes = component(weir_test_artifacts::PASSTHROUGH);
    let stage = file(&dir, "s.wasm", &bytes).display().to_string();
    let oci = "[oci]\npull_timeout_ms = 1500\n";
    // Three more routes, each with its own stage at `path(n)`.
    let routes = |path: &dyn Fn(usize) -> String| {
        let mut text = config(&up, &dir, &stage, oci);
        for n in 0..3 {
            text.push_str(&format!(
                "\n[[routes]]\nmodel = \"r{n}\"\ntargets = [\"up\"]\n\n\
                 [[routes.stages]]\nname = \"s\"\npath = \"{}\"\n",
                path(n)
            ));
        }
        text
    };
    let path = write_config(&dir, &routes(&|_| stage.clone()));
    let weir = serve_file(&path);
    assert_eq!(serving(&weir).await, label(&bytes));

    let (hung_addr, held) = hung_registry().await;
    // Each of the three stages moves to an artifact on it: each pull times out, and each
    // route keeps its file's version.
    let wanted = |n: usize| {
        format!(
            "oci://{hung_addr}/t/s{n}@sha256:{}",
            n.to_string().repeat(64)
        )
    };
    write_config(&dir, &routes(&wanted));
    let stages = until_admin(&weir, "the reload to reject the three pulls", |stages| {
        let history = stages["reloads"]["history"].as_array();
        history.is_some_and(|h| {
            h.iter()
                .any(|r| r["rejected"].as_array().map_or(0, Vec::len) == 3)
        })
    })
    .await;
    let history = stages["reloads"]["history"].as_array().unwrap();
    let reload = (history.iter())
        .find(|r| r["rejected"].as_array().map_or(0, Vec::len) == 3)
        .unwrap();
    let elapsed = reload["elapsed_ms"].as_f64().unwrap();
    // One pull timeout and the rest of the reload; three in a row took at least 4,500 ms.
    assert!(elapsed < 4000.0, "{reload}");
    let rejected = reload["rejected"][0]["error"].as_str().unwrap();
    assert!(rejected.contains("within 1500 ms"), "{reload}");
    assert!(
        held.lock().unwrap().len() >= 3,
        "each registry call was made"
    );
    assert_eq!(
        serving(&weir).await,
        label(&bytes),
        "the old versions serve"
    );
}
