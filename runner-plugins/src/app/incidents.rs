//! `runner incidents` and `runner incidents show ID`: the incident history
//! from the state store, read-only (works next to a running runner).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, UNIX_EPOCH};

use clap::ArgMatches;
use runner_core::config::Overrides;
use serde_json::{Value, json};

use super::{EXIT_CONFIG, EXIT_FATAL, EXIT_OK, print_stdout};
use crate::settings::{STATE_DIR, WORKSPACE_ROOT};
use crate::state::StateSettings;
use crate::state::sqlite::query::{self, Filter, IncidentRow};
use runner_core::date::rfc3339_millis as rfc3339;
use runner_core::text::clean_line;

/// The state directory: `--state-dir`/`STATE_DIR`, else what the config
/// file says (`[settings] state_dir`, the sink's `workspace_root`), else
/// the default next to `./incidents`.
fn state_dir(config: &Path, ov: &Overrides) -> PathBuf {
    let file: Option<toml::Table> = std::fs::read_to_string(config)
        .ok()
        .and_then(|t| t.parse().ok());
    let from_file = |table: &str, key: &str| -> Option<String> {
        let t = file.as_ref()?.get(table)?;
        let t = match t {
            Value2::Array(a) => a.iter().find_map(|s| s.get(key))?,
            other => other.get(key)?,
        };
        t.as_str().map(str::to_string)
    };
    type Value2 = toml::Value;
    let dir = ov
        .get(STATE_DIR.env)
        .map(|(v, _)| v.to_string())
        .or_else(|| from_file("settings", "state_dir"))
        .unwrap_or_else(|| crate::state::DEFAULT_DIR.to_string());
    let root = ov
        .get(WORKSPACE_ROOT.env)
        .map(|(v, _)| v.to_string())
        .or_else(|| from_file("sink", "workspace_root"));
    let s = StateSettings {
        dir,
        ..StateSettings::default()
    };
    s.resolve(root.as_deref().map(Path::new))
        .unwrap_or_else(|| PathBuf::from("./state"))
}

/// `30m`, `12h`, `7d`, `90s`, or a date `2026-11-29` (UTC midnight): the
/// earliest start to list, in ms since the epoch.
pub(crate) fn parse_since(s: &str, now_ms: i64) -> Option<i64> {
    let s = s.trim();
    if let Some((num, unit)) = s
        .find(|c: char| !c.is_ascii_digit())
        .map(|i| s.split_at(i))
        .filter(|(n, _)| !n.is_empty())
    {
        let n: i64 = num.parse().ok()?;
        let secs = match unit {
            "s" => 1,
            "m" => 60,
            "h" => 3600,
            "d" => 86_400,
            _ => return parse_date(s),
        };
        return Some(now_ms - n.checked_mul(secs * 1000)?);
    }
    parse_date(s)
}

fn parse_date(s: &str) -> Option<i64> {
    let mut p = s.split('-');
    let (y, m, d): (i64, i64, i64) = (
        p.next()?.parse().ok()?,
        p.next()?.parse().ok()?,
        p.next()?.parse().ok()?,
    );
    if p.next().is_some() || !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return None;
    }
    // Days from civil (Howard Hinnant), inverse of the workspace ids' dates.
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 * 1000)
}

fn time(ms: Option<i64>) -> String {
    match ms {
        Some(ms) if ms >= 0 => rfc3339(UNIX_EPOCH + Duration::from_millis(ms as u64)),
        _ => "-".into(),
    }
}

/// Event text on an operator's terminal: no control characters, bounded.
fn c(s: &str) -> String {
    let s = clean_line(s, 120);
    if s.is_empty() { "-".into() } else { s }
}

fn resource(i: &IncidentRow) -> String {
    let r = format!("{}/{}", c(&i.kind), c(&i.name));
    if i.namespace.is_empty() {
        r
    } else {
        format!("{}/{r}", c(&i.namespace))
    }
}

