//! The report as one self-contained HTML page: inline CSS, charts drawn here as SVG (no
//! library, no network), fault windows shaded on every chart, and the gates as a table.
//!
//! A few lines of inline script measure each chart once the page has laid out and write the
//! result into `data-rendered` (what a headless browser test reads back).

use std::fmt::Write as _;

use super::report::{EventRecord, Report};

const WIDTH: f64 = 760.0;
const HEIGHT: f64 = 220.0;
const LEFT: f64 = 64.0;
const RIGHT: f64 = 16.0;
const TOP: f64 = 28.0;
const BOTTOM: f64 = 30.0;
const COLORS: &[&str] = &[
    "#1f77b4", "#2ca02c", "#d62728", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf",
];

/// One line of a chart: a name and its points (seconds, value).
struct Line {
    name: String,
    points: Vec<(f64, f64)>,
}

/// The page.
pub fn render(report: &Report) -> String {
    let mut page = String::with_capacity(64 << 10);
    let verdict = if report.passed { "PASSED" } else { "FAILED" };
    let _ = write!(
        page,
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>weir loadtest: {name} ({verdict})</title><style>{CSS}</style></head><body>\
         <h1>{name} <span class=\"{class}\">{verdict}</span></h1><p>{about}</p>\
         <p class=\"meta\">{file} &middot; {url} &middot; {mode} loop &middot; {duration}s</p>",
        name = esc(&report.scenario),
        class = verdict.to_lowercase(),
        about = esc(&report.about),
        file = esc(&report.file),
        url = esc(&report.url),
        mode = esc(&report.mode),
        duration = report.duration_s,
    );
    gates(&mut page, report);
    totals(&mut page, report);
    let duration = report.duration_s;
    let series = &report.series;
    let per_second = |f: &dyn Fn(&super::report::Second) -> f64| -> Vec<(f64, f64)> {
        series.iter().map(|s| (s.t as f64 + 0.5, f(s))).collect()
    };
    chart(
        &mut page,
        "Throughput (requests scheduled per second)",
        "req/s",
        &[
            line("sent", per_second(&|s| s.sent as f64)),
            line("ok", per_second(&|s| s.ok as f64)),
            line("errors", per_second(&|s| s.errors as f64)),
        ],
        &report.events,
        duration,
    );
    let latency = |f: &dyn Fn(&super::report::Percentiles) -> f64| -> Vec<(f64, f64)> {
        series
            .iter()
            .filter_map(|s| s.latency_ms.as_ref().map(|p| (s.t as f64 + 0.5, f(p))))
            .collect()
    };
    chart(
        &mut page,
        "Latency from scheduled send (ms)",
        "ms",
        &[
            line("p50", latency(&|p| p.p50)),
            line("p90", latency(&|p| p.p90)),
            line("p99", latency(&|p| p.p99)),
        ],
        &report.events,
        duration,
    );
    let mut codes: Vec<(&String, &u64)> = report.totals.by_code.iter().collect();
    codes.sort_by(|a, b| b.1.cmp(a.1));
    let error_lines: Vec<Line> = codes
        .iter()
        .take(COLORS.len())
        .map(|(code, _)| {
            line(
                code,
                per_second(&|s| s.by_code.get(*code).copied().unwrap_or(0) as f64),
            )
        })
        .collect();
    chart(
        &mut page,
        "Errors by code (per second)",
        "errors/s",
        &error_lines,
        &report.events,
        duration,
    );
    chart(
        &mut page,
        "Cache hits (per second)",
        "hits/s",
        &[line("cache hits", per_second(&|s| s.cache_hits as f64))],
        &report.events,
        duration,
    );
    let scrapes = &report.scrapes;
    // Per second between scrapes at least half a second apart (the last scrape follows the
    // one before it closely; a rate over milliseconds would be noise).
    let mut cost: Vec<(f64, f64)> = Vec::new();
    let mut from = scrapes.first();
    for point in scrapes.iter().skip(1) {
        let Some(prev) = from else { break };
        let dt = point.t - prev.t;
        if dt >= 0.5 {
            cost.push((point.t, (point.cost_usd - prev.cost_usd).max(0.0) / dt));
            from = Some(point);
        }
    }
    chart(
        &mut page,
        "Spend (USD per second, from weir's /metrics)",
        "USD/s",
        &[line("spend", cost)],
        &report.events,
        duration,
    );
    let mut targets: Vec<&String> = scrapes.iter().flat_map(|p| p.breakers.keys()).collect();
    targets.sort();
    targets.dedup();
    let breakers: Vec<Line> = targets
        .iter()
        .map(|target| {
            line(
                target,
                scrapes
                    .iter()
                    .filter_map(|p| p.breakers.get(*target).map(|v| (p.t, *v)))
                    .collect(),
            )
        })
        .collect();
    chart(
        &mut page,
        "Breaker state (0 closed, 1 half-open, 2 open)",
        "state",
        &breakers,
        &report.events,
        duration,
    );
    events(&mut page, &report.events);
    let _ = writeln!(
        page,
        "<p class=\"meta\" id=\"render-check\">charts: measuring</p><script>{SCRIPT}</script>\
         </body></html>"
    );
    page
}

