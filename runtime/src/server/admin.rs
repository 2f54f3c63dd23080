//! The admin listener: `/admin/config` (the effective config, secrets masked),
//! `/admin/stages`, `/admin/targets` (breaker state, in-flight and limits per target),
//! `/admin/spend` (the ledger, grouped), `/admin/requests` and `/admin/requests/{id}` (the
//! recent requests' steps, outcome and cost), `POST /admin/reload`, `DELETE /admin/cache`
//! and `/metrics` (Prometheus text). Only for requests whose `Host` names this machine, and
//! guarded by a bearer token when the config names one (`admin_auth.rs`).

use std::sync::Arc;

use http::{Method, Request, Response};
use hyper::body::Incoming;
use serde_json::json;

use super::App;
pub use super::admin_auth::Socket;
use super::http_util::{self, Body};
use crate::cache::{CacheKey, Invalidate};
use crate::config::pico_to_usd;
use crate::cost::{SpendRow, clock};
use crate::openai::ApiError;

/// `key=value` pairs of a query string (no percent-decoding needed for the values used here:
/// dates, names, hex and comma lists).
fn params(query: &str) -> Vec<(&str, &str)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| p.split_once('=').unwrap_or((p, "")))
        .collect()
}

/// The scope of `DELETE /admin/cache`: nothing → everything, `route=NAME`, or `key=HEX`.
fn invalidation(query: &str) -> Result<Invalidate, ApiError> {
    let params = params(query);
    match params.as_slice() {
        [] => Ok(Invalidate::All),
        [("route", route)] if !route.is_empty() => Ok(Invalidate::Route(route.to_string())),
        [("key", hex)] => blake3::Hash::from_hex(hex)
            .map(|hash| Invalidate::Key(CacheKey(*hash.as_bytes())))
            .map_err(|_| {
                ApiError::invalid(
                    "invalid_cache_key",
                    Some("key"),
                    "`key` must be a cache key: 64 hex digits",
                )
            }),
        _ => Err(ApiError::invalid(
            "invalid_scope",
            None,
            "DELETE /admin/cache takes no parameter (everything), `route=NAME` or `key=HEX`",
        )),
    }
}

/// Most records `GET /admin/requests` returns at once.
const MAX_RECENT_LIMIT: usize = 1000;

/// `GET /admin/requests?limit=N&failed=true&route=NAME`: the newest recent requests first
/// (default 50), each summarised; `/admin/requests/{id}` has the details.
fn recent(app: &App, query: &str) -> Result<serde_json::Value, ApiError> {
    let mut limit = 50;
    let mut failed = false;
    let mut route = None;
    for (name, value) in params(query) {
        match name {
            "limit" => {
                limit = value
                    .parse::<usize>()
                    .ok()
                    .filter(|n| (1..=MAX_RECENT_LIMIT).contains(n))
                    .ok_or_else(|| {
                        ApiError::invalid(
                            "invalid_limit",
                            Some("limit"),
                            format!("`limit` must be a whole number from 1 to {MAX_RECENT_LIMIT}"),
                        )
                    })?;
            }
            "failed" => {
                failed = match value {
                    "true" | "1" => true,
                    "false" | "0" => false,
                    _ => {
                        return Err(ApiError::invalid(
                            "invalid_failed",
                            Some("failed"),
                            "`failed` must be true or false",
                        ));
                    }
                };
            }
            "route" => route = Some(value),
            other => {
                return Err(ApiError::invalid(
                    "invalid_parameter",
                    Some(other),
                    format!("unknown parameter `{other}`; expected limit, failed or route"),
                ));
            }
        }
    }
    let records = app.recent.list(limit, failed, route);
    Ok(json!({
        "enabled": app.recent.enabled(),
        "requests": records.iter().map(|r| r.summary()).collect::<Vec<_>>(),
    }))
}

/// The dimensions `/admin/spend` may group by.
const DIMENSIONS: [&str; 4] = ["day", "key", "route", "model"];

