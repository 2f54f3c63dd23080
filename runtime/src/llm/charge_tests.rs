//! Every started attempt is paid for: the calls a client or a stage's hard timeout drops
//! midway, attempts cut by a deadline, and which failures the upstream bills; and `n` in the
//! reservation. Paused time, real sockets (a black hole, an in-process `weir sim`).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use super::{Call, Costing, LlmStep, RouteStep, StepError};
use crate::cache::{CacheControl, ResponseCache};
use crate::config::{
    CostSettings, KeySettings, ModelPrice, PolicySettings, RouteCacheSettings, Strategy,
    TargetLimits,
};
use crate::cost::{Account, Clock, CostError, Ledger, Meter, PriceTable, day_of, tokens};
use crate::providers::{AttemptError, ProviderClient};
use crate::router::testing::{black_hole, hung_connect, sim, target, target_ttft, target_with};
use crate::router::{Attempt, Outcome, RoutePlan, RoutePolicy, Router, TargetState};
use crate::sim::Faults;
use crate::wit::{ChatRequest, ChatResponse, Choice, Message, Usage};

/// Pico-dollars per prompt token of model `m` ($1 per million).
const IN: u64 = 1_000_000;
/// Per completion token ($2 per million).
const OUT: u64 = 2_000_000;

/// Costing as the tests' routes use it; model `m`'s tokenizer is loaded first (as a config
/// that counts tokens has it loaded before serving), so local counts are exact.
fn costing(count_failed_attempts: bool) -> Costing {
    tokens::warm_up(["m"]);
    let price = ModelPrice {
        input: IN,
        cached_input: IN,
        cache_write: IN + IN / 4,
        output: OUT,
    };
    let settings = CostSettings {
        prices: BTreeMap::from([("m".to_string(), price)]),
        ..CostSettings::default()
    };
    Costing {
        prices: PriceTable::new(&settings),
        ledger: Ledger::open(None, None).unwrap(),
        default_max_tokens: 256,
        count_failed_attempts,
        fuel_pico_per_million: 0,
    }
}

/// A step with one route `r` over `targets`, in order, under `settings`.
fn step_over(targets: Vec<Arc<TargetState>>, settings: PolicySettings) -> LlmStep {
    let chain: Vec<usize> = (0..targets.len()).collect();
    let plan = RoutePlan {
        weights: vec![1; chain.len()],
        chain,
        policy: RoutePolicy::new(settings),
        strategy: Strategy::Fallback,
    };
    let route = RouteStep {
        plan,
        cache: RouteCacheSettings::default(),
    };
    LlmStep::new(
        Router::new(ProviderClient::new().unwrap(), targets),
        HashMap::from([("r".to_string(), route)]),
        ResponseCache::new(1 << 20),
        costing(true),
    )
}

/// One attempt, no retry.
fn once() -> PolicySettings {
    PolicySettings {
        max_attempts: 1,
        ..PolicySettings::default()
    }
}

/// A meter for a key with a $1 daily budget and `max_cost_per_request` (pico-dollars), and
/// the key's account.
fn keyed(max_cost_per_request: Option<u64>) -> (Arc<Meter>, Arc<Account>) {
    let key = KeySettings {
        name: "k".into(),
        hash: [0; 32],
        daily_budget: Some(1_000_000_000_000),
        monthly_budget: None,
        rpm: None,
        tpm: None,
        max_cost_per_request,
        max_llm_calls_per_request: None,
    };
    let account = Arc::new(Account::new(key, Clock::default(), 0, 0));
    (Meter::new(Some(account.clone())), account)
}

fn request() -> ChatRequest {
    ChatRequest {
        max_tokens: Some(16),
        ..ChatRequest::hi("m")
    }
}

fn call<'a>(request: &'a ChatRequest, meter: &'a Arc<Meter>) -> Call<'a> {
    Call {
        route: "r",
        request,
        forward: &[],
        deadline: None,
        control: CacheControl::default(),
        meter,
    }
}

