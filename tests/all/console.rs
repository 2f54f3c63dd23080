//! The operator's console (`GET /` on the admin listener) in headless Chromium against a real
//! `weir serve` and `weir sim`: each page loads without console errors and shows what the
//! admin API says at the same moment (the request count, a breaker opening, a stage version
//! changing, a request's waterfall in order). Screenshots of every page go to the test's
//! directory.

use std::path::Path;

use serde_json::{Value, json};

use crate::browser;
use crate::procs::{get, post, serve_file, sim};
use crate::wait;

/// The page at `url` (1100 x 900): its DOM and Chromium's log.
fn dump(url: &str, profile: &Path) -> (String, String) {
    let page = browser::dump(url, profile, (1100, 900));
    (page.dom, page.log)
}

fn screenshot(url: &str, profile: &Path, to: &Path) {
    browser::screenshot(url, profile, (1100, 900), to, 10_000);
}

/// The `<main>` of a page's DOM.
fn main_of(dom: &str) -> &str {
    let start = dom.find("<main").unwrap_or(0);
    let end = dom.find("</main>").unwrap_or(dom.len());
    &dom[start..end]
}

/// The navigation's links, in order (each an `<a href>`, so Tab reaches them in this order).
fn dom_of_nav(dom: &str) -> Vec<String> {
    let nav = &dom[dom.find("<nav").unwrap()..dom.find("</nav>").unwrap()];
    nav.split("<a href=\"#/")
        .skip(1)
        .map(|a| {
            let text = &a[a.find('>').unwrap() + 1..];
            text[..text.find('<').unwrap()].to_owned()
        })
        .collect()
}

/// No script error reached the console.
fn assert_clean(page: &str, log: &str) {
    let bad: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("CONSOLE") || l.contains("Uncaught"))
        .collect();
    assert!(
        bad.is_empty(),
        "{page}: console messages:\n{}",
        bad.join("\n")
    );
}