/// `GET /admin/spend?from=YYYY-MM-DD&to=YYYY-MM-DD&group_by=key,model`: ledger rows summed
/// over the dimensions not grouped by (default: this month, grouped by all four), the total,
/// and each key's live budget windows.
async fn spend(app: &App, query: &str) -> Result<serde_json::Value, ApiError> {
    let today = clock::day_of(crate::clock::unix_secs());
    let mut from = clock::month_start_day(today);
    let mut to = today;
    let mut group_by: Vec<&str> = DIMENSIONS.to_vec();
    let mut node: Option<String> = None;
    for (name, value) in params(query) {
        let date = |v: &str| {
            clock::parse_date(v).ok_or_else(|| {
                ApiError::invalid(
                    "invalid_date",
                    Some(name),
                    format!("`{name}` must be a date like 2026-11-26, got {v:?}"),
                )
            })
        };
        match name {
            "from" => from = date(value)?,
            "to" => to = date(value)?,
            "group_by" => {
                // Each dimension once (a repeated one was echoed back as often as given).
                group_by = Vec::with_capacity(DIMENSIONS.len());
                for dimension in value.split(',').filter(|d| !d.is_empty()) {
                    if !group_by.contains(&dimension) {
                        group_by.push(dimension);
                    }
                }
                if let Some(bad) = group_by.iter().find(|d| !DIMENSIONS.contains(d)) {
                    return Err(ApiError::invalid(
                        "invalid_group_by",
                        Some("group_by"),
                        format!("cannot group by {bad:?}; choose from day, key, route, model"),
                    ));
                }
            }
            // With the fleet's state on Redis: one node's shipped rows.
            "node" if app.state.is_some() => node = Some(value.to_owned()),
            other => {
                return Err(ApiError::invalid(
                    "unknown_parameter",
                    Some(other),
                    format!("unknown parameter {other:?}; use from, to and group_by"),
                ));
            }
        }
    }
    if to < from {
        return Err(ApiError::invalid(
            "invalid_date_range",
            Some("to"),
            format!(
                "`to` ({}) is before `from` ({})",
                clock::date(to),
                clock::date(from)
            ),
        ));
    }
    let ledger = app.ledger.clone();
    let rows = tokio::task::spawn_blocking(move || {
        // Everything recorded so far is in the answer.
        ledger.flush(std::time::Duration::from_secs(5));
        ledger.rows(from, to)
    })
    .await
    .map_err(|e| ApiError::new(500, "server_error", "ledger_unavailable", e.to_string()))?
    .map_err(|e| ApiError::new(500, "server_error", "ledger_unavailable", e.to_string()))?;
    // With the fleet's state on Redis, the fleet's rows (this node's shipped first).
    let rows = match &app.state {
        None => rows,
        Some(state) => {
            state.spend.flush(std::time::Duration::from_secs(2)).await;
            crate::state::spend::rows(state, from, to, node.as_deref())
                .await
                .map_err(|e| {
                    ApiError::new(503, "server_error", "state_unavailable", e.to_string())
                })?
        }
    };
    let mut groups: std::collections::BTreeMap<Vec<String>, SpendRow> = Default::default();
    let mut total = SpendRow::default();
    for row in rows {
        let dims: Vec<String> = group_by
            .iter()
            .map(|d| match *d {
                "day" => row.day.clone(),
                "key" => row.key.clone(),
                "route" => row.route.clone(),
                _ => row.model.clone(),
            })
            .collect();
        for sum in [groups.entry(dims).or_default(), &mut total] {
            sum.calls = sum.calls.saturating_add(row.calls);
            sum.cache_hits = sum.cache_hits.saturating_add(row.cache_hits);
            sum.cost_pico = sum.cost_pico.saturating_add(row.cost_pico);
            sum.prompt_tokens = sum.prompt_tokens.saturating_add(row.prompt_tokens);
            sum.cached_tokens = sum.cached_tokens.saturating_add(row.cached_tokens);
            sum.completion_tokens = sum.completion_tokens.saturating_add(row.completion_tokens);
        }
    }
    let sums = |row: &SpendRow| {
        json!({
            "calls": row.calls,
            "cache_hits": row.cache_hits,
            "cost_usd": pico_to_usd(row.cost_pico),
            "cost_pico_usd": row.cost_pico,
            "prompt_tokens": row.prompt_tokens,
            "cached_tokens": row.cached_tokens,
            "completion_tokens": row.completion_tokens,
        })
    };
    let rows: Vec<_> = groups
        .iter()
        .map(|(dims, row)| {
            let mut value = sums(row);
            for (name, dim) in group_by.iter().zip(dims) {
                value[*name] = json!(dim);
            }
            value
        })
        .collect();
    let snap = app.snapshot();
    // A key whose budget is the fleet's reads as the fleet has it (or as `node` spent it),
    // like the rows above: this node's own share next to the fleet's budget read as money
    // left that the fleet had spent (second probe, P6). All keys' reads in one round trip.
    let own = app.state.as_ref().map(|s| s.redis.node());
    let node = node.as_deref();
    let accounts: Vec<_> = snap.accounts.all().collect();
    let fleet =
        futures_util::future::join_all(accounts.iter().map(|a| a.fleet_windows(node))).await;
    let mut keys = Vec::with_capacity(accounts.len());
    for (account, fleet) in accounts.iter().zip(fleet) {
        let (day, month, reserved) = account.snapshot();
        let mut error = None;
        let (day, month, reserved, scope) = match fleet {
            None => (day, month, Some(reserved), "node"),
            Some(Ok(fleet)) => {
                // One node's view: its reservations are known only to itself.
                let reserved = fleet.reserved.or((node == own).then_some(reserved));
                let scope = if node.is_some() { "node" } else { "fleet" };
                (fleet.day_spent, fleet.month_spent, reserved, scope)
            }
            // One key Redis cannot read (a key of the wrong type, Redis away) is that key's
            // row alone: this node's own numbers, saying why (fourth probe, R3: the whole
            // answer was a 503).
            Some(Err(e)) => {
                error = Some(e.to_string());
                (day, month, Some(reserved), "node")
            }
        };
        let budget = |b: Option<u64>| b.map(pico_to_usd);
        keys.push(json!({
            "key": account.name(),
            "scope": scope,
            "spent_today_usd": pico_to_usd(day),
            "spent_this_month_usd": pico_to_usd(month),
            "reserved_usd": reserved.map(pico_to_usd),
            "daily_budget_usd": budget(account.key.daily_budget),
            "monthly_budget_usd": budget(account.key.monthly_budget),
            "fleet_error": error,
        }));
    }
    keys.sort_by(|a, b| a["key"].as_str().cmp(&b["key"].as_str()));
    Ok(json!({
        "from": clock::date(from),
        "to": clock::date(to),
        "group_by": group_by,
        "rows": rows,
        "total": sums(&total),
        "keys": keys,
    }))
}

