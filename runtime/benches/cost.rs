//! `cost`: what cost accounting adds to a request — counting a prompt with tiktoken (for the
//! reservation), reserving against a key's budgets and settling at the real cost, turning a
//! call's attempt record into charges (an answered attempt; an attempt cut before its answer,
//! whose prompt is counted locally), and recording a ledger entry.
//!
//! Run: `cargo bench -p weir --bench cost`.

#![allow(missing_docs, clippy::unwrap_used)]

use std::sync::Arc;

use criterion::{Criterion, criterion_group};
use weir::config::CostSettings;
use weir::config::KeySettings;
use weir::cost::{Account, Charge, Clock, Entry, Ledger, Meter, PriceTable, tokens};
use weir::llm::Costing;
use weir::router::{Attempt, Outcome};
use weir::wit::{ChatRequest, Message, Usage};

fn message(role: &str, text: &str) -> Message {
    Message::text(role, text)
}

fn request(turns: usize) -> ChatRequest {
    let mut messages = vec![message(
        "system",
        "You are the assistant of the edge team. Be brief.",
    )];
    for i in 0..turns {
        messages.push(message(
            "user",
            &format!("Question {i}: what is a weir, and how does it differ from a dam?"),
        ));
        messages.push(message(
            "assistant",
            "A weir is a low barrier across a river; water flows over it. A dam holds water back.",
        ));
    }
    messages.push(message("user", "And a lock?"));
    ChatRequest {
        model: "gpt-4o".into(),
        messages,
        temperature: Some(0.0),
        top_p: None,
        max_tokens: Some(256),
        stream: false,
        user: None,
        metadata: Vec::new(),
        extra: "{}".into(),
    }
}

fn usage() -> Usage {
    Usage {
        prompt_tokens: 40,
        completion_tokens: 30,
        total_tokens: 70,
        cached_tokens: 0,
    }
}

fn bench(c: &mut Criterion) {
    tokens::warm_up(["gpt-4o", "gpt-4"]);
    let short = request(0);
    let long = request(20);
    c.bench_function("cost/count_prompt 2 messages", |b| {
        b.iter(|| tokens::count_prompt("gpt-4o", &short))
    });
    c.bench_function("cost/count_prompt 42 messages", |b| {
        b.iter(|| tokens::count_prompt("gpt-4o", &long))
    });

    let key = KeySettings {
        name: "team".into(),
        hash: [0; 32],
        daily_budget: Some(u64::MAX / 4),
        monthly_budget: Some(u64::MAX / 4),
        rpm: None,
        tpm: None,
        max_cost_per_request: None,
        max_llm_calls_per_request: Some(1_000_000_000),
    };
    let account = Arc::new(Account::new(key, Clock::default(), 0, 0));
    c.bench_function("cost/reserve+settle", |b| {
        b.iter(|| {
            let meter = Meter::new(Some(account.clone()));
            meter.begin_call().unwrap();
            // The local backend answers without waiting: polled once.
            let hold = futures_util::FutureExt::now_or_never(meter.reserve(1_000_000))
                .unwrap()
                .unwrap();
            hold.settle(&[Charge {
                model: "gpt-4o".into(),
                usage: usage(),
                cost: 400_000,
                estimated: false,
                cache_writes: 0,
            }])
        })
    });

    let costing = Costing {
        prices: PriceTable::new(&CostSettings::default()),
        ledger: Ledger::open(None, None).unwrap(),
        default_max_tokens: 4096,
        count_failed_attempts: true,
        fuel_pico_per_million: 0,
    };
    let attempt = |outcome, usage| Attempt {
        target: "primary".into(),
        outcome,
        status: None,
        elapsed: std::time::Duration::ZERO,
        model: "gpt-4o".into(),
        usage,
        cache_writes: 0,
        span: None,
        upstream_message: None,
        received: String::new(),
    };
    let answered = [attempt(Outcome::Ok, Some(usage()))];
    c.bench_function("cost/charges answered", |b| {
        b.iter(|| costing.charges(&long, &answered, None))
    });
    let cut = [attempt(
        Outcome::InFlight(weir::providers::Sent::default()),
        None,
    )];
    c.bench_function("cost/charges cut, 42 messages counted", |b| {
        b.iter(|| costing.charges(&long, &cut, None))
    });

    let ledger = Ledger::open(None, None).unwrap();
    c.bench_function("cost/ledger record", |b| {
        b.iter(|| {
            ledger.record(Entry {
                ts: 1_795_727_521,
                key: "team".into(),
                route: "demo".into(),
                model: "gpt-4o".into(),
                usage: usage(),
                cost: 400_000,
                cache: "miss",
                estimated: false,
                cache_writes: 0,
            })
        })
    });
    ledger.flush(std::time::Duration::from_secs(30));
}

criterion_group!(benches, bench);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
}
