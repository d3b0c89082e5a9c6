//! Per-incident reports: `report.md` (fault, timeline, the agent's findings)
//! and a standalone `report.html`, plus root-cause extraction for Slack.
//!
//! Everything but our own headings is untrusted (event fields, the agent's
//! output): table cells are Markdown-escaped, raw HTML is rendered as text
//! and `javascript:`-style links are neutralized.

use pulldown_cmark::{CowStr, Event as Md, Options, Parser, Tag};

use super::prompt::fence_for;
use super::workspace::IncidentDoc;
use runner_core::text::clean_line;

/// The `## Root Cause` section of an investigation, shortened for a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RootCause {
    /// First two non-empty lines of the section.
    pub lines: Vec<String>,
    /// HIGH, MEDIUM or LOW when a confidence line names one.
    pub confidence: Option<&'static str>,
}

fn heading_text(line: &str) -> Option<&str> {
    let t = line.trim_start();
    let hashes = t.chars().take_while(|c| *c == '#').count();
    if (1..=6).contains(&hashes) && t[hashes..].starts_with([' ', '\t']) {
        Some(t[hashes..].trim().trim_end_matches('#').trim())
    } else {
        None
    }
}

fn confidence_of(line: &str) -> Option<&'static str> {
    let l = line.to_ascii_lowercase();
    if !l.contains("confidence") {
        return None;
    }
    let u = line.to_ascii_uppercase();
    let words: Vec<&str> = u
        .split(|c: char| !c.is_ascii_alphabetic())
        .filter(|w| !w.is_empty())
        .collect();
    ["HIGH", "MEDIUM", "LOW"]
        .into_iter()
        .find(|lvl| words.contains(lvl))
}

/// First two non-empty lines under a `Root Cause` heading (any level), and
/// the confidence named in that section or, failing that, anywhere.
pub(crate) fn root_cause(md: &str) -> Option<RootCause> {
    let mut in_section = false;
    let mut found = false;
    let mut lines = Vec::new();
    let mut confidence = None;
    for line in md.lines() {
        if let Some(h) = heading_text(line) {
            if in_section {
                break;
            }
            if h.to_ascii_lowercase().starts_with("root cause") {
                in_section = true;
                found = true;
                confidence = confidence_of(h);
            }
            continue;
        }
        if !in_section {
            continue;
        }
        let t = line.trim();
        if t.is_empty() || t.starts_with("```") {
            continue;
        }
        if let Some(c) = confidence_of(t) {
            confidence.get_or_insert(c);
            // A line that only states the confidence is not the cause.
            if t.len() < 60 {
                continue;
            }
        }
        if lines.len() < 2 {
            let t = t.trim_start_matches(['-', '*', '>', ' ']).trim();
            lines.push(clean_line(t, 500));
        }
    }
    if !found {
        return None;
    }
    if confidence.is_none() {
        confidence = md.lines().find_map(confidence_of);
    }
    Some(RootCause { lines, confidence })
}

