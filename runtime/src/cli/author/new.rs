//! `weir new stage NAME --lang rust|python|js`: a stage directory that builds with
//! `weir build`, runs with `weir test-stage` and serves with `weir serve`, with a README that
//! says so. The stage it starts with puts a configurable system message first and logs a line:
//! small enough to read in a minute, real enough to change.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use super::{Lang, sdk};

/// Arguments of `weir new`.
#[derive(Debug, clap::Args)]
pub struct NewArgs {
    /// What to make (only `stage` for now).
    #[arg(value_parser = ["stage"])]
    pub what: String,
    /// The stage's name: lowercase letters, digits and `-`, starting with a letter. Also the
    /// directory made (under `--dir`).
    pub name: String,
    /// The language.
    #[arg(long, value_enum)]
    pub lang: Lang,
    /// Where to make the stage's directory.
    #[arg(long, default_value = ".")]
    pub dir: PathBuf,
}

/// Makes the stage directory; prints its path.
pub fn run(args: NewArgs) -> ExitCode {
    match scaffold(&args) {
        Ok(dir) => {
            println!("{}", dir.display());
            eprintln!(
                "==> made {} ({:?}); next: `weir build {}` then `weir test-stage {}/dist/{}.wasm` \
                 (its README has the rest)",
                dir.display(),
                args.lang,
                dir.display(),
                dir.display(),
                args.name
            );
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::FAILURE
        }
    }
}

fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.ends_with('-')
}

fn scaffold(args: &NewArgs) -> Result<PathBuf, String> {
    let name = &args.name;
    if !valid_name(name) {
        return Err(format!(
            "{name:?}: a stage name is 1-64 lowercase letters, digits and `-`, starting with a \
             letter (for example `tone-guard`)"
        ));
    }
    let dir = args.dir.join(name);
    if dir.exists() {
        return Err(format!("{}: already exists", dir.display()));
    }
    let files: Vec<(&str, String)> = match args.lang {
        Lang::Rust => {
            let sdk = sdk::materialise().map_err(|err| format!("cannot write the SDK: {err}"))?;
            rust(name, &sdk.join("plugin-sdk"))
        }
        Lang::Python => python(name),
        Lang::Js => js(name),
    };
    for (path, text) in files {
        let file = dir.join(path);
        if let Some(parent) = file.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|err| format!("{}: {err}", parent.display()))?;
        }
        std::fs::write(&file, text).map_err(|err| format!("{}: {err}", file.display()))?;
    }
    Ok(dir)
}

/// The README shared by the three languages: build, test, serve.
fn readme(name: &str, lang: &str, source: &str) -> String {
    format!(
        r#"# {name}

A weir pipeline stage in {lang}, made by `weir new stage {name}`. It puts a system message
(its `greeting` config key) first in every request and logs one line. Change `{source}`.

```sh
weir build .                                   # -> dist/{name}.wasm
weir test-stage dist/{name}.wasm               # both phases on a sample request, with fuel and time
weir test-stage dist/{name}.wasm --request req.json --config greeting="Answer in French."
weir check dist/{name}.wasm                    # what the host sees when it loads the file
```

Serve it: add the stage to a route of your `weir.toml` and start `weir serve --config weir.toml`
(weir reloads the file when you rebuild it):

```toml
[[routes.stages]]
name = "{name}"
path = "/absolute/path/to/dist/{name}.wasm"
config = {{ greeting = "Be brief." }}
# fuel = 100000000, deadline_ms = 200, memory_limit_mib = 64: set them from what
# `weir test-stage` prints, with headroom.
```
"#
    )
}

