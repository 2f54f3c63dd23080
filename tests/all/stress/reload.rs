//! Hot reload under steady load: 250 requests a second for 20 s while a plugin file is
//! replaced twenty times (four times with invalid bytes); no request is lost and none runs on
//! a mix of versions.

use std::collections::BTreeSet;
use std::time::Duration;
use tokio::time::Instant;

use crate::procs::{post, serve_file, sim};
use crate::reload::{admin_stages, chat, config, label, replace, until_admin, wasm, workdir};

#[tokio::test]
async fn under_load_twenty_replacements_lose_no_request_and_never_mix_versions() {
    let up = sim(&[]);
    let dir = workdir("load");
    let plugin = dir.join("stage.wasm");
    let good = [
        wasm(weir_test_artifacts::PASSTHROUGH),
        wasm(weir_test_artifacts::CHAOS),
        wasm(weir_test_artifacts::HELLO_STAGE),
    ];
    let other_world = wasm(weir_test_artifacts::OTHER_WORLD);
    let truncated = good[1][..good[1].len() / 3].to_vec();
    let bad: [&[u8]; 4] = [
        &truncated,
        b"\0asm\x01\0\0\0",
        b"not wasm at all",
        &other_world,
    ];
    std::fs::write(&plugin, &good[0]).unwrap();
    let path = dir.join("weir.toml");
    std::fs::write(&path, config(&up, &plugin, "")).unwrap();
    let weir = serve_file(&path);
    let valid: BTreeSet<String> = good.iter().map(|g| label(g)).collect();
    let baseline = admin_stages(&weir).await;

    // Steady load: 250 requests a second for 20 s, each on its own task.
    let addr = weir.addr;
    let load = tokio::spawn(async move {
        let mut tasks = Vec::new();
        let mut tick = tokio::time::interval(Duration::from_millis(4));
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(20) {
            tick.tick().await;
            tasks.push(tokio::spawn(async move {
                let answer = post(addr, "/v1/chat/completions", &chat()).await;
                let stages = answer
                    .headers
                    .get("x-weir-stages")
                    .map(|v| v.to_str().unwrap().to_string());
                (answer.status.as_u16(), stages)
            }));
        }
        let mut results = Vec::new();
        for task in tasks {
            results.push(task.await.unwrap());
        }
        results
    });
    // 20 replacements, one every 0.9 s (later when a reload takes longer), each taken in
    // (or refused) before the next is written; the 5th, 10th, 15th and 20th are invalid.
    let paced = Instant::now();
    for i in 1..=20 {
        tokio::time::sleep_until(paced + Duration::from_millis(900 * i as u64)).await;
        let before = admin_stages(&weir).await;
        if i % 5 == 0 {
            let failed = before["reloads"]["failed"].as_u64().unwrap();
            replace(&plugin, bad[i / 5 - 1]);
            until_admin(&weir, &format!("replacement {i} to be refused"), |s| {
                s["reloads"]["failed"].as_u64().unwrap() > failed
            })
            .await;
        } else {
            let version = blake3::hash(&good[i % 3]).to_hex().to_string();
            replace(&plugin, &good[i % 3]);
            until_admin(&weir, &format!("replacement {i} to serve"), |s| {
                s["stages"][0]["version"] == version
            })
            .await;
        }
    }
    let results = load.await.unwrap();
    assert!(results.len() >= 4000, "{} requests", results.len());
    let failed: Vec<_> = results
        .iter()
        .filter(|(status, _)| *status != 200)
        .collect();
    assert!(
        failed.is_empty(),
        "{} failed: {:?}",
        failed.len(),
        &failed[..failed.len().min(5)]
    );
    let mut seen = BTreeSet::new();
    for (_, stages) in &results {
        let stages = stages.as_deref().unwrap_or("");
        assert!(valid.contains(stages), "a response ran on {stages:?}");
        seen.insert(stages.to_string());
    }
    assert!(seen.len() >= 2, "the versions changed under load: {seen:?}");
    // The last write (the 20th) was invalid: the 19th, good[19 % 3], still serves.
    let after = until_admin(&weir, "back to baseline", |s| {
        s["live"]["stage_versions"] == baseline["live"]["stage_versions"]
            && s["live"]["instances"] == baseline["live"]["instances"]
    })
    .await;
    assert_eq!(
        after["stages"][0]["version"],
        blake3::hash(&good[19 % 3]).to_hex().to_string()
    );
    assert!(after["reloads"]["failed"].as_u64().unwrap() >= 4, "{after}");
}