/// The charge of one attempt the upstream received and never answered: its prompt, counted
/// locally.
fn prompt_only(request: &ChatRequest) -> (u32, u64) {
    let prompt = tokens::count_prompt("m", request);
    (prompt, u64::from(prompt) * IN)
}

/// Asserts `meter` holds exactly `n` charges, each the locally counted prompt of `request`,
/// marked estimated; returns their total cost.
fn assert_prompt_estimates(meter: &Meter, request: &ChatRequest, n: usize) -> u64 {
    let charges = meter.charges();
    assert_eq!(charges.len(), n, "{charges:?}");
    let (prompt, cost) = prompt_only(request);
    for charge in &charges {
        assert!(charge.estimated, "{charge:?}");
        assert_eq!(charge.model, "m");
        assert_eq!(
            (charge.usage.prompt_tokens, charge.usage.completion_tokens),
            (prompt, 0)
        );
        assert_eq!(charge.cost, cost);
    }
    cost * n as u64
}

#[tokio::test(start_paused = true)]
async fn a_call_dropped_while_its_attempt_is_still_connecting_costs_nothing() {
    let (hung, _held) = hung_connect().await;
    let step = step_over(
        vec![target("t", hung, Duration::from_secs(60))],
        PolicySettings::default(),
    );
    let request = request();
    let (meter, account) = keyed(None);
    // The client leaves after 1 s, before the 5 s connect timeout: nothing went out.
    let dropped = tokio::time::timeout(
        Duration::from_secs(1),
        step.complete(call(&request, &meter)),
    );
    assert!(dropped.await.is_err(), "still connecting");
    assert!(meter.charges().is_empty(), "{:?}", meter.charges());
    assert_eq!(account.snapshot(), (0, 0, 0), "released, nothing spent");
}

#[tokio::test(start_paused = true)]
async fn a_call_dropped_while_its_attempt_is_in_flight_is_charged_its_prompt_estimated() {
    let (hole, _server) = black_hole().await;
    let step = step_over(
        vec![target("t", hole, Duration::from_secs(60))],
        PolicySettings::default(),
    );
    let request = request();
    let (meter, account) = keyed(None);

    // A client that disconnects: hyper drops the request's future, the step's with it.
    let dropped = tokio::time::timeout(
        Duration::from_secs(1),
        step.complete(call(&request, &meter)),
    );
    assert!(dropped.await.is_err(), "the upstream never answers");
    let cost = assert_prompt_estimates(&meter, &request, 1);
    assert!(cost > 0);
    assert_eq!(account.snapshot(), (cost, cost, 0), "spent; nothing held");

    // A stage's `complete()` cut by its hard timeout: the same.
    let dropped = tokio::time::timeout(Duration::from_secs(1), step.chat(call(&request, &meter)));
    assert!(dropped.await.is_err());
    assert_prompt_estimates(&meter, &request, 2);
    assert_eq!(account.snapshot(), (2 * cost, 2 * cost, 0));

    // Both are in the ledger, under the key, the route and the upstream model.
    let ledger = &step.costing().ledger;
    assert!(ledger.flush(Duration::from_secs(5)));
    let today = day_of(crate::clock::unix_secs());
    let rows = ledger.rows(today, today).unwrap();
    assert_eq!(rows.len(), 1, "{rows:?}");
    let row = &rows[0];
    assert_eq!((&*row.key, &*row.route, &*row.model), ("k", "r", "m"));
    assert_eq!((row.calls, row.cost_pico), (2, 2 * cost));
    assert_eq!(row.prompt_tokens, 2 * u64::from(prompt_only(&request).0));
}

