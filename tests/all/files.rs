//! The files weir keeps (under `data_dir`, the disk cache, the artifact key) through the real
//! binary: a swapped or foreign artifact is recompiled with a warning and the right stage
//! runs; an artifact directory others may write, or a link, is not used; everything is 0700 /
//! 0600 after a start, looser modes are tightened; orphaned temporary files are swept.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde_json::{Value, json};

use crate::procs::{Proc, get, post, serve_logged, sim, sim_requests};
use crate::wait;

const SYSTEM_PROMPT: &str = "You answer for the files test.";

/// A fresh scratch directory for one test.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("weir-files-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `data_dir` and the disk cache under `root/data`; route `sys` (system-prompt, cached, takes
/// jobs) and route `pii` (pii-redact) over `up`; `extra` at the top of the file.
fn config(up: &Proc, root: &Path, extra: &str) -> String {
    format!(
        r#"{extra}
[server]
data_dir = "{data}"

[cache]
disk_dir = "{data}/cache"

[targets.up]
base_url = "http://{up}/v1"
timeout_ms = 10000

[[routes]]
model = "sys"
targets = ["up"]
cache = {{ ttl_ms = 600000 }}
jobs = {{ concurrency = 1 }}
[[routes.stages]]
name = "system-prompt"
path = "{system}"
config = {{ prompt = "{SYSTEM_PROMPT}" }}

[[routes]]
model = "pii"
targets = ["up"]
[[routes.stages]]
name = "pii-redact"
path = "{pii}"
"#,
        data = root.join("data").display(),
        up = up.addr,
        system = weir_test_artifacts::SYSTEM_PROMPT,
        pii = weir_test_artifacts::PII_REDACT,
    )
}

/// Starts weir on `config` with its own state directory under `root` (where the default
/// artifact key goes), its log in `root/<log>`.
fn start(config: &str, root: &Path, log: &str) -> Proc {
    let state = root.join("state");
    serve_logged(
        config,
        &[("XDG_STATE_HOME", state.to_str().unwrap())],
        &root.join(log),
    )
}

fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path)
        .unwrap_or_else(|err| panic!("{}: {err}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Files in `dir` whose name ends with `suffix`, sorted.
fn files(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| path.to_string_lossy().ends_with(suffix))
        .collect();
    found.sort();
    found
}

/// The cache entry files under `cache` (one level of shards), named by their 64-hex key: a
/// temporary file (written, not yet renamed into place) is not an entry.
fn cache_files(cache: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for shard in std::fs::read_dir(cache).into_iter().flatten().flatten() {
        found.extend(files(&shard.path(), "").into_iter().filter(|path| {
            let name = path.file_name().unwrap_or_default().to_string_lossy();
            name.len() == 64 && name.bytes().all(|b| b.is_ascii_hexdigit())
        }));
    }
    found
}

/// The `/admin/stages` row of the stage on `route`.
async fn stage(weir: &Proc, route: &str) -> Value {
    let answer = get(weir.admin.unwrap(), "/admin/stages").await;
    assert_eq!(answer.status, 200);
    let stages = answer.json()["stages"].as_array().cloned().unwrap();
    stages
        .into_iter()
        .find(|row| row["route"] == route)
        .unwrap_or_else(|| panic!("no stage on route {route}"))
}

/// Waits until the log at `path` contains `needle`; returns the log.
async fn log_with(path: &Path, needle: &str) -> String {
    wait::until(&format!("{needle:?} in the log"), || async {
        let log = std::fs::read_to_string(path).unwrap_or_default();
        if log.contains(needle) {
            Ok(log)
        } else {
            Err(format!("\n{log}"))
        }
    })
    .await
}

fn chat(model: &str, text: &str) -> Value {
    json!({"model": model, "temperature": 0, "messages": [{"role": "user", "content": text}]})
}

/// The body the upstream received last.
async fn upstream_body(up: &Proc) -> Value {
    sim_requests(up, 1).await[0]["body"].clone()
}

/// Asks route `pii` about an address: the upstream must see the placeholder (pii-redact ran).
async fn pii_redact_runs(weir: &Proc, up: &Proc) {
    let answer = post(
        weir.addr,
        "/v1/chat/completions",
        &chat("pii", "Mail me at jane@example.com please"),
    )
    .await;
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    let body = upstream_body(up).await;
    let text = body.to_string();
    assert!(text.contains("[EMAIL_1]"), "{text}");
    assert!(!text.contains("jane@example.com"), "{text}");
    assert_eq!(
        body["messages"][0]["role"], "user",
        "no system prompt: {text}"
    );
}

/// Asks route `sys`: the upstream must see the system prompt (system-prompt ran).
async fn system_prompt_runs(weir: &Proc, up: &Proc, text: &str) {
    let answer = post(weir.addr, "/v1/chat/completions", &chat("sys", text)).await;
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    let body = upstream_body(up).await;
    assert_eq!(body["messages"][0]["role"], "system", "{body}");
    assert_eq!(body["messages"][0]["content"], SYSTEM_PROMPT, "{body}");
}

#[tokio::test]
async fn a_swapped_artifact_is_recompiled_with_a_warning_and_the_right_stage_runs() {
    let up = sim(&[]);
    let root = scratch("swap");
    let config = config(&up, &root, "");
    let artifacts = root.join("data/artifacts");
    let (sys_version, pii_version) = {
        let weir = start(&config, &root, "first.log");
        let (sys, pii) = (stage(&weir, "sys").await, stage(&weir, "pii").await);
        assert_eq!(
            (&sys["artifact"], &pii["artifact"]),
            (&json!("compiled"), &json!("compiled"))
        );
        (
            sys["version"].as_str().unwrap().to_string(),
            pii["version"].as_str().unwrap().to_string(),
        )
    }; // killed here
    let file_of = |version: &str| {
        let found = files(&artifacts, ".cwasm");
        found
            .into_iter()
            .find(|f| {
                f.file_name()
                    .unwrap()
                    .to_str()
                    .unwrap()
                    .starts_with(version)
            })
            .unwrap_or_else(|| panic!("no artifact for {version}"))
    };
    // system-prompt's compiled code under pii-redact's name: no crafting, the file is sound.
    std::fs::copy(file_of(&sys_version), file_of(&pii_version)).unwrap();

    let weir = start(&config, &root, "second.log");
    let pii = stage(&weir, "pii").await;
    assert_eq!(pii["artifact"], "compiled", "{pii}");
    assert_eq!(pii["stage_name"], "pii-redact", "{pii}");
    assert_eq!(pii["version"], pii_version.as_str());
    let sys = stage(&weir, "sys").await;
    assert_eq!(sys["artifact"], "cached", "{sys}");
    assert_eq!(sys["stage_name"], "system-prompt", "{sys}");
    let log = log_with(&root.join("second.log"), "does not match its stage version").await;
    assert!(log.contains("WARN"), "{log}");
    pii_redact_runs(&weir, &up).await;
    system_prompt_runs(&weir, &up, "hello").await;
    drop(weir);

    // The artifact was rewritten for pii-redact: the next start takes it.
    let weir = start(&config, &root, "third.log");
    let pii = stage(&weir, "pii").await;
    assert_eq!(pii["artifact"], "cached", "{pii}");
    assert_eq!(pii["stage_name"], "pii-redact", "{pii}");
    pii_redact_runs(&weir, &up).await;
}

#[tokio::test]
async fn artifacts_signed_with_another_key_or_a_key_others_may_read_are_not_used() {
    let up = sim(&[]);
    let root = scratch("key");
    let key = root.join("keys/artifact.key");
    let extra = format!("[sandbox]\nartifact_key_file = \"{}\"\n", key.display());
    let config = config(&up, &root, &extra);
    drop(start(&config, &root, "first.log"));
    assert_eq!(mode(&key), 0o600);
    assert_eq!(mode(&root.join("keys")), 0o700);
    assert_eq!(std::fs::read(&key).unwrap().len(), 32);
    assert!(
        !root.join("state").exists(),
        "the configured key file is used, not the default location"
    );
    {
        let weir = start(&config, &root, "second.log");
        assert_eq!(stage(&weir, "pii").await["artifact"], "cached");
    }

    // Another key: every artifact fails its MAC and is recompiled.
    std::fs::write(&key, [0x5a; 32]).unwrap();
    {
        let weir = start(&config, &root, "third.log");
        assert_eq!(stage(&weir, "pii").await["artifact"], "compiled");
        assert_eq!(stage(&weir, "sys").await["artifact"], "compiled");
        log_with(&root.join("third.log"), "does not match its stage version").await;
        pii_redact_runs(&weir, &up).await;
    }

    // A key others may read is refused: no artifact cache at all, stages still load.
    chmod(&key, 0o644);
    let weir = start(&config, &root, "fourth.log");
    let log = log_with(&root.join("fourth.log"), "no artifact cache").await;
    assert!(log.contains("refused") && log.contains("mode 644"), "{log}");
    assert_eq!(stage(&weir, "pii").await["artifact"], "compiled");
    pii_redact_runs(&weir, &up).await;
}

/// Starts weir with `root/data/artifacts` prepared by `prepare`; the cache must be ignored with
/// a warning containing `reason`, weir must serve, and nothing may be written into `watched`.
async fn artifact_dir_is_not_used(name: &str, prepare: impl Fn(&Path, &Path), reason: &str) {
    let up = sim(&[]);
    let root = scratch(name);
    let watched = root.join("elsewhere");
    std::fs::create_dir_all(&watched).unwrap();
    std::fs::create_dir_all(root.join("data")).unwrap();
    prepare(&root.join("data/artifacts"), &watched);
    let config = config(&up, &root, "");
    for round in ["first.log", "second.log"] {
        let weir = start(&config, &root, round);
        let log = log_with(&root.join(round), "no artifact cache").await;
        assert!(log.contains(reason), "{log}");
        assert_eq!(stage(&weir, "pii").await["artifact"], "compiled");
        assert_eq!(stage(&weir, "sys").await["artifact"], "compiled");
        pii_redact_runs(&weir, &up).await;
        system_prompt_runs(&weir, &up, round).await;
    }
    assert_eq!(files(&watched, "").len(), 0, "nothing was written there");
}

#[tokio::test]
async fn an_artifact_directory_others_may_write_is_not_used() {
    artifact_dir_is_not_used(
        "open-dir",
        |artifacts, watched| {
            std::fs::create_dir(artifacts).unwrap();
            chmod(artifacts, 0o777);
            // Watch the directory itself: a file planted there must not be trusted either.
            std::fs::remove_dir(watched).unwrap();
            std::os::unix::fs::symlink(artifacts, watched).unwrap();
        },
        "mode 777",
    )
    .await;
}

#[tokio::test]
async fn an_artifact_directory_that_is_a_link_is_not_used_or_written_through() {
    artifact_dir_is_not_used(
        "link-dir",
        |artifacts, watched| std::os::unix::fs::symlink(watched, artifacts).unwrap(),
        "symbolic link",
    )
    .await;
}

#[tokio::test]
async fn everything_under_data_dir_is_private_and_looser_modes_are_tightened() {
    let up = sim(&[]);
    let root = scratch("modes");
    let config = config(&up, &root, "");
    let data = root.join("data");
    let cache = data.join("cache");
    let check = |stage: &str| {
        let cwasm = files(&data.join("artifacts"), ".cwasm");
        assert_eq!(cwasm.len(), 2, "{stage}: {cwasm:?}");
        let entries = cache_files(&cache);
        assert_eq!(entries.len(), 1, "{stage}: {entries:?}");
        let shard = entries[0].parent().unwrap().to_path_buf();
        let mut expected = vec![
            (data.clone(), 0o700),
            (data.join("jobs.redb"), 0o600),
            (data.join("ledger.redb"), 0o600),
            (data.join("artifacts"), 0o700),
            (cache.clone(), 0o700),
            (shard, 0o700),
            (entries[0].clone(), 0o600),
            (root.join("state/weir"), 0o700),
            (root.join("state/weir/artifact.key"), 0o600),
        ];
        expected.extend(cwasm.into_iter().map(|f| (f, 0o600)));
        for (path, want) in expected {
            assert_eq!(
                format!("{:o}", mode(&path)),
                format!("{want:o}"),
                "{stage}: {}",
                path.display()
            );
        }
    };
    {
        let weir = start(&config, &root, "first.log");
        system_prompt_runs(&weir, &up, "fill the cache").await;
        wait::until("the cache file", || async {
            let files = cache_files(&cache);
            wait::check(files.len() == 1, format!("{files:?}"))
        })
        .await;
        check("after the first start");
    }

    // As an older weir with the default umask left them.
    let entry = cache_files(&cache)[0].clone();
    for dir in [
        &data,
        &data.join("artifacts"),
        &cache,
        &entry.parent().unwrap().to_path_buf(),
    ] {
        chmod(dir, 0o755);
    }
    let mut loose = vec![data.join("jobs.redb"), data.join("ledger.redb"), entry];
    loose.extend(files(&data.join("artifacts"), ".cwasm"));
    for file in &loose {
        chmod(file, 0o644);
    }
    let weir = start(&config, &root, "second.log");
    check("after a restart");
    log_with(&root.join("second.log"), "permissions tightened").await;
    // Still the same state: the artifacts and the cache entry are used.
    assert_eq!(stage(&weir, "sys").await["artifact"], "cached");
    let again = post(
        weir.addr,
        "/v1/chat/completions",
        &chat("sys", "fill the cache"),
    )
    .await;
    assert_eq!(again.headers["x-weir-cache"], "hit");
}

#[tokio::test]
async fn temporary_files_orphaned_by_a_crash_are_swept_at_start() {
    let up = sim(&[]);
    let root = scratch("sweep");
    let data = root.join("data");
    let artifacts = data.join("artifacts");
    let shard = data.join("cache/ab");
    for dir in [&data, &artifacts, &data.join("cache"), &shard] {
        std::fs::create_dir_all(dir).unwrap();
        chmod(dir, 0o700);
    }
    let an_hour_ago = SystemTime::now() - Duration::from_secs(3600);
    let plant = |path: PathBuf| {
        let file = std::fs::File::create(&path).unwrap();
        file.set_modified(an_hour_ago).unwrap();
        path
    };
    let orphans = [
        plant(artifacts.join(format!("{}-0123456789abcdef.tmp123", "0".repeat(64)))),
        plant(shard.join(format!("ab{}.tmp4567", "1".repeat(62)))),
    ];
    let stranger = plant(artifacts.join("notes.txt"));
    let weir = start(&config(&up, &root, ""), &root, "weir.log");
    for orphan in &orphans {
        assert!(!orphan.exists(), "{} was swept", orphan.display());
    }
    assert!(stranger.exists(), "only weir's temporary files are removed");
    log_with(&root.join("weir.log"), "orphaned by an earlier crash").await;
    pii_redact_runs(&weir, &up).await;
}
