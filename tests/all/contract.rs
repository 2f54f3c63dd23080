//! The two versions of the stage contract through `weir serve`: a `weir:stage@0.2.0` stage's
//! streaming hook (pii-redact restores placeholders chunk by chunk, the client gets the
//! upstream's chunks), and a `weir:stage@0.1.0` component that still loads and keeps its
//! instance between its phases.

use serde_json::{Value, json};

use crate::procs::{Proc, get, post, serve, sim, sim_requests};

/// `weir serve` with one route `m` to `upstream` through `stages` (name, path), in order.
fn serve_route(upstream: &Proc, stages: &[(&str, &str)]) -> Proc {
    let stages: String = stages
        .iter()
        .map(|(name, path)| format!("[[routes.stages]]\nname = \"{name}\"\npath = \"{path}\"\n"))
        .collect();
    serve(&format!(
        "[targets.up]\nbase_url = \"http://{}/v1\"\n[[routes]]\nmodel = \"m\"\ntargets = [\"up\"]\n{stages}",
        upstream.addr
    ))
}

/// `data:` events of a stream, parsed (`[DONE]` left out).
fn chunks(events: &[String]) -> Vec<Value> {
    events
        .iter()
        .filter(|e| e.as_str() != "[DONE]")
        .map(|e| serde_json::from_str(e).unwrap())
        .collect()
}

/// The text of every chunk that carries some, in order.
fn texts(chunks: &[Value]) -> Vec<String> {
    chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .map(str::to_string)
        .collect()
}

#[tokio::test]
async fn a_stream_through_pii_redact_keeps_the_upstreams_chunks_and_restores_split_placeholders() {
    let upstream = sim(&[]);
    let weir = serve_route(
        &upstream,
        &[("pii-redact", weir_test_artifacts::PII_REDACT)],
    );
    let body = json!({"model": "m", "stream": true, "messages": [{"role": "user",
        "content": "Mail jane.doe@example.com or call +1 415 555 0100, not bob@corp.example"}]});
    // The second time pii-redact's request phase comes from the stage output cache (it is
    // deterministic): its chunk hook must get the same state back.
    for _ in 0..2 {
        let answer = post(weir.addr, "/v1/chat/completions", &body).await;
        assert_eq!(answer.status, 200, "{:?}", answer.body);
        let events = answer.events();
        assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
        let client = chunks(&events);

        // The same request, as the upstream saw it, straight to the upstream: its own chunks.
        let seen = sim_requests(&upstream, 1).await;
        let mut direct_body = seen[0]["body"].clone();
        direct_body
            .as_object_mut()
            .unwrap()
            .remove("stream_options");
        let direct = post(upstream.addr, "/v1/chat/completions", &direct_body).await;
        let direct = chunks(&direct.events());
        let upstream_text = texts(&direct).concat();
        assert!(upstream_text.contains("[EMAIL_1]"), "{upstream_text}");
        assert!(upstream_text.contains("[PHONE_1]"), "{upstream_text}");
        assert!(!upstream_text.contains("jane.doe"), "{upstream_text}");

        // Not buffered: one chunk out per chunk in, placeholders restored across their cuts.
        assert_eq!(
            client.len(),
            direct.len(),
            "client chunks {client:#?}\nupstream chunks {direct:#?}"
        );
        let restored = texts(&client).concat();
        let expected = upstream_text
            .replace("[EMAIL_1]", "jane.doe@example.com")
            .replace("[PHONE_1]", "+1 415 555 0100")
            .replace("[EMAIL_2]", "bob@corp.example");
        assert_eq!(restored, expected);
        assert!(
            texts(&direct).iter().all(|t| !t.contains("[EMAIL_1]")),
            "the upstream split the placeholder across chunks: {:?}",
            texts(&direct)
        );
        assert!(texts(&client).len() > 3, "{:?}", texts(&client));
        assert_eq!(
            client.last().unwrap()["choices"][0]["finish_reason"],
            "stop"
        );
    }
    let metrics = get(weir.admin.expect("admin listener"), "/metrics").await;
    let metrics = String::from_utf8_lossy(&metrics.body);
    let cached = metrics.lines().find(|line| {
        line.starts_with("weir_stage_runs_total{")
            && line.contains(r#"outcome="next (cached)""#)
            && line.contains(r#"phase="request""#)
            && line.contains(r#"stage="pii-redact""#)
    });
    assert_eq!(
        cached.and_then(|line| line.rsplit(' ').next()),
        Some("1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_0_1_component_still_loads_and_keeps_its_instance_between_its_phases() {
    let upstream = sim(&[]);
    let weir = serve_route(
        &upstream,
        &[
            ("v1", weir_test_artifacts::V1_STAGE),
            ("pii-redact", weir_test_artifacts::PII_REDACT),
        ],
    );
    // v1-stage declares itself deterministic, but a 0.1 stage keeps its state in the instance:
    // the repeat must run its request phase again, not come from the stage output cache.
    for stream in [false, true, false] {
        let body = json!({"model": "m", "stream": stream,
            "messages": [{"role": "user", "content": "twelve chars"}]});
        let answer = post(weir.addr, "/v1/chat/completions", &body).await;
        assert_eq!(answer.status, 200, "{:?}", answer.body);
        let text = if stream {
            texts(&chunks(&answer.events())).concat()
        } else {
            answer.json()["choices"][0]["message"]["content"]
                .as_str()
                .unwrap()
                .to_string()
        };
        // Only the instance that ran on-request knows the length.
        assert!(
            text.ends_with(" (v1 remembered 12)"),
            "stream {stream}: {text}"
        );
    }

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_weir"))
        .args([
            "check",
            weir_test_artifacts::V1_STAGE,
            weir_test_artifacts::PII_REDACT,
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains("weir:stage@0.1), phases on-request+on-response,"),
        "{stdout}"
    );
    assert!(
        stdout.contains("weir:stage@0.2), phases on-request+on-response+on-response-chunk,"),
        "{stdout}"
    );
}
