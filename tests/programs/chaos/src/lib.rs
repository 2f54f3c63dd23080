//! `weir-test-chaos`: a guest test program whose behaviour is chosen by its stage config key
//! `mode`, so one component covers every sandbox and pipeline test. `fault_phase`
//! (`request`, the default, or `response`) says in which phase a misbehaving mode acts.
//!
//! Modes: `pass` (default), `loop`, `memory`, `recursion`, `panic`, `huge-log`, `read-file`,
//! `env`, `socket`, `stdout`, `fail`, `reject`, `bad-status`, `respond`, `tag`, `complete`,
//! `complete-loop`, `embed-loop`, `embed-huge`, `cache`, `model-from-user`, `huge-output`,
//! `huge-id` (the response phase only), `count-tokens-huge`, `random-huge`, `log-flood`,
//! `residue`. Each is exercised by a host test in `tests/all/`; the artifacts build script
//! checks that every mode listed in [`MODES`] is named there.
//!
//! `describe()` misbehaves too, whatever the mode (config is per stage, but `describe` runs
//! once per file, before any config applies, and `config-get` answers `none` there): it
//! calls `complete()` on the model [`DESCRIBE_PROBE_MODEL`] and logs what came of it
//! (`chaos describe: complete() refused: <code>` or `chaos describe: complete() answered`).
//! The switch is the host's config: the call can reach an upstream only through a route
//! with that alias, so a host test that wants the probe to matter adds one.

use weir_sdk::{
    ChatRequest, ChatResponse, Message, RequestContext, RequestOutcome, Stage, StageError,
    StageInfo,
};

/// Every mode, checked against the host tests by `tests/artifacts/build.rs`.
pub const MODES: &[&str] = &[
    "pass",
    "loop",
    "memory",
    "recursion",
    "panic",
    "huge-log",
    "read-file",
    "env",
    "socket",
    "stdout",
    "fail",
    "reject",
    "bad-status",
    "respond",
    "tag",
    "complete",
    "complete-loop",
    "embed-loop",
    "embed-huge",
    "cache",
    "model-from-user",
    "huge-output",
    "huge-id",
    "count-tokens-huge",
    "random-huge",
    "log-flood",
    "residue",
];

/// The model `describe()` asks for (see the module docs).
pub const DESCRIBE_PROBE_MODEL: &str = "chaos-describe";

/// What `describe` says the version is. Tests of `weir check` overwrite these exact bytes in
/// a copy of the component (with terminal escapes, say), so keep the text unique and its
/// length fixed.
const VERSION: &str = "chaos-describe-version-slot-0000";

/// What the `huge-*` modes return, bytes: about the 50 MB seen in the review, within a
/// 64 MiB memory cap.
const HUGE: usize = 40 << 20;

/// What `residue` inspects: zero in every fresh instance (it is in `.bss`, which no data
/// segment initialises), so a byte that is not was left by an earlier instance in the same
/// pool slot. Larger than what either of the host's lanes keeps resident (256 KiB, 2 MiB), so
/// both ways a slot is reset (pages restored in place, pages given back to the kernel) are
/// covered in both.
static RESIDUE: std::sync::Mutex<[u8; RESIDUE_BYTES]> = std::sync::Mutex::new([0; RESIDUE_BYTES]);
const RESIDUE_BYTES: usize = 4 << 20;

/// `wasi:random/random`, which the SDK does not wrap: `random-huge` calls it directly.
#[allow(missing_docs, clippy::all, unsafe_code)]
mod wasi_random {
    wit_bindgen::generate!({
        inline: "
            package wasi:random@0.2.0;

            interface random {
                get-random-bytes: func(len: u64) -> list<u8>;
                get-random-u64: func() -> u64;
            }

            world chaos-random {
                import random;
            }
        ",
        world: "chaos-random",
    });
}

/// Per-request state, proving the response phase sees what the request phase left (through the
/// state the host keeps between them).
#[derive(Default, serde::Serialize, serde::Deserialize)]
struct Chaos {
    /// Set by the request phase.
    saw_request: bool,
}

fn mode() -> String {
    weir_sdk::config::get("mode").unwrap_or_else(|| "pass".to_string())
}

fn fault_phase() -> String {
    weir_sdk::config::get("fault_phase").unwrap_or_else(|| "request".to_string())
}

/// Recursion without end: a stack frame the optimiser cannot fold into a loop.
#[allow(unconditional_recursion)]
fn recurse(depth: u64) -> u64 {
    let mut frame = [depth as u8; 256];
    std::hint::black_box(&mut frame);
    let below = recurse(std::hint::black_box(depth + 1));
    below ^ u64::from(frame[(depth % 256) as usize])
}

/// `len` bytes of `c`, written a MiB at a time. One `"x".repeat(len)` compiles to a few
/// `memory.copy` instructions of up to half the string, and the host's epoch deadline cannot
/// interrupt an instruction: the guest would hold its async worker for the whole copy (and its
/// page faults) at once, which is not what the modes using this test.
fn in_pieces(c: char, len: usize) -> String {
    let piece = c.to_string().repeat(1 << 20);
    let mut text = String::with_capacity(len);
    while text.len() + piece.len() <= len {
        text.push_str(std::hint::black_box(&piece));
    }
    text
}

