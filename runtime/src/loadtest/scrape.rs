//! Reading weir from the outside while the load runs: its Prometheus `/metrics` once a second
//! (breaker states, spend, reloads, shed requests), and `/admin/targets` and `/admin/stages`
//! at the end for the report.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

use super::procs;

/// What one scrape of `/metrics` found.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Point {
    /// Seconds from the start of the load.
    pub t: f64,
    /// `weir_breaker_state` by target: 0 closed, 1 half-open, 2 open.
    pub breakers: BTreeMap<String, f64>,
    /// Sum of `weir_cost_picodollars_total`, USD.
    pub cost_usd: f64,
    /// Sum of `weir_reloads_total{outcome="ok"}`.
    pub reloads_ok: f64,
    /// Sum of `weir_reloads_total{outcome="failed"}`.
    pub reloads_failed: f64,
    /// Sum of `weir_shed_requests_total`.
    pub shed: f64,
}

/// Reads the metrics text.
pub fn parse(text: &str, t: f64) -> Point {
    let mut point = Point {
        t,
        ..Point::default()
    };
    for line in text.lines() {
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(value) = value.trim().parse::<f64>() else {
            continue;
        };
        let (name, labels) = match series.split_once('{') {
            Some((name, labels)) => (name, labels.trim_end_matches('}')),
            None => (series, ""),
        };
        match name {
            "weir_breaker_state" => {
                if let Some(target) = label(labels, "target") {
                    point.breakers.insert(target.to_owned(), value);
                }
            }
            "weir_cost_picodollars_total" => point.cost_usd += value / 1e12,
            "weir_reloads_total" => match label(labels, "outcome") {
                Some("ok") => point.reloads_ok += value,
                Some("failed") => point.reloads_failed += value,
                _ => {}
            },
            "weir_shed_requests_total" => point.shed += value,
            _ => {}
        }
    }
    point
}

/// The value of label `name` in `a="x",b="y"` (values without escapes, as weir writes them).
fn label<'a>(labels: &'a str, name: &str) -> Option<&'a str> {
    labels.split("\",").find_map(|pair| {
        let (key, value) = pair.split_once('=')?;
        (key.trim() == name).then(|| value.trim().trim_matches('"'))
    })
}

/// One scrape; `None` when weir does not answer (killed, or not weir).
pub async fn scrape(admin_url: &str, token: Option<&str>, t: Duration) -> Option<Point> {
    let (status, body) = procs::get(&format!("{admin_url}/metrics"), token)
        .await
        .ok()?;
    (status == 200).then(|| parse(&String::from_utf8_lossy(&body), t.as_secs_f64()))
}

/// Scrapes every node's `/metrics` and merges them into one point: spend, reloads and shed
/// requests summed (a node that does not answer, killed say, counts with its last scrape, so
/// sums never go backwards), breakers by target, prefixed `node/` in a fleet.
pub struct Scraper {
    /// Each node's name, admin URL and token.
    nodes: Vec<(String, (String, Option<String>))>,
    /// Each node's last scrape.
    last: std::sync::Mutex<BTreeMap<String, Point>>,
}

impl Scraper {
    /// A scraper of `nodes` (name, (admin URL, token)).
    pub fn new(nodes: Vec<(String, (String, Option<String>))>) -> Scraper {
        Scraper {
            nodes,
            last: std::sync::Mutex::new(BTreeMap::new()),
        }
    }

    /// Whether there is anything to scrape.
    pub fn any(&self) -> bool {
        !self.nodes.is_empty()
    }

    /// One merged point at `t`; `None` when no node has ever answered.
    pub async fn scrape(&self, t: Duration) -> Option<Point> {
        let fleet = self.nodes.len() > 1;
        let mut merged = Point {
            t: t.as_secs_f64(),
            ..Point::default()
        };
        let mut any = false;
        for (name, (admin, token)) in &self.nodes {
            let fresh = scrape(admin, token.as_deref(), t).await;
            let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(point) = &fresh {
                last.insert(name.clone(), point.clone());
                for (target, state) in &point.breakers {
                    let key = match fleet {
                        true => format!("{name}/{target}"),
                        false => target.clone(),
                    };
                    merged.breakers.insert(key, *state);
                }
            }
            if let Some(point) = last.get(name) {
                any = true;
                merged.cost_usd += point.cost_usd;
                merged.reloads_ok += point.reloads_ok;
                merged.reloads_failed += point.reloads_failed;
                merged.shed += point.shed;
            }
        }
        any.then_some(merged)
    }
}

/// `/admin/targets` and `/admin/stages` as JSON, for the report.
pub async fn admin_state(admin_url: &str, token: Option<&str>) -> serde_json::Value {
    let mut state = serde_json::Map::new();
    for what in ["targets", "stages"] {
        let url = format!("{admin_url}/admin/{what}");
        let value = match procs::get(&url, token).await {
            Ok((200, body)) => serde_json::from_slice(&body).unwrap_or_default(),
            Ok((status, _)) => serde_json::json!({"error": format!("status {status}")}),
            Err(err) => serde_json::json!({"error": err}),
        };
        state.insert(what.to_owned(), value);
    }
    serde_json::Value::Object(state)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_series_the_report_plots() {
        let text = "# HELP x\n\
            weir_breaker_state{target=\"primary\"} 2\n\
            weir_breaker_state{target=\"secondary\"} 0\n\
            weir_cost_picodollars_total{key=\"-\",model=\"a\"} 1500000000\n\
            weir_cost_picodollars_total{key=\"-\",model=\"b\"} 500000000\n\
            weir_reloads_total{outcome=\"ok\"} 3\n\
            weir_shed_requests_total{route=\"demo\",reason=\"overloaded\"} 4\n\
            weir_requests_total{route=\"demo\",status=\"200\"} 9\n";
        let point = parse(text, 1.5);
        assert_eq!(point.breakers.get("primary"), Some(&2.0));
        assert_eq!(point.breakers.get("secondary"), Some(&0.0));
        assert!((point.cost_usd - 0.002).abs() < 1e-12);
        assert_eq!(point.reloads_ok, 3.0);
        assert_eq!(point.shed, 4.0);
        assert_eq!(point.t, 1.5);
    }
}