#[tokio::test(start_paused = true)]
async fn a_call_dropped_before_its_attempt_was_sent_costs_nothing() {
    let (hole, _server) = black_hole().await;
    let one_at_a_time = TargetLimits {
        max_concurrency: 1,
        ..TargetLimits::default()
    };
    let step = step_over(
        vec![target_with(
            "t",
            hole,
            Duration::from_secs(60),
            one_at_a_time,
        )],
        PolicySettings {
            queue_timeout: Duration::from_secs(10),
            ..PolicySettings::default()
        },
    );
    let request = request();
    let (first_meter, first_account) = keyed(None);
    let mut first = Box::pin(step.complete(call(&request, &first_meter)));
    let waited = tokio::time::timeout(Duration::from_millis(100), &mut first).await;
    assert!(waited.is_err(), "in flight, holding the only slot");

    // The second waits in the route's queue, and its client leaves: nothing was sent.
    let (meter, account) = keyed(None);
    let dropped = tokio::time::timeout(
        Duration::from_secs(1),
        step.complete(call(&request, &meter)),
    )
    .await;
    assert!(dropped.is_err());
    assert!(meter.charges().is_empty(), "{:?}", meter.charges());
    assert_eq!(account.snapshot(), (0, 0, 0), "released, nothing spent");

    drop(first);
    let cost = assert_prompt_estimates(&first_meter, &request, 1);
    assert_eq!(first_account.snapshot(), (cost, cost, 0));
}

#[tokio::test(start_paused = true)]
async fn attempts_cut_by_a_deadline_after_the_upstream_started_are_charged() {
    let (hole, _server) = black_hole().await;
    let request = request();

    // The target's own timeout.
    let step = step_over(vec![target("t", hole, Duration::from_millis(300))], once());
    let (meter, account) = keyed(None);
    let reply = step.complete(call(&request, &meter)).await;
    assert!(matches!(reply.result, Err(StepError::Route(_))));
    assert_eq!(reply.attempts[0].outcome.label(), Some("timeout"));
    let cost = assert_prompt_estimates(&meter, &request, 1);
    assert_eq!(account.snapshot(), (cost, cost, 0));

    // The client's deadline (`x-weir-deadline-ms`): it blames no target, and still pays.
    let step = step_over(vec![target("t", hole, Duration::from_secs(60))], once());
    let (meter, _) = keyed(None);
    let reply = step
        .complete(Call {
            deadline: Some(Duration::from_millis(200)),
            ..call(&request, &meter)
        })
        .await;
    assert!(matches!(reply.result, Err(StepError::Route(_))));
    assert_eq!(reply.attempts[0].outcome.label(), Some("deadline"));
    assert_prompt_estimates(&meter, &request, 1);
}

