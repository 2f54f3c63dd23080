// weir's console: plain JavaScript over the admin API (fetch only), no build step, no
// dependencies. Every number carries a tooltip naming the endpoint it comes from.
"use strict";

const REFRESH_MS = 3000;
let timer = null;
let previous = null; // the last /metrics totals, for rates

const $page = () => document.getElementById("page");
const esc = (v) => String(v ?? "").replace(/[&<>"']/g, (c) => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", "\"": "&quot;", "'": "&#39;"})[c]);
const num = (v, d = 1) => (v === null || v === undefined || Number.isNaN(v)) ? "–" : Number(v).toFixed(d);
const usd = (v) => (v === null || v === undefined) ? "–" : "$" + Number(v).toFixed(6);
const src = (text, source) => `<span title="from ${esc(source)}">${esc(text)}</span>`;
const today = () => new Date().toISOString().slice(0, 10);

async function get(path, as = "json") {
  const response = await fetch(path, {headers: {"accept": as === "json" ? "application/json" : "text/plain"}});
  if (!response.ok) {
    let message = `${path}: ${response.status}`;
    try { message += " " + ((await response.json()).error?.message ?? ""); } catch (_) { /* not JSON */ }
    throw new Error(message);
  }
  return as === "json" ? response.json() : response.text();
}

function status(text, bad = false) {
  const el = document.getElementById("status");
  el.textContent = text;
  el.className = bad ? "bad" : "";
}

// Prometheus text: [{name, labels: {...}, value}].
function parseMetrics(text) {
  const out = [];
  for (const line of text.split("\n")) {
    if (!line || line.startsWith("#")) continue;
    const m = line.match(/^([a-zA-Z_:][\w:]*)(\{(.*)\})?\s+(\S+)$/);
    if (!m) continue;
    const labels = {};
    for (const pair of (m[3] || "").matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) labels[pair[1]] = pair[2];
    out.push({name: m[1], labels, value: Number(m[4])});
  }
  return out;
}

const sum = (series, name, filter = () => true) =>
  series.filter((s) => s.name === name && filter(s.labels)).reduce((a, s) => a + s.value, 0);

// A quantile from histogram buckets summed over every series of `name`.
function quantile(series, name, q) {
  const buckets = new Map();
  for (const s of series) {
    if (s.name !== name + "_bucket") continue;
    const le = s.labels.le === "+Inf" ? Infinity : Number(s.labels.le);
    buckets.set(le, (buckets.get(le) || 0) + s.value);
  }
  const sorted = [...buckets.entries()].sort((a, b) => a[0] - b[0]);
  const total = sorted.length ? sorted[sorted.length - 1][1] : 0;
  if (!total) return null;
  for (const [le, count] of sorted) if (count >= q * total) return le === Infinity ? null : le * 1000;
  return null;
}