fn table(rows: &[IncidentRow]) -> String {
    let head = [
        "#", "STARTED", "CLUSTER", "RESOURCE", "FAULT", "STATUS", "RUNS", "COST", "INCIDENT",
    ];
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|i| {
            vec![
                i.seq.to_string(),
                time(Some(i.started_ms)),
                c(&i.cluster),
                resource(i),
                c(&i.fault_type),
                i.status.clone(),
                i.runs.to_string(),
                i.cost_usd.map_or("-".into(), |c| format!("${c:.4}")),
                i.incident_id.clone().unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    let mut w: Vec<usize> = head.iter().map(|h| h.len()).collect();
    for r in &cells {
        for (k, v) in r.iter().enumerate() {
            w[k] = w[k].max(v.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |r: Vec<String>| {
        let n = r.len();
        for (k, v) in r.into_iter().enumerate() {
            out.push_str(&v);
            if k + 1 < n {
                out.push_str(&" ".repeat(w[k] - v.chars().count() + 2));
            }
        }
        out.push('\n');
    };
    line(head.iter().map(|s| s.to_string()).collect());
    for r in cells {
        line(r);
    }
    out
}

fn show_text(i: &IncidentRow, events: &[query::EventRow]) -> String {
    let mut out = String::new();
    let mut kv = |k: &str, v: String| out.push_str(&format!("{k:<14} {v}\n"));
    kv(
        "incident",
        i.incident_id.clone().unwrap_or_else(|| "-".into()),
    );
    kv("number", i.seq.to_string());
    kv("status", i.status.clone());
    if let Some(r) = &i.reason {
        kv("reason", c(r));
    }
    kv("cluster", c(&i.cluster));
    kv("resource", resource(i));
    kv("fault", c(&i.fault_type));
    kv("fault id", i.fault_id.as_deref().map_or("-".into(), c));
    kv("severity", i.severity.clone());
    kv("source", c(&i.source));
    kv("received", time(Some(i.received_ms)));
    kv("started", time(Some(i.started_ms)));
    kv("finished", time(i.finished_ms));
    kv("runs", i.runs.to_string());
    if let Some(cost) = i.cost_usd {
        kv("cost", format!("${cost:.4}"));
    }
    if let (Some(a), Some(b)) = (i.input_tokens, i.output_tokens) {
        kv("tokens", format!("{a} in, {b} out"));
    }
    match (&i.workspace, i.pruned_ms) {
        (Some(w), None) => {
            kv("workspace", w.clone());
            kv("report", format!("{w}/report.md"));
        }
        (Some(w), Some(t)) => kv(
            "workspace",
            format!("{w} (deleted by retention at {})", time(Some(t))),
        ),
        (None, _) => kv("workspace", "-".into()),
    }
    if let Some(g) = &i.group_key {
        kv("group", c(g));
    }
    out.push_str(&format!("\nevents ({})\n", events.len()));
    for e in events {
        out.push_str(&format!(
            "  #{} {} fault id {}\n",
            e.seq,
            time(Some(e.received_ms)),
            e.fault_id.as_deref().map_or("-".into(), c)
        ));
    }
    out
}

fn row_json(i: &IncidentRow) -> Value {
    let mut v = serde_json::to_value(i).unwrap_or(Value::Null);
    v["report"] = match (&i.workspace, i.pruned_ms) {
        (Some(w), None) => json!(format!("{w}/report.md")),
        _ => Value::Null,
    };
    v
}

pub(crate) fn run(m: &ArgMatches, config: &Path, ov: &Overrides) -> ExitCode {
    let dir = state_dir(config, ov);
    let conn = match query::open_read_only(&dir) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let json = m.get_flag("json");
    if let Some(("show", sub)) = m.subcommand() {
        let id = sub.get_one::<String>("id").expect("required");
        return match query::show(&conn, id) {
            Ok(Some((i, events))) => {
                if json || sub.get_flag("json") {
                    let mut v = row_json(&i);
                    v["events"] = serde_json::to_value(&events).unwrap_or(Value::Null);
                    print_stdout(&format!("{v}\n"));
                } else {
                    print_stdout(&show_text(&i, &events));
                }
                ExitCode::from(EXIT_OK)
            }
            Ok(None) => {
                eprintln!("error: no incident {id:?} in {}", dir.display());
                ExitCode::from(EXIT_FATAL)
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(EXIT_FATAL)
            }
        };
    }
    let since = match m.get_one::<String>("since") {
        None => None,
        Some(s) => match parse_since(s, runner_core::state::now_ms()) {
            Some(t) => Some(t),
            None => {
                eprintln!(
                    "error: --since {s:?}: allowed: a duration (90s, 30m, 12h, 7d) or a date (2026-11-29)"
                );
                return ExitCode::from(EXIT_CONFIG);
            }
        },
    };
    let filter = Filter {
        cluster: m.get_one::<String>("cluster").cloned(),
        status: m.get_one::<String>("status").cloned(),
        since_ms: since,
        limit: *m.get_one::<usize>("limit").unwrap_or(&50),
    };
    match query::list(&conn, &filter) {
        Ok(rows) => {
            if json {
                let v: Vec<Value> = rows.iter().map(row_json).collect();
                print_stdout(&format!("{}\n", Value::Array(v)));
            } else {
                print_stdout(&table(&rows));
            }
            ExitCode::from(EXIT_OK)
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(EXIT_FATAL)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_accepts_durations_and_dates() {
        let now = 1_000_000_000_000;
        assert_eq!(parse_since("30m", now), Some(now - 1_800_000));
        assert_eq!(parse_since("2d", now), Some(now - 172_800_000));
        assert_eq!(parse_since("1970-01-02", now), Some(86_400_000));
        assert_eq!(parse_since("2000-02-29", now), Some(951_782_400_000));
        assert_eq!(parse_since("soon", now), None);
        assert_eq!(parse_since("3w", now), None);
        assert_eq!(parse_since("2026-13-01", now), None);
    }
}