/// Escapes untrusted text for one Markdown table cell or inline position.
pub(crate) fn md_inline(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in clean_line(s, 2000).chars() {
        if "\\`*_[]<>|#~&".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Minimal HTML escaping for text and attribute values.
pub(crate) fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
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

fn opt(s: &Option<String>) -> String {
    s.as_deref().map(md_inline).unwrap_or_else(|| "-".into())
}

/// What the report says about the agent's result.
pub(crate) struct Findings<'a> {
    /// The investigation, when one was produced (even a too-small one).
    pub investigation: Option<&'a str>,
    /// Last lines of the agent's stderr, shown when it failed.
    pub stderr_tail: Option<&'a str>,
    /// Last lines of the agent's stdout, shown when it failed (some CLIs
    /// print their errors there).
    pub stdout_tail: Option<&'a str>,
}

/// What `report.md` says about the events grouped into the incident.
fn group_section(g: &super::group::GroupDoc) -> String {
    let mut m = format!(
        "## Grouped events\n\nThis incident groups **{}** event(s) of {} {}: the first one, **{}** attached while it was queued or running, and **{}** recurrence(s) after it ended (repeats suppressed: no new agent ran for them). ",
        g.events,
        md_inline(&g.workload.kind),
        md_inline(&g.workload.name),
        g.attached,
        g.recurrences,
    );
    m.push_str(&format!(
        "`events.jsonl` lists {} of them",
        g.events_written
    ));
    if g.events_not_written > 0 {
        m.push_str(&format!(
            "; {} not written (size cap)",
            g.events_not_written
        ));
    }
    m.push_str(".\n");
    if let Some(p) = &g.previous_incident {
        m.push_str(&format!(
            "\nThe agent was given the findings of the previous incident of this group, {}.\n",
            md_inline(p)
        ));
    }
    m.push('\n');
    m
}

/// `report.md`.
pub(crate) fn render_markdown(doc: &IncidentDoc, findings: &Findings<'_>) -> String {
    let r = &doc.resource;
    let mut m = String::new();
    m.push_str(&format!("# Incident {}\n\n", doc.id));
    m.push_str(&format!(
        "**{}** {} on {}/{} in namespace {} of cluster {}.\n\n",
        doc.severity,
        md_inline(&doc.fault_type),
        md_inline(&r.kind),
        md_inline(&r.name),
        if doc.namespace.is_empty() {
            "(cluster-scoped)".to_string()
        } else {
            md_inline(&doc.namespace)
        },
        md_inline(&doc.cluster),
    ));
    m.push_str("## Fault\n\n| field | value |\n| --- | --- |\n");
    let rows = [
        ("Incident", doc.id.clone()),
        ("Fault ID", opt(&doc.fault_id)),
        ("Cluster", md_inline(&doc.cluster)),
        ("Namespace", md_inline(&doc.namespace)),
        (
            "Resource",
            format!("{}/{}", md_inline(&r.kind), md_inline(&r.name)),
        ),
        ("API version", md_inline(&r.api_version)),
        ("UID", md_inline(&r.uid)),
        ("Fault type", md_inline(&doc.fault_type)),
        ("Severity", doc.severity.clone()),
        ("Cluster access", opt(&doc.cluster_access)),
    ];
    for (k, v) in rows {
        m.push_str(&format!("| {k} | {v} |\n"));
    }
    let fence = fence_for(&doc.context);
    m.push_str(&format!(
        "\nContext:\n\n{fence}text\n{}\n{fence}\n\n",
        doc.context
    ));

    if let Some(g) = &doc.group {
        m.push_str(&group_section(g));
    }

    m.push_str("## Timeline\n\n| when | what |\n| --- | --- |\n");
    if let Some(t) = &doc.timestamp {
        m.push_str(&format!(
            "| {} | fault detected by the server |\n",
            md_inline(t)
        ));
    }
    m.push_str(&format!("| {} | incident created |\n", doc.created_at));
    if let Some(t) = &doc.started_at {
        m.push_str(&format!("| {t} | agent started |\n"));
    }
    if let Some(t) = &doc.completed_at {
        let status = serde_json::to_value(doc.status)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        let mut what = format!("agent finished: **{status}**");
        if let Some(c) = doc.exit_code {
            what.push_str(&format!(", exit code {c}"));
        }
        if let Some(d) = doc.duration_ms {
            if d < 1000 {
                what.push_str(&format!(", {d} ms"));
            } else {
                what.push_str(&format!(", {:.1} s", d as f64 / 1000.0));
            }
        }
        if let Some(why) = &doc.failure_reason {
            what.push_str(&format!(" — {}", md_inline(why)));
        }
        for n in &doc.notes {
            m.push_str(&format!(
                "| {} | note from the source while the agent ran: {} |\n",
                md_inline(&n.time),
                md_inline(&n.text)
            ));
        }
        m.push_str(&format!("| {t} | {what} |\n"));
        if !doc.leftover_processes.is_empty() {
            let names: Vec<String> = doc
                .leftover_processes
                .iter()
                .take(20)
                .map(|p| format!("{} {}", p.pid, md_inline(&p.name)))
                .collect();
            m.push_str(&format!(
                "| {t} | **agent left {} process(es) behind**, killed by the runner: {} |\n",
                doc.leftover_processes.len(),
                names.join(", ")
            ));
        }
    }

    if let Some(u) = &doc.usage {
        m.push_str(&format!("\n## Usage\n\n{}\n", md_inline(&u.summary())));
        if let Some(e) = &u.error {
            m.push_str(&format!("\nThe agent CLI reported: {}\n", md_inline(e)));
        }
    }

    m.push_str("\n## Agent findings\n\n");
    match findings.investigation {
        Some(inv) if !inv.trim().is_empty() => {
            m.push_str(demote_headings(inv).trim_end());
            m.push('\n');
        }
        _ => m.push_str("_The agent produced no investigation._\n"),
    }
    for (name, tail) in [
        ("stderr", findings.stderr_tail),
        ("stdout", findings.stdout_tail),
    ] {
        if let Some(tail) = tail.filter(|t| !t.trim().is_empty()) {
            let fence = fence_for(tail);
            m.push_str(&format!(
                "\n### Agent {name} (last lines)\n\n{fence}text\n{}\n{fence}\n",
                tail.trim_end()
            ));
        }
    }
    m
}

/// Moves every ATX heading outside code fences one level down, so the
/// agent's `# Title` nests under the report's "Agent findings".
pub(crate) fn demote_headings(md: &str) -> String {
    let mut out = String::with_capacity(md.len() + 64);
    let mut fence: Option<(char, usize)> = None;
    for line in md.split_inclusive('\n') {
        let t = line.trim_start();
        let indent = line.len() - t.len();
        let run = |c: char| t.chars().take_while(|x| *x == c).count();
        match fence {
            Some((c, n)) => {
                if indent < 4 && run(c) >= n && t[run(c)..].trim().is_empty() {
                    fence = None;
                }
            }
            None => {
                if indent < 4 {
                    for c in ['`', '~'] {
                        if run(c) >= 3 {
                            fence = Some((c, run(c)));
                        }
                    }
                    let h = run('#');
                    if fence.is_none()
                        && (1..=5).contains(&h)
                        && t[h..].starts_with([' ', '\t', '\n'])
                    {
                        out.push_str(&line[..indent]);
                        out.push('#');
                        out.push_str(t);
                        continue;
                    }
                }
            }
        }
        out.push_str(line);
    }
    out
}

fn dangerous_url(u: &str) -> bool {
    let l: String = u
        .chars()
        .filter(|c| !c.is_whitespace() && !c.is_control())
        .collect::<String>()
        .to_ascii_lowercase();
    ["javascript:", "vbscript:", "data:", "file:"]
        .iter()
        .any(|s| l.starts_with(s))
}

/// Markdown → HTML body with raw HTML shown as text and unsafe links disarmed.
pub(crate) fn markdown_to_html(md: &str) -> String {
    let mut opts = Options::empty();
    opts.insert(Options::ENABLE_TABLES);
    opts.insert(Options::ENABLE_STRIKETHROUGH);
    let parser = Parser::new_ext(md, opts).map(|ev| match ev {
        Md::Html(s) | Md::InlineHtml(s) => Md::Text(s),
        Md::Start(Tag::Link {
            link_type,
            dest_url,
            title,
            id,
        }) if dangerous_url(&dest_url) => Md::Start(Tag::Link {
            link_type,
            dest_url: CowStr::Borrowed("#"),
            title,
            id,
        }),
        Md::Start(Tag::Image {
            link_type,
            dest_url,
            title,
            id,
        }) if dangerous_url(&dest_url) => Md::Start(Tag::Image {
            link_type,
            dest_url: CowStr::Borrowed("#"),
            title,
            id,
        }),
        other => other,
    });
    let mut body = String::with_capacity(md.len() * 3 / 2);
    pulldown_cmark::html::push_html(&mut body, parser);
    body
}

const CSS: &str = "body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:960px;margin:2em auto;padding:0 1em;color:#1f2328;line-height:1.5}\
table{border-collapse:collapse}td,th{border:1px solid #d0d7de;padding:4px 10px;text-align:left}\
pre{background:#f6f8fa;padding:1em;overflow:auto}code{background:#f6f8fa;padding:0 3px}h1{border-bottom:1px solid #d0d7de}";

/// A standalone page (inline CSS, no scripts, no external resources).
pub(crate) fn render_html(title: &str, md: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'; img-src 'self'\">\n\
         <title>{}</title>\n<style>{CSS}</style>\n</head>\n<body>\n{}</body>\n</html>\n",
        html_escape(title),
        markdown_to_html(md)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_cause_lines_and_confidence() {
        let md = "# Investigation\n\n## Summary\nx\n\n## Root Cause\n\n**Confidence: HIGH**\n\n- The image tag `v2` does not exist.\n- Pull fails.\n- third\n\n## Evidence\nconfidence: low\n";
        let rc = root_cause(md).unwrap();
        assert_eq!(
            rc.lines,
            vec!["The image tag `v2` does not exist.", "Pull fails."]
        );
        assert_eq!(rc.confidence, Some("HIGH"));
        let md = "## Root cause (MEDIUM confidence)\nOOM at 512Mi\n";
        let rc = root_cause(md).unwrap();
        assert_eq!(rc.lines, vec!["OOM at 512Mi"]);
        assert_eq!(rc.confidence, Some("MEDIUM"));
        assert_eq!(root_cause("## Summary\nnothing"), None);
        let rc = root_cause("## Root Cause\nx\n## Next\nConfidence level: low").unwrap();
        assert_eq!(rc.confidence, Some("LOW"));
    }

    #[test]
    fn html_is_escaped_and_links_disarmed() {
        let md = "<script>alert(1)</script>\n\ntext <img src=x onerror=alert(1)> [x](javascript:alert(1)) [ok](https://example.com)\n";
        let h = markdown_to_html(md);
        assert!(!h.contains("<script"), "{h}");
        assert!(!h.contains("<img"), "{h}");
        assert!(h.contains("&lt;script&gt;"), "{h}");
        assert!(!h.contains("javascript:"), "{h}");
        assert!(h.contains("href=\"https://example.com\""), "{h}");
        let page = render_html("a <b> & \"c\"", "# hi");
        assert!(page.contains("<title>a &lt;b&gt; &amp; &quot;c&quot;</title>"));
        assert!(page.contains("<h1>hi</h1>"));
    }

    #[test]
    fn headings_demoted_outside_fences() {
        let md = "# T\n## Root Cause\nx\n```\n# not a heading\n```\n~~~~\n## no\n~~~~\n###### six\n#tag\n";
        assert_eq!(
            demote_headings(md),
            "## T\n### Root Cause\nx\n```\n# not a heading\n```\n~~~~\n## no\n~~~~\n###### six\n#tag\n"
        );
        // The root cause is still found in the demoted text.
        assert!(root_cause(&demote_headings(md)).is_some());
    }

    #[test]
    fn md_cells_cannot_break_tables() {
        let s = md_inline("a|b\n<i>c</i>");
        assert_eq!(s, "a\\|b \\<i\\>c\\</i\\>");
    }
}
