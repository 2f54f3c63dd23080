//! Pipelines: onion order, instance state across phases, short-circuits, rejections, the
//! error policy and load shedding when the instance pool is exhausted.

use std::sync::Arc;

use weir::config::SandboxSettings;
use weir::host_api::NoLlm;
use weir::stages::FailureKind;

use crate::support::{TestHost, chaos, run_pipeline, user};
use crate::wait;

fn tag(t: &str) -> crate::support::Spec {
    chaos("tag").config("tag", t).named(&format!("tag-{t}"))
}

#[tokio::test]
async fn stages_run_in_onion_order_on_the_same_instance() {
    let host = TestHost::shared().await;
    let outcome = host.run(&[tag("A"), tag("B")], user("hi")).await;
    let upstream = outcome.upstream.as_ref().unwrap();
    assert_eq!(crate::support::text_of(&upstream.messages[0]), "hi >A >B");
    assert_eq!(outcome.text(), "echo: hi >A >B <B:same <A:same");
    assert_eq!(outcome.labels.len(), 2);
    for label in &outcome.labels {
        let (name, hash) = label.split_once('@').unwrap();
        assert!(name.starts_with("tag-"));
        assert_eq!(hash.len(), 8);
        assert!(hash.chars().all(|c| c.is_ascii_hexdigit()));
    }
}

#[tokio::test]
async fn respond_short_circuits_later_stages_and_the_llm() {
    let host = TestHost::shared().await;
    let outcome = host
        .run(&[tag("A"), chaos("respond"), tag("C")], user("hi"))
        .await;
    assert!(
        outcome.upstream.is_none(),
        "no LLM call after a short-circuit"
    );
    assert_eq!(outcome.text(), "answered by the chaos stage <A:same");
    let names: Vec<&str> = outcome
        .labels
        .iter()
        .map(|l| l.split('@').next().unwrap())
        .collect();
    assert_eq!(names, ["tag-A", "chaos-respond"]);
}

#[tokio::test]
async fn reject_answers_with_the_stage_status_and_code() {
    let host = TestHost::shared().await;
    let outcome = host.run(&[chaos("reject"), tag("B")], user("hi")).await;
    let err = outcome.err();
    assert_eq!(err.status(), 403);
    assert_eq!(err.code(), "chaos_rejected");
    assert_eq!(err.client_message(), "chaos says no");
    assert!(outcome.upstream.is_none());
    assert_eq!(outcome.labels.len(), 1);
}

#[tokio::test]
async fn a_reject_with_a_non_error_status_is_a_stage_failure() {
    let host = TestHost::shared().await;
    let outcome = host.run(&[chaos("bad-status")], user("hi")).await;
    assert_eq!(outcome.err().status(), 500);
    assert_eq!(outcome.err().kind(), FailureKind::Failed);
}

#[tokio::test]
async fn fail_policy_answers_500_and_skip_policy_continues() {
    let host = TestHost::shared().await;
    let outcome = host.run(&[chaos("fail"), tag("B")], user("hi")).await;
    assert_eq!(outcome.err().status(), 500);
    assert_eq!(outcome.err().code(), "stage_failed");
    assert!(
        outcome
            .err()
            .client_message()
            .contains("deliberate failure")
    );

    let outcome = host
        .run(&[chaos("fail").skip_on_error(), tag("B")], user("hi"))
        .await;
    assert_eq!(outcome.text(), "echo: hi >B <B:same");
    assert_eq!(outcome.runs[0].outcome, "skipped:stage_failed");

    let outcome = host
        .run(&[chaos("panic").skip_on_error(), tag("B")], user("hi"))
        .await;
    assert_eq!(outcome.text(), "echo: hi >B <B:same");
    assert_eq!(outcome.runs[0].outcome, "skipped:trap");
}

#[tokio::test]
async fn a_0_2_stage_holds_no_instance_between_its_phases() {
    let host = TestHost::new(
        SandboxSettings {
            pool_size: 2,
            ..SandboxSettings::default()
        },
        Arc::new(NoLlm),
    );
    let pipeline = host.pipeline(&[tag("A")]).await;
    // Ten requests between their phases (waiting on the model), with a pool of two: each
    // request's instance is back in the pool as soon as its request phase ended.
    let mut waiting = Vec::new();
    for i in 0..10 {
        let mut fwd = pipeline.start(&host.env, format!("r{i}").into(), user("one"));
        fwd.on_request().await.unwrap();
        waiting.push(fwd);
        // This host releases instances on its reaper thread.
        wait::until("the request-phase instance back in the pool", || async {
            let live = host.env.sandbox.live_instances();
            wait::check(live == 0, live)
        })
        .await;
    }
    // Each gets its state back on a fresh instance in its response phase.
    for mut fwd in waiting {
        let request = fwd.request().clone();
        let done = fwd
            .on_response(crate::support::echo(&request), false, 0)
            .await
            .unwrap();
        let weir::pipeline::Responded::Done(response) = done else {
            panic!("no retry was asked");
        };
        assert_eq!(response.text(), "echo: one >A <A:same");
        wait::until("the response-phase instance back in the pool", || async {
            let live = host.env.sandbox.live_instances();
            wait::check(live == 0, live)
        })
        .await;
    }

    // With a pool less than half in use, the instance is kept for the response phase (an
    // instantiation saved); the stage sees the same state either way.
    let roomy = TestHost::new(
        SandboxSettings {
            pool_size: 64,
            ..SandboxSettings::default()
        },
        Arc::new(NoLlm),
    );
    let pipeline = roomy.pipeline(&[tag("A")]).await;
    let mut fwd = pipeline.start(&roomy.env, "kept".into(), user("one"));
    fwd.on_request().await.unwrap();
    assert_eq!(roomy.env.sandbox.live_instances(), 1);
    let request = fwd.request().clone();
    let Ok(weir::pipeline::Responded::Done(response)) = fwd
        .on_response(crate::support::echo(&request), false, 0)
        .await
    else {
        panic!("the response phase failed");
    };
    assert_eq!(response.text(), "echo: one >A <A:same");
}

#[tokio::test]
async fn an_exhausted_pool_sheds_with_503_and_recovers() {
    let host = TestHost::new(
        SandboxSettings {
            pool_size: 2,
            ..SandboxSettings::default()
        },
        Arc::new(NoLlm),
    );
    // A 0.1 stage keeps its instance between its phases.
    let pipeline = host
        .pipeline(&[crate::support::Spec::new(
            weir_test_artifacts::V1_STAGE,
            "v1",
        )])
        .await;
    // Two requests each hold an instance between their phases.
    let mut first = pipeline.start(&host.env, "r1".into(), user("one"));
    first.on_request().await.unwrap();
    let mut second = pipeline.start(&host.env, "r2".into(), user("two"));
    second.on_request().await.unwrap();
    let outcome = run_pipeline(&host.env, &pipeline, user("three")).await;
    assert_eq!(outcome.err().status(), 503);
    assert_eq!(outcome.err().kind(), FailureKind::PoolExhausted);

    drop(first);
    drop(second);
    // Instances are released on the reaper thread; the pool recovers once it has run.
    wait::until("the pool to recover after the holders finished", || async {
        match run_pipeline(&host.env, &pipeline, user("four"))
            .await
            .result
        {
            Ok(_) => Ok(()),
            Err(err) => Err(format!("{err:?}")),
        }
    })
    .await;
}
