//! Stage authoring from zero: `weir new stage NAME --lang rust|python|js` scaffolds a
//! buildable, testable stage in a directory of its own, and `weir build [DIR]` turns a stage
//! directory (Rust, Python or JavaScript/TypeScript, recognised by its files) into a
//! `weir:stage` component.
//!
//! The SDKs and the WIT come from the binary itself ([`sdk`]); the toolchains for the other
//! languages come from the registries, pinned, into `$WEIR_TOOLS` (default
//! `~/.cache/weir-tools`) the first time a build needs them: componentize-py for Python, jco
//! (QuickJS backend) and rolldown for JavaScript and TypeScript.

pub(super) mod new;
mod sdk;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use tokio::time::Instant;

pub use new::NewArgs;

/// componentize-py, pinned.
const COMPONENTIZE_PY: &str = "componentize-py==0.25.1";
/// jco (with its QuickJS backend) and rolldown, pinned.
const JS_TOOLS: &[&str] = &["@bytecodealliance/jco@1.35.0", "rolldown@1.3.4"];

/// Arguments of `weir build`.
#[derive(Debug, clap::Args)]
pub struct BuildArgs {
    /// The stage's directory: a Rust crate (`Cargo.toml`), a Python stage (`app.py`) or a
    /// JavaScript / TypeScript stage (`stage.js` / `stage.ts`).
    #[arg(default_value = ".")]
    pub dir: PathBuf,
    /// Where to write the component. Default: `DIR/dist/<dir name>.wasm`.
    #[arg(short, long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Only install the Python and JavaScript toolchains (pinned, into `$WEIR_TOOLS`) and the
    /// SDK copy, then exit: for CI and offline machines.
    #[arg(long)]
    pub install_tools: bool,
}

/// The languages a stage directory can be in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Lang {
    /// Rust, with weir-sdk, built with `cargo build --release --target wasm32-wasip2`.
    Rust,
    /// Python, with weir_stage, built with componentize-py.
    Python,
    /// JavaScript or TypeScript, with weir-stage, bundled by rolldown and built with jco's
    /// QuickJS backend.
    Js,
}

/// Builds the stage in `args.dir`; prints the component's path.
pub fn build(args: BuildArgs) -> ExitCode {
    if args.install_tools {
        let installed = sdk::materialise()
            .map_err(|err| format!("cannot write the SDK copy: {err}"))
            .and_then(|_| python_tool())
            .and_then(|_| js_tools());
        return match installed {
            Ok(bin) => {
                eprintln!("==> stage toolchains ready ({})", bin.display());
                ExitCode::SUCCESS
            }
            Err(err) => {
                eprintln!("error: {err}");
                ExitCode::FAILURE
            }
        };
    }
    match build_stage(&args.dir, args.out.as_deref()) {
        Ok(out) => {
            println!("{}", out.display());
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::FAILURE
        }
    }
}

/// Which language the stage in `dir` is written in, from its files.
fn detect(dir: &Path) -> Result<Lang, String> {
    if dir.join("Cargo.toml").is_file() {
        Ok(Lang::Rust)
    } else if dir.join("app.py").is_file() {
        Ok(Lang::Python)
    } else if dir.join("stage.js").is_file() || dir.join("stage.ts").is_file() {
        Ok(Lang::Js)
    } else {
        Err(format!(
            "{}: not a stage directory: expected Cargo.toml (Rust), app.py (Python) or \
             stage.js / stage.ts (JavaScript, TypeScript); `weir new stage NAME --lang ...` \
             makes one",
            dir.display()
        ))
    }
}

/// Builds the stage in `dir` into `out` (or its default); returns the component's path.
pub fn build_stage(dir: &Path, out: Option<&Path>) -> Result<PathBuf, String> {
    let dir = std::path::absolute(dir).map_err(|err| format!("{}: {err}", dir.display()))?;
    let lang = detect(&dir)?;
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "stage".to_string());
    let out = match out {
        Some(out) => std::path::absolute(out).map_err(|err| format!("{}: {err}", out.display()))?,
        None => dir.join("dist").join(format!("{name}.wasm")),
    };
    if let Some(parent) = out.parent() {
        std::fs::create_dir_all(parent).map_err(|err| format!("{}: {err}", parent.display()))?;
    }
    let started = Instant::now();
    match lang {
        Lang::Rust => build_rust(&dir, &out)?,
        Lang::Python => build_python(&dir, &out)?,
        Lang::Js => build_js(&dir, &out)?,
    }
    let size = std::fs::metadata(&out).map_or(0, |m| m.len());
    eprintln!(
        "==> built {} ({:?}, {:.2} MiB) in {:.1} s; try `weir test-stage {}`",
        out.display(),
        lang,
        size as f64 / f64::from(1 << 20),
        started.elapsed().as_secs_f64(),
        out.display()
    );
    Ok(out)
}