fn line(name: &str, points: Vec<(f64, f64)>) -> Line {
    Line {
        name: name.to_owned(),
        points,
    }
}

fn gates(page: &mut String, report: &Report) {
    if report.gates.is_empty() {
        page.push_str("<p>No gates set.</p>");
        return;
    }
    page.push_str("<h2>Gates</h2><table><tr><th>gate</th><th>limit</th><th>measured</th><th>verdict</th></tr>");
    for gate in &report.gates {
        let actual = gate
            .actual
            .map(|a| format!("{a:.4}"))
            .unwrap_or_else(|| "nothing measured".into());
        let (class, verdict) = match gate.passed {
            true => ("passed", "passed"),
            false => ("failed", "FAILED"),
        };
        let _ = write!(
            page,
            "<tr><td>{}</td><td>{}</td><td>{actual}</td><td class=\"{class}\">{verdict}</td></tr>",
            esc(&gate.gate),
            gate.limit
        );
    }
    page.push_str("</table>");
}

fn totals(page: &mut String, report: &Report) {
    let t = &report.totals;
    let cost = match (t.cost_usd, t.cost_per_1k_usd) {
        (Some(c), Some(k)) => format!("${c:.6} (${k:.6} per 1k requests)"),
        _ => "not scraped".into(),
    };
    let ttft = t
        .ttft_ms
        .as_ref()
        .map(|p| format!("p50 {:.1} ms, p99 {:.1} ms", p.p50, p.p99))
        .unwrap_or_else(|| "no streams".into());
    let codes = t
        .by_code
        .iter()
        .map(|(code, n)| format!("{} &times;{n}", esc(code)))
        .collect::<Vec<_>>()
        .join(", ");
    let _ = write!(
        page,
        "<h2>Totals</h2><table>\
         <tr><td>sent</td><td>{}</td></tr><tr><td>ok</td><td>{}</td></tr>\
         <tr><td>errors</td><td>{} ({:.2}%) {}</td></tr>\
         <tr><td>not sent (all users busy)</td><td>{}</td></tr>\
         <tr><td>achieved</td><td>{:.1} req/s</td></tr>\
         <tr><td>latency</td><td>p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms</td></tr>\
         <tr><td>time to first byte (streams)</td><td>{ttft}</td></tr>\
         <tr><td>cache hits</td><td>{} ({:.1}%)</td></tr>\
         <tr><td>budget refusals</td><td>{}</td></tr><tr><td>spend</td><td>{cost}</td></tr></table>",
        t.sent,
        t.ok,
        t.errors,
        t.error_rate * 100.0,
        codes,
        t.not_sent,
        t.achieved_rps,
        t.latency_ms.p50,
        t.latency_ms.p90,
        t.latency_ms.p99,
        t.latency_ms.max,
        t.cache_hits,
        t.cache_hit_rate * 100.0,
        t.budget_refusals,
    );
}

