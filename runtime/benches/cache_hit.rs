//! `cache_hit`: the in-process hit path of the response cache — key the request (blake3 over
//! its canonical encoding), look it up in the memory tier, clone the response out — and the
//! memory 10,000 entries take.
//!
//! Run: `cargo bench -p weir --bench cache_hit`.

// Benchmarks measure wall time: std's clock (clippy.toml bans it elsewhere).
#![allow(missing_docs, clippy::unwrap_used, clippy::disallowed_types)]

use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group};
use weir::cache::{ResponseCache, embed_local, probe, request_key};
use weir::wit::{ChatRequest, ChatResponse, Choice, Content, Message};

fn message(role: &str, text: &str) -> Message {
    Message::text(role, text)
}

fn request(i: usize) -> ChatRequest {
    ChatRequest {
        model: "demo".into(),
        messages: vec![
            message(
                "system",
                "You are the assistant of the edge team. Be brief.",
            ),
            message(
                "user",
                &format!("Question {i}: what is a weir, and how does it differ from a dam?"),
            ),
        ],
        temperature: Some(0.0),
        top_p: None,
        max_tokens: Some(256),
        stream: false,
        user: None,
        metadata: Vec::new(),
        extra: r#"{"seed":7}"#.into(),
    }
}

fn response(i: usize) -> ChatResponse {
    ChatResponse {
        id: format!("chatcmpl-{i:024}"),
        model: "demo".into(),
        created: 1_700_000_000,
        choices: vec![Choice {
            index: 0,
            message: message(
                "assistant",
                &"A weir is a low barrier across a river. ".repeat(12),
            ),
            finish_reason: Some("stop".into()),
            extra: r#"{"logprobs":null}"#.into(),
        }],
        usage: None,
        extra: r#"{"system_fingerprint":"fp_1"}"#.into(),
    }
}

fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .nth(1)
                .and_then(|p| p.parse::<u64>().ok())
        })
        .map(|pages| pages * 4096)
        .unwrap_or(0)
}

fn bench(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let cache = ResponseCache::new(1 << 30);
    for i in 0..1000 {
        cache.put(
            request_key("demo", None, &request(i)),
            "demo",
            response(i),
            Duration::from_secs(600),
        );
    }
    let probe = request(500);
    c.bench_function("cache_hit/key+get", |b| {
        b.iter(|| {
            let key = request_key("demo", None, &probe);
            runtime.block_on(cache.get(&key)).unwrap()
        })
    });
}

/// p50/p99 of single hits, and the memory of 10,000 entries.
fn figures() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let cache = ResponseCache::new(1 << 30);
    let requests: Vec<ChatRequest> = (0..10_000).map(request).collect();
    let before = rss_bytes();
    for (i, r) in requests.iter().enumerate() {
        cache.put(
            request_key("demo", None, r),
            "demo",
            response(i),
            Duration::from_secs(600),
        );
    }
    let count = cache.entry_count();
    let after = rss_bytes();
    let mut samples = Vec::with_capacity(20_000);
    for i in 0..20_000 {
        let r = &requests[i % requests.len()];
        let start = Instant::now();
        let key = request_key("demo", None, r);
        let hit = runtime.block_on(cache.get(&key));
        samples.push(start.elapsed());
        assert!(hit.is_some());
    }
    samples.sort_unstable();
    let at = |q: f64| samples[((samples.len() as f64) * q) as usize].as_secs_f64() * 1e6;
    println!(
        "cache_hit: median {:.2} µs, p99 {:.2} µs over 20,000 hits; {count} entries of ~{} B \
         text took {:.1} MiB RSS ({:.0} B per entry)",
        at(0.5),
        at(0.99),
        "A weir is a low barrier across a river. ".len() * 12,
        (after.saturating_sub(before)) as f64 / (1 << 20) as f64,
        after.saturating_sub(before) as f64 / count.max(1) as f64,
    );
}

/// p50/p99 of a semantic hit with the local embedder: blank the last user message and key
/// the namespace, embed the message, scan a full namespace (256 entries), fetch the entry.
fn semantic_figures() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let cache = ResponseCache::new(1 << 30);
    for i in 0..256 {
        let r = request(i);
        let key = request_key("demo", None, &r);
        cache.put(key, "demo", response(i), Duration::from_secs(600));
        let (namespace, text) = probe("demo", None, "local", &r).unwrap();
        cache
            .semantic
            .remember(namespace, embed_local(&text), key, Duration::from_secs(600));
    }
    let mut typo = request(100);
    typo.messages[1].content = Some(Content::Text(
        "question 100: what is a wier, and how does it differ from a dam".into(),
    ));
    let mut samples = Vec::with_capacity(5_000);
    let mut similarity = 0.0;
    for _ in 0..5_000 {
        let start = Instant::now();
        let (namespace, text) = probe("demo", None, "local", &typo).unwrap();
        let vector = embed_local(&text);
        let (exact, s) = cache.semantic.nearest(&namespace, &vector, 0.85).unwrap();
        let hit = runtime.block_on(cache.get(&exact));
        samples.push(start.elapsed());
        similarity = s;
        assert!(hit.is_some());
    }
    samples.sort_unstable();
    let at = |q: f64| samples[((samples.len() as f64) * q) as usize].as_secs_f64() * 1e6;
    println!(
        "semantic_hit (local embedder, 256 entries in the namespace): median {:.1} µs, \
         p99 {:.1} µs over 5,000 hits; similarity {similarity:.3}",
        at(0.5),
        at(0.99),
    );
}

criterion_group!(benches, bench);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    figures();
    semantic_figures();
}
