//! The incidents page: running, queued and recent incidents, refreshing
//! itself. Every value that came from an event is HTML-escaped; the page
//! has no script (the server's CSP forbids any).

use std::fmt::Write;

use runner_core::StatsSnapshot;
use runner_core::status::{IncidentView, WorkItem};

use crate::sinks::agent::report::html_escape as esc;

/// Seconds between automatic reloads.
pub(crate) const REFRESH_SECONDS: u32 = 5;

pub(crate) struct PageData<'a> {
    pub running: &'a [WorkItem],
    pub queued: &'a [WorkItem],
    pub recent: &'a [IncidentView],
    pub stats: StatsSnapshot,
    pub ready: bool,
    pub reasons: &'a [String],
}

fn duration(secs: f64) -> String {
    let s = secs.max(0.0) as u64;
    if s >= 3600 {
        format!("{}h{:02}m", s / 3600, s % 3600 / 60)
    } else if s >= 60 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{:.1}s", secs.max(0.0))
    }
}

fn resource(ns: &str, kind: &str, name: &str) -> String {
    let mut r = String::new();
    if !ns.is_empty() {
        r.push_str(&esc(ns));
        r.push('/');
    }
    r.push_str(&esc(kind));
    r.push('/');
    r.push_str(&esc(name));
    r
}

/// Link to an incident's report; ids are generated (never event text),
/// escaped all the same.
fn report_link(id: &str) -> String {
    let id = esc(id);
    format!("<a class=\"report\" href=\"incidents/{id}\">{id}</a>")
}

fn cost(i: &IncidentView) -> String {
    match (i.cost_usd, i.input_tokens, i.output_tokens) {
        (Some(c), _, _) => format!("${c:.4}"),
        (None, Some(a), Some(b)) => format!("{} tok", a + b),
        _ => "–".into(),
    }
}

pub(crate) fn render(d: &PageData<'_>) -> String {
    let mut h = String::with_capacity(8192);
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"refresh\" content=\"{REFRESH_SECONDS}\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>Event Runner: incidents</title><style>\
         body{{font-family:system-ui,sans-serif;margin:1.5em;color:#222}}\
         table{{border-collapse:collapse;margin-bottom:1.5em;min-width:60%}}\
         th,td{{border:1px solid #ccc;padding:.3em .6em;text-align:left;vertical-align:top;word-break:break-all}}\
         th{{background:#f3f3f3}}.completed{{color:#176b2c}}.failed,.timed_out{{color:#a11}}\
         .running{{color:#0b57d0}}.abandoned{{color:#666}}.notready{{color:#a11}}\
         </style></head><body>\n<h1>Event Runner: incidents</h1>\n"
    );
    let s = &d.stats;
    let _ = writeln!(
        h,
        "<p id=\"summary\">{} &middot; received {} &middot; in flight {} &middot; running {} &middot; queued {} &middot; refreshes every {REFRESH_SECONDS}s</p>",
        if d.ready {
            "<span class=\"ready\">ready</span>".to_string()
        } else {
            format!(
                "<span class=\"notready\">not ready: {}</span>",
                esc(&d.reasons.join("; "))
            )
        },
        s.received,
        s.in_flight(),
        d.running.len(),
        d.queued.len()
    );

    h.push_str("<h2>Running</h2>\n<table id=\"running\"><tr><th>incident</th><th>cluster</th><th>resource</th><th>severity</th><th>fault</th><th>running for</th></tr>\n");
    for w in d.running {
        let id = d
            .recent
            .iter()
            .find(|i| i.seq == w.seq)
            .map(|i| report_link(&i.id))
            .unwrap_or_else(|| format!("#{}", w.seq));
        let _ = writeln!(
            h,
            "<tr class=\"running\"><td>{id}</td><td>{}</td><td class=\"resource\">{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&w.cluster),
            resource(&w.namespace, &w.kind, &w.name),
            esc(&w.severity),
            esc(&w.fault_type),
            duration(w.seconds)
        );
    }
    h.push_str("</table>\n");

    h.push_str("<h2>Queued</h2>\n<table id=\"queued\"><tr><th>seq</th><th>cluster</th><th>resource</th><th>severity</th><th>fault</th><th>waiting</th></tr>\n");
    for w in d.queued {
        let _ = writeln!(
            h,
            "<tr><td>#{}</td><td>{}</td><td class=\"resource\">{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            w.seq,
            esc(&w.cluster),
            resource(&w.namespace, &w.kind, &w.name),
            esc(&w.severity),
            esc(&w.fault_type),
            duration(w.seconds)
        );
    }
    h.push_str("</table>\n");

    h.push_str("<h2>Recent</h2>\n<table id=\"recent\"><tr><th>incident</th><th>cluster</th><th>resource</th><th>severity</th><th>fault</th><th>status</th><th>started</th><th>duration</th><th>cost</th></tr>\n");
    for i in d.recent {
        let link = if i.has_report {
            report_link(&i.id)
        } else {
            esc(&i.id)
        };
        let status = esc(&i.status);
        let _ = writeln!(
            h,
            "<tr class=\"incident {status}\" data-id=\"{}\"><td>{link}</td><td>{}</td><td class=\"resource\">{}</td><td>{}</td><td>{}</td><td class=\"status\">{status}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&i.id),
            esc(&i.cluster),
            resource(&i.namespace, &i.kind, &i.name),
            esc(&i.severity),
            esc(&i.fault_type),
            esc(i.started_at.as_deref().unwrap_or("–")),
            i.duration_ms
                .map(|ms| duration(ms as f64 / 1000.0))
                .unwrap_or_else(|| "–".into()),
            cost(i),
        );
    }
    h.push_str("</table>\n</body></html>\n");
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_text_is_escaped() {
        let evil = "<script>alert(1)</script><img src=x onerror=alert(2)>\"'&";
        let view = IncidentView {
            id: "inc-1".into(),
            seq: 1,
            cluster: evil.into(),
            namespace: evil.into(),
            kind: "Pod".into(),
            name: evil.into(),
            severity: "CRITICAL".into(),
            fault_type: evil.into(),
            status: "completed".into(),
            started_at: None,
            duration_ms: Some(1500),
            cost_usd: None,
            input_tokens: None,
            output_tokens: None,
            has_report: true,
        };
        let html = render(&PageData {
            running: &[],
            queued: &[],
            recent: &[view],
            stats: StatsSnapshot::default(),
            ready: false,
            reasons: &[evil.to_string()],
        });
        assert!(!html.contains("<script>"), "{html}");
        assert!(!html.contains("<img"), "{html}");
        assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(html.contains("href=\"incidents/inc-1\""));
    }
}
