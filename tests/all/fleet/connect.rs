//! Start-up against Redis: a password that is right, wrong or missing (a clear error naming
//! the URL, password masked), and a Redis that is not there yet (the node starts degraded and
//! connects once it is).

use std::process::{Command, Stdio};

use super::harness::{RedisServer, state_table};
use crate::procs::{Proc, get, scratch_config, serve_file_logged, sim};
use crate::wait::{check, until};

/// A minimal config routing `demo` to `up`, with `state`.
fn config(up: &Proc, state: &str) -> String {
    format!(
        "[targets.sim]\nbase_url = \"http://{}/v1\"\n\n[[routes]]\nmodel = \"demo\"\ntargets = [\"sim\"]\n\n{state}",
        up.addr
    )
}

/// `weir serve` of `config` run to its exit: (exit success, stderr).
fn serve_to_exit(config: &str) -> (bool, String) {
    let path = scratch_config(config);
    let out = Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(crate::procs::serve_args(&path))
        .env("XDG_STATE_HOME", crate::procs::state_home())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .expect("weir runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn a_wrong_or_missing_password_is_a_clear_start_up_error_with_the_password_masked() {
    let redis = RedisServer::start_with(Some("s3cret-pw"));
    let up = sim(&[]);
    let wrong = format!("redis://:wrong-pw@127.0.0.1:{}", redis.port);
    let (ok, stderr) = serve_to_exit(&config(
        &up,
        &format!("[state]\nbackend = \"redis\"\nurl = \"{wrong}\"\n"),
    ));
    assert!(!ok, "weir started with a wrong Redis password");
    let expected = format!("state.url redis://:***@127.0.0.1:{}", redis.port);
    assert!(
        stderr.contains(&expected),
        "the error names the masked URL: {stderr}"
    );
    assert!(
        stderr.contains("credentials"),
        "the error says what is wrong: {stderr}"
    );
    assert!(
        !stderr.contains("wrong-pw"),
        "the password leaked: {stderr}"
    );

    let none = format!("redis://127.0.0.1:{}", redis.port);
    let (ok, stderr) = serve_to_exit(&config(
        &up,
        &format!("[state]\nbackend = \"redis\"\nurl = \"{none}\"\n"),
    ));
    assert!(!ok, "weir started without the Redis password");
    assert!(
        stderr.contains(&format!("state.url {none}")) && stderr.contains("credentials"),
        "{stderr}"
    );

    // The right password, from the environment: up, and /admin/state says so.
    let path = scratch_config(&config(
        &up,
        &format!(
            "[state]\nbackend = \"redis\"\nurl = \"{none}\"\npassword_env = \"WEIR_TEST_REDIS_PW\"\n"
        ),
    ));
    let log = path.with_extension("log");
    let weir = crate::procs::serve_file_with_env_logged(
        &path,
        &[("WEIR_TEST_REDIS_PW", "s3cret-pw")],
        &log,
    );
    let state = get(weir.admin.unwrap(), "/admin/state").await.json();
    assert_eq!(state["backend"], "redis", "{state}");
    assert_eq!(state["available"], true, "{state}");
    let config = get(weir.admin.unwrap(), "/admin/config").await.json();
    assert_eq!(config["state"]["password"], "***", "{}", config["state"]);
}

#[tokio::test]
async fn a_node_starts_while_redis_is_down_and_connects_when_it_comes() {
    let mut redis = RedisServer::start();
    let port = redis.port;
    redis.signal("-KILL");
    let _ = redis.child.wait();
    let up = sim(&[]);
    let path = scratch_config(&config(&up, &state_table(&redis, "")));
    let weir = serve_file_logged(&path, &path.with_extension("log"));
    until("the node to see Redis down", || async {
        let state = get(weir.admin.unwrap(), "/admin/state").await.json();
        check(
            state["backend"] == "redis" && state["available"] == false,
            state,
        )
    })
    .await;
    redis.restart();
    assert_eq!(redis.port, port);
    until("the node to reach Redis again", || async {
        let state = get(weir.admin.unwrap(), "/admin/state").await.json();
        // The health check's next probe closes the breaker again.
        check(state["available"] == true, state)
    })
    .await;
}

#[tokio::test]
async fn three_nodes_share_one_redis_each_under_its_own_id() {
    let redis = RedisServer::start();
    let up = sim(&[]);
    let mut fleet = super::harness::Fleet::start(3, |_, data_dir| {
        format!(
            "[server]\ndata_dir = \"{data_dir}\"\n\n{}",
            config(&up, &state_table(&redis, ""))
        )
    });
    let mut ids = Vec::new();
    for i in 0..3 {
        let state = fleet.state(i).await;
        assert_eq!(state["available"], true, "{state}");
        ids.push(state["node_id"].as_str().unwrap().to_owned());
        let answer = crate::procs::post(
            fleet.addr(i),
            "/v1/chat/completions",
            &serde_json::json!({"model": "demo", "messages": [{"role": "user", "content": "hi"}]}),
        )
        .await;
        assert_eq!(answer.status, 200, "node {i}: {:?}", answer.body);
    }
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 3, "each node has its own id: {ids:?}");
    // A node killed and started again rejoins.
    fleet.nodes[0].child.kill().unwrap();
    fleet.restart(0);
    assert_eq!(fleet.state(0).await["available"], true);
}