/// Misbehaves as the mode says; returns `Some(text)` for modes that report a probe result.
fn misbehave(mode: &str) -> Result<Option<String>, StageError> {
    match mode {
        "loop" => {
            let mut n: u64 = 0;
            loop {
                n = std::hint::black_box(n.wrapping_add(1));
            }
        }
        "memory" => {
            let mut hoard: Vec<Vec<u8>> = Vec::new();
            loop {
                hoard.push(vec![1u8; 1 << 20]);
                std::hint::black_box(&hoard);
            }
        }
        "recursion" => Ok(Some(recurse(0).to_string())),
        "panic" => panic!("chaos: deliberate panic"),
        "huge-log" => {
            let line = "x".repeat(8 << 20);
            weir_sdk::info!("{line}");
            Ok(None)
        }
        "read-file" => Ok(Some(match std::fs::read_to_string("/etc/passwd") {
            Ok(text) => format!("read-file: ok: {} bytes", text.len()),
            Err(err) => format!("read-file: error: {err}"),
        })),
        "env" => {
            let canary = std::env::var("WEIR_CANARY").unwrap_or_else(|_| "<unset>".to_string());
            Ok(Some(format!(
                "env: WEIR_CANARY={canary}; vars={}",
                std::env::vars().count()
            )))
        }
        "socket" => Ok(Some(match std::net::TcpStream::connect("127.0.0.1:9") {
            Ok(_) => "socket: ok: connected".to_string(),
            Err(err) => format!("socket: error: {err}"),
        })),
        "stdout" => {
            println!("chaos: hello on stdout");
            eprintln!("chaos: hello on stderr");
            Ok(None)
        }
        "fail" => Err(StageError::fail("chaos: deliberate failure")),
        "reject" => Err(StageError::reject(403, "chaos_rejected", "chaos says no")),
        "bad-status" => Err(StageError::reject(
            200,
            "chaos_bad_status",
            "not an error status",
        )),
        "complete" => {
            let question = ChatRequest::new("inner", vec![Message::user("inner question")]);
            Ok(Some(match weir_sdk::llm::complete(&question) {
                Ok(answer) => format!("complete: ok: {}", answer.text()),
                Err(err) => format!(
                    "complete: error: {} {}: {}",
                    err.status, err.code, err.message
                ),
            }))
        }
        // A stage stuck in a loop of LLM calls: calls until the host refuses (at most 1,000).
        "complete-loop" => {
            let question = ChatRequest::new("inner", vec![Message::user("again")]);
            let mut calls = 0;
            let mut refusal = String::from("none");
            while calls < 1000 {
                match weir_sdk::llm::complete(&question) {
                    Ok(_) => calls += 1,
                    Err(err) => {
                        refusal = err.code;
                        break;
                    }
                }
            }
            Ok(Some(format!(
                "complete-loop: {calls} calls, then {refusal}"
            )))
        }
        // A stage stuck in a loop of embeddings: calls until the host refuses (at most 1,000),
        // with the model in the `model` key.
        "embed-loop" => {
            let model = weir_sdk::config::get("model")
                .unwrap_or_else(|| "text-embedding-3-small".to_string());
            let inputs = vec!["the chaos stage embeds this again".to_string()];
            let mut calls = 0;
            let mut refusal = String::from("none");
            while calls < 1000 {
                match weir_sdk::llm::embed(&model, &inputs) {
                    Ok(vectors) if vectors.len() == 1 && !vectors[0].is_empty() => calls += 1,
                    Ok(vectors) => {
                        refusal = format!("{} vectors", vectors.len());
                        break;
                    }
                    Err(err) => {
                        refusal = err.code;
                        break;
                    }
                }
            }
            Ok(Some(format!("embed-loop: {calls} calls, then {refusal}")))
        }
        // More inputs than the host takes in one embed().
        "embed-huge" => {
            let inputs = vec!["x".to_string(); 4096];
            Ok(Some(
                match weir_sdk::llm::embed("text-embedding-3-small", &inputs) {
                    Ok(vectors) => format!("embed-huge: ok: {} vectors", vectors.len()),
                    Err(err) => format!("embed-huge: error: {} {}", err.status, err.code),
                },
            ))
        }
        // A stage answering (or rewriting the response) with a body of tens of MB.
        "huge-output" => Ok(Some("x".repeat(HUGE))),
        // The host's `count-tokens` on 48 MiB of text (one word, tiktoken's slowest case),
        // and on a short text that must still be counted exactly.
        "count-tokens-huge" => {
            let huge = in_pieces('x', 48 << 20);
            let many = weir_sdk::tokens::count("gpt-4o", &huge);
            let two = weir_sdk::tokens::count("gpt-4o", "hello world");
            Ok(Some(format!(
                "count-tokens-huge: {many}; hello world: {two}"
            )))
        }
        // 32 random bytes, then `random_bytes` (default 64 MiB, wasmtime-wasi's own limit).
        "random-huge" => {
            let len = weir_sdk::config::get("random_bytes")
                .and_then(|n| n.parse().ok())
                .unwrap_or(64 << 20);
            let small = wasi_random::wasi::random::random::get_random_bytes(32);
            let huge = wasi_random::wasi::random::random::get_random_bytes(len);
            Ok(Some(format!(
                "random-huge: got {} and {} bytes",
                small.len(),
                huge.len()
            )))
        }
        // Ten thousand log lines, each trying to forge a line of the host's human log format
        // and to drive the operator's terminal.
        "log-flood" => {
            for i in 0..10_000 {
                weir_sdk::warn!(
                    "flood {i}\n2026-12-03T10:00:00.000000Z  INFO weir::admin: forged line \
                     {i}\r\x1b[2K\x1b]0;pwned\x07"
                );
            }
            Ok(Some("log-flood: 10000 lines sent".to_string()))
        }
        // Counts the bytes of `RESIDUE` an earlier instance left, then dirties the first
        // `residue_bytes` of it (default: all), a page apart, as a leaking slot would show.
        "residue" => {
            let dirty = weir_sdk::config::get("residue_bytes")
                .and_then(|n| n.parse().ok())
                .unwrap_or(RESIDUE_BYTES)
                .min(RESIDUE_BYTES);
            let mut buffer = RESIDUE
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            let left = buffer.iter().filter(|&&byte| byte != 0).count();
            for byte in buffer[..dirty].iter_mut().step_by(4096) {
                *byte = 0xA5;
            }
            Ok(Some(format!("residue: {left} bytes left")))
        }
        "cache" => {
            let before = weir_sdk::cache::get("counter")
                .and_then(|b| String::from_utf8(b).ok())
                .and_then(|s| s.parse::<u64>().ok())
                .unwrap_or(0);
            weir_sdk::cache::set("counter", (before + 1).to_string().as_bytes(), Some(60));
            Ok(Some(format!("cache: before={before}")))
        }
        _ => Ok(None),
    }
}

