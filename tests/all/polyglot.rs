//! Stages in any language, black-box through the real binary: the example stage written in
//! Rust, Python (componentize-py) and JavaScript (jco's QuickJS), each built by `weir build`,
//! answers the same requests the same way through `weir serve` — a rewrite and a response
//! phase, a rejection, the stage cache, a `complete()` call — and is stopped by the same fuel,
//! deadline and memory caps. And a new user's path: `weir new stage` in each language, `weir
//! build`, `weir test-stage`, then served.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Value, json};
use tokio::sync::OnceCell;

use crate::procs::{Proc, post, serve, sim, sim_requests};

/// The languages, their route suffix and how their example is built.
const LANGS: [&str; 3] = ["rust", "python", "js"];

/// `<target>/debug/polyglot`: built stages and the artifact cache live across runs there, so
/// a Python stage compiles (about 20 s on 2 cores) once per version, not once per run.
fn scratch() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_weir"))
        .parent()
        .expect("the binary is in a directory")
        .join("polyglot")
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// `weir <args>`, which must succeed; its stdout.
fn weir(args: &[&str], dir: &Path) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(args)
        .current_dir(dir)
        .output()
        .expect("weir runs");
    assert!(
        out.status.success(),
        "weir {args:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The example stage of `lang`, built once per test process with `weir build`.
async fn example(lang: &str) -> PathBuf {
    static BUILT: OnceCell<Vec<PathBuf>> = OnceCell::const_new();
    let built = BUILT
        .get_or_init(|| async {
            tokio::task::spawn_blocking(|| {
                let out = scratch().join("examples");
                LANGS
                    .iter()
                    .map(|lang| {
                        if *lang == "rust" {
                            return PathBuf::from(weir_test_artifacts::EXAMPLE_RUST);
                        }
                        let wasm = out.join(format!("example-{lang}.wasm"));
                        let dir = workspace().join("examples/stages").join(lang);
                        let printed = weir(
                            &["build", dir.to_str().unwrap(), "-o", wasm.to_str().unwrap()],
                            &workspace(),
                        );
                        assert_eq!(printed.trim(), wasm.to_str().unwrap());
                        wasm
                    })
                    .collect()
            })
            .await
            .expect("the builds ran")
        })
        .await;
    built[LANGS.iter().position(|l| *l == lang).unwrap()].clone()
}

/// A weir with two routes per language: `ex-<lang>` under the default fuel and memory cap (a
/// 5 s deadline), granted the service `search` (the sim's search endpoint), and
/// `capped-<lang>` unmetered with a 100 ms deadline and no grant.
async fn fleet(up: &Proc) -> Proc {
    let data = scratch().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let mut config = format!(
        r#"
[server]
data_dir = "{}"

[sandbox]
artifact_key_file = "{}"
# Fuel and the memory cap, not the clock, decide /spin and /hog on `ex-<lang>`: QuickJS
# allocating to the cap took more than the default 200 ms beside a parallel build.
deadline_ms = 5000

[targets.up]
base_url = "http://{up}/v1"

[services.search]
urls = ["http://{up}"]
"#,
        data.display(),
        scratch().join("artifact.key").display(),
        up = up.addr
    );
    for lang in LANGS {
        let path = example(lang).await;
        config.push_str(&format!(
            r#"
[[routes]]
model = "ex-{lang}"
targets = ["up"]
max_attempts = 1
[[routes.stages]]
name = "example"
path = "{path}"
services = ["search"]

[[routes]]
model = "capped-{lang}"
targets = ["up"]
[[routes.stages]]
name = "example"
path = "{path}"
fuel = 0
deadline_ms = 100
"#,
            path = path.display()
        ));
    }
    serve(&config)
}

fn ask(model: &str, text: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": text}]})
}

fn content(answer: &Value) -> &str {
    answer["choices"][0]["message"]["content"]
        .as_str()
        .unwrap_or_default()
}

fn code(answer: &Value) -> &str {
    answer["error"]["code"].as_str().unwrap_or_default()
}

#[tokio::test]
async fn the_example_stage_behaves_the_same_in_rust_python_and_javascript() {
    let up = sim(&[]);
    let weir = fleet(&up).await;
    for lang in LANGS {
        let route = format!("ex-{lang}");
        let say = |text: &str| {
            let body = ask(&route, text);
            async move { post(weir.addr, "/v1/chat/completions", &body).await }
        };

        // A rewrite (the greeting first) and a response phase (the suffix).
        let answer = say("hello there").await;
        assert_eq!(answer.status, 200, "{lang}: {:?}", answer.json());
        let body = answer.json();
        assert!(
            content(&body).starts_with("sim reply to: hello there")
                && content(&body).ends_with(" [checked]"),
            "{lang}: {body}"
        );
        let sent = &sim_requests(&up, 1).await[0]["body"];
        assert_eq!(
            sent["messages"][0],
            json!({"role": "system", "content": "Be brief."}),
            "{lang}: {sent}"
        );
        assert_eq!(sent["messages"].as_array().map(Vec::len), Some(2));

        // A rejection with the stage's status and code.
        let answer = say("Is this FoRbIdDeN?").await;
        assert_eq!(answer.status, 403, "{lang}");
        assert_eq!(code(&answer.json()), "forbidden_word", "{lang}");

        // The stage cache, across requests (and instances).
        for n in 1..=2 {
            let answer = say("/count").await;
            assert_eq!(answer.status, 200, "{lang}");
            assert_eq!(content(&answer.json()), format!("count: {n}"), "{lang}");
        }

        // `complete()` through the host's LLM step.
        let answer = say("/summarize the quick brown fox").await;
        assert_eq!(answer.status, 200, "{lang}: {:?}", answer.json());
        assert!(
            content(&answer.json()).starts_with("summary: sim reply to: the quick brown fox"),
            "{lang}: {:?}",
            answer.json()
        );
        let sent = &sim_requests(&up, 1).await[0]["body"];
        assert_eq!(sent["messages"][0]["content"], "Summarize in one line.");

        // A granted service, through the SDK's `service` helpers; the capped route has no
        // grant, so the same call is denied there and nothing is sent.
        let answer = say("/search").await;
        assert_eq!(answer.status, 200, "{lang}: {:?}", answer.json());
        assert!(
            content(&answer.json()).starts_with("search: 200 sim passage 1 for "),
            "{lang}: {:?}",
            answer.json()
        );
        let denied = post(
            weir.addr,
            "/v1/chat/completions",
            &ask(&format!("capped-{lang}"), "/search"),
        )
        .await;
        assert_eq!(
            content(&denied.json()),
            "search: error denied",
            "{lang}: {:?}",
            denied.json()
        );

        // The caps: fuel stops a loop, the memory cap an allocation, the deadline an
        // unmetered loop; the process keeps serving after each.
        let answer = say("/spin").await;
        assert_eq!(
            (answer.status.as_u16(), code(&answer.json())),
            (500, "fuel_exhausted"),
            "{lang}"
        );
        let answer = say("/hog").await;
        assert_eq!(
            (answer.status.as_u16(), code(&answer.json())),
            (500, "memory_limit"),
            "{lang}"
        );
        let capped = ask(&format!("capped-{lang}"), "/spin");
        let answer = post(weir.addr, "/v1/chat/completions", &capped).await;
        assert_eq!(
            (answer.status.as_u16(), code(&answer.json())),
            (500, "deadline_exceeded"),
            "{lang}"
        );
        assert_eq!(say("hello again").await.status, 200, "{lang}");
    }
    drop(weir);

    // A misspelled config key is refused at load, naming the file, line and key, in every
    // language (each stage declares its keys).
    for lang in LANGS {
        let path = example(lang).await;
        let config = crate::procs::scratch_config(&format!(
            "[server]\ndata_dir = \"{}\"\n[sandbox]\nartifact_key_file = \"{}\"\n\
             [targets.up]\nbase_url = \"http://{}/v1\"\n[[routes]]\nmodel = \"m\"\n\
             targets = [\"up\"]\n[[routes.stages]]\nname = \"example\"\npath = \"{}\"\n\
             config = {{ greeting = \"hi\", greting = \"typo\" }}\n",
            scratch().join("data").display(),
            scratch().join("artifact.key").display(),
            up.addr,
            path.display()
        ));
        let out = tokio::task::spawn_blocking({
            let config = config.clone();
            move || {
                Command::new(env!("CARGO_BIN_EXE_weir"))
                    .args(crate::procs::serve_args(&config))
                    .env("XDG_STATE_HOME", crate::procs::state_home())
                    .output()
                    .expect("weir runs")
            }
        })
        .await
        .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{lang}: {stderr}");
        let expected = format!(
            "{}:13:39: routes[0].stages[0].config.greting: stage example-{lang} 0.1.0 has no \
             config key `greting`; its keys: greeting, suffix, summary_model",
            config.display()
        );
        assert!(stderr.contains(&expected), "{lang}: {stderr}");
    }
}

#[tokio::test]
async fn a_new_stage_in_each_language_scaffolds_builds_tests_and_serves() {
    let root = std::env::temp_dir().join(format!("weir-new-stage-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).unwrap();
    // The Rust stage builds in a target directory of its own that survives runs.
    let cargo_target = scratch().join("new-rust-target");
    let mut routes = String::new();
    for (lang, name) in [
        ("rust", "rs-greet"),
        ("python", "py-greet"),
        ("js", "js-greet"),
    ] {
        // The README's commands, as a new user types them.
        let dir = weir(&["new", "stage", name, "--lang", lang], &root);
        let dir = root.join(dir.trim());
        assert!(dir.join("README.md").is_file(), "{lang}");
        let built = tokio::task::spawn_blocking({
            let dir = dir.clone();
            let target = cargo_target.clone();
            move || {
                let out = Command::new(env!("CARGO_BIN_EXE_weir"))
                    .args(["build", "."])
                    .current_dir(&dir)
                    .env("CARGO_TARGET_DIR", target)
                    .output()
                    .expect("weir build runs");
                assert!(
                    out.status.success(),
                    "weir build ({dir:?}): {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
            }
        })
        .await
        .unwrap();
        assert_eq!(built, dir.join("dist").join(format!("{name}.wasm")));

        let printed = weir(
            &[
                "test-stage",
                built.to_str().unwrap(),
                "--config",
                "greeting=Answer in French.",
            ],
            &dir,
        );
        assert!(
            printed.contains("on-request: next (fuel "),
            "{lang}: {printed}"
        );
        assert!(printed.contains("Answer in French."), "{lang}: {printed}");
        // Every language's scaffold builds a weir:stage@0.2 component: its request phase hands
        // its state to the host.
        assert!(
            printed.contains("bytes of state handed to the host"),
            "{lang}: {printed}"
        );
        routes.push_str(&format!(
            "\n[[routes]]\nmodel = \"{lang}\"\ntargets = [\"up\"]\n[[routes.stages]]\n\
             name = \"{name}\"\npath = \"{}\"\nconfig = {{ greeting = \"Be {lang}.\" }}\n",
            built.display()
        ));
    }

    let up = sim(&[]);
    let weir = serve(&format!(
        "[targets.up]\nbase_url = \"http://{}/v1\"\n{routes}",
        up.addr
    ));
    for lang in LANGS {
        let answer = post(weir.addr, "/v1/chat/completions", &ask(lang, "hi")).await;
        assert_eq!(answer.status, 200, "{lang}: {:?}", answer.json());
        let sent = &sim_requests(&up, 1).await[0]["body"];
        assert_eq!(sent["messages"][0]["content"], format!("Be {lang}."));
    }
    let _ = std::fs::remove_dir_all(&root);
}
