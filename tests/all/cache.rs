//! The exact response cache through the real binary: hits are byte-identical and free of
//! upstream calls, `Cache-Control` and temperature are honoured, streams and JSON share
//! entries (a stream's entry is stored before its `[DONE]`), and concurrent identical misses
//! make exactly one upstream call.

use bytes::Bytes;
use http::Method;
use serde_json::{Value, json};

use crate::procs::{Proc, call, get, post, serve, sim};
use crate::sim::client::Answer;
use crate::wait;

fn config(upstream: &Proc, extra: &str) -> String {
    format!(
        r#"
[targets.up]
base_url = "http://{}/v1"

[[routes]]
model = "cached"
targets = ["up"]
max_attempts = 1
cache = {{ ttl_ms = 60000 }}

[[routes]]
model = "semantic"
targets = ["up"]
cache = {{ ttl_ms = 60000, semantic_threshold_percent = 85 }}

[[routes]]
model = "creative"
targets = ["up"]
cache = {{ ttl_ms = 60000, cache_nonzero_temperature = true }}
{extra}
"#,
        upstream.addr
    )
}

fn chat(model: &str, text: &str) -> Value {
    json!({"model": model, "temperature": 0, "messages": [{"role": "user", "content": text}]})
}

async fn received(sim: &Proc) -> u64 {
    get(sim.addr, "/sim/stats").await.json()["requests"]
        .as_u64()
        .unwrap()
}

fn cache_header(answer: &Answer) -> &str {
    answer.headers["x-weir-cache"].to_str().unwrap()
}

async fn post_with(weir: &Proc, body: &Value, headers: &[(&str, &str)]) -> Answer {
    call(
        weir.addr,
        Method::POST,
        "/v1/chat/completions",
        headers,
        Some(Bytes::from(body.to_string())),
    )
    .await
}

#[tokio::test]
async fn a_hit_is_byte_identical_and_makes_no_upstream_call() {
    let up = sim(&[]);
    let weir = serve(&config(&up, ""));
    let body = chat("cached", "what is a weir?");
    let miss = post(weir.addr, "/v1/chat/completions", &body).await;
    assert_eq!(miss.status, 200);
    assert_eq!(cache_header(&miss), "miss");
    let hit = post(weir.addr, "/v1/chat/completions", &body).await;
    assert_eq!(cache_header(&hit), "hit");
    assert_eq!(hit.body, miss.body, "a hit is byte-identical to its miss");
    assert_eq!(received(&up).await, 1);

    // A different question misses; `user` and `metadata` are not part of the key.
    let other = post(
        weir.addr,
        "/v1/chat/completions",
        &chat("cached", "what is a dam?"),
    )
    .await;
    assert_eq!(cache_header(&other), "miss");
    let mut same = body.clone();
    same["user"] = json!("someone-else");
    same["metadata"] = json!({"trace": "abc"});
    assert_eq!(
        cache_header(&post(weir.addr, "/v1/chat/completions", &same).await),
        "hit"
    );
    assert_eq!(received(&up).await, 2);
}

#[tokio::test]
async fn temperature_and_cache_control_are_honoured() {
    let up = sim(&[]);
    let weir = serve(&config(&up, ""));
    // No temperature means the provider's default (1): not cached unless the route says so.
    let mut sampled = chat("cached", "tell me a story");
    sampled.as_object_mut().unwrap().remove("temperature");
    for _ in 0..2 {
        let answer = post(weir.addr, "/v1/chat/completions", &sampled).await;
        assert_eq!(cache_header(&answer), "bypass");
    }
    assert_eq!(received(&up).await, 2);
    sampled["model"] = json!("creative");
    assert_eq!(
        cache_header(&post(weir.addr, "/v1/chat/completions", &sampled).await),
        "miss"
    );
    assert_eq!(
        cache_header(&post(weir.addr, "/v1/chat/completions", &sampled).await),
        "hit"
    );

    let body = chat("cached", "cache control");
    let answer = post_with(&weir, &body, &[("cache-control", "no-store")]).await;
    assert_eq!(cache_header(&answer), "bypass");
    // no-store stored nothing, so this is a miss that stores...
    assert_eq!(
        cache_header(&post(weir.addr, "/v1/chat/completions", &body).await),
        "miss"
    );
    // ...no-cache skips the lookup (a fresh upstream call) but the entry stays...
    let before = received(&up).await;
    let answer = post_with(&weir, &body, &[("cache-control", "no-cache")]).await;
    assert_eq!(cache_header(&answer), "bypass");
    assert_eq!(received(&up).await, before + 1);
    // ...and serves the next plain request.
    assert_eq!(
        cache_header(&post(weir.addr, "/v1/chat/completions", &body).await),
        "hit"
    );
}