/// Runs `cmd`, its output passed through to stderr; an error names the command.
fn run(cmd: &mut Command) -> Result<(), String> {
    let shown = format!("{cmd:?}");
    eprintln!("==> {shown}");
    // What the tools print goes to stderr: stdout is only the component's path.
    match cmd.stdout(std::io::stderr()).status() {
        Ok(status) if status.success() => Ok(()),
        Ok(status) => Err(format!("{shown} failed ({status})")),
        Err(err) => Err(format!("cannot run {shown}: {err}")),
    }
}

fn build_rust(dir: &Path, out: &Path) -> Result<(), String> {
    // rustup does not add a toolchain's targets by itself (a no-op once added).
    if Command::new("rustup").arg("--version").output().is_ok() {
        run(Command::new("rustup")
            .args(["target", "add", "wasm32-wasip2"])
            .current_dir(dir))?;
    }
    let manifest = std::fs::read_to_string(dir.join("Cargo.toml"))
        .map_err(|err| format!("{}: {err}", dir.join("Cargo.toml").display()))?;
    let package = toml::from_str::<toml::Table>(&manifest)
        .ok()
        .and_then(|t| t.get("package")?.get("name")?.as_str().map(str::to_string))
        .ok_or_else(|| format!("{}: no [package] name", dir.join("Cargo.toml").display()))?;
    run(Command::new("cargo")
        .args([
            "build",
            "--release",
            "--target",
            "wasm32-wasip2",
            "-p",
            &package,
        ])
        .current_dir(dir))?;
    let metadata = Command::new("cargo")
        .args(["metadata", "--format-version", "1", "--no-deps"])
        .current_dir(dir)
        .output()
        .map_err(|err| format!("cannot run cargo metadata: {err}"))?;
    let target = serde_json::from_slice::<serde_json::Value>(&metadata.stdout)
        .ok()
        .and_then(|m| m["target_directory"].as_str().map(PathBuf::from))
        .ok_or("cargo metadata did not name the target directory")?;
    let built = target
        .join("wasm32-wasip2/release")
        .join(format!("{}.wasm", package.replace('-', "_")));
    std::fs::copy(&built, out).map_err(|err| format!("{}: {err}", built.display()))?;
    Ok(())
}

fn build_python(dir: &Path, out: &Path) -> Result<(), String> {
    let sdk = sdk::materialise().map_err(|err| format!("cannot write the SDK copy: {err}"))?;
    let tool = python_tool()?;
    run(Command::new(tool)
        .arg("-d")
        .arg(sdk.join("wit"))
        .args(["-w", "weir:stage/stage@0.2.0", "componentize", "-p"])
        .arg(sdk.join("sdk/python"))
        .arg("-p")
        .arg(dir)
        .args(["app", "-o"])
        .arg(out)
        // componentize-py writes bytecode caches next to the sources otherwise.
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .current_dir(dir))
}

fn build_js(dir: &Path, out: &Path) -> Result<(), String> {
    let sdk = sdk::materialise().map_err(|err| format!("cannot write the SDK copy: {err}"))?;
    let bin = js_tools()?;
    let entry = ["stage.ts", "stage.js"]
        .iter()
        .map(|f| dir.join(f))
        .find(|p| p.is_file())
        .ok_or("no stage.js or stage.ts")?;
    // One ES module: the stage and weir-stage (this binary's copy, unless the stage installed
    // its own); the host interface stays an import for the componentizer to bind.
    let work = out.with_extension("build");
    std::fs::create_dir_all(&work).map_err(|err| format!("{}: {err}", work.display()))?;
    let bundle = work.join("stage.bundle.js");
    let own = dir.join("node_modules/weir-stage/index.js");
    let sdk_entry = if own.is_file() {
        own
    } else {
        sdk.join("sdk/js/weir-stage/index.js")
    };
    let config = work.join("rolldown.config.mjs");
    let js = |p: &Path| serde_json::Value::String(p.to_string_lossy().into_owned()).to_string();
    std::fs::write(
        &config,
        format!(
            "export default {{\n  input: {},\n  platform: 'neutral',\n  \
             external: [/^weir:/, /^wasi:/],\n  resolve: {{ alias: {{ 'weir-stage': {} }} }},\n  \
             output: {{ file: {}, format: 'esm' }},\n}};\n",
            js(&entry),
            js(&sdk_entry),
            js(&bundle)
        ),
    )
    .map_err(|err| format!("{}: {err}", config.display()))?;
    run(Command::new(bin.join("rolldown"))
        .arg("-c")
        .arg(&config)
        .current_dir(dir))?;
    run(Command::new(bin.join("jco"))
        .arg("componentize")
        .arg(&bundle)
        .arg("--wit")
        .arg(sdk.join("wit"))
        .args([
            "-n",
            "weir:stage/stage@0.2.0",
            "--backend",
            "quickjs",
            // weir's engine does not enable component-model async.
            "--backend-qjs-disable-async",
            "-o",
        ])
        .arg(out)
        .current_dir(&work))?;
    let _ = std::fs::remove_dir_all(&work);
    Ok(())
}

