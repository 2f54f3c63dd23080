//! Hot reload through the real binary: plugin files replaced (atomically, in pieces, with
//! invalid bytes) serve their new version or keep the old one (under steady load in
//! `stress::reload`); config edits swap routes and keep what did not change;
//! `POST /admin/reload` and SIGHUP reload too.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use http::Method;
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::procs::{Proc, call, get, post, serve_file, sim};
use crate::wait;

/// A fresh directory for one test's plugin and config files.
pub(crate) fn workdir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("weir-reload-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Replaces `path` with `bytes` atomically (write a temporary file, rename it over).
pub(crate) fn replace(path: &Path, bytes: &[u8]) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

pub(crate) fn wasm(path: &str) -> Vec<u8> {
    std::fs::read(path).unwrap()
}

/// The `x-weir-stages` label of stage `s` at these bytes.
pub(crate) fn label(bytes: &[u8]) -> String {
    format!("s@{}", &blake3::hash(bytes).to_hex()[..8])
}

pub(crate) fn config(up: &Proc, plugin: &Path, extra: &str) -> String {
    format!(
        r#"
[targets.up]
base_url = "http://{}/v1"

[[routes]]
model = "demo"
targets = ["up"]

[[routes.stages]]
name = "s"
path = "{}"
{extra}
"#,
        up.addr,
        plugin.display()
    )
}

/// `weir serve` with one route whose stage `s` is a plugin file in a directory of its own,
/// over one `weir sim`; the directory goes when the host does.
struct Host {
    weir: Proc,
    _up: Proc,
    dir: PathBuf,
    plugin: PathBuf,
    path: PathBuf,
}

impl Host {
    /// Starts with the plugin file holding `stage` and `extra` under the stage's table.
    fn start(name: &str, stage: &[u8], extra: &str) -> Host {
        let up = sim(&[]);
        let dir = workdir(name);
        let plugin = dir.join("stage.wasm");
        std::fs::write(&plugin, stage).unwrap();
        let path = dir.join("weir.toml");
        std::fs::write(&path, config(&up, &plugin, extra)).unwrap();
        Host {
            weir: serve_file(&path),
            _up: up,
            dir,
            plugin,
            path,
        }
    }

    /// The config with `extra` under the stage's table.
    fn config(&self, extra: &str) -> String {
        config(&self._up, &self.plugin, extra)
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub(crate) fn chat() -> Value {
    json!({"model": "demo", "messages": [{"role": "user", "content": "hi"}]})
}

/// `POST /admin/reload` on `weir`'s admin listener.
async fn admin_reload(weir: &Proc) -> crate::sim::client::Answer {
    call(
        weir.admin.unwrap(),
        Method::POST,
        "/admin/reload",
        &[],
        None,
    )
    .await
}

async fn stages_header(weir: &Proc) -> String {
    let answer = post(weir.addr, "/v1/chat/completions", &chat()).await;
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    answer.headers["x-weir-stages"]
        .to_str()
        .unwrap()
        .to_string()
}

/// Waits until requests run `expected`; returns how long that took.
async fn until_serving(weir: &Proc, expected: &str) -> Duration {
    let started = Instant::now();
    wait::until(&format!("{expected} to serve"), || async {
        let serving = stages_header(weir).await;
        wait::check(serving == expected, serving)
    })
    .await;
    started.elapsed()
}

pub(crate) async fn admin_stages(weir: &Proc) -> Value {
    get(weir.admin.unwrap(), "/admin/stages").await.json()
}

/// Waits until `/admin/stages` satisfies `done`.
pub(crate) async fn until_admin(weir: &Proc, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    wait::until(what, || async {
        let stages = admin_stages(weir).await;
        if done(&stages) {
            Ok(stages)
        } else {
            Err(stages)
        }
    })
    .await
}

#[tokio::test]
async fn a_replaced_plugin_serves_its_new_version_and_a_bad_file_keeps_the_old_one() {
    let (a, b) = (
        wasm(weir_test_artifacts::PASSTHROUGH),
        wasm(weir_test_artifacts::CHAOS),
    );
    let host = Host::start("replace", &a, "");
    let (weir, plugin) = (&host.weir, &host.plugin);
    assert_eq!(stages_header(weir).await, label(&a));
    let before = admin_stages(weir).await;
    assert_eq!(before["generation"], 1);
    let stage = &before["stages"][0];
    assert_eq!(stage["path"], plugin.display().to_string());
    assert_eq!(stage["version"], blake3::hash(&a).to_hex().to_string());
    assert!(stage["loaded_at"].as_str().unwrap().ends_with('Z'));
    assert!(stage["last_error"].is_null());

    replace(plugin, &b);
    let latency = until_serving(weir, &label(&b)).await;
    eprintln!("reload latency (file renamed -> new version serving): {latency:?}");

    // Not a component: rejected with a reason, the previous version keeps serving.
    replace(plugin, b"\0asm\x01\0\0\0");
    let stages = until_admin(weir, "the core module is reported", |s| {
        s["stages"][0]["last_error"].is_string()
    })
    .await;
    let error = stages["stages"][0]["last_error"].as_str().unwrap();
    assert!(error.contains("core WebAssembly module"), "{error}");
    assert_eq!(
        stages["stages"][0]["version"],
        blake3::hash(&b).to_hex().to_string()
    );
    assert_eq!(stages_header(weir).await, label(&b));
    assert!(stages["reloads"]["failed"].as_u64().unwrap() >= 1);
    let metrics = get(weir.admin.unwrap(), "/metrics").await;
    let text = std::str::from_utf8(&metrics.body).unwrap();
    assert!(
        text.lines()
            .any(|l| l.starts_with("weir_reloads_total{outcome=\"failed\"}")),
        "{text}"
    );

    // POST /admin/reload says the same.
    let answer = admin_reload(weir).await;
    assert_eq!(answer.status, 200);
    let outcome = answer.json();
    assert_eq!(outcome["ok"], false, "{outcome}");
    assert_eq!(outcome["swapped"], false);
    assert_eq!(outcome["trigger"], "admin");
    assert!(
        outcome["rejected"][0]["error"]
            .as_str()
            .unwrap()
            .contains("core")
    );

    // The bad write undone (the serving version's bytes back): nothing to swap, and the
    // error is gone.
    replace(plugin, &b);
    until_admin(weir, "the error is cleared by the serving bytes", |s| {
        s["stages"][0]["last_error"].is_null()
    })
    .await;
    assert_eq!(stages_header(weir).await, label(&b));
    replace(plugin, b"\0asm\x01\0\0\0");
    until_admin(weir, "the core module is reported again", |s| {
        s["stages"][0]["last_error"].is_string()
    })
    .await;

    // The good file again: served, the error cleared.
    replace(plugin, &a);
    until_serving(weir, &label(&a)).await;
    let stages = until_admin(weir, "the error is cleared", |s| {
        s["stages"][0]["last_error"].is_null()
    })
    .await;
    assert!(stages["generation"].as_u64().unwrap() >= 3);
}

/// Third probe, B1 and B2: a plugin file replaced by a link to `/dev/zero` was read until the
/// kernel killed weir, and one replaced by a link to a FIFO blocked that reload and every one
/// after it. Both are refused at once with the reason, and the next good file serves.
#[tokio::test]
async fn a_plugin_linked_to_a_device_or_a_fifo_is_refused_and_reloads_go_on() {
    let (a, b) = (
        wasm(weir_test_artifacts::PASSTHROUGH),
        wasm(weir_test_artifacts::CHAOS),
    );
    let host = Host::start("special", &a, "");
    let (weir, plugin) = (&host.weir, &host.plugin);
    let fifo = host.dir.join("fifo");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    for target in [Path::new("/dev/zero"), fifo.as_path()] {
        let link = host.dir.join("link.tmp");
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(target, &link).unwrap();
        std::fs::rename(&link, plugin).unwrap();
        until_admin(weir, "the special file is refused", |s| {
            s["stages"][0]["last_error"]
                .as_str()
                .is_some_and(|e| e.contains("not a regular file"))
        })
        .await;
        assert_eq!(
            stages_header(weir).await,
            label(&a),
            "the old version serves"
        );
        // The admin reload answers (it waited on the FIFO's writer for good).
        let answer = admin_reload(weir).await;
        assert_eq!(answer.status, 200, "{:?}", answer.body);
        // Put the good file back before the next, so each error is its own.
        replace(plugin, &a);
        until_admin(weir, "the error is cleared", |s| {
            s["stages"][0]["last_error"].is_null()
        })
        .await;
    }
    replace(plugin, &b);
    until_serving(weir, &label(&b)).await;

    // B3: a config naming a FIFO as its price file froze every listener while its reload
    // waited for a writer. Refused at once; the old config serves.
    let priced = format!(
        "[cost]\nprices_file = \"{}\"\n{}",
        fifo.display(),
        host.config("")
    );
    replace(&host.path, priced.as_bytes());
    let answer = admin_reload(weir).await;
    assert_eq!(answer.status, 422, "{:?}", answer.body);
    let outcome = answer.json();
    assert_eq!(outcome["ok"], false, "{outcome}");
    let error = outcome["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("cost.prices_file") && error.contains("not a regular file"),
        "{error}"
    );
    assert_eq!(stages_header(weir).await, label(&b));
}

#[tokio::test]
async fn a_truncated_write_then_the_complete_file_ends_with_the_complete_version() {
    let (a, b) = (
        wasm(weir_test_artifacts::PASSTHROUGH),
        wasm(weir_test_artifacts::CHAOS),
    );
    let host = Host::start("truncated", &a, "");
    let (weir, plugin) = (&host.weir, &host.plugin);
    assert_eq!(stages_header(weir).await, label(&a));
    // Written in place in two pieces, with a pause in between long enough for a reload to
    // read the first piece alone.
    let mut file = std::fs::File::create(plugin).unwrap();
    file.write_all(&b[..b.len() / 2]).unwrap();
    file.flush().unwrap();
    until_admin(weir, "the truncated file is rejected", |s| {
        s["stages"][0]["last_error"].is_string()
    })
    .await;
    assert_eq!(
        stages_header(weir).await,
        label(&a),
        "the old version serves"
    );
    file.write_all(&b[b.len() / 2..]).unwrap();
    file.flush().unwrap();
    drop(file);
    until_serving(weir, &label(&b)).await;
}

/// Adds a route `other` to `host`'s config and waits until it serves.
async fn add_route_other(host: &Host) {
    let extra = "[[routes]]\nmodel = \"other\"\ntargets = [\"up\"]\n";
    replace(&host.path, host.config(extra).as_bytes());
    let other = json!({"model": "other", "messages": [{"role": "user", "content": "hi"}]});
    wait::until("the new route to serve", || async {
        let answer = post(host.weir.addr, "/v1/chat/completions", &other).await;
        wait::check(answer.status == 200, answer.status)
    })
    .await;
}

#[tokio::test]
async fn a_config_edit_swaps_routes_and_a_bad_edit_keeps_the_old_config() {
    let host = Host::start("config", &wasm(weir_test_artifacts::PASSTHROUGH), "");
    let (weir, path) = (&host.weir, &host.path);
    let other = json!({"model": "other", "messages": [{"role": "user", "content": "hi"}]});
    assert_eq!(
        post(weir.addr, "/v1/chat/completions", &other).await.status,
        404
    );

    // A bad edit: reported, nothing changes.
    replace(
        path,
        format!("{}\n[[routes]]\nmodel = \"other\"\n", host.config("")).as_bytes(),
    );
    let stages = until_admin(weir, "the config error is reported", |s| {
        s["reloads"]["last_config_error"].is_string()
    })
    .await;
    let error = stages["reloads"]["last_config_error"].as_str().unwrap();
    assert!(
        error.contains("weir.toml:") && error.contains("targets"),
        "{error}"
    );
    assert_eq!(
        post(weir.addr, "/v1/chat/completions", &chat())
            .await
            .status,
        200
    );

    // A good edit: the new route serves, the old one too.
    add_route_other(&host).await;
    assert_eq!(
        post(weir.addr, "/v1/chat/completions", &chat())
            .await
            .status,
        200
    );
    let stages = admin_stages(weir).await;
    assert!(stages["reloads"]["last_config_error"].is_null());
    let models = get(weir.addr, "/v1/models").await.json();
    assert_eq!(models["data"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn a_misspelled_stage_config_key_on_reload_is_refused_and_the_old_config_serves() {
    // system-prompt declares its keys (`config-keys`): `promt` is not one of them.
    let good = "config = { prompt = \"Be brief.\" }";
    let host = Host::start("keys", &wasm(weir_test_artifacts::SYSTEM_PROMPT), good);
    let (weir, path) = (&host.weir, &host.path);
    assert_eq!(
        post(weir.addr, "/v1/chat/completions", &chat())
            .await
            .status,
        200
    );

    replace(
        path,
        host.config("config = { promt = \"Be terse.\" }").as_bytes(),
    );
    let stages = until_admin(weir, "the config error is reported", |s| {
        s["reloads"]["last_config_error"].is_string()
    })
    .await;
    let error = stages["reloads"]["last_config_error"].as_str().unwrap();
    let at = format!("{}:12:20: ", path.display());
    assert!(
        error.contains(&at)
            && error.contains("routes[0].stages[0].config.promt: stage system-prompt")
            && error.contains(
                "has no config key `promt`; its keys: default_value, max_value_chars, missing, mode, prompt"
            ),
        "{error}"
    );
    // The old config serves: the stage still injects its prompt.
    let answer = post(weir.addr, "/v1/chat/completions", &chat()).await;
    assert_eq!(answer.status, 200);
    let sent = &crate::procs::sim_requests(&host._up, 1).await[0]["body"];
    assert_eq!(sent["messages"][0]["content"], "Be brief.");

    replace(
        path,
        host.config("config = { prompt = \"Be terse.\" }")
            .as_bytes(),
    );
    until_admin(weir, "the good edit to load", |s| {
        s["reloads"]["last_config_error"].is_null()
    })
    .await;
    wait::until("the new prompt to serve", || async {
        post(weir.addr, "/v1/chat/completions", &chat()).await;
        let sent = crate::procs::sim_requests(&host._up, 1).await;
        let prompt = sent[0]["body"]["messages"][0]["content"].clone();
        wait::check(prompt == "Be terse.", prompt)
    })
    .await;
}

#[tokio::test]
async fn sighup_and_the_admin_endpoint_reload() {
    let host = Host::start("sighup", &wasm(weir_test_artifacts::PASSTHROUGH), "");
    let weir = &host.weir;
    let attempted = |s: &Value| s["reloads"]["attempted"].as_u64().unwrap();
    let before = attempted(&admin_stages(weir).await);
    let status = std::process::Command::new("kill")
        .args(["-HUP", &weir.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    until_admin(weir, "SIGHUP reloads", |s| attempted(s) > before).await;
    // Nothing changed: nothing swapped.
    assert_eq!(admin_stages(weir).await["generation"], 1);
    let answer = call(
        weir.admin.unwrap(),
        Method::POST,
        "/admin/reload",
        &[],
        Some(Bytes::new()),
    )
    .await;
    let outcome = answer.json();
    assert_eq!(outcome["ok"], true, "{outcome}");
    assert_eq!(outcome["swapped"], false);
    assert_eq!(
        post(weir.addr, "/v1/chat/completions", &chat())
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn a_restart_loads_compiled_stages_from_the_artifact_cache() {
    let up = sim(&[]);
    let dir = workdir("artifacts");
    let plugin = dir.join("stage.wasm");
    std::fs::write(&plugin, wasm(weir_test_artifacts::CHAOS)).unwrap();
    let path = dir.join("weir.toml");
    let text = format!(
        "[server]\ndata_dir = \"{}\"\n{}",
        dir.join("data").display(),
        config(&up, &plugin, "")
    );
    std::fs::write(&path, text).unwrap();
    let weir = serve_file(&path);
    assert_eq!(
        admin_stages(&weir).await["stages"][0]["artifact"],
        "compiled"
    );
    drop(weir);
    let weir = serve_file(&path);
    let stages = admin_stages(&weir).await;
    assert_eq!(stages["stages"][0]["artifact"], "cached", "{stages}");
    assert_eq!(
        stages_header(&weir).await,
        label(&wasm(weir_test_artifacts::CHAOS))
    );
}

/// End to end with real file events; the exact rule (noise never resets the debounce, so the
/// reload comes `DEBOUNCE` after the plugin's write, not `MAX_DELAY`) is asserted on paused
/// time in `app::reload::tests`, because `MAX_DELAY` is under any bound a loaded machine allows.
#[tokio::test]
async fn other_files_written_nonstop_beside_a_plugin_never_delay_its_reload() {
    let (a, b) = (
        wasm(weir_test_artifacts::PASSTHROUGH),
        wasm(weir_test_artifacts::CHAOS),
    );
    let host = Host::start("noise", &a, "");
    let (weir, plugin) = (&host.weir, &host.plugin);
    // A log file in the same directory, appended every 5 ms for the whole test.
    let noise = host.dir.join("noise.log");
    let writer = tokio::spawn(async move {
        let mut file = std::fs::File::create(&noise).unwrap();
        loop {
            let _ = writeln!(file, "a log line");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
    replace(plugin, &b);
    // A generous bound for a loaded machine: the reload itself compiles the new stage.
    let latency = until_serving(weir, &label(&b)).await;
    assert!(latency < Duration::from_secs(30), "{latency:?}");
    writer.abort();
}

#[tokio::test]
async fn a_config_reload_keeps_breakers_and_spend_of_what_did_not_change() {
    let broken = sim(&["--error-rate", "1.0", "--error-status", "503"]);
    let up = sim(&[]);
    let dir = workdir("state");
    let key_hash = blake3::Hash::from(weir::config::hash_key("sk-team")).to_hex();
    let text = |extra: &str| {
        format!(
            r#"
[targets.broken]
base_url = "http://{}/v1"
breaker = {{ consecutive_failures = 2, ejection_ms = 60000 }}

[targets.up]
base_url = "http://{}/v1"

[[routes]]
model = "demo"
targets = ["broken", "up"]

[prices.demo]
input_per_mtok = 1.0
output_per_mtok = 1.0

[[keys]]
name = "team"
hash = "blake3:{key_hash}"
daily_budget_usd = 10.0
{extra}
"#,
            broken.addr, up.addr
        )
    };
    let path = dir.join("weir.toml");
    std::fs::write(&path, text("")).unwrap();
    let weir = serve_file(&path);
    let ask = || async {
        call(
            weir.addr,
            Method::POST,
            "/v1/chat/completions",
            &[("authorization", "Bearer sk-team")],
            Some(Bytes::from(chat().to_string())),
        )
        .await
    };
    for _ in 0..3 {
        assert_eq!(ask().await.status, 200);
    }
    let targets = |weir: &Proc| {
        let admin = weir.admin.unwrap();
        async move { get(admin, "/admin/targets").await.json() }
    };
    let before = targets(&weir).await;
    assert_eq!(before["targets"][0]["breaker"], "open", "{before}");
    let spent = |s: &Value| s["keys"][0]["spent_today_usd"].as_f64().unwrap();
    let spend_before = get(weir.admin.unwrap(), "/admin/spend").await.json();
    assert!(spent(&spend_before) > 0.0);

    // A new route: the targets and the key are unchanged, so their live state carries on.
    replace(
        &path,
        text("[[routes]]\nmodel = \"other\"\ntargets = [\"up\"]\n").as_bytes(),
    );
    until_admin(&weir, "the new config serves", |s| s["generation"] == 2).await;
    let after = targets(&weir).await;
    assert_eq!(after["targets"][0]["breaker"], "open", "{after}");
    assert_eq!(after["targets"][0]["trips"], before["targets"][0]["trips"]);
    let spend_after = get(weir.admin.unwrap(), "/admin/spend").await.json();
    assert_eq!(spent(&spend_after), spent(&spend_before));
}

#[tokio::test]
async fn a_reload_that_needs_a_bigger_instance_pool_is_refused_with_the_reason() {
    let host = Host::start(
        "pool",
        &wasm(weir_test_artifacts::PASSTHROUGH),
        "memory_limit_mib = 16",
    );
    let (weir, path) = (&host.weir, &host.path);
    replace(path, host.config("memory_limit_mib = 512").as_bytes());
    let stages = until_admin(weir, "the refusal is reported", |s| {
        s["reloads"]["last_config_error"].is_string()
    })
    .await;
    let error = stages["reloads"]["last_config_error"].as_str().unwrap();
    assert!(error.contains("needs a restart"), "{error}");
    assert_eq!(stages["generation"], 1);
    assert_eq!(
        post(weir.addr, "/v1/chat/completions", &chat())
            .await
            .status,
        200
    );
}

/// Fourth probe, C5: a reload that swapped in a config edit and rejected a stage file beside
/// it counted as both ok and failed (ok + failed passed attempted, and the metric had no ok
/// series); it is one failed reload.
#[tokio::test]
async fn a_reload_that_swaps_a_config_in_but_rejects_a_file_counts_once_as_failed() {
    let host = Host::start("partial", &wasm(weir_test_artifacts::PASSTHROUGH), "");
    let (weir, plugin) = (&host.weir, &host.plugin);
    let before = admin_stages(weir).await["reloads"].clone();
    replace(plugin, b"\0asm\x01\0\0\0");
    until_admin(weir, "the bad file is reported", |s| {
        s["stages"][0]["last_error"].is_string()
    })
    .await;
    add_route_other(&host).await;
    let after = admin_stages(weir).await["reloads"].clone();
    let n = |v: &Value, k: &str| v[k].as_u64().unwrap();
    assert_eq!(n(&after, "ok"), n(&before, "ok"), "{after}");
    assert!(n(&after, "failed") > n(&before, "failed"), "{after}");
    assert!(
        n(&after, "ok") + n(&after, "failed") <= n(&after, "attempted"),
        "{after}"
    );
}