fn sse_text(answer: &Answer) -> String {
    answer
        .events()
        .iter()
        .filter_map(|e| serde_json::from_str::<Value>(e).ok())
        .filter_map(|c| {
            c["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_string)
        })
        .collect()
}

#[tokio::test]
async fn streams_and_json_share_entries() {
    let up = sim(&[]);
    let weir = serve(&config(&up, ""));
    // A JSON miss, replayed as a stream.
    let body = chat("cached", "json first");
    let json_answer = post(weir.addr, "/v1/chat/completions", &body).await;
    let mut streamed = body.clone();
    streamed["stream"] = json!(true);
    let replay = post(weir.addr, "/v1/chat/completions", &streamed).await;
    assert_eq!(cache_header(&replay), "hit");
    assert_eq!(replay.events().last().map(String::as_str), Some("[DONE]"));
    assert_eq!(
        sse_text(&replay),
        json_answer.json()["choices"][0]["message"]["content"]
            .as_str()
            .unwrap()
    );
    // A stream miss (relayed, stored before its [DONE] is sent), then served as JSON.
    let mut stream_first = chat("cached", "stream first");
    stream_first["stream"] = json!(true);
    let live = post(weir.addr, "/v1/chat/completions", &stream_first).await;
    assert_eq!(cache_header(&live), "miss");
    assert_eq!(live.events().last().map(String::as_str), Some("[DONE]"));
    let text = sse_text(&live);
    let mut as_json = stream_first.clone();
    as_json["stream"] = json!(false);
    // The very first request after [DONE] is a hit: only the stream's own fill can have
    // stored it (a miss here would fill the cache itself and call the upstream a third time).
    let hit = post(weir.addr, "/v1/chat/completions", &as_json).await;
    assert_eq!(
        cache_header(&hit),
        "hit",
        "the streamed answer was stored before its [DONE]"
    );
    assert_eq!(hit.json()["choices"][0]["message"]["content"], text);
    assert_eq!(
        received(&up).await,
        2,
        "one JSON and one stream upstream call"
    );
}

#[tokio::test]
async fn concurrent_identical_misses_make_exactly_one_upstream_call() {
    let up = sim(&["--latency-ms", "300"]);
    let weir = serve(&config(&up, ""));
    let addr = weir.addr;
    let tasks: Vec<_> = (0..100)
        .map(|_| {
            tokio::spawn(async move {
                post(addr, "/v1/chat/completions", &chat("cached", "stampede")).await
            })
        })
        .collect();
    let mut statuses = Vec::new();
    let mut bodies = Vec::new();
    for task in tasks {
        let answer = task.await.unwrap();
        statuses.push((answer.status.as_u16(), cache_header(&answer).to_string()));
        bodies.push(answer.json()["choices"][0]["message"]["content"].clone());
    }
    assert!(statuses.iter().all(|(s, _)| *s == 200), "{statuses:?}");
    assert_eq!(received(&up).await, 1, "exactly one upstream call");
    assert_eq!(statuses.iter().filter(|(_, c)| c == "miss").count(), 1);
    assert!(statuses.iter().any(|(_, c)| c == "coalesced"));
    assert!(bodies.iter().all(|b| *b == bodies[0]));
}

#[tokio::test]
async fn when_the_leader_fails_followers_get_the_same_error_without_a_stampede() {
    let up = sim(&[
        "--latency-ms",
        "300",
        "--error-rate",
        "1.0",
        "--error-status",
        "503",
    ]);
    let weir = serve(&config(&up, ""));
    let addr = weir.addr;
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            tokio::spawn(async move {
                post(addr, "/v1/chat/completions", &chat("cached", "doomed")).await
            })
        })
        .collect();
    for task in tasks {
        let answer = task.await.unwrap();
        assert_eq!(answer.status, 502);
    }
    assert_eq!(
        received(&up).await,
        1,
        "followers share the leader's failure"
    );
}

fn disk_config(up: &Proc) -> (std::path::PathBuf, std::path::PathBuf) {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("weir-disk-cache-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let extra = format!("[cache]\ndisk_dir = \"{}\"\n", dir.display());
    (crate::procs::scratch_config(&config(up, &extra)), dir)
}

fn cache_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for shard in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        for file in std::fs::read_dir(shard.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            // Only entries: a temporary file (written, not yet renamed into place) is not one.
            let name = file.file_name();
            let name = name.to_string_lossy();
            if name.len() == 64 && name.bytes().all(|b| b.is_ascii_hexdigit()) {
                files.push(file.path());
            }
        }
    }
    files
}

