//! `runner status`: what the incidents page shows, as text tables, fetched
//! from a running instance's `/api/status` and `/api/incidents`.

use std::time::Duration;

use serde_json::Value;

/// Text for one cell: control characters removed (event text must not
/// move the cursor or forge lines on an operator's terminal), bounded.
fn cell(v: &Value) -> String {
    let s = match v {
        Value::Null => "-".to_string(),
        Value::String(s) => s.clone(),
        Value::Number(n) => match n.as_f64() {
            Some(f) if n.is_f64() => format!("{f:.1}"),
            _ => n.to_string(),
        },
        other => other.to_string(),
    };
    let s = runner_core::text::terminal_cell(&s, 60);
    if s.is_empty() { "-".into() } else { s }
}

fn table(out: &mut String, title: &str, head: &[&str], rows: Vec<Vec<String>>) {
    out.push_str(&format!("\n{title} ({})\n", rows.len()));
    if rows.is_empty() {
        out.push_str("  (none)\n");
        return;
    }
    let mut w: Vec<usize> = head.iter().map(|h| h.chars().count()).collect();
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            w[i] = w[i].max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let mut l = String::from(" ");
        for (i, c) in cells.iter().enumerate() {
            l.push(' ');
            l.push_str(c);
            if i + 1 < cells.len() {
                l.push_str(&" ".repeat(w[i] - c.chars().count() + 1));
            }
        }
        l.push('\n');
        l
    };
    out.push_str(&line(head.iter().map(|s| s.to_string()).collect()));
    for r in rows {
        out.push_str(&line(r));
    }
}

fn resource(v: &Value) -> String {
    let ns = cell(&v["namespace"]);
    let r = format!("{}/{}", cell(&v["kind"]), cell(&v["name"]));
    if ns == "-" { r } else { format!("{ns}/{r}") }
}

/// Renders `/api/status` plus `/api/incidents` as tables.
pub(crate) fn render(status: &Value, incidents: &Value) -> String {
    let mut out = String::new();
    let ready = status["ready"].as_bool().unwrap_or(false);
    out.push_str(&format!(
        "event runner {}: {}{}\n",
        cell(&status["version"]),
        if ready { "ready" } else { "NOT READY" },
        if status["shutting_down"].as_bool() == Some(true) {
            " (shutting down)"
        } else {
            ""
        }
    ));
    for r in status["reasons"].as_array().into_iter().flatten() {
        out.push_str(&format!("  - {}\n", cell(r)));
    }
    let st = &status["stats"];
    let fields: Vec<String> = st
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(_, v)| v.as_u64().unwrap_or(0) > 0)
        .map(|(k, v)| format!("{k} {}", cell(v)))
        .collect();
    out.push_str(&format!(
        "events: {} | in flight {}\n",
        if fields.is_empty() {
            "none yet".to_string()
        } else {
            fields.join(", ")
        },
        cell(&status["in_flight"])
    ));
    let r = &status["router"];
    out.push_str(&format!(
        "agents running {}/{} | queued {} | intake {}/{}\n",
        cell(&r["running"]),
        cell(&r["max_concurrent"]),
        cell(&r["queued"]),
        cell(&status["intake"]["depth"]),
        cell(&status["intake"]["capacity"]),
    ));
    let arr = |v: &Value| v.as_array().cloned().unwrap_or_default();
    table(
        &mut out,
        "Sources",
        &[
            "source",
            "state",
            "sessions",
            "received",
            "last event",
            "last error",
        ],
        arr(&status["sources"])
            .iter()
            .map(|s| {
                vec![
                    cell(&s["name"]),
                    cell(&s["phase"]),
                    cell(&s["sessions"]),
                    cell(&s["received"]),
                    match s["seconds_since_last_event"].as_f64() {
                        Some(a) => format!("{a:.0}s ago"),
                        None => "-".into(),
                    },
                    cell(&s["last_error"]),
                ]
            })
            .collect(),
    );
    table(
        &mut out,
        "Running",
        &["seq", "cluster", "resource", "severity", "for"],
        arr(&incidents["running"]).iter().map(work_row).collect(),
    );
    table(
        &mut out,
        "Queued",
        &["seq", "cluster", "resource", "severity", "waiting"],
        arr(&incidents["queued"]).iter().map(work_row).collect(),
    );
    table(
        &mut out,
        "Recent incidents",
        &[
            "incident", "cluster", "resource", "status", "duration", "cost",
        ],
        arr(&incidents["recent"])
            .iter()
            .take(20)
            .map(|i| {
                vec![
                    cell(&i["id"]),
                    cell(&i["cluster"]),
                    resource(i),
                    cell(&i["status"]),
                    match i["duration_ms"].as_u64() {
                        Some(ms) => format!("{:.1}s", ms as f64 / 1000.0),
                        None => "-".into(),
                    },
                    match i["cost_usd"].as_f64() {
                        Some(c) => format!("${c:.4}"),
                        None => "-".into(),
                    },
                ]
            })
            .collect(),
    );
    out
}

/// A row of the Running or Queued table (same columns; `seconds` is how
/// long it has run or waited).
fn work_row(w: &Value) -> Vec<String> {
    vec![
        cell(&w["seq"]),
        cell(&w["cluster"]),
        resource(w),
        cell(&w["severity"]),
        format!("{}s", cell(&w["seconds"])),
    ]
}

/// Fetches both documents from `base` (e.g. http://127.0.0.1:9469).
pub(crate) async fn fetch(base: &str, token: Option<&str>) -> Result<(Value, Value), String> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| e.to_string())?;
    let get = |path: &str| {
        let mut req = client.get(format!("{}{path}", base.trim_end_matches('/')));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        req.send()
    };
    let mut docs = Vec::new();
    for path in ["/api/status", "/api/incidents"] {
        let resp = get(path)
            .await
            .map_err(|e| format!("cannot reach the admin server at {base}: {e}"))?;
        match resp.status().as_u16() {
            200 => {}
            401 => {
                return Err(format!(
                    "{base}{path}: 401: set ADMIN_TOKEN or ADMIN_TOKEN_FILE to the server's token"
                ));
            }
            s => return Err(format!("{base}{path}: HTTP {s}")),
        }
        docs.push(
            resp.json::<Value>()
                .await
                .map_err(|e| format!("{base}{path}: not JSON: {e}"))?,
        );
    }
    let inc = docs.pop().expect("two documents");
    let st = docs.pop().expect("two documents");
    Ok((st, inc))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn tables_strip_control_characters() {
        let status = json!({"version": "0.1.0", "ready": true, "stats": {"received": 3},
            "router": {"running": 1, "max_concurrent": 5, "queued": 0}, "intake": {"depth": 0, "capacity": 1024},
            "sources": [{"name": "mcp-0", "phase": "subscribed", "sessions": 1, "received": 3}]});
        let inc = json!({"running": [], "queued": [],
            "recent": [{"id": "inc-1", "cluster": "c1", "namespace": "ns", "kind": "Pod",
                "name": "evil\u{1b}[2J\nfake line", "status": "completed", "duration_ms": 1200}]});
        let t = render(&status, &inc);
        assert!(t.contains("ready"));
        assert!(t.contains("ns/Pod/evil[2Jfake line"), "{t}");
        assert!(!t.contains('\u{1b}'));
        assert!(t.contains("Recent incidents (1)"));
    }
}