/// `GET /admin/stages`: every stage of every route on the snapshot serving now, with the
/// file it came from, its version, when it was loaded and the last error loading a new
/// version of that file; the reload counters; the stage versions and instances alive.
fn stages(app: &App, snap: &crate::app::Snapshot) -> serde_json::Value {
    let files = app.stage_files();
    let mut rows = Vec::new();
    let mut routes: Vec<_> = snap.routes.iter().collect();
    routes.sort_by(|a, b| a.0.cmp(b.0));
    for (route, pipeline) in routes {
        let specs = (snap.config.routes.iter())
            .find(|r| r.model == **route)
            .map(|r| r.stages.as_slice())
            .unwrap_or_default();
        for stage in &pipeline.stages {
            let file = files.get(&stage.stage.path).cloned().unwrap_or_default();
            // What the config asks for, when it is not what serves (a new digest that could
            // not be pulled).
            let wanted = (specs.iter())
                .find(|spec| *spec.name == *stage.identity.name)
                .filter(|spec| spec.path != stage.stage.path)
                .map(|spec| spec.path.display().to_string());
            rows.push(json!({
                "route": route,
                "name": &*stage.identity.name,
                "label": &*stage.identity.label,
                "path": stage.stage.path.display().to_string(),
                "version": stage.stage.digest.to_hex().to_string(),
                "stage_name": stage.stage.info.name,
                "stage_version": stage.stage.info.version,
                "loaded_at": crate::cost::clock::rfc3339(file.loaded_at_ms / 1000),
                "loaded_at_ms": file.loaded_at_ms,
                "last_error": file.last_error,
                "wanted": wanted,
                "source": source(&stage.stage),
                "artifact": match stage.stage.origin {
                    crate::sandbox::Origin::Cached => "cached",
                    crate::sandbox::Origin::Compiled => "compiled",
                },
                "load_ms": stage.stage.load_time.as_secs_f64() * 1e3,
            }));
        }
    }
    let (instances, versions) = app.live_counts();
    json!({
        "generation": snap.generation,
        "stages": rows,
        "reloads": {
            "attempted": app.reloads_attempted.load(std::sync::atomic::Ordering::Relaxed),
            "ok": app.reloads_ok.load(std::sync::atomic::Ordering::Relaxed),
            "failed": app.reloads_failed.load(std::sync::atomic::Ordering::Relaxed),
            "last_config_error": app.config_error(),
            "history": app.reload_history(),
        },
        "live": { "stage_versions": versions, "instances": instances },
    })
}

/// Where a stage version came from: `{"kind": "file"}`, or an OCI artifact's reference,
/// digests and whether its bytes came from the registry or the blob store.
fn source(stage: &crate::stages::LoadedStage) -> serde_json::Value {
    match &stage.artifact {
        None => json!({"kind": "file"}),
        Some(artifact) => json!({
            "kind": "oci",
            "reference": artifact.reference.to_string(),
            "registry": artifact.reference.registry,
            "repository": artifact.reference.repository,
            "manifest_digest": artifact.manifest_digest,
            "layer_digest": artifact.layer_digest,
            "media_type": artifact.media_type,
            "fetched_from": artifact.fetched_from.as_str(),
        }),
    }
}

