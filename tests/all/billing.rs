//! Every started call is paid for, through the real binary against `weir sim`: a client that
//! disconnects mid-call, an attempt cut by the client's deadline, `n` in the reservation,
//! `stream_options: null`, and a mix of all of them (and a stage's `embed()` calls) after which the ledger matches what the
//! simulator billed to within the documented estimate error (README, "Cost").

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::Method;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::cost::{
    A_IN, A_OUT, PRICES, ask, chat, config, cost_header, data_dir, key, priced, spend, total_pico,
};
use crate::procs::{Proc, call, get, post, serve, sim, sim_requests};
use crate::wait::{check, until};

/// What `weir sim` billed so far (`/sim/stats`).
async fn billed(up: &Proc) -> Value {
    get(up.addr, "/sim/stats").await.json()["billed"].clone()
}

/// Chat requests `weir sim` received so far.
async fn received(up: &Proc) -> u64 {
    get(up.addr, "/sim/stats").await.json()["chat_completions"]
        .as_u64()
        .unwrap()
}

/// Waits until `up` has received (and, accepting them, billed) `n` chat requests in all.
async fn until_billed(up: &Proc, n: u64) {
    until("the upstream to receive and bill the request", || async {
        let billed = billed(up).await;
        check(billed["requests"].as_u64() >= Some(n), billed)
    })
    .await;
}

/// Waits until the ledger holds `calls` calls in all; returns `/admin/spend`.
async fn until_charged(weir: &Proc, calls: u64) -> Value {
    until("the ledger to record the call", || async {
        let spend = spend(weir, "").await;
        check(spend["total"]["calls"] == calls, &spend["total"]).map(|_| spend)
    })
    .await
}

/// Sends `body` to weir's chat endpoint on a connection of its own, with `headers`, and
/// leaves without reading: the client goes away when the returned stream is dropped.
async fn send_and_hold(addr: SocketAddr, body: &Value, headers: &[(&str, &str)]) -> TcpStream {
    let body = body.to_string();
    let mut head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\n\
         content-length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(body.as_bytes()).await.unwrap();
    stream
}

/// Reads a streamed answer until `events` SSE events have arrived (bounded).
async fn read_events(stream: &mut TcpStream, events: usize) {
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    let read = async {
        while String::from_utf8_lossy(&seen).matches("data: ").count() < events {
            let n = stream.read(&mut buf).await.unwrap();
            assert!(
                n > 0,
                "the stream ended early: {}",
                String::from_utf8_lossy(&seen)
            );
            seen.extend_from_slice(&buf[..n]);
        }
    };
    tokio::time::timeout(Duration::from_secs(30), read)
        .await
        .expect("the first events arrive");
}

/// The lines of the request log, parsed.
fn log_lines(path: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

/// Prompt tokens weir counts locally for `body` (as it parses it) on `sim-a`.
fn local_prompt(body: &Value) -> u64 {
    let request = weir::openai::parse_request(body.to_string().as_bytes()).unwrap();
    weir::cost::tokens::warm_up(["sim-a"]);
    u64::from(weir::cost::tokens::count_prompt("sim-a", &request))
}

/// One target `up` (`sim-a`), one attempt per call, `route_extra` in the route, key `team`
/// with a $1 daily budget, and a request log at `log`.
fn budgeted(up: &Proc, route_extra: &str, log: &std::path::Path) -> String {
    config(
        &[("up", up, "sim-a")],
        &format!("max_attempts = 1\n{route_extra}"),
        &format!(
            "{}[cost]\nrequest_log = \"{}\"\n",
            key("team", "sk-team", "daily_budget_usd = 1.0"),
            log.display()
        ),
    )
}

/// Asserts the one call in `spend` and `log` is `body`'s prompt counted locally, marked
/// estimated, against the key's budget, with nothing left reserved.
fn assert_estimated_prompt(spend: &Value, log: &std::path::Path, body: &Value) {
    let prompt = local_prompt(body);
    let total = &spend["total"];
    assert_eq!(total["prompt_tokens"], prompt, "{spend}");
    assert_eq!(total["completion_tokens"], 0, "{spend}");
    assert_eq!(total_pico(spend), prompt * A_IN, "{spend}");
    let spent = spend["keys"][0]["spent_today_usd"].as_f64().unwrap();
    assert!(
        (spent * 1e12 - (prompt * A_IN) as f64).abs() < 1.0,
        "{spend}"
    );
    assert_eq!(spend["keys"][0]["reserved_usd"], 0.0, "{spend}");
    let lines = log_lines(log);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0]["estimated"], true, "{}", lines[0]);
    assert_eq!(lines[0]["model"], "sim-a");
    assert_eq!(lines[0]["key"], "team");
}