fn rust(name: &str, sdk: &Path) -> Vec<(&'static str, String)> {
    let sdk = toml::Value::String(sdk.to_string_lossy().into_owned());
    vec![
        (
            "Cargo.toml",
            format!(
                r#"[package]
name = "{name}"
version = "0.1.0"
edition = "2024"

[lib]
crate-type = ["cdylib"]

[dependencies]
weir-sdk = {{ path = {sdk} }}
# The stage value travels from on_request to on_response as JSON (the host keeps no instance
# while the model answers): it derives Serialize and Deserialize.
serde = {{ version = "1", features = ["derive"] }}

# A stage is its own workspace, even inside another one.
[workspace]

[profile.release]
opt-level = 3
debug = false
"#
            ),
        ),
        (
            // The 64 KiB stack keeps a stage's pages within what the host keeps resident
            // between instances (no page faults per request).
            ".cargo/config.toml",
            "[target.wasm32-wasip2]\nrustflags = [\"-C\", \"link-arg=-zstack-size=65536\"]\n"
                .to_string(),
        ),
        (".gitignore", "/target\n/dist\n".to_string()),
        (
            "src/lib.rs",
            format!(
                r#"//! {name}: puts the `greeting` from the stage config first in every request.

use weir_sdk::{{ChatRequest, Message, RequestContext, RequestOutcome, Stage, StageError, StageInfo}};

#[derive(Default, serde::Serialize, serde::Deserialize)]
struct Greeter;

// The phases are the methods this impl defines (here: on_request).
#[weir_sdk::stage]
impl Stage for Greeter {{
    // Any other key in the stage's config table (a misspelling) is refused at load.
    const CONFIG_KEYS: Option<&'static [&'static str]> = Some(&["greeting"]);

    fn info() -> StageInfo {{
        StageInfo::new("{name}", env!("CARGO_PKG_VERSION"))
    }}

    fn on_request(
        &mut self,
        ctx: &RequestContext,
        mut request: ChatRequest,
    ) -> Result<RequestOutcome, StageError> {{
        let greeting: String = weir_sdk::config::get_or("greeting", "Be brief.".to_string())?;
        request.messages.insert(0, Message::system(greeting));
        weir_sdk::info!("greeted {{}}", ctx.request_id);
        Ok(RequestOutcome::Next(request))
    }}
}}

weir_sdk::export_stage!(Greeter);
"#
            ),
        ),
        ("README.md", readme(name, "Rust", "src/lib.rs")),
    ]
}

fn python(name: &str) -> Vec<(&'static str, String)> {
    vec![
        (".gitignore", "/dist\n__pycache__/\n".to_string()),
        (
            "app.py",
            format!(
                r#""""{name}: puts the `greeting` from the stage config first in every request."""

import weir_stage as weir


class Greeter(weir.Stage):
    name = "{name}"
    version = "0.1.0"
    # Any other key in the stage's config table (a misspelling) is refused at load.
    config_keys = ["greeting"]

    # Phases are the methods you define: this stage has a request phase only.
    def on_request(self, ctx, request):
        greeting = weir.config.get("greeting", "Be brief.")
        request.messages.insert(0, weir.Message.system(greeting))
        weir.log.info(f"greeted {{ctx.request_id}}")
        return weir.next(request)


Handler = weir.export(Greeter)
"#
            ),
        ),
        ("README.md", readme(name, "Python", "app.py")),
    ]
}

fn js(name: &str) -> Vec<(&'static str, String)> {
    vec![
        (".gitignore", "/dist\nnode_modules/\n".to_string()),
        (
            "stage.js",
            format!(
                r#"// {name}: puts the `greeting` from the stage config first in every request.
import {{ defineStage, Message, config, log, next }} from 'weir-stage';

// Phases are the functions you define: this stage has a request phase only.
export const handler = defineStage({{
  name: '{name}',
  version: '0.1.0',
  // Any other key in the stage's config table (a misspelling) is refused at load.
  configKeys: ['greeting'],
  onRequest(ctx, request) {{
    request.messages.unshift(Message.system(config.get('greeting', 'Be brief.')));
    log.info(`greeted ${{ctx.requestId}}`);
    return next(request);
  }},
}});
"#
            ),
        ),
        ("README.md", readme(name, "JavaScript", "stage.js")),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stage_names_are_checked() {
        for good in ["a", "tone-guard", "pii2"] {
            assert!(valid_name(good), "{good}");
        }
        for bad in [
            "",
            "Tone",
            "2fa",
            "a_b",
            "a-",
            "a b",
            "../x",
            &"a".repeat(65),
        ] {
            assert!(!valid_name(bad), "{bad}");
        }
    }
}