fn events(page: &mut String, events: &[EventRecord]) {
    if events.is_empty() {
        return;
    }
    page.push_str(
        "<h2>Timeline</h2><table><tr><th>at</th><th>until</th><th>event</th><th>result</th></tr>",
    );
    for event in events {
        let until = event
            .until_s
            .map(|u| format!("{u:.1}s"))
            .unwrap_or_default();
        let _ = write!(
            page,
            "<tr><td>{:.1}s</td><td>{until}</td><td>{}</td><td>{}</td></tr>",
            event.at_s,
            esc(&event.label),
            esc(&event.result)
        );
    }
    page.push_str("</table>");
}

/// One chart: lines over the run's seconds, event windows shaded.
fn chart(
    page: &mut String,
    title: &str,
    unit: &str,
    lines: &[Line],
    events: &[EventRecord],
    duration: f64,
) {
    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = HEIGHT - TOP - BOTTOM;
    let max = lines
        .iter()
        .flat_map(|l| l.points.iter().map(|p| p.1))
        .filter(|v| v.is_finite())
        .fold(0.0f64, f64::max);
    let top = nice(max);
    let duration = duration.max(1.0);
    let x = |t: f64| LEFT + (t / duration).clamp(0.0, 1.0) * plot_w;
    let y = |v: f64| TOP + plot_h - (v / top).clamp(0.0, 1.0) * plot_h;
    let _ = write!(
        page,
        "<figure><svg class=\"chart\" role=\"img\" aria-label=\"{t}\" viewBox=\"0 0 {WIDTH} {HEIGHT}\" \
         width=\"{WIDTH}\" height=\"{HEIGHT}\" xmlns=\"http://www.w3.org/2000/svg\">\
         <text x=\"{LEFT}\" y=\"16\" class=\"title\">{t}</text>",
        t = esc(title)
    );
    for event in events {
        let from = x(event.at_s);
        match event.until_s {
            Some(until) if until > event.at_s => {
                let _ = write!(
                    page,
                    "<rect class=\"window\" x=\"{from:.1}\" y=\"{TOP}\" width=\"{:.1}\" height=\"{plot_h}\"><title>{}</title></rect>",
                    (x(until) - from).max(1.0),
                    esc(&event.label)
                );
            }
            _ => {
                let _ = write!(
                    page,
                    "<line class=\"event\" x1=\"{from:.1}\" x2=\"{from:.1}\" y1=\"{TOP}\" y2=\"{:.1}\"><title>{}</title></line>",
                    TOP + plot_h,
                    esc(&event.label)
                );
            }
        }
    }
    for i in 0..=4 {
        let v = top * f64::from(i) / 4.0;
        let gy = y(v);
        let _ = write!(
            page,
            "<line class=\"grid\" x1=\"{LEFT}\" x2=\"{:.1}\" y1=\"{gy:.1}\" y2=\"{gy:.1}\"/>\
             <text class=\"tick\" x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            LEFT + plot_w,
            LEFT - 6.0,
            gy + 4.0,
            short(v)
        );
    }
    let step = (duration / 8.0).ceil().max(1.0);
    let mut t = 0.0;
    while t <= duration {
        let _ = write!(
            page,
            "<text class=\"tick\" x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}s</text>",
            x(t),
            HEIGHT - 10.0,
            t
        );
        t += step;
    }
    let _ = write!(
        page,
        "<text class=\"tick\" x=\"4\" y=\"{:.1}\">{}</text>",
        TOP - 4.0,
        esc(unit)
    );
    for (i, line) in lines.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        if line.points.is_empty() {
            continue;
        }
        let mut d = String::new();
        for (k, (t, v)) in line.points.iter().enumerate() {
            let _ = write!(
                d,
                "{}{:.1},{:.1}",
                if k == 0 { "M" } else { " L" },
                x(*t),
                y(if v.is_finite() { *v } else { 0.0 })
            );
        }
        let _ = write!(
            page,
            "<path class=\"series\" d=\"{d}\" stroke=\"{color}\"><title>{}</title></path>",
            esc(&line.name)
        );
    }
    page.push_str("</svg><figcaption>");
    if lines.iter().all(|l| l.points.is_empty()) {
        page.push_str("<span class=\"meta\">no data</span>");
    }
    for (i, line) in lines.iter().enumerate() {
        let _ = write!(
            page,
            "<span class=\"key\"><i style=\"background:{}\"></i>{}</span>",
            COLORS[i % COLORS.len()],
            esc(&line.name)
        );
    }
    page.push_str("</figcaption></figure>");
}