#[tokio::test]
async fn the_disk_tier_survives_a_restart_and_a_flipped_bit_is_a_miss() {
    let up = sim(&[]);
    let (config_path, dir) = disk_config(&up);
    let body = chat("cached", "remember me");
    let first = {
        let weir = crate::procs::serve_file(&config_path);
        let answer = post(weir.addr, "/v1/chat/completions", &body).await;
        assert_eq!(cache_header(&answer), "miss");
        // The write happens off the request path; wait for the file.
        wait::until("the cache file", || async {
            let files = cache_files(&dir);
            wait::check(!files.is_empty(), format!("{files:?}"))
        })
        .await;
        answer
    }; // weir is killed here (SIGKILL)
    assert_eq!(cache_files(&dir).len(), 1);

    let weir = crate::procs::serve_file(&config_path);
    let again = post(weir.addr, "/v1/chat/completions", &body).await;
    assert_eq!(
        cache_header(&again),
        "hit",
        "served from disk after a restart"
    );
    assert_eq!(again.body, first.body);
    assert_eq!(received(&up).await, 1);
    drop(weir);

    // Flip one bit of the stored entry: it must read as a miss and be replaced.
    let file = &cache_files(&dir)[0];
    let mut bytes = std::fs::read(file).unwrap();
    let last = bytes.len() - 2;
    bytes[last] ^= 0x01;
    std::fs::write(file, &bytes).unwrap();
    let weir = crate::procs::serve_file(&config_path);
    let after = post(weir.addr, "/v1/chat/completions", &body).await;
    assert_eq!(
        cache_header(&after),
        "miss",
        "a corrupted entry is never served"
    );
    assert_eq!(after.status, 200);
    assert_eq!(received(&up).await, 2);
    let _ = std::fs::remove_dir_all(&dir);
}

fn conversation(system: &str, earlier: &str, last: &str) -> Value {
    json!({"model": "semantic", "temperature": 0, "messages": [
        {"role": "system", "content": system},
        {"role": "user", "content": earlier},
        {"role": "assistant", "content": "Noted."},
        {"role": "user", "content": last}
    ]})
}

#[tokio::test]
async fn the_semantic_tier_matches_typos_and_casing_but_nothing_else() {
    let up = sim(&[]);
    let weir = serve(&config(&up, ""));
    let ask = |system: &str, earlier: &str, last: &str| {
        let body = conversation(system, earlier, last);
        let addr = weir.addr;
        async move { post(addr, "/v1/chat/completions", &body).await }
    };
    let original = ask(
        "Be brief.",
        "I am planning a trip.",
        "What is the capital of France?",
    )
    .await;
    assert_eq!(cache_header(&original), "miss");
    let content = |a: &Answer| a.json()["choices"][0]["message"]["content"].clone();

    for near in [
        "what is teh capital of france",
        "WHAT IS THE CAPITAL OF FRANCE?",
    ] {
        let answer = ask("Be brief.", "I am planning a trip.", near).await;
        assert_eq!(cache_header(&answer), "semantic-hit", "{near}");
        let similarity: f32 = answer.headers["x-weir-semantic-similarity"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((0.85..=1.0).contains(&similarity), "{near}: {similarity}");
        assert_eq!(content(&answer), content(&original));
    }
    assert_eq!(received(&up).await, 1);

    // A different question, a different system prompt, a different earlier turn: all miss.
    let cases = [
        (
            "Be brief.",
            "I am planning a trip.",
            "What is the capital of Germany?",
        ),
        (
            "Be verbose.",
            "I am planning a trip.",
            "What is the capital of France?",
        ),
        (
            "Be brief.",
            "I am writing an essay.",
            "What is the capital of France?",
        ),
    ];
    for (i, (system, earlier, last)) in cases.into_iter().enumerate() {
        let answer = ask(system, earlier, last).await;
        assert_eq!(cache_header(&answer), "miss", "case {i}");
        assert!(answer.headers.get("x-weir-semantic-similarity").is_none());
    }
    assert_eq!(received(&up).await, 4);
}

#[tokio::test]
async fn the_semantic_tier_can_embed_with_an_embeddings_target() {
    let up = sim(&[]);
    let embedder = sim(&[]);
    let extra = format!(
        r#"
[targets.embedder]
base_url = "http://{}/v1"
model = "sim-embed"

[[routes]]
model = "remote"
targets = ["up"]
cache = {{ ttl_ms = 60000, semantic_threshold_percent = 95, semantic_embeddings = "embedder" }}
"#,
        embedder.addr
    );
    let weir = serve(&config(&up, &extra));
    let ask = |text: &str| {
        let body = json!({"model": "remote", "temperature": 0, "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": text}
        ]});
        let addr = weir.addr;
        async move { post(addr, "/v1/chat/completions", &body).await }
    };
    let original = ask("What is the capital of France?").await;
    assert_eq!(cache_header(&original), "miss");
    // The sim's embeddings ignore case and spacing: a re-cased question is the same vector.
    let recased = ask("WHAT IS THE   CAPITAL OF FRANCE?").await;
    assert_eq!(cache_header(&recased), "semantic-hit");
    assert_eq!(
        recased.json()["choices"][0]["message"]["content"],
        original.json()["choices"][0]["message"]["content"]
    );
    assert_eq!(recased.headers["x-weir-semantic-similarity"], "1.000");
    // Any other change is an unrelated vector there: a typo misses, unlike the local embedder.
    assert_eq!(
        cache_header(&ask("What is teh capital of France?").await),
        "miss"
    );
    assert_eq!(
        cache_header(&ask("What is the capital of Spain?").await),
        "miss"
    );
    let stats = get(embedder.addr, "/sim/stats").await.json();
    assert_eq!(stats["embeddings"], 4, "{stats}");
    assert_eq!(stats["chat_completions"], 0, "{stats}");
    assert_eq!(received(&up).await, 3);

    // The embeddings target going away costs the semantic lookup, never the answer.
    drop(embedder);
    let answer = ask("What is the capital of Italy?").await;
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    assert_eq!(cache_header(&answer), "miss");
    // The exact tier still works without it.
    assert_eq!(
        cache_header(&ask("What is the capital of Italy?").await),
        "hit"
    );
}