#[tokio::test(start_paused = true)]
async fn a_connection_lost_after_the_request_went_out_is_charged_and_retried() {
    // The sim reads the whole request, then resets the connection (RST): the upstream had it.
    let resetting = sim(Faults {
        reset_rate: 1.0,
        ..Faults::default()
    })
    .await;
    let healthy = sim(Faults::default()).await;
    let request = request();

    let step = step_over(vec![target("t", resetting, Duration::from_secs(5))], once());
    let (meter, account) = keyed(None);
    let reply = step.complete(call(&request, &meter)).await;
    assert!(matches!(reply.result, Err(StepError::Route(_))));
    assert_eq!(reply.attempts[0].outcome.label(), Some("dropped"));
    let cost = assert_prompt_estimates(&meter, &request, 1);
    assert_eq!(account.snapshot(), (cost, cost, 0));

    // Like a timeout, it is retried on the next target, which answers: the lost attempt's
    // estimate and the answer's usage are both paid.
    let step = step_over(
        vec![
            target("t", resetting, Duration::from_secs(5)),
            target("u", healthy, Duration::from_secs(5)),
        ],
        PolicySettings::default(),
    );
    let (meter, _) = keyed(None);
    let reply = step.complete(call(&request, &meter)).await;
    assert!(reply.result.is_ok(), "{:?}", reply.result.err());
    let labels: Vec<_> = reply.attempts.iter().map(|a| a.outcome.label()).collect();
    assert_eq!(labels, [Some("dropped"), Some("ok")]);
    let charges = meter.charges();
    assert_eq!(charges.len(), 2, "{charges:?}");
    assert_eq!(
        charges.iter().filter(|c| c.estimated).count(),
        1,
        "{charges:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_stream_asked_for_a_json_answer_that_breaks_off_is_charged_the_text_it_sent() {
    // The target's TTFT timeout is below its timeout, so a JSON request goes upstream as a
    // stream (`stream_json`), which the sim cuts after five content events.
    let cutting = sim(Faults {
        stream_cut_after: Some(5),
        ..Faults::default()
    })
    .await;
    let step = step_over(
        vec![target_ttft(
            "t",
            cutting,
            Duration::from_secs(5),
            Duration::from_secs(1),
            TargetLimits::default(),
        )],
        once(),
    );
    let request = request();
    let (meter, account) = keyed(None);
    let reply = step.complete(call(&request, &meter)).await;
    assert!(matches!(reply.result, Err(StepError::Route(_))));
    assert_eq!(reply.attempts[0].outcome.label(), Some("protocol"));
    assert!(
        !reply.attempts[0].received.is_empty(),
        "{:?}",
        reply.attempts[0]
    );
    let charges = meter.charges();
    assert_eq!(charges.len(), 1, "{charges:?}");
    let (prompt, _) = prompt_only(&request);
    let received = tokens::count_text("m", &reply.attempts[0].received);
    assert!(received > 0);
    assert_eq!(
        (
            charges[0].usage.prompt_tokens,
            charges[0].usage.completion_tokens
        ),
        (prompt, received),
        "{charges:?}"
    );
    assert!(charges[0].estimated);
    assert_eq!(account.snapshot().0, charges[0].cost);
}

#[tokio::test(start_paused = true)]
async fn a_timeout_that_runs_out_while_connecting_is_a_connect_error_and_costs_nothing() {
    let (hung, _held) = hung_connect().await;
    let request = request();

    // The target's own timeout (below the 5 s connect timeout): no connection, so no call.
    let step = step_over(vec![target("t", hung, Duration::from_secs(1))], once());
    let (meter, account) = keyed(None);
    let reply = step.complete(call(&request, &meter)).await;
    assert!(matches!(reply.result, Err(StepError::Route(_))));
    assert_eq!(reply.attempts[0].outcome.label(), Some("connect"));
    assert!(
        reply.attempts[0].outcome.as_str().contains("no connection"),
        "{}",
        reply.attempts[0].outcome
    );
    assert!(meter.charges().is_empty(), "{:?}", meter.charges());
    assert_eq!(account.snapshot(), (0, 0, 0));

    // The client's deadline cuts it while connecting: it blames no target and costs nothing.
    let step = step_over(vec![target("t", hung, Duration::from_secs(60))], once());
    let (meter, account) = keyed(None);
    let reply = step
        .complete(Call {
            deadline: Some(Duration::from_millis(200)),
            ..call(&request, &meter)
        })
        .await;
    assert!(matches!(reply.result, Err(StepError::Route(_))));
    assert_eq!(reply.attempts[0].outcome.label(), Some("deadline"));
    assert!(meter.charges().is_empty(), "{:?}", meter.charges());
    assert_eq!(account.snapshot(), (0, 0, 0));
}

#[tokio::test(start_paused = true)]
async fn connect_errors_and_error_statuses_without_usage_are_not_charged() {
    let closed = {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        listener.local_addr().unwrap()
    };
    let failing = sim(Faults {
        error_rate: 1.0,
        error_status: 503,
        ..Faults::default()
    })
    .await;
    let request = request();
    for (addr, label) in [(closed, "connect"), (failing, "status_5xx")] {
        let step = step_over(vec![target("t", addr, Duration::from_secs(5))], once());
        let (meter, account) = keyed(None);
        let reply = step.complete(call(&request, &meter)).await;
        assert_eq!(reply.attempts[0].outcome.label(), Some(label));
        assert!(meter.charges().is_empty(), "{label}: {:?}", meter.charges());
        assert_eq!(account.snapshot(), (0, 0, 0), "{label}");
    }
}

/// One attempt record entry on `m` with `outcome` and `usage`.
fn attempt(outcome: Outcome, usage: Option<Usage>) -> Attempt {
    Attempt {
        target: "t".into(),
        outcome,
        status: None,
        elapsed: Duration::ZERO,
        model: "m".into(),
        usage,
        cache_writes: 0,
        span: None,
        upstream_message: None,
        received: String::new(),
    }
}

fn failed(err: &AttemptError) -> Outcome {
    Outcome::Failed {
        kind: err.kind(),
        message: err.to_string(),
        billed: err.billed(),
    }
}

fn usage(prompt_tokens: u32, completion_tokens: u32) -> Usage {
    Usage {
        prompt_tokens,
        completion_tokens,
        total_tokens: prompt_tokens + completion_tokens,
        cached_tokens: 0,
    }
}

#[test]
fn which_attempts_are_charged_and_how() {
    let request = request();
    let status = |status| AttemptError::Status {
        status,
        body: bytes::Bytes::new(),
        retry_after: None,
    };
    let record = [
        // Never reached the upstream, or refused it with a status and no usage: free.
        attempt(failed(&AttemptError::Connect("refused".into())), None),
        attempt(
            failed(&AttemptError::ConnectTimeout(Duration::from_secs(1))),
            None,
        ),
        attempt(
            Outcome::Cut {
                message: "cut by the client's deadline while connecting".into(),
                billed: false,
            },
            None,
        ),
        attempt(failed(&status(500)), None),
        // An error status whose body reports usage: as `count_failed_attempts` says.
        attempt(failed(&status(500)), Some(usage(7, 0))),
        // Received, then no usable reply: the prompt, counted locally.
        attempt(failed(&AttemptError::Timeout(Duration::from_secs(1))), None),
        attempt(
            Outcome::Cut {
                message: "cut by the client's deadline".into(),
                billed: true,
            },
            None,
        ),
        attempt(failed(&AttemptError::Protocol("over the cap".into())), None),
        attempt(Outcome::InFlight(crate::providers::Sent::default()), None),
        // The loop stopped: no attempt.
        attempt(Outcome::Stopped(crate::router::Stop::Deadline), None),
        // The answer, with its usage.
        attempt(Outcome::Ok, Some(usage(5, 3))),
    ];
    let (prompt, _) = prompt_only(&request);
    let estimate = (prompt, 0, true);
    let reported = |p, c| (p, c, false);
    for (count_failed, expected) in [
        (
            true,
            vec![
                reported(7, 0),
                estimate,
                estimate,
                estimate,
                estimate,
                reported(5, 3),
            ],
        ),
        (
            false,
            vec![estimate, estimate, estimate, estimate, reported(5, 3)],
        ),
    ] {
        let charges = costing(count_failed).charges(&request, &record, None);
        let seen: Vec<_> = charges
            .iter()
            .map(|c| {
                (
                    c.usage.prompt_tokens,
                    c.usage.completion_tokens,
                    c.estimated,
                )
            })
            .collect();
        assert_eq!(seen, expected, "count_failed_attempts = {count_failed}");
    }
}

#[test]
fn cache_writes_are_charged_at_the_cache_write_price_and_recorded() {
    let request = request();
    // 100 prompt tokens, 60 of them written to the provider's cache; 10 completion tokens.
    let mut answered = attempt(Outcome::Ok, Some(usage(100, 10)));
    answered.cache_writes = 60;
    // A failed attempt counted locally never carries cache writes.
    let mut cut = attempt(failed(&AttemptError::Timeout(Duration::from_secs(1))), None);
    cut.cache_writes = 60;
    let costing = costing(true);
    let charges = costing.charges(&request, &[cut, answered], None);
    assert_eq!(charges.len(), 2);
    assert_eq!((charges[0].cache_writes, charges[0].estimated), (0, true));
    assert_eq!(charges[1].cache_writes, 60);
    assert_eq!(charges[1].cost, 40 * IN + 60 * (IN + IN / 4) + 10 * OUT);
    // Beyond the prompt's uncached tokens, cache writes are not billed again.
    let mut absurd = attempt(Outcome::Ok, Some(usage(100, 10)));
    absurd.cache_writes = u32::MAX;
    let charges = costing.charges(&request, &[absurd], None);
    assert_eq!(charges[0].cost, 100 * (IN + IN / 4) + 10 * OUT);
}

#[test]
fn an_answer_without_usage_is_counted_locally_over_every_choice() {
    let request = request();
    let choice = |index| Choice {
        index,
        message: Message::text("assistant", "four score and seven years ago"),
        finish_reason: Some("stop".into()),
        extra: "{}".into(),
    };
    let answer = |n| ChatResponse {
        id: "c".into(),
        model: "m".into(),
        created: 0,
        choices: (0..n).map(choice).collect(),
        usage: None,
        extra: "{}".into(),
    };
    let completion = |n| {
        let record = [attempt(Outcome::Ok, None)];
        let charges = costing(true).charges(&request, &record, Some(&answer(n)));
        assert_eq!(charges.len(), 1);
        assert!(charges[0].estimated);
        charges[0].usage.completion_tokens
    };
    let one = completion(1);
    assert!(one > 0);
    assert!(completion(2) >= 2 * one - 1, "both choices are counted");
}

/// A router whose one target answers for model `m` (never called: only its price is read).
fn router() -> Router {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], 9));
    Router::new(
        ProviderClient::new().unwrap(),
        vec![target("t", addr, Duration::from_secs(1))],
    )
}

