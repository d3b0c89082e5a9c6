//! End to end: plugins built by the TypeScript and Python toolchains with
//! their default settings, configured in `pipeline.toml` next to native
//! stages, through `runner validate` and `runner replay`; replay counts
//! plugin failures in its summary and exit code and shows what plugins log
//! from `init`.
//!
//! The components come from `plugins-wasm/build-guest-examples.sh` (the
//! toolchains `.ci/run` installs); compiled components are shared through
//! the compile cache under the target dir.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use e2e::{runner_bin, workspace_root};

fn guests() -> PathBuf {
    let out = Command::new("bash")
        .arg(workspace_root().join("plugins-wasm/build-guest-examples.sh"))
        .output()
        .expect("run build-guest-examples.sh");
    assert!(
        out.status.success(),
        "building the TypeScript/Python plugins failed (exit {:?}); a missing toolchain prints \
         its install line:\n{}\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    workspace_root().join("plugins-wasm/examples/dist")
}

fn runner(args: &[&str], cfg: &Path) -> Output {
    Command::new(runner_bin())
        .args(args)
        .arg("--config")
        .arg(cfg)
        // Shared with the plugins-wasm tests: each component compiles once.
        .env(
            "WASM_CACHE_DIR",
            Path::new(env!("CARGO_TARGET_TMPDIR")).join("wasm-cache"),
        )
        .output()
        .expect("runner runs")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn line(out: &str, n: usize) -> &str {
    let prefix = format!("line {n:>5}: ");
    out.lines()
        .find(|l| l.starts_with(&prefix))
        .unwrap_or_else(|| panic!("no line {n} in\n{out}"))
}

const HEAD: &str = "[[source]]\nkind = \"mcp\"\nendpoint = \"http://127.0.0.1:1/mcp\"\n\n";
const SINK: &str = "[sink]\nkind = \"agent\"\npreset = \"demo\"\n";

#[test]
fn typescript_and_python_plugins_validate_and_replay_with_expected_outcomes() {
    let dist = guests();
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("p.toml");
    // escalate must run before severity: it raises OOMKilled so the
    // threshold lets it through.
    std::fs::write(
        &cfg,
        format!(
            "{HEAD}[[stage]]\nkind = \"wasm\"\npath = \"{d}/python-escalate.wasm\"\nmax_memory_mb = 128\ntimeout_ms = 200\nconfig = {{ fault_types = [\"OOMKilled\"] }}\n\n\
             [[stage]]\nkind = \"severity\"\nthreshold = \"ERROR\"\n\n\
             [[stage]]\nkind = \"wasm\"\npath = \"{d}/ts-namespace-deny.wasm\"\nmax_memory_mb = 128\ntimeout_ms = 200\nconfig = {{ deny_namespaces = [\"kube-*\"] }}\n\n\
             [[stage]]\nkind = \"dedup\"\n\n{SINK}",
            d = dist.display()
        ),
    )
    .unwrap();
    let v = runner(&["validate"], &cfg);
    assert!(v.status.success(), "validate: {}", text(&v.stderr));
    assert!(
        text(&v.stdout)
            .contains("wasm:python-escalate -> severity -> wasm:ts-namespace-deny -> dedup"),
        "{}",
        text(&v.stdout)
    );

    let rec = dir.path().join("recorded.jsonl");
    std::fs::write(
        &rec,
        r#"{"cluster":"prod","faultId":"b1","faultType":"OOMKilled","severity":"warning","resource":{"kind":"Pod","name":"pay-1","namespace":"payments"},"context":"OOMKilled"}
{"cluster":"prod","faultId":"b2","faultType":"CrashLoop","severity":"warning","resource":{"kind":"Pod","name":"pay-2","namespace":"payments"},"context":"restart"}
{"cluster":"prod","faultId":"b3","faultType":"OOMKilled","severity":"warning","resource":{"kind":"Pod","name":"dns-1","namespace":"kube-system"},"context":"OOMKilled"}
"#,
    )
    .unwrap();
    let out = Command::new(runner_bin())
        .arg("replay")
        .arg(&rec)
        .arg("--config")
        .arg(&cfg)
        .env(
            "WASM_CACHE_DIR",
            Path::new(env!("CARGO_TARGET_TMPDIR")).join("wasm-cache"),
        )
        .output()
        .unwrap();
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "replay: {stdout}\n{stderr}");
    let l1 = line(&stdout, 1);
    assert!(
        l1.contains("would-run-agent") && l1.contains("prod/payments/Pod/pay-1 OOMKilled CRITICAL"),
        "{stdout}"
    );
    assert!(line(&stdout, 2).contains("filtered"), "{stdout}");
    let l3 = line(&stdout, 3);
    assert!(
        l3.contains("plugin_dropped") && l3.contains("namespace kube-system matches kube-*"),
        "{stdout}"
    );
    assert!(
        stdout.contains("stage wasm:python-escalate") && stdout.contains("plugin calls 3 failed 0"),
        "{stdout}"
    );
    // init logs of both plugins, and a per-event print of the Python one.
    assert!(
        stderr.contains("escalate: OOMKilled -> critical"),
        "{stderr}"
    );
    assert!(
        stderr.contains("namespace-deny: 1 pattern(s): kube-*"),
        "{stderr}"
    );
    assert!(
        stderr.contains("escalating OOMKilled in payments"),
        "{stderr}"
    );

    // --show-changes: what each stage changed, under the line it changed.
    let out = Command::new(runner_bin())
        .arg("replay")
        .arg(&rec)
        .arg("--show-changes")
        .arg("--config")
        .arg(&cfg)
        .env(
            "WASM_CACHE_DIR",
            Path::new(env!("CARGO_TARGET_TMPDIR")).join("wasm-cache"),
        )
        .output()
        .unwrap();
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    let lines: Vec<&str> = stdout.lines().collect();
    let at = lines
        .iter()
        .position(|l| l.starts_with("line     1: "))
        .expect("line 1");
    assert_eq!(
        lines[at + 1].trim(),
        "wasm:python-escalate: severity \"WARNING\" -> \"CRITICAL\"",
        "{stdout}"
    );
    assert!(lines[at + 2].starts_with("line     2: "), "{stdout}");
}

#[test]
fn replay_counts_plugin_failures_in_its_summary_and_exit_code() {
    let dist = guests();
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("p.toml");
    std::fs::write(
        &cfg,
        format!(
            "{HEAD}[[stage]]\nkind = \"wasm\"\npath = \"{}/python-sandbox-probe.wasm\"\nmax_memory_mb = 64\ntimeout_ms = 50\n\n{SINK}",
            dist.display()
        ),
    )
    .unwrap();
    let rec = dir.path().join("recorded.jsonl");
    // The probe loops forever on faultType Loop: the deadline stops it and
    // on_error = pass lets the event through, but the run is not clean.
    std::fs::write(
        &rec,
        r#"{"cluster":"prod","faultId":"c1","faultType":"Loop","severity":"error","resource":{"kind":"Pod","name":"a","namespace":"x"},"context":"spin"}
{"cluster":"prod","faultId":"c2","faultType":"CrashLoop","severity":"error","resource":{"kind":"Pod","name":"b","namespace":"x"},"context":"ok"}
"#,
    )
    .unwrap();
    let out = Command::new(runner_bin())
        .arg("replay")
        .arg(&rec)
        .arg("--config")
        .arg(&cfg)
        .env(
            "WASM_CACHE_DIR",
            Path::new(env!("CARGO_TARGET_TMPDIR")).join("wasm-cache"),
        )
        .output()
        .unwrap();
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(line(&stdout, 1).contains("would-run-agent"), "{stdout}");
    assert!(line(&stdout, 2).contains("would-run-agent"), "{stdout}");
    assert!(stdout.contains("plugin calls 2 failed 1"), "{stdout}");
    assert!(stdout.contains("plugin failures 1"), "{stdout}");
    assert!(
        stderr.contains("timed out after 50 ms") && stderr.contains("1 plugin call(s) failed"),
        "{stderr}"
    );
}

/// One slow plugin no longer stalls intake: a plugin that uses its whole
/// deadline on every event of one cluster runs off the runtime's worker
/// threads and is capped (timeout_ms <= 1000), so every event, the other
/// cluster's included, reaches its agent, and every timeout is counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_burning_its_deadline_on_every_event_does_not_stop_other_clusters() {
    use e2e::{Runner, num};
    use mcp_testserver::{Scenario, Step, TestServer, fault};
    use serde_json::Value;
    use std::time::Duration;

    let dist = guests();
    e2e::runner_bin();
    let mut steps = vec![Step::WaitForSubscriber {
        active: 1,
        timeout_ms: 600_000,
    }];
    for i in 0..12u64 {
        let mut f = fault(i);
        let slow = i % 2 == 0;
        f["cluster"] = Value::String(if slow { "slow" } else { "fast" }.into());
        f["severity"] = Value::String("critical".into());
        // The probe spins forever on faultType Loop.
        f["faultType"] = Value::String(if slow { "Loop" } else { "CrashLoop" }.into());
        steps.push(Step::Emit {
            data: f,
            repeat: 1,
            logger: "kubernetes/faults".into(),
            level: "warning".into(),
        });
    }
    let server = TestServer::start(Scenario::new(steps)).await.unwrap();
    let config = format!(
        r#"[settings]
log_level = "info"
log_format = "json"
wasm_cache_dir = "{cache}"

[[source]]
kind = "mcp"
endpoint = "{url}"

[[stage]]
kind = "wasm"
path = "{dist}/python-sandbox-probe.wasm"
max_memory_mb = 64
timeout_ms = 100

[[stage]]
kind = "dedup"

[router]
max_concurrent_agents = 4

[sink]
kind = "agent"
command_line = "mkdir -p output; printf '# Investigation\n\n## Root Cause\n\nThe fault was looked at by the e2e agent with enough words to pass the check.\n' > output/investigation.md"
workspace_root = "{{dir}}/incidents"
timeout_seconds = 60
"#,
        cache = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join("wasm-cache")
            .display(),
        url = server.url(),
        dist = dist.display(),
    );
    let mut r = Runner::builder(&config).spawn();
    let t = Duration::from_secs(600);
    assert!(
        r.wait_for_count("event completed", 12, t).await,
        "all 12 events, both clusters, should reach an agent\n{}",
        r.dump()
    );
    let status = r.stop(Duration::from_secs(30)).await;
    assert_eq!(status.code(), Some(0), "{}", r.dump());
    let stats = r.final_stats().expect("final statistics");
    assert_eq!(num(&stats, "completed"), 12, "{stats}");
    assert_eq!(stats["adds_up"], Value::Bool(true));
    let completed = r.messages("event completed");
    for c in ["slow", "fast"] {
        let n = completed.iter().filter(|m| m["cluster"] == c).count();
        assert_eq!(n, 6, "cluster {c}: {completed:?}");
    }
    let plugin = r.messages("plugin statistics");
    assert_eq!(plugin.len(), 1, "{}", r.dump());
    assert_eq!(num(&plugin[0], "calls"), 12, "{plugin:?}");
    assert_eq!(num(&plugin[0], "failures"), 6, "{plugin:?}");
}

/// The declarative cases CI runs for the TypeScript and Python examples
/// (`plugins-wasm/examples/tests/guest-examples.toml`), through `runner test`.
#[test]
fn runner_test_passes_the_guest_examples_cases() {
    guests();
    let file = workspace_root().join("plugins-wasm/examples/tests/guest-examples.toml");
    let out = Command::new(runner_bin())
        .arg("test")
        .arg(&file)
        .env(
            "WASM_CACHE_DIR",
            Path::new(env!("CARGO_TARGET_TMPDIR")).join("wasm-cache"),
        )
        .output()
        .expect("runner runs");
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(stdout.contains("4 cases: 4 passed, 0 failed"), "{stdout}");
    for name in [
        "ok    python: an OOMKilled warning is raised to critical and passes",
        "ok    typescript: a denied namespace is dropped even when raised",
    ] {
        assert!(stdout.contains(name), "{stdout}");
    }
    // The plugins really ran: their own log lines, from init and per event.
    assert!(stderr.contains("escalating OOMKilled in shop"), "{stderr}");
    assert!(stderr.contains("namespace-deny: 2 pattern(s)"), "{stderr}");
}