/// The text inside the element with `id` (its tooltip span's text).
fn value_of(dom: &str, id: &str) -> String {
    let at = dom
        .find(&format!("id=\"{id}\""))
        .unwrap_or_else(|| panic!("no #{id} in {dom}"));
    let rest = &dom[at..];
    let open = rest.find("\">").unwrap() + 2;
    let rest = &rest[open..];
    let rest = &rest[rest.find('>').unwrap() + 1..];
    rest[..rest.find('<').unwrap()].to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn every_console_page_shows_what_the_admin_api_says() {
    let up = sim(&[]);
    let dir = std::env::temp_dir().join(format!("weir-console-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let guard = dir.join("guard.wasm");
    std::fs::copy(weir_test_artifacts::PROMPT_GUARD, &guard).unwrap();
    let pii = dir.join("pii.wasm");
    std::fs::copy(weir_test_artifacts::PII_REDACT, &pii).unwrap();
    let config = dir.join("weir.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[targets.up]
base_url = "http://{}/v1"
breaker = {{ consecutive_failures = 2, failure_rate_percent = 50, window = 20, min_requests = 10, ejection_ms = 60000, max_ejection_ms = 60000 }}

[[routes]]
model = "demo"
targets = ["up"]
max_attempts = 1
jobs = {{ concurrency = 1 }}

[[routes.stages]]
name = "guard"
path = "{}"

[[routes.stages]]
name = "pii"
path = "{}"
config = {{ restore = true }}
"#,
            up.addr,
            guard.display(),
            pii.display()
        ),
    )
    .unwrap();
    let weir = serve_file(&config);
    let admin = weir.admin.unwrap();
    let base = format!("http://{admin}/");
    let profile = dir.join("profile");
    let shots = dir.join("screenshots");
    std::fs::create_dir_all(&shots).unwrap();

    let chat = json!({"model": "demo", "messages": [{"role": "user", "content": "mail jane@example.com"}]});
    let mut last_id = String::new();
    for _ in 0..3 {
        let answer = post(weir.addr, "/v1/chat/completions", &chat).await;
        assert_eq!(answer.status, 200);
        last_id = answer.headers["x-request-id"].to_str().unwrap().to_owned();
    }

    // Overview: the request count is the one /metrics gives.
    let (dom, log) = dump(&format!("{base}#/overview"), &profile);
    assert_clean("overview", &log);
    let metrics = String::from_utf8_lossy(&get(admin, "/metrics").await.body).into_owned();
    let total: f64 = metrics
        .lines()
        .filter(|l| l.starts_with("weir_requests_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(total, 3.0);
    assert_eq!(value_of(&dom, "requests-total"), "3", "{}", main_of(&dom));
    assert!(dom.contains("title=\"from GET /metrics weir_requests_total\""));

    // A request's waterfall: its stages in order, the upstream between the phases.
    let (dom, log) = dump(&format!("{base}#/requests/{last_id}"), &profile);
    assert_clean("request", &log);
    let steps: Vec<&str> = main_of(&dom)
        .split("<tr class=\"step\"><td>")
        .skip(1)
        .map(|row| &row[..row.find('<').unwrap()])
        .collect();
    let detail = get(admin, &format!("/admin/requests/{last_id}"))
        .await
        .json();
    let guard_label = detail["steps"][0]["stage"].as_str().unwrap().to_owned();
    let pii_label = detail["steps"][1]["stage"].as_str().unwrap().to_owned();
    assert_eq!(
        steps,
        vec![
            format!("{guard_label} on-request"),
            format!("{pii_label} on-request"),
            "upstream up".to_owned(),
            format!("{pii_label} on-response"),
        ],
        "{}",
        main_of(&dom)
    );

    // A background job: the Jobs page lists it, and its page shows its one attempt.
    let submitted = post(weir.addr, "/v1/jobs", &chat).await;
    assert_eq!(submitted.status, 202, "{:?}", submitted.body);
    let job_id = submitted.json()["id"].as_str().unwrap().to_owned();
    wait::until("the job to succeed", || async {
        let job = get(admin, &format!("/admin/jobs/{job_id}")).await.json();
        wait::check(job["status"] == "succeeded", job)
    })
    .await;
    let listed = get(admin, "/admin/jobs?key=-").await.json();
    assert_eq!(listed["data"][0]["id"], job_id.as_str(), "{listed}");
    let (dom, log) = dump(&format!("{base}#/jobs?key=-"), &profile);
    assert_clean("jobs", &log);
    assert!(
        main_of(&dom).contains(&format!("#/jobs/{job_id}")),
        "{}",
        main_of(&dom)
    );
    let (dom, log) = dump(&format!("{base}#/jobs/{job_id}"), &profile);
    assert_clean("job", &log);
    assert_eq!(value_of(&dom, "job-status"), "succeeded");
    let attempts = main_of(&dom).matches("<tr><td>1</td>").count();
    assert_eq!(attempts, 1, "{}", main_of(&dom));
    screenshot(
        &format!("{base}#/jobs/{job_id}"),
        &profile,
        &shots.join("job.png"),
    );
    // The admin actions behind its buttons refuse a job that is done.
    let retry = post(admin, &format!("/admin/jobs/{job_id}/retry"), &json!({})).await;
    assert_eq!(retry.status, 409, "{:?}", retry.body);
    let cancel = crate::procs::call(
        admin,
        http::Method::DELETE,
        &format!("/admin/jobs/{job_id}"),
        &[],
        None,
    )
    .await;
    assert_eq!(cancel.status, 409, "{:?}", cancel.body);
    let unkeyed = get(admin, "/admin/jobs").await;
    assert_eq!(unkeyed.status, 400, "the listing names a key");

    // The upstream breaks: the breaker opens, and the Targets page says so.
    post(up.addr, "/sim/faults", &json!({"error_rate": 1.0})).await;
    for _ in 0..3 {
        post(weir.addr, "/v1/chat/completions", &chat).await;
    }
    let targets = get(admin, "/admin/targets").await.json();
    assert_eq!(targets["targets"][0]["breaker"], "open", "{targets}");
    let (dom, log) = dump(&format!("{base}#/targets"), &profile);
    assert_clean("targets", &log);
    let row = &dom[dom.find("data-target=\"up\"").expect("the target's row")..];
    let row = &row[..row.find("</tr>").unwrap()];
    assert!(
        row.contains("breaker bad") && row.contains(">open<"),
        "{row}"
    );

    // A new build of a stage file: the Stages page shows the new version.
    let mut bytes = std::fs::read(&guard).unwrap();
    bytes.extend_from_slice(&[0, 8, 7, b'c', b'o', b'n', b's', b'o', b'l', b'e']);
    crate::reload::replace(&guard, &bytes);
    let version = blake3::hash(&bytes).to_hex().to_string();
    wait::until("the new guard to load", || async {
        let stages = get(admin, "/admin/stages").await.json();
        let serving = stages["stages"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s: &Value| s["version"] == version.as_str());
        wait::check(serving, stages)
    })
    .await;
    let (dom, log) = dump(&format!("{base}#/stages"), &profile);
    assert_clean("stages", &log);
    assert!(
        main_of(&dom).contains(&format!(">{}<", &version[..12])),
        "{}",
        main_of(&dom)
    );
    // ... and the reload that loaded it is in the history.
    let reloads = &dom[dom.find("id=\"reloads\"").expect("the reload history")..];
    assert!(
        reloads.contains("<td>watch</td>") && reloads.contains(">swapped<"),
        "{reloads}"
    );

    // Every page loads clean, says which it is, and is photographed.
    for page in [
        "overview", "requests", "stages", "targets", "spend", "jobs", "config",
    ] {
        let (dom, log) = dump(&format!("{base}#/{page}"), &profile);
        assert_clean(page, &log);
        assert!(
            dom.contains(&format!("data-page=\"{page}\"")),
            "{page}: {}",
            main_of(&dom)
        );
        assert!(
            dom.contains("aria-current=\"page\""),
            "{page}: the nav marks it"
        );
        screenshot(
            &format!("{base}#/{page}"),
            &profile,
            &shots.join(format!("{page}.png")),
        );
    }
    // On a phone-sized screen no page scrolls sideways (wide tables scroll in their box), and
    // the navigation is links a keyboard reaches in order.
    for page in [
        "overview", "requests", "stages", "targets", "spend", "jobs", "config",
    ] {
        let dom = browser::dump(&format!("{base}#/{page}"), &profile, (390, 844)).dom;
        assert!(
            dom.contains("data-fits=\"true\""),
            "{page} overflows at 390 px: {}",
            main_of(&dom)
        );
    }
    let nav = dom_of_nav(&dump(&format!("{base}#/overview"), &profile).0);
    assert_eq!(
        nav,
        [
            "Overview", "Requests", "Stages", "Targets", "Spend", "Jobs", "Config"
        ]
    );
    screenshot(
        &format!("{base}#/requests/{last_id}"),
        &profile,
        &shots.join("request.png"),
    );
    eprintln!("console screenshots: {}", shots.display());
}
