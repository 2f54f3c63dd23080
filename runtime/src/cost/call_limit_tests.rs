//! The request's limit on LLM calls ([`Meter::begin_call`] and friends): the server's
//! default, a route's own, a key that may only lower it, the semantic probe's spare call and
//! each stage's own budget.

use std::sync::Arc;

use super::{Account, CallLimiter, Clock, CostError, Meter};
use crate::config::{DEFAULT_LLM_CALLS_PER_REQUEST, KeySettings};

fn account(max_calls: Option<u32>) -> Arc<Account> {
    let key = KeySettings {
        name: "team".into(),
        hash: [0; 32],
        daily_budget: None,
        monthly_budget: None,
        rpm: None,
        tpm: None,
        max_cost_per_request: None,
        max_llm_calls_per_request: max_calls,
    };
    Arc::new(Account::new(key, Clock::fixed(1_795_727_521), 0, 0))
}

/// Calls begun before the first refusal (at most 100), and that refusal.
fn calls_until_refused(meter: &Meter) -> (u32, Option<CostError>) {
    for made in 0..100 {
        if let Err(err) = meter.begin_call() {
            return (made, Some(err));
        }
    }
    (100, None)
}

#[test]
fn without_a_key_or_a_route_limit_the_servers_default_holds() {
    let meter = Meter::new(None);
    let (made, refusal) = calls_until_refused(&meter);
    assert_eq!(made, DEFAULT_LLM_CALLS_PER_REQUEST);
    let refusal = refusal.unwrap();
    assert_eq!(
        refusal,
        CostError::TooManyCalls {
            limit: "the server (cost.max_llm_calls_per_request)".into(),
            max: DEFAULT_LLM_CALLS_PER_REQUEST,
        }
    );
    assert_eq!(
        (refusal.status(), refusal.code()),
        (400, "llm_calls_exceeded")
    );
    assert_eq!(
        meter.calls(),
        DEFAULT_LLM_CALLS_PER_REQUEST,
        "a refusal counts nothing"
    );
}

#[test]
fn a_route_may_raise_or_lower_the_default_and_is_named_in_the_refusal() {
    for max in [3, 40] {
        let meter = Meter::new(None);
        meter.limit_calls(max, CallLimiter::Route("demo".into()));
        let (made, refusal) = calls_until_refused(&meter);
        assert_eq!(made, max);
        let message = refusal.unwrap().to_string();
        assert_eq!(
            message,
            format!(
                "this request already made {max} LLM calls, the most route `demo` allows one request"
            )
        );
    }
}

#[test]
fn a_key_may_only_lower_the_limit() {
    let lower = Meter::new(Some(account(Some(2))));
    lower.limit_calls(3, CallLimiter::Route("demo".into()));
    let (made, refusal) = calls_until_refused(&lower);
    assert_eq!(made, 2);
    assert!(
        matches!(refusal, Some(CostError::TooManyCalls { ref limit, max: 2 }) if limit == "key `team`")
    );

    let higher = Meter::new(Some(account(Some(50))));
    higher.limit_calls(3, CallLimiter::Route("demo".into()));
    assert_eq!(calls_until_refused(&higher).0, 3);
    // Before its route is known, a request is held to the server's default, lowered by
    // its key.
    assert_eq!(
        calls_until_refused(&Meter::new(Some(account(Some(50))))).0,
        10
    );
    assert_eq!(
        calls_until_refused(&Meter::new(Some(account(Some(4))))).0,
        4
    );
    assert_eq!(calls_until_refused(&Meter::new(Some(account(None)))).0, 10);
}

#[test]
fn the_semantic_probe_leaves_the_requests_own_call() {
    let meter = Meter::new(None);
    meter.limit_calls(2, CallLimiter::Server);
    assert!(
        meter.begin_call_leaving(1).is_ok(),
        "the probe: 1 of 2, one left"
    );
    assert!(meter.begin_call().is_ok(), "the request's own call");
    assert!(meter.begin_call_leaving(1).is_err());
    assert!(meter.begin_call().is_err());

    let tight = Meter::new(None);
    tight.limit_calls(1, CallLimiter::Server);
    assert!(
        tight.begin_call_leaving(1).is_err(),
        "no probe when it would take the only call"
    );
    assert_eq!(tight.calls(), 0);
    assert!(tight.begin_call().is_ok());
}

#[test]
fn each_stage_has_its_own_budget_within_the_request() {
    let meter = Meter::new(None);
    let (a, b): (Arc<str>, Arc<str>) = ("a@00000000".into(), "b@00000000".into());
    assert!(meter.begin_stage_call(&a, 2).is_ok());
    assert!(meter.begin_stage_call(&a, 2).is_ok());
    let refusal = meter.begin_stage_call(&a, 2).unwrap_err();
    assert_eq!(
        refusal,
        CostError::StageTooManyCalls {
            stage: "a@00000000".into(),
            max: 2
        }
    );
    assert_eq!(
        (refusal.status(), refusal.code()),
        (400, "llm_calls_exceeded")
    );
    assert_eq!(
        refusal.to_string(),
        "stage a@00000000 already made 2 LLM calls in this request, the most its \
         `max_llm_calls` allows"
    );
    assert!(
        meter.begin_stage_call(&b, 2).is_ok(),
        "another stage's calls are its own"
    );
    // A stage's budget is counted apart from the request's, which each call also begins.
    assert_eq!(meter.calls(), 0);
}