/// componentize-py: `$WEIR_COMPONENTIZE_PY`, else the pinned copy in the tools directory,
/// installed (a virtualenv from PyPI) when missing.
fn python_tool() -> Result<PathBuf, String> {
    if let Some(tool) = std::env::var_os("WEIR_COMPONENTIZE_PY").filter(|t| !t.is_empty()) {
        return Ok(PathBuf::from(tool));
    }
    let venv = tools()?.join("componentize-py-0.25.1");
    let tool = venv.join("bin/componentize-py");
    installed(&venv, &tool, || {
        eprintln!(
            "==> installing {COMPONENTIZE_PY} into {} (once)",
            venv.display()
        );
        run(Command::new("python3").arg("-m").arg("venv").arg(&venv))
            .map_err(|err| format!("{err} (on Debian: apt-get install python3-venv)"))?;
        run(Command::new(venv.join("bin/python"))
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
            ])
            .arg(COMPONENTIZE_PY))
    })?;
    Ok(tool)
}

/// The `node_modules/.bin` of jco and rolldown: `$WEIR_JS_TOOLS`, else the pinned copy in
/// the tools directory, installed (npm) when missing.
fn js_tools() -> Result<PathBuf, String> {
    if let Some(bin) = std::env::var_os("WEIR_JS_TOOLS").filter(|t| !t.is_empty()) {
        return Ok(PathBuf::from(bin));
    }
    let prefix = tools()?.join("jco-1.35.0");
    let bin = prefix.join("node_modules/.bin");
    installed(&prefix, &bin.join("jco"), || {
        eprintln!(
            "==> installing {} into {} (once)",
            JS_TOOLS.join(" "),
            prefix.display()
        );
        std::fs::create_dir_all(&prefix).map_err(|err| format!("{}: {err}", prefix.display()))?;
        run(Command::new("npm")
            .args(["install", "--silent", "--no-audit", "--no-fund", "--prefix"])
            .arg(&prefix)
            .args(JS_TOOLS))
    })?;
    Ok(bin)
}

/// Runs `install` into `dir` unless `dir` has been installed before (its `.installed` stamp),
/// holding a lock so that concurrent builds install once; a failed install is removed.
fn installed(
    dir: &Path,
    tool: &Path,
    install: impl FnOnce() -> Result<(), String>,
) -> Result<(), String> {
    let stamp = dir.join(".installed");
    if stamp.is_file() && tool.is_file() {
        return Ok(());
    }
    let mut lock_name = dir.file_name().unwrap_or_default().to_os_string();
    lock_name.push(".lock");
    let lock_path = dir.with_file_name(lock_name);
    let lock = std::fs::File::create(&lock_path)
        .map_err(|err| format!("{}: {err}", lock_path.display()))?;
    lock.lock()
        .map_err(|err| format!("{}: {err}", lock_path.display()))?;
    if stamp.is_file() && tool.is_file() {
        return Ok(());
    }
    let _ = std::fs::remove_dir_all(dir);
    if let Err(err) = install() {
        let _ = std::fs::remove_dir_all(dir);
        return Err(err);
    }
    std::fs::write(&stamp, "").map_err(|err| format!("{}: {err}", stamp.display()))
}

fn tools() -> Result<PathBuf, String> {
    let dir = sdk::tools_dir().map_err(|err| err.to_string())?;
    std::fs::create_dir_all(&dir).map_err(|err| format!("{}: {err}", dir.display()))?;
    Ok(dir)
}