fn with_n(n: &str) -> ChatRequest {
    ChatRequest {
        extra: format!(r#"{{"n":{n}}}"#),
        ..request()
    }
}

#[test]
fn n_asks_for_that_many_completions_bounded() {
    let asked = |extra: &str| {
        super::costing::completions_asked(&ChatRequest {
            extra: extra.into(),
            ..request()
        })
    };
    assert_eq!(asked("{}"), 1);
    assert_eq!(asked(r#"{"n":1}"#), 1);
    assert_eq!(asked(r#"{"n":2}"#), 2);
    assert_eq!(asked(r#"{"n":128}"#), 128);
    assert_eq!(asked(r#"{"n":2.5}"#), 3, "rounded up");
    assert_eq!(
        asked(r#"{"n":"4"}"#),
        4,
        "a lenient provider reads a string"
    );
    for absurd in [
        r#"{"n":1e9}"#,
        r#"{"n":1e300}"#,
        r#"{"n":18446744073709551615}"#,
    ] {
        assert_eq!(asked(absurd), 1 << 20, "{absurd}");
    }
    for none in [
        r#"{"n":0}"#,
        r#"{"n":-3}"#,
        r#"{"n":null}"#,
        r#"{"n":"x"}"#,
        "[]",
        "not json",
    ] {
        assert_eq!(asked(none), 1, "{none}");
    }
}

#[tokio::test]
async fn n_multiplies_the_completion_part_of_the_reservation() {
    let costing = costing(true);
    let router = router();
    let one = with_n("1");
    // The worst case of n = 1: the prompt, and max_tokens at the output price.
    let (_, prompt_cost) = prompt_only(&one);
    let worst = prompt_cost + 16 * OUT;
    let (meter, account) = keyed(Some(worst));
    let hold = costing.open(&router, &[0], &one, &meter).await.unwrap();
    assert_eq!(account.snapshot().2, worst, "reserved: the 1x worst case");
    drop(hold);

    // `{"n":2}` counts as many prompt tokens as `{"n":1}`: only the completion doubles.
    assert_eq!(prompt_only(&with_n("2")), prompt_only(&one));
    let refused = costing.open(&router, &[0], &with_n("2"), &meter).await;
    assert!(
        matches!(&refused, Err(CostError::RequestCostExceeded { .. })),
        "{refused:?}"
    );
    // A hostile n saturates into a refusal; nothing overflows, nothing stays reserved.
    for absurd in ["1e9", "4294967295", "1e300"] {
        let refused = costing.open(&router, &[0], &with_n(absurd), &meter).await;
        assert!(refused.is_err(), "{absurd}");
    }
    assert_eq!(account.snapshot(), (0, 0, 0));
    // Without a per-request cap, the budget ($1) refuses it.
    let (meter, _) = keyed(None);
    let refused = costing.open(&router, &[0], &with_n("1e9"), &meter).await;
    assert!(
        matches!(&refused, Err(CostError::BudgetExceeded { .. })),
        "{refused:?}"
    );
    assert!(
        costing
            .open(&router, &[0], &with_n("2"), &meter)
            .await
            .is_ok()
    );
}
