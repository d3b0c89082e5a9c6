//! The README's main-job command, `runner demo`, end to end: it must exit 0,
//! print the summary table with the expected outcomes, and leave a complete
//! workspace (event, incident, prompt, investigation, reports) per incident.

use std::process::Command;
use std::time::{Duration, Instant};

use e2e::runner_bin;

fn count(out: &str, name: &str) -> u64 {
    out.lines()
        .find_map(|l| {
            let mut it = l.split_whitespace();
            (it.next() == Some(name)).then(|| it.next()?.parse().ok())?
        })
        .unwrap_or_else(|| panic!("no `{name}` line in\n{out}"))
}

#[test]
fn demo_runs_the_whole_product_and_prints_the_summary() {
    let bin = runner_bin();
    let dir = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let mut cmd = Command::new(bin);
    cmd.args(["demo", "--demo-dir"]).arg(dir.path());
    for s in runner_plugins::settings::SETTINGS {
        cmd.env_remove(s.env);
    }
    let out = cmd.output().unwrap();
    let took = started.elapsed();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(took < Duration::from_secs(60), "demo took {took:?}");

    // Three clusters, four incidents each, all completed.
    for c in ["prod-us-east-1", "prod-eu-west-1", "staging-us-west-2"] {
        let row = stdout
            .lines()
            .find(|l| l.starts_with(c))
            .unwrap_or_else(|| panic!("no row for {c}\n{stdout}"));
        assert!(row.contains(" 4 ") && row.contains("completed=4"), "{row}");
        // 9 events in 4 incidents: the crash loop and its 2 repeats, the
        // node, the job, and the Deployment whose 3 pods and rollout failure
        // are one incident.
        assert!(row.contains(" 9  "), "{row}");
        assert!(row.contains("Deployment checkout (4 events)"), "{row}");
    }
    // Outcomes: 34 payloads; the malformed one is invalid, warnings/info
    // are filtered, repeats and sibling pods are merged into incidents.
    assert_eq!(count(&stdout, "received"), 34, "{stdout}");
    assert_eq!(count(&stdout, "invalid"), 1, "{stdout}");
    assert_eq!(count(&stdout, "filtered"), 6, "{stdout}");
    assert_eq!(count(&stdout, "duplicate"), 0, "{stdout}");
    assert_eq!(count(&stdout, "merged"), 15, "{stdout}");
    assert_eq!(count(&stdout, "completed"), 12, "{stdout}");
    assert_eq!(count(&stdout, "failed"), 0, "{stdout}");
    assert!(stdout.contains("adds up         yes"), "{stdout}");
    assert!(
        stdout.contains(&dir.path().display().to_string()),
        "{stdout}"
    );
    // The cut GET stream was detected and repaired.
    assert!(stderr.contains("vanished on the server"), "{stderr}");

    // Every incident workspace is complete.
    let incidents: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    assert_eq!(incidents.len(), 12);
    for d in incidents {
        for f in [
            "event.json",
            "incident.json",
            "prompt.md",
            "output/investigation.md",
            "report.md",
            "report.html",
            "logs/agent-stdout.log",
            "events.jsonl",
        ] {
            assert!(d.join(f).exists(), "{} lacks {f}", d.display());
        }
        let inc: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(d.join("incident.json")).unwrap())
                .unwrap();
        assert_eq!(inc["status"], "completed", "{inc}");
    }
}

#[test]
fn demo_honours_the_log_level_flag_over_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(runner_bin());
    cmd.args(["demo", "--log-level", "info", "--demo-dir"])
        .arg(dir.path());
    for s in runner_plugins::settings::SETTINGS {
        cmd.env_remove(s.env);
    }
    cmd.env("LOG_LEVEL", "error").env_remove("RUST_LOG");
    let out = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    // `final statistics` is logged at info: shown only if the flag won.
    assert!(stderr.contains("final statistics"), "{stderr}");
}