#[tokio::test]
async fn a_client_that_disconnects_mid_call_still_pays_for_its_prompt() {
    let up = sim(&["--latency-ms", "2000"]);
    let dir = data_dir("disconnect");
    let log = dir.join("requests.jsonl");
    let weir = serve(&budgeted(&up, "", &log));
    let body = chat(&"the cat sat on the mat and the dog ran ".repeat(200), 16);
    let client = send_and_hold(weir.addr, &body, &[("authorization", "Bearer sk-team")]).await;
    until_billed(&up, 1).await;
    drop(client); // the client is gone before the upstream's 2 s are over
    let spend = until_charged(&weir, 1).await;
    assert_estimated_prompt(&spend, &log, &body);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A target whose connects hang (its listener's accept queue is full, so the kernel drops the
/// SYNs, as an address that black-holes them does): the attempt fails as a connect error after
/// weir's connect timeout (5 s), well inside the target's 60 s `timeout_ms`, the route falls back
/// to the next target, and only that target's call is charged.
#[tokio::test]
async fn a_target_that_never_accepts_the_connection_is_not_charged_and_the_fallback_is_prompt() {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(0).unwrap();
    let hole = listener.local_addr().unwrap();
    // One connection fills a backlog of 0; every later connect waits on SYN retransmits.
    let _filler = TcpStream::connect(hole).await.unwrap();
    let up = sim(&[]);
    let dir = data_dir("black-hole");
    let log = dir.join("requests.jsonl");
    let weir = serve(&format!(
        "[targets.hole]\nbase_url = \"http://{hole}/v1\"\nmodel = \"sim-a\"\ntimeout_ms = 60000\n\n\
         [targets.up]\nbase_url = \"http://{}/v1\"\nmodel = \"sim-a\"\ntimeout_ms = 5000\n\n\
         [[routes]]\nmodel = \"demo\"\ntargets = [\"hole\", \"up\"]\nmax_attempts = 2\n\
         {PRICES}\n{}[cost]\nrequest_log = \"{}\"\n",
        up.addr,
        key("team", "sk-team", "daily_budget_usd = 1.0"),
        log.display()
    ));
    let started = tokio::time::Instant::now();
    let answer = ask(weir.addr, Some("sk-team"), &chat("hi", 16)).await;
    let took = started.elapsed();
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    assert_eq!(received(&up).await, 1, "the fallback's one call");
    assert!(
        took >= Duration::from_secs(4) && took < Duration::from_secs(30),
        "the fallback came after {took:?}: the connect timeout is 5 s, the hung target's timeout_ms 60 s"
    );
    let spend = until_charged(&weir, 1).await;
    let lines = log_lines(&log);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0]["estimated"], false, "{}", lines[0]);
    assert_eq!(total_pico(&spend), cost_header(&answer), "{spend}");
    assert_eq!(spend["keys"][0]["reserved_usd"], 0.0, "{spend}");
    drop(listener);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn an_attempt_cut_by_the_clients_deadline_still_pays_for_its_prompt() {
    let up = sim(&["--latency-ms", "2000"]);
    let dir = data_dir("deadline");
    let log = dir.join("requests.jsonl");
    let weir = serve(&budgeted(&up, "", &log));
    let body = chat("the cat sat on the mat", 16);
    let answer = call(
        weir.addr,
        Method::POST,
        "/v1/chat/completions",
        &[
            ("authorization", "Bearer sk-team"),
            ("x-weir-deadline-ms", "500"),
        ],
        Some(Bytes::from(body.to_string())),
    )
    .await;
    assert!(answer.status.is_server_error(), "{:?}", answer.body);
    assert_eq!(received(&up).await, 1, "the upstream had started");
    let spend = until_charged(&weir, 1).await;
    assert_estimated_prompt(&spend, &log, &body);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_stage_call_cut_by_its_hard_timeout_still_pays_for_its_prompt() {
    let up = sim(&["--latency-ms", "2000"]);
    let dir = data_dir("stage-timeout");
    let log = dir.join("requests.jsonl");
    // The stage's `complete()` waits on the upstream's 2 s; its deadline is 500 ms.
    let stage = format!(
        "[[routes.stages]]\nname = \"chaos\"\npath = \"{}\"\ndeadline_ms = 500\n\
         config = {{ mode = \"complete\" }}\n",
        weir_test_artifacts::CHAOS
    );
    let weir = serve(&budgeted(&up, &stage, &log));
    let answer = ask(weir.addr, Some("sk-team"), &chat("hi", 16)).await;
    assert!(answer.status.is_server_error(), "{:?}", answer.body);
    assert_eq!(received(&up).await, 1, "only the stage's call was made");
    let spend = until_charged(&weir, 1).await;
    // The stage asked for "inner question" (see the chaos program), on the route's target.
    let inner =
        json!({"model": "inner", "messages": [{"role": "user", "content": "inner question"}]});
    assert_estimated_prompt(&spend, &log, &inner);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn n_multiplies_the_completion_reservation() {
    let up = sim(&[]);
    let mut one = chat("how many answers do you want", 16);
    one["n"] = json!(1);
    let mut two = one.clone();
    two["n"] = json!(2);
    // The worst case of n = 1 exactly: the prompt as weir counts it, and max_tokens.
    let prompt = local_prompt(&one);
    assert_eq!(prompt, local_prompt(&two), "only the completion part grows");
    let worst = prompt * A_IN + 16 * A_OUT;
    let usd = format!(
        "{}.{:012}",
        worst / 1_000_000_000_000,
        worst % 1_000_000_000_000
    );
    let limits = format!("max_cost_per_request_usd = {usd}");
    let weir = serve(&config(
        &[("up", &up, "sim-a")],
        "",
        &key("exact", "sk-exact", &limits),
    ));
    let refused = ask(weir.addr, Some("sk-exact"), &two).await;
    assert_eq!(refused.status, 400, "{:?}", refused.body);
    assert_eq!(refused.json()["error"]["code"], "request_cost_exceeded");
    assert_eq!(received(&up).await, 0, "refused before any upstream call");
    let answer = ask(weir.addr, Some("sk-exact"), &one).await;
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    // A hostile n is refused the same way, nothing overflows.
    let mut absurd = one.clone();
    absurd["n"] = json!(1e9);
    let refused = ask(weir.addr, Some("sk-exact"), &absurd).await;
    assert_eq!(refused.json()["error"]["code"], "request_cost_exceeded");
    assert_eq!(received(&up).await, 1);
}

#[tokio::test]
async fn stream_options_null_still_asks_the_upstream_for_usage() {
    let up = sim(&[]);
    let dir = data_dir("stream-options");
    let log = dir.join("requests.jsonl");
    let weir = serve(&config(
        &[("up", &up, "sim-a")],
        "",
        &format!("[cost]\nrequest_log = \"{}\"\n", log.display()),
    ));
    let mut body = chat("stream me", 16);
    body["stream"] = json!(true);
    body["stream_options"] = Value::Null;
    let answer = ask(weir.addr, None, &body).await;
    assert_eq!(answer.status, 200);
    let events = answer.events();
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    assert!(
        events.iter().all(|e| !e.contains("\"usage\":{")),
        "the client did not ask for usage: {events:?}"
    );
    let sent = &sim_requests(&up, 1).await[0]["body"];
    assert_eq!(
        sent["stream_options"],
        json!({"include_usage": true}),
        "{sent}"
    );
    // Priced from the provider's usage, not estimated.
    let spend = until_charged(&weir, 1).await;
    let usage = billed(&up).await;
    assert_eq!(total_pico(&spend), priced("sim-a", &usage), "{spend}");
    let lines = log_lines(&log);
    assert_eq!(lines[0]["estimated"], false, "{}", lines[0]);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Completion tokens every request of the mix asks for at most.
const MAX_TOKENS: u32 = 24;

/// How far the ledger may be from the simulator's bill for one step of the mix: the
/// documented estimate error (README, "Cost") of the step's calls.
#[derive(Clone, Copy, Debug)]
struct Bound {
    /// Prompt tokens either way: a local count differs from the provider's by a few tokens
    /// per message (weir counts each role's name as a token; the simulator does not), and
    /// counts the request's fields weir does not model (`n`, ...) as their JSON text.
    prompt: u64,
    /// Completion tokens the provider billed that the ledger lacks: up to `max_tokens` × `n`
    /// for a non-streamed attempt cut before its answer; for a stream cut midway, what was
    /// generated but not received.
    completion_missing: u64,
    /// Completion tokens the ledger may count over the bill: a local count of text received.
    completion_over: u64,
}

impl Bound {
    /// Every call reported its usage: the ledger is the bill.
    const EXACT: Bound = Bound {
        prompt: 0,
        completion_missing: 0,
        completion_over: 0,
    };

    /// Tokens a local count may differ from the provider's by, per call of one message of
    /// short words (README, "Cost": a few per message).
    const LOCAL_COUNT: u64 = 3;

    /// `calls` non-streamed attempts cut before their answer, each asking for `n` choices,
    /// whose unmodelled fields count `fields` tokens.
    fn cut_before_the_answer(calls: u64, n: u64, fields: u64) -> Bound {
        Bound {
            prompt: calls * (Self::LOCAL_COUNT + fields),
            completion_missing: calls * n * u64::from(MAX_TOKENS),
            completion_over: 0,
        }
    }

    /// `calls` streams whose client left midway.
    fn cut_streams(calls: u64) -> Bound {
        Bound {
            prompt: calls * Self::LOCAL_COUNT,
            completion_missing: calls * u64::from(MAX_TOKENS),
            completion_over: calls * Self::LOCAL_COUNT,
        }
    }
}

/// The ledger's totals and the simulator's bill at one moment.
#[derive(Clone, Copy, Debug, Default)]
struct Totals {
    /// Ledger: calls, prompt tokens, completion tokens.
    ledger: [u64; 3],
    /// Simulator: requests billed, prompt tokens, completion tokens.
    billed: [u64; 3],
}

/// The budget test's processes: a paced simulator and weir with a budgeted key.
struct Mix {
    up: Proc,
    weir: Proc,
    /// Totals after the last step.
    last: std::cell::Cell<Totals>,
}

impl Mix {
    async fn start() -> Mix {
        let up = sim(&["--inter-token-ms", "40"]);
        let embedder = format!(
            "[targets.emb]\nbase_url = \"http://{addr}/v1\"\nmodel = \"sim-embed\"\n\
             timeout_ms = 5000\n\n[prices.\"sim-embed\"]\ninput_per_mtok = 1.0\n\
             output_per_mtok = 0\n\n[[routes]]\nmodel = \"embeddings\"\ntargets = [\"emb\"]\n\n\
             [[routes]]\nmodel = \"embedder\"\ntargets = [\"up\"]\nmax_attempts = 1\n\n\
             [[routes.stages]]\nname = \"chaos\"\npath = \"{path}\"\ndeadline_ms = 60000\n\
             config = {{ mode = \"embed-loop\", model = \"embeddings\" }}\n",
            addr = up.addr,
            path = weir_test_artifacts::CHAOS,
        );
        let weir = serve(&config(
            &[("up", &up, "sim-a")],
            "max_attempts = 1",
            &(key("team", "sk-team", "daily_budget_usd = 10.0") + &embedder),
        ));
        Mix {
            up,
            weir,
            last: std::cell::Cell::default(),
        }
    }

    /// A request of the mix: `text` (short words, which weir's tokenizer and the
    /// simulator's count alike), at most [`MAX_TOKENS`], with `extra` fields.
    fn body(text: &str, extra: Value) -> Value {
        let mut body = chat(text, MAX_TOKENS);
        if let (Some(body), Value::Object(extra)) = (body.as_object_mut(), extra) {
            body.extend(extra);
        }
        body
    }

    async fn ask(&self, body: &Value) -> crate::sim::client::Answer {
        ask(self.weir.addr, Some("sk-team"), body).await
    }

    async fn faults(&self, faults: Value) {
        assert_eq!(post(self.up.addr, "/sim/faults", &faults).await.status, 200);
    }

    /// Waits until the ledger holds a call for every request the simulator billed; the
    /// totals then.
    async fn settled(&self) -> Totals {
        until("the ledger to hold every billed call", || async {
            let spend = spend(&self.weir, "").await;
            let billed = billed(&self.up).await;
            let get = |v: &Value, k: &str| v[k].as_u64().unwrap();
            let totals = Totals {
                ledger: [
                    get(&spend["total"], "calls"),
                    get(&spend["total"], "prompt_tokens"),
                    get(&spend["total"], "completion_tokens"),
                ],
                // The ledger counts embeddings input as prompt tokens.
                billed: [
                    get(&billed, "requests"),
                    get(&billed, "prompt_tokens") + get(&billed, "embedding_tokens"),
                    get(&billed, "completion_tokens"),
                ],
            };
            check(totals.ledger[0] == totals.billed[0], format!("{totals:?}")).map(|_| totals)
        })
        .await
    }

    /// Runs one step (`work`), then checks that what it added to the ledger is what it added
    /// to the simulator's bill, within `bound`.
    async fn step(&self, name: &str, bound: Bound, work: impl std::future::Future<Output = ()>) {
        work.await;
        let now = self.settled().await;
        let delta = |t: &[u64; 3], l: &[u64; 3]| [t[0] - l[0], t[1] - l[1], t[2] - l[2]];
        let last = self.last.get();
        let ledger = delta(&now.ledger, &last.ledger);
        let billed = delta(&now.billed, &last.billed);
        let seen = format!("{name}: ledger {ledger:?}, billed {billed:?}, bound {bound:?}");
        assert!(ledger[0] > 0, "{seen}");
        assert_eq!(ledger[0], billed[0], "calls: {seen}");
        assert!(
            ledger[1].abs_diff(billed[1]) <= bound.prompt,
            "prompt: {seen}"
        );
        assert!(
            billed[2] <= ledger[2] + bound.completion_missing
                && ledger[2] <= billed[2] + bound.completion_over,
            "completion: {seen}"
        );
        eprintln!("{seen}");
        self.last.set(now);
    }
}

#[tokio::test]
async fn the_ledger_matches_what_the_provider_billed() {
    let mix = Mix::start().await;
    let text = "the cat sat on the mat and the dog ran to the old oak";
    // What `"n": 2` adds to a local count of the prompt.
    let n_field =
        local_prompt(&Mix::body(text, json!({"n": 2}))) - local_prompt(&Mix::body(text, json!({})));

    mix.step("plain answers", Bound::EXACT, async {
        for i in 0..3 {
            let answer = mix.ask(&Mix::body(&format!("{text} {i}"), json!({}))).await;
            assert_eq!(answer.status, 200, "{:?}", answer.body);
        }
    })
    .await;

    mix.step("n: 2", Bound::EXACT, async {
        let answer = mix.ask(&Mix::body(text, json!({"n": 2}))).await;
        assert_eq!(answer.status, 200, "{:?}", answer.body);
        assert_eq!(answer.json()["choices"].as_array().map(Vec::len), Some(2));
    })
    .await;

    mix.step("streams, stream_options null", Bound::EXACT, async {
        for options in [json!({"include_usage": true}), Value::Null] {
            let body = Mix::body(text, json!({"stream": true, "stream_options": options}));
            let answer = mix.ask(&body).await;
            assert_eq!(answer.events().last().map(String::as_str), Some("[DONE]"));
        }
    })
    .await;

    mix.step("a stage's embed() calls", Bound::EXACT, async {
        let mut body = Mix::body(text, json!({}));
        body["model"] = json!("embedder");
        let answer = mix.ask(&body).await;
        assert_eq!(answer.status, 200, "{:?}", answer.body);
        let said = answer.json()["choices"][0]["message"]["content"].clone();
        assert_eq!(
            said, "embed-loop: 4 calls, then llm_calls_exceeded",
            "{said}"
        );
    })
    .await;

    mix.step(
        "clients that disconnect",
        Bound::cut_before_the_answer(2, 1, 0),
        async {
            mix.faults(json!({"latency_ms": 1500})).await;
            for i in 0..2 {
                let before = billed(&mix.up).await["requests"].as_u64().unwrap();
                let body = Mix::body(&format!("{text} and ran {i}"), json!({}));
                let auth = [("authorization", "Bearer sk-team")];
                let client = send_and_hold(mix.weir.addr, &body, &auth).await;
                until_billed(&mix.up, before + 1).await;
                drop(client);
            }
        },
    )
    .await;

    mix.step(
        "attempts cut by the client's deadline, n: 2",
        Bound::cut_before_the_answer(2, 2, n_field),
        async {
            for i in 0..2 {
                let body = Mix::body(&format!("{text} and sat {i}"), json!({"n": 2}));
                let answer = call(
                    mix.weir.addr,
                    Method::POST,
                    "/v1/chat/completions",
                    &[
                        ("authorization", "Bearer sk-team"),
                        ("x-weir-deadline-ms", "300"),
                    ],
                    Some(Bytes::from(body.to_string())),
                )
                .await;
                assert!(answer.status.is_server_error(), "{:?}", answer.body);
            }
            mix.faults(json!({})).await;
        },
    )
    .await;

    mix.step(
        "streams cut by their client",
        Bound::cut_streams(2),
        async {
            for i in 0..2 {
                let body = Mix::body(&format!("{text} and the cat {i}"), json!({"stream": true}));
                let auth = [("authorization", "Bearer sk-team")];
                let mut client = send_and_hold(mix.weir.addr, &body, &auth).await;
                // The role chunk and three tokens, then the client leaves.
                read_events(&mut client, 4).await;
                drop(client);
            }
        },
    )
    .await;

    // Nothing stays reserved, and every call was counted against the key's budget.
    let spend = spend(&mix.weir, "").await;
    assert_eq!(spend["keys"][0]["reserved_usd"], 0.0, "{spend}");
    let spent = spend["keys"][0]["spent_today_usd"].as_f64().unwrap();
    assert!(
        (spent * 1e12 - total_pico(&spend) as f64).abs() < 1.0,
        "{spend}"
    );
}