const pages = {
  async overview() {
    const [text, spend] = await Promise.all([get("/metrics", "text"), get(`/admin/spend?group_by=day&from=${today()}&to=${today()}`)]);
    const series = parseMetrics(text);
    const total = sum(series, "weir_requests_total");
    const errors = sum(series, "weir_requests_total", (l) => Number(l.status) >= 500);
    const lookups = sum(series, "weir_cache_lookups_total", (l) => l.result !== "bypass");
    const hits = sum(series, "weir_cache_lookups_total", (l) => l.result === "hit" || l.result === "semantic-hit");
    const now = Date.now();
    let rate = null, errorRate = null;
    if (previous && now > previous.at) {
      const dt = (now - previous.at) / 1000;
      rate = (total - previous.total) / dt;
      const dr = total - previous.total;
      errorRate = dr > 0 ? (errors - previous.errors) / dr : 0;
    }
    previous = {at: now, total, errors};
    const card = (k, v, source, id) => `<div class="card"><div class="v" id="${id}">${src(v, source)}</div><div class="k">${esc(k)}</div></div>`;
    $page().innerHTML = `<h1>Overview</h1><div class="cards">
      ${card("requests/s", rate === null ? "…" : num(rate, 2), "GET /metrics weir_requests_total (rate between two polls)", "rps")}
      ${card("requests (since start)", String(total), "GET /metrics weir_requests_total", "requests-total")}
      ${card("error rate (5xx)", errorRate === null ? "…" : num(100 * errorRate, 2) + "%", "GET /metrics weir_requests_total{status=5xx}", "error-rate")}
      ${card("p50 latency", num(quantile(series, "weir_request_duration_seconds", 0.5)) + " ms", "GET /metrics weir_request_duration_seconds (bucket bound)", "p50")}
      ${card("p99 latency", num(quantile(series, "weir_request_duration_seconds", 0.99)) + " ms", "GET /metrics weir_request_duration_seconds (bucket bound)", "p99")}
      ${card("cache hit rate", lookups ? num(100 * hits / lookups, 1) + "%" : "–", "GET /metrics weir_cache_lookups_total", "hit-rate")}
      ${card("spend today", usd(spend.total.cost_usd), "GET /admin/spend?group_by=day (today, UTC)", "spend-today")}
    </div><p>Latency percentiles are histogram bucket bounds since start; rates are between the last two polls (every ${REFRESH_MS / 1000} s).</p>`;
  },

  async requests() {
    const params = new URLSearchParams(location.hash.split("?")[1] || "");
    const data = await get("/admin/requests?limit=1000");
    const rows = (data.requests || []).filter((r) =>
      (!params.get("route") || r.route === params.get("route")) &&
      (!params.get("status") || String(r.status).startsWith(params.get("status"))) &&
      (!params.get("key") || r.key === params.get("key")));
    const field = (name, label) => `<label>${label} <input name="${name}" value="${esc(params.get(name) || "")}" size="10"></label>`;
    $page().innerHTML = `<h1>Requests</h1>
      <form id="filter">${field("route", "route")}${field("status", "status")}${field("key", "key")}<button>Filter</button></form>
      <p>${src(rows.length + " of " + (data.requests || []).length, "GET /admin/requests")} recent requests, newest first.</p>
      <div class="scroll"><table><tr><th>request</th><th>at</th><th>route</th><th>key</th><th>status</th><th>ms</th><th>cache</th><th>cost</th></tr>
      ${rows.map((r) => `<tr><td><a href="#/requests/${encodeURIComponent(r.id)}">${esc(r.id)}</a></td>
        <td>${esc(new Date(r.started_ms).toISOString().slice(11, 23))}</td><td>${esc(r.route)}</td><td>${esc(r.key)}</td>
        <td class="${r.status >= 400 || r.error_code ? "bad" : ""}">${src(r.status, "GET /admin/requests")}${r.error_code ? " " + esc(r.error_code) : ""}</td>
        <td>${src(num(r.duration_ms, 2), "GET /admin/requests")}</td><td>${esc(r.cache)}</td><td>${src(usd(r.cost_usd), "GET /admin/requests")}</td></tr>`).join("")}
      </table></div>`;
    document.getElementById("filter").addEventListener("submit", (e) => {
      e.preventDefault();
      const q = new URLSearchParams(new FormData(e.target));
      for (const [k, v] of [...q.entries()]) if (!v) q.delete(k);
      location.hash = "#/requests" + (q.toString() ? "?" + q : "");
    });
  },

  async request(id) {
    const r = await get("/admin/requests/" + encodeURIComponent(id));
    // Steps in the order they ran: request phases, the upstream attempts, response phases
    // (the record keeps durations, not start times: bars are laid end to end).
    const steps = [];
    const failed = (outcome) => /fail|reject|trap|error|deadline|fuel|memory/i.test(String(outcome));
    for (const s of r.steps || []) if (s.phase === "request") steps.push({label: `${s.stage} on-request`, ms: s.duration_ms, kind: failed(s.outcome) ? "failed" : "", detail: s.outcome});
    for (const a of r.attempts || []) steps.push({label: `upstream ${a.target}${a.retry ? " (retry " + a.retry + ")" : ""}`, ms: a.duration_ms, kind: a.outcome === "ok" ? "upstream" : "failed", detail: `${a.outcome} ${a.status ?? ""}`});
    for (const s of r.steps || []) if (s.phase !== "request") steps.push({label: `${s.stage} on-${s.phase}`, ms: s.duration_ms, kind: failed(s.outcome) ? "failed" : "", detail: s.outcome});
    const total = Math.max(r.duration_ms || 0, steps.reduce((a, s) => a + (s.ms || 0), 0), 0.001);
    let at = 0;
    const bars = steps.map((s) => {
      const left = 100 * at / total, width = Math.max(0.5, 100 * (s.ms || 0) / total);
      at += s.ms || 0;
      return `<tr class="step"><td>${esc(s.label)}</td><td>${src(num(s.ms, 3), "GET /admin/requests/" + r.id)}</td><td>${esc(s.detail)}</td>
        <td><div class="wf"><span class="${s.kind}" style="left:${left}%;width:${width}%"></span></div></td></tr>`;
    }).join("");
    $page().innerHTML = `<h1>Request ${esc(r.id)}</h1>
      <p>${esc(r.endpoint)} · route ${esc(r.route)} · status ${src(r.status, "GET /admin/requests/{id}")} · ${src(num(r.duration_ms, 2) + " ms", "GET /admin/requests/{id}")}
      · overhead ${src(num(r.overhead_ms, 3) + " ms", "GET /admin/requests/{id}")} · cache ${esc(r.cache)} · cost ${src(usd(r.cost_usd), "GET /admin/requests/{id}")}</p>
      ${r.error ? `<p class="bad">${esc(r.error.code)}: ${esc(r.error.message)}</p>` : ""}
      <div class="scroll"><table id="waterfall"><tr><th>step</th><th>ms</th><th>outcome</th><th>waterfall</th></tr>${bars}</table></div>
      <p><a href="#/requests">back to requests</a></p>`;
  },

  async stages() {
    const data = await get("/admin/stages");
    $page().innerHTML = `<h1>Stages</h1>
      <p>Generation ${src(data.generation, "GET /admin/stages")} · reloads ok ${src(data.reloads.ok, "GET /admin/stages")}, failed ${src(data.reloads.failed, "GET /admin/stages")}
      · live instances ${src(data.live.instances, "GET /admin/stages")} <button id="reload">Reload now</button></p>
      ${data.reloads.last_config_error ? `<p class="bad">config: ${esc(data.reloads.last_config_error)}</p>` : ""}
      <div class="scroll"><table><tr><th>route</th><th>stage</th><th>version</th><th>stage's own</th><th>artifact</th><th>load ms</th><th>loaded at</th><th>last error</th></tr>
      ${data.stages.map((s) => `<tr><td>${esc(s.route)}</td><td>${esc(s.name)}</td><td class="version" title="from GET /admin/stages (blake3 of the file)">${esc(s.version.slice(0, 12))}</td>
        <td>${esc(s.stage_name)} ${esc(s.stage_version)}</td><td>${esc(s.artifact)}</td><td>${src(num(s.load_ms), "GET /admin/stages")}</td>
        <td>${esc(s.loaded_at)}</td><td class="${s.last_error ? "bad" : ""}">${esc(s.last_error || "")}</td></tr>`).join("")}
      </table></div>
      <h2>Reload history</h2><div class="scroll"><table id="reloads"><tr><th>at</th><th>trigger</th><th>result</th><th>generation</th><th>loaded</th><th>rejected</th><th>ms</th><th>error</th></tr>
      ${[...(data.reloads.history || [])].reverse().map((h) => `<tr><td>${esc(new Date(h.at_ms).toISOString().slice(11, 19))}</td><td>${esc(h.trigger)}</td>
        <td class="${h.ok ? "good" : "bad"}">${h.ok ? (h.swapped ? "swapped" : "no change") : "failed"}</td><td>${src(h.generation, "GET /admin/stages reloads.history")}</td>
        <td>${src(h.loaded.length, "GET /admin/stages reloads.history")}</td><td>${src(h.rejected.length, "GET /admin/stages reloads.history")}</td>
        <td>${src(num(h.elapsed_ms), "GET /admin/stages reloads.history")}</td><td>${esc(h.error || h.rejected.map((r) => r.error).join("; "))}</td></tr>`).join("")}
      </table></div>`;
    document.getElementById("reload").addEventListener("click", async () => {
      try {
        const response = await fetch("/admin/reload", {method: "POST"});
        const body = await response.json();
        status(response.ok ? `reloaded: generation ${body.generation ?? ""}` : `reload failed: ${body.error ?? response.status}`, !response.ok);
        await render();
      } catch (err) { status(String(err), true); }
    });
  },

  async targets() {
    const data = await get("/admin/targets");
    $page().innerHTML = `<h1>Targets</h1><div class="scroll"><table>
      <tr><th>target</th><th>breaker</th><th>probe in</th><th>trips</th><th>in flight</th><th>latency EWMA ms</th><th>max concurrency</th><th>rpm</th><th>tpm</th><th>limits</th></tr>
      ${data.targets.map((t) => `<tr data-target="${esc(t.name)}"><td title="${esc(t.base_url)}">${esc(t.name)}</td>
        <td class="breaker ${t.breaker === "closed" ? "good" : t.breaker === "open" ? "bad" : "warn"}">${src(t.breaker, "GET /admin/targets")}</td>
        <td>${t.open_for_ms === null ? "" : src(num(t.open_for_ms / 1000, 1) + " s", "GET /admin/targets open_for_ms")}</td>
        <td>${src(t.trips, "GET /admin/targets")}</td><td>${src(t.in_flight, "GET /admin/targets")}</td><td>${src(num(t.latency_ewma_ms, 2), "GET /admin/targets")}</td>
        <td>${src(t.max_concurrency ?? "–", "GET /admin/targets")}</td><td>${src(t.rpm ?? "–", "GET /admin/targets")}</td><td>${src(t.tpm ?? "–", "GET /admin/targets")}</td><td>${esc(t.limits)}</td></tr>`).join("")}
      </table></div>`;
  },

  async spend() {
    const [days, keys, routes, models] = await Promise.all(["day", "key", "route", "model"].map((g) => get("/admin/spend?group_by=" + g)));
    const max = Math.max(...days.rows.map((r) => r.cost_usd), 1e-12);
    const table = (title, data, dim) => `<h2>${title}</h2><div class="scroll"><table><tr><th>${dim}</th><th>calls</th><th>cache hits</th><th>cost</th></tr>
      ${data.rows.map((r) => `<tr><td>${esc(r[dim])}</td><td>${src(r.calls, "GET /admin/spend?group_by=" + dim)}</td><td>${src(r.cache_hits, "GET /admin/spend?group_by=" + dim)}</td><td>${src(usd(r.cost_usd), "GET /admin/spend?group_by=" + dim)}</td></tr>`).join("")}</table></div>`;
    $page().innerHTML = `<h1>Spend</h1><p>${src(usd(days.total.cost_usd), "GET /admin/spend")} from ${esc(days.from)} to ${esc(days.to)}.</p>
      <h2>By day</h2><div class="scroll"><table id="spend-days"><tr><th>day</th><th>cost</th><th></th></tr>
      ${days.rows.map((r) => `<tr><td>${esc(r.day)}</td><td>${src(usd(r.cost_usd), "GET /admin/spend?group_by=day")}</td><td><span class="bar" style="width:${Math.round(240 * r.cost_usd / max)}px"></span></td></tr>`).join("")}</table></div>
      <h2>Budgets</h2><div class="scroll"><table><tr><th>key</th><th>today</th><th>daily budget</th><th>remaining today</th><th>this month</th><th>monthly budget</th></tr>
      ${(days.keys || []).map((k) => `<tr><td>${esc(k.key)}</td><td>${src(usd(k.spent_today_usd), "GET /admin/spend keys")}</td><td>${src(usd(k.daily_budget_usd), "GET /admin/spend keys")}</td>
        <td>${k.daily_budget_usd === null ? "–" : src(usd(Math.max(0, k.daily_budget_usd - k.spent_today_usd - k.reserved_usd)), "GET /admin/spend keys (budget − spent − reserved)")}</td>
        <td>${src(usd(k.spent_this_month_usd), "GET /admin/spend keys")}</td><td>${src(usd(k.monthly_budget_usd), "GET /admin/spend keys")}</td></tr>`).join("")}</table></div>
      ${table("By key", keys, "key")}${table("By route", routes, "route")}${table("By model", models, "model")}`;
  },

  async jobs() {
    const params = new URLSearchParams(location.hash.split("?")[1] || "");
    const key = params.get("key") || "-";
    const wanted = params.get("status") || "";
    const spend = await get("/admin/spend?group_by=key");
    const keys = ["-", ...(spend.keys || []).map((k) => k.key)];
    let data;
    try {
      data = await get(`/admin/jobs?key=${encodeURIComponent(key)}&limit=200${wanted ? "&status=" + wanted : ""}`);
    } catch (err) {
      if (String(err.message).includes("404")) {
        $page().innerHTML = `<h1>Jobs</h1><p>Background jobs are not enabled: no route has a <code>jobs</code> table.</p>`;
        return;
      }
      throw err;
    }
    const st = data.stats;
    const card = (k, v, id) => `<div class="card"><div class="v" id="${id}">${src(v, "GET /admin/jobs stats")}</div><div class="k">${esc(k)}</div></div>`;
    const option = (v, current) => `<option value="${esc(v)}"${v === current ? " selected" : ""}>${esc(v || "any")}</option>`;
    $page().innerHTML = `<h1>Jobs</h1><div class="cards">
      ${card("queued", st.queued, "jobs-queued")}${card("waiting for a retry", st.waiting, "jobs-waiting")}${card("running", st.running, "jobs-running")}
      ${card("queue limit", st.max_queued, "jobs-max")}${card("oldest queued, s", st.oldest_queued_age_s ?? "–", "jobs-oldest")}</div>
      <form id="filter"><label>key <select name="key">${keys.map((k) => option(k, key)).join("")}</select></label>
      <label>status <select name="status">${["", "queued", "running", "succeeded", "failed", "dead", "cancelled"].map((v) => option(v, wanted)).join("")}</select></label>
      <button>Show</button></form>
      <div class="scroll"><table id="jobs"><tr><th>job</th><th>status</th><th>model</th><th>attempts</th><th>created</th><th>cost</th></tr>
      ${data.data.map((j) => `<tr><td><a href="#/jobs/${encodeURIComponent(j.id)}">${esc(j.id)}</a></td><td class="${j.status === "dead" || j.status === "failed" ? "bad" : ""}">${src(j.status, "GET /admin/jobs")}</td>
        <td>${esc(j.model)}</td><td>${src(j.attempts, "GET /admin/jobs")}</td><td>${esc(new Date(j.created_at_ms).toISOString().slice(0, 19))}</td><td>${src(usd(j.cost_usd), "GET /admin/jobs")}</td></tr>`).join("")}
      </table></div>${data.has_more ? "<p>Newest 200 shown.</p>" : ""}`;
    document.getElementById("filter").addEventListener("submit", (e) => {
      e.preventDefault();
      const q = new URLSearchParams(new FormData(e.target));
      if (!q.get("status")) q.delete("status");
      location.hash = "#/jobs?" + q;
    });
  },

  async job(id) {
    const j = await get("/admin/jobs/" + encodeURIComponent(id));
    const action = (label, method, path) => `<button data-method="${method}" data-path="${esc(path)}">${label}</button>`;
    $page().innerHTML = `<h1>Job ${esc(j.id)}</h1>
      <p>status <strong id="job-status">${src(j.status, "GET /admin/jobs/{id}")}</strong> · model ${esc(j.model)} · priority ${esc(j.priority)}
      · attempts ${src(j.attempts, "GET /admin/jobs/{id}")} · cost ${src(usd(j.cost_usd), "GET /admin/jobs/{id}")}
      ${j.status === "dead" ? action("Retry", "POST", `/admin/jobs/${j.id}/retry`) : ""}
      ${j.status === "queued" ? action("Cancel", "DELETE", `/admin/jobs/${j.id}`) : ""}</p>
      <div class="scroll"><table id="attempts"><tr><th>#</th><th>started</th><th>ms</th><th>status</th><th>error</th><th>cost</th></tr>
      ${(j.attempt_log || []).map((a, i) => `<tr><td>${i + 1}</td><td>${esc(new Date(a.started_at_ms).toISOString().slice(11, 23))}</td>
        <td>${a.finished_at_ms ? src(a.finished_at_ms - a.started_at_ms, "GET /admin/jobs/{id}") : "running"}</td><td>${esc(a.status ?? "")}</td>
        <td>${esc(a.error ?? "")}</td><td>${src(usd(a.cost_usd), "GET /admin/jobs/{id}")}</td></tr>`).join("")}</table></div>
      ${j.callback ? `<p>callback ${esc(j.callback.url)}: ${esc(j.callback.state)} after ${esc(j.callback.attempts)} attempt(s) ${esc(j.callback.last_error ?? "")}</p>` : ""}
      <p><a href="#/jobs">back to jobs</a></p>`;
    for (const button of document.querySelectorAll("button[data-path]")) {
      button.addEventListener("click", async () => {
        try {
          const response = await fetch(button.dataset.path, {method: button.dataset.method});
          const body = await response.json();
          status(response.ok ? `job ${body.status}` : `refused: ${body.error?.message ?? response.status}`, !response.ok);
          await render();
        } catch (err) { status(String(err), true); }
      });
    }
  },

  async config() {
    const data = await get("/admin/config");
    $page().innerHTML = `<h1>Config</h1><p>As weir validated it, secrets masked (${src("GET /admin/config", "GET /admin/config")}).</p><pre>${esc(JSON.stringify(data, null, 2))}</pre>`;
  },
};