/// Dispatches one admin request that came in on `socket`, once its `Host` and token pass.
pub async fn handle(app: Arc<App>, request: Request<Incoming>, socket: Socket) -> Response<Body> {
    let snap = app.snapshot();
    if let Err(err) = super::admin_auth::check(&snap.config.server, &request, socket) {
        return http_util::error(&err);
    }
    let query = request.uri().query().unwrap_or("").to_string();
    match (request.method(), request.uri().path()) {
        (&Method::GET, path) if let Some(page) = super::console::asset(path) => page,
        (&Method::GET, "/admin/spend") => match spend(&app, &query).await {
            Ok(body) => http_util::json(200, &body),
            Err(err) => http_util::error(&err),
        },
        (&Method::DELETE, "/admin/cache") => match invalidation(&query) {
            Ok(scope) => {
                let removed = app.cache.invalidate(scope.clone()).await;
                // A route the config does not name is a 404 when it had nothing to remove (a
                // typo is not a purge); a route a reload took away may still have entries.
                if let Invalidate::Route(route) = &scope
                    && !snap.routes.contains_key(route.as_str())
                    && removed.memory == 0
                    && removed.disk == 0
                    && matches!(removed.shared, None | Some(Ok(0)))
                {
                    let mut err = ApiError::new(
                        404,
                        "invalid_request_error",
                        "route_not_found",
                        format!("no route `{route}` in the config, and no cache entries of it"),
                    );
                    err.param = Some("route".to_owned());
                    return http_util::error(&err);
                }
                let shared = match removed.shared {
                    None => serde_json::Value::Null,
                    Some(Ok(n)) => json!(n),
                    Some(Err(err)) => json!({"error": err.to_string()}),
                };
                let scope = match scope {
                    Invalidate::All => json!({"all": true}),
                    Invalidate::Route(route) => json!({"route": route}),
                    Invalidate::Key(key) => json!({"key": key.to_hex()}),
                };
                http_util::json(
                    200,
                    &json!({
                        "removed": {"memory": removed.memory, "disk": removed.disk, "shared": shared},
                        "scope": scope,
                    }),
                )
            }
            Err(err) => http_util::error(&err),
        },
        (&Method::GET, "/metrics") => {
            for target in snap.llm.router().targets() {
                crate::telemetry::breaker(&target.upstream.name, target.breaker_gauge());
            }
            for usage in app.pool_usage() {
                crate::telemetry::sandbox_pool(usage);
            }
            let mut response = Response::new(http_util::full(crate::telemetry::render()));
            response.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("text/plain; version=0.0.4"),
            );
            response
        }
        (&Method::POST, "/admin/reload") => {
            let outcome = app.reload("admin").await;
            let status = if outcome.error.is_some() { 422 } else { 200 };
            http_util::json(status, &outcome.to_json())
        }
        (&Method::GET, "/admin/state") => {
            http_util::json(200, &crate::state::status(app.state.as_deref()))
        }
        (&Method::GET, "/admin/config") => http_util::json(200, &snap.config.to_masked_json()),
        (&Method::GET, "/admin/targets") => {
            let now = tokio::time::Instant::now();
            let targets: Vec<_> = snap
                .llm
                .router()
                .targets()
                .iter()
                .map(|target| target.snapshot(now))
                .collect();
            http_util::json(200, &json!({ "targets": targets }))
        }
        (&Method::GET, "/admin/stages") => http_util::json(200, &stages(&app, &snap)),
        (&Method::GET, "/admin/requests") => match recent(&app, &query) {
            Ok(body) => http_util::json(200, &body),
            Err(err) => http_util::error(&err),
        },
        (_, path) if path == "/admin/jobs" || path.starts_with("/admin/jobs/") => {
            super::jobs::admin(&app, request).await
        }
        (&Method::GET, path) if path.starts_with("/admin/requests/") => {
            let id = &path["/admin/requests/".len()..];
            match app.recent.get(id) {
                Some(record) => http_util::json(200, &record.detail()),
                None => http_util::error(&ApiError::new(
                    404,
                    "invalid_request_error",
                    "request_not_found",
                    format!(
                        "no recent request with id `{id}` (the last {} are kept: \
                         telemetry.recent_requests)",
                        snap.config.telemetry.recent_requests
                    ),
                )),
            }
        }
        (_, path) => http_util::error(&ApiError::new(
            404,
            "invalid_request_error",
            "not_found",
            format!("no such admin endpoint: {path}"),
        )),
    }
}