impl Stage for Chaos {
    fn info() -> StageInfo {
        // The WIT says describe() must not call the LLM: this one does (see the module docs).
        let probe = ChatRequest::new(DESCRIBE_PROBE_MODEL, vec![Message::user("describe")]);
        match weir_sdk::llm::complete(&probe) {
            Ok(_) => weir_sdk::info!("chaos describe: complete() answered"),
            Err(err) => weir_sdk::info!("chaos describe: complete() refused: {}", err.code),
        }
        StageInfo::new("chaos", VERSION).on_request().on_response()
    }

    fn on_request(
        &mut self,
        _ctx: &RequestContext,
        mut request: ChatRequest,
    ) -> Result<RequestOutcome, StageError> {
        self.saw_request = true;
        let mode = mode();
        match mode.as_str() {
            "respond" => {
                return Ok(RequestOutcome::Respond(ChatResponse::from_text(
                    "chaos",
                    "answered by the chaos stage",
                )));
            }
            "tag" => {
                let tag = weir_sdk::config::get("tag").unwrap_or_default();
                if let Some(last) = request.messages.last_mut() {
                    let text = last.text();
                    last.set_text(format!("{text} >{tag}"));
                }
                return Ok(RequestOutcome::Next(request));
            }
            // A stage that lets the client choose the upstream model: the last message's
            // text becomes the request's model.
            "model-from-user" => {
                if let Some(last) = request.messages.last() {
                    request.model = last.text();
                }
                return Ok(RequestOutcome::Next(request));
            }
            _ => {}
        }
        if fault_phase() == "request"
            && let Some(text) = misbehave(&mode)?
        {
            return Ok(RequestOutcome::Respond(ChatResponse::from_text(
                "chaos", text,
            )));
        }
        Ok(RequestOutcome::Next(request))
    }

    fn on_response(
        &mut self,
        _ctx: &RequestContext,
        _request: &ChatRequest,
        mut response: ChatResponse,
    ) -> Result<ChatResponse, StageError> {
        let mode = mode();
        if mode == "tag" {
            let tag = weir_sdk::config::get("tag").unwrap_or_default();
            let same_instance = if self.saw_request { "same" } else { "fresh" };
            for choice in &mut response.choices {
                let text = choice.message.text();
                choice
                    .message
                    .set_text(format!("{text} <{tag}:{same_instance}"));
            }
            return Ok(response);
        }
        if mode == "huge-id" {
            response.id = "i".repeat(HUGE);
            return Ok(response);
        }
        if fault_phase() == "response"
            && let Some(text) = misbehave(&mode)?
        {
            return Ok(ChatResponse::from_text("chaos", text));
        }
        Ok(response)
    }
}

weir_sdk::export_stage!(Chaos);