#[tokio::test]
async fn admin_delete_invalidates_everything_a_route_or_one_key() {
    let up = sim(&[]);
    let dir = std::env::temp_dir().join(format!("weir-cache-delete-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let extra = format!(
        "[cache]\ndisk_dir = \"{}\"\n\n[[routes]]\nmodel = \"other\"\ntargets = [\"up\"]\ncache = {{ ttl_ms = 60000 }}\n",
        dir.display()
    );
    let weir = serve(&config(&up, &extra));
    let admin = weir.admin.unwrap();
    let delete = |query: &'static str| async move {
        call(
            admin,
            Method::DELETE,
            &format!("/admin/cache{query}"),
            &[],
            None,
        )
        .await
    };
    let fill = || async {
        let mut keys = Vec::new();
        for (model, text) in [("cached", "one"), ("cached", "two"), ("other", "three")] {
            let answer = post(weir.addr, "/v1/chat/completions", &chat(model, text)).await;
            keys.push(
                answer.headers["x-weir-cache-key"]
                    .to_str()
                    .unwrap()
                    .to_string(),
            );
        }
        keys
    };
    let status = |model: &'static str, text: &'static str| async move {
        let answer = post(weir.addr, "/v1/chat/completions", &chat(model, text)).await;
        cache_header(&answer).to_string()
    };
    let keys = fill().await;
    assert_eq!(status("cached", "one").await, "hit");

    // By key: that entry only, from memory and disk.
    let removed = delete(Box::leak(format!("?key={}", keys[0]).into_boxed_str())).await;
    assert_eq!(removed.status, 200, "{:?}", removed.body);
    assert_eq!(removed.json()["removed"]["memory"], 1);
    assert_eq!(status("cached", "one").await, "miss");
    assert_eq!(status("cached", "two").await, "hit");

    // By route: every entry of `cached`, none of `other`.
    let removed = delete("?route=cached").await.json();
    assert_eq!(removed["removed"]["memory"], 2, "{removed}");
    assert_eq!(status("cached", "two").await, "miss");
    assert_eq!(status("other", "three").await, "hit");

    // Everything.
    let removed = delete("").await.json();
    assert!(
        removed["removed"]["disk"].as_u64().unwrap() >= 1,
        "{removed}"
    );
    assert_eq!(status("other", "three").await, "miss");

    // A bad scope is a 400 naming the choices.
    let bad = delete("?key=xyz").await;
    assert_eq!(bad.status, 400);
    assert_eq!(bad.json()["error"]["code"], "invalid_cache_key");
    let bad = delete("?colour=red").await;
    assert_eq!(bad.status, 400);
    // A route the config does not name, with nothing to remove, is a typo, not a purge.
    let typo = delete("?route=cahced").await;
    assert_eq!(typo.status, 404, "{:?}", typo.body);
    assert_eq!(typo.json()["error"]["code"], "route_not_found");
    let _ = std::fs::remove_dir_all(&dir);
}