/// A round number at or above `max` for the top of an axis.
fn nice(max: f64) -> f64 {
    if max <= 0.0 || !max.is_finite() {
        return 1.0;
    }
    let magnitude = 10f64.powf(max.log10().floor());
    for step in [1.0, 2.0, 2.5, 5.0, 10.0] {
        if step * magnitude >= max {
            return step * magnitude;
        }
    }
    10.0 * magnitude
}

/// A tick label: few digits.
fn short(v: f64) -> String {
    if v == 0.0 {
        "0".into()
    } else if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 1.0 {
        format!("{v:.1}")
    } else if v.abs() >= 0.01 {
        format!("{v:.2}")
    } else {
        format!("{v:.1e}")
    }
}

/// Escapes text for HTML.
fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const CSS: &str = "body{font:14px/1.45 system-ui,sans-serif;margin:24px auto;max-width:800px;\
padding:0 12px;color:#222}h1 span{font-size:60%;padding:2px 8px;border-radius:4px;color:#fff}\
.passed{color:#1a7f37}.failed{color:#c62828;font-weight:bold}h1 .passed{background:#1a7f37;\
color:#fff}h1 .failed{background:#c62828;color:#fff}.meta{color:#666;font-size:12px}\
table{border-collapse:collapse;margin:8px 0 16px}td,th{border:1px solid #ddd;padding:3px 8px;\
text-align:left}svg.chart{max-width:100%;height:auto;background:#fff}\
svg .title{font-size:13px;font-weight:600}svg .tick{font-size:10px;fill:#666}\
svg .grid{stroke:#eee}svg .series{fill:none;stroke-width:1.6}\
svg .window{fill:#d62728;fill-opacity:.12}svg .event{stroke:#d62728;stroke-dasharray:3 3}\
figure{margin:0 0 18px}figcaption .key{margin-right:14px;font-size:12px}\
figcaption i{display:inline-block;width:10px;height:10px;margin-right:4px}";

/// Measures each chart after layout (a headless browser test reads `data-rendered`).
const SCRIPT: &str = "window.addEventListener('load',function(){var c=document.querySelectorAll\
('svg.chart'),ok=0;c.forEach(function(s){var b=s.getBoundingClientRect(),p=s.querySelectorAll\
('path.series'),n=0;p.forEach(function(e){n+=e.getTotalLength()>0?1:0});s.setAttribute\
('data-rendered',Math.round(b.width)+'x'+Math.round(b.height)+' lines='+n);if(b.width>0&&\
b.height>0)ok++});document.getElementById('render-check').textContent='charts: '+ok+' of '+\
c.length+' laid out'});";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axis_tops_are_round_and_text_is_escaped() {
        assert_eq!(nice(0.0), 1.0);
        assert_eq!(nice(7.0), 10.0);
        assert_eq!(nice(120.0), 200.0);
        assert_eq!(nice(0.03), 0.05);
        assert_eq!(esc("<a & \"b\">"), "&lt;a &amp; &quot;b&quot;&gt;");
    }
}