const LIVE = new Set(["overview", "requests", "stages", "targets", "jobs"]);

async function render() {
  // Someone typing in a filter is not interrupted by a refresh.
  if (document.activeElement && document.activeElement.tagName === "INPUT") return;
  const hash = location.hash.replace(/^#\/?/, "") || "overview";
  const [path] = hash.split("?");
  const [name, id] = path.split("/");
  for (const a of document.querySelectorAll("header nav a")) {
    if (a.getAttribute("href") === "#/" + name) a.setAttribute("aria-current", "page"); else a.removeAttribute("aria-current");
  }
  const details = {requests: pages.request, jobs: pages.job};
  const page = id && details[name] ? () => details[name](decodeURIComponent(id)) : pages[name];
  if (!page) { $page().innerHTML = `<h1>Not found</h1><p>No page ${esc(name)}.</p>`; return; }
  try {
    await page();
    document.body.dataset.page = name + (id ? "/detail" : "");
    // Wide tables scroll in their own box: the page itself never scrolls sideways.
    document.body.dataset.fits = String(document.documentElement.scrollWidth <= window.innerWidth + 1);
    status("updated " + new Date().toLocaleTimeString());
  } catch (err) {
    status(String(err.message || err), true);
  }
}

function route() {
  clearInterval(timer);
  previous = null;
  render().then(() => $page().focus({preventScroll: true}));
  const name = (location.hash.replace(/^#\/?/, "") || "overview").split(/[/?]/)[0];
  const detail = location.hash.split("/").length > 2;
  if (LIVE.has(name) && !detail) timer = setInterval(render, REFRESH_MS);
}

window.addEventListener("hashchange", route);
route();
