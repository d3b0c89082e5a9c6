//! End to end: input and output hygiene of the real `runner` binary —
//! credentials in endpoint URLs, text log escaping, range validation of
//! size/count settings, and `runner replay` on lines that are not UTF-8.

use std::process::{Command, Output};
use std::time::Duration;

use e2e::Runner;

fn write_config(dir: &std::path::Path, text: &str) -> std::path::PathBuf {
    let cfg = dir.join("p.toml");
    std::fs::write(&cfg, text).unwrap();
    cfg
}

/// Runs `runner <args…>` with a clean settings environment plus `env`.
fn runner(args: &[&std::ffi::OsStr], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(e2e::runner_bin());
    cmd.args(args);
    for s in runner_plugins::settings::SETTINGS {
        cmd.env_remove(s.env);
    }
    cmd.env_remove("RUST_LOG");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run runner")
}

fn os(s: &str) -> &std::ffi::OsStr {
    std::ffi::OsStr::new(s)
}

const MINIMAL: &str = "[[source]]\nkind = \"mcp\"\nendpoint = \"http://127.0.0.1:1/mcp\"\n\n[sink]\nkind = \"agent\"\npreset = \"demo\"\n";

#[test]
fn replay_counts_a_non_utf8_line_invalid_and_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(
        dir.path(),
        &format!("{MINIMAL}\n[[stage]]\nkind = \"severity\"\nthreshold = \"ERROR\"\n"),
    );
    let rec = dir.path().join("recorded.jsonl");
    let mut bytes = Vec::new();
    bytes.extend_from_slice(br#"{"cluster":"prod","faultId":"a1","faultType":"CrashLoop","severity":"critical","resource":{"kind":"Pod","name":"web-1","namespace":"shop"}}"#);
    bytes.extend_from_slice(b"\n{\"cluster\":\"prod\xff\xfe\",\"severity\":\"critical\"}\n");
    bytes.extend_from_slice(br#"{"cluster":"prod","faultId":"a3","faultType":"CrashLoop","severity":"critical","resource":{"kind":"Pod","name":"web-3","namespace":"shop"}}"#);
    bytes.push(b'\n');
    std::fs::write(&rec, bytes).unwrap();
    let out = runner(
        &[
            os("replay"),
            rec.as_os_str(),
            os("--config"),
            cfg.as_os_str(),
        ],
        &[],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "rc {:?}\n{stdout}\n{stderr}",
        out.status
    );
    let line2 = stdout
        .lines()
        .find(|l| l.starts_with("line     2: "))
        .unwrap_or_else(|| panic!("no line 2 in\n{stdout}"));
    assert!(
        line2.contains("invalid") && line2.contains("not valid UTF-8"),
        "{stdout}"
    );
    assert!(
        stdout.contains("line     3: would-run-agent"),
        "replay must go on after the bad line:\n{stdout}"
    );
    assert!(
        stdout.contains("summary: received 3 | would run agent 2"),
        "{stdout}"
    );
    assert!(
        stdout.lines().any(|l| l.trim() == "invalid         1"),
        "{stdout}"
    );
}

#[test]
fn validate_rejects_out_of_range_sizes_and_counts_all_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(
        dir.path(),
        &format!("{MINIMAL}\n[router]\ncluster_queue_size = 100000000\n"),
    );
    // Above tokio's semaphore limit (usize::MAX >> 3) and absurd in general.
    let huge = (usize::MAX >> 2).to_string();
    let out = runner(
        &[os("validate"), os("--config"), cfg.as_os_str()],
        &[
            ("MAX_CONCURRENT_AGENTS", &huge),
            ("INTAKE_QUEUE_SIZE", "0"),
            ("GLOBAL_QUEUE_SIZE", "99999999999"),
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("4 configuration error(s)"), "{stderr}");
    for (key, value) in [
        ("router.max_concurrent_agents", huge.as_str()),
        ("settings.intake_queue_size", "0"),
        ("router.global_queue_size", "99999999999"),
        ("router.cluster_queue_size", "100000000"),
    ] {
        let line = stderr
            .lines()
            .find(|l| l.contains(key))
            .unwrap_or_else(|| panic!("no error for {key}:\n{stderr}"));
        assert!(
            line.contains(value) && line.contains("an integer in 1..="),
            "{line}"
        );
    }
}

#[test]
fn endpoint_credentials_are_masked_in_validate_and_logs() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(
        dir.path(),
        "[[source]]\nkind = \"mcp\"\nendpoint = \"http://alice:s3cr3t@127.0.0.1:1/mcp?access_token=tok123&x=hidden2\"\n\n[sink]\nkind = \"agent\"\npreset = \"demo\"\n",
    );
    let out = runner(&[os("validate"), os("--config"), cfg.as_os_str()], &[]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    let expected = "http://****:****@127.0.0.1:1/mcp?access_token=****&x=****";
    assert!(text.contains(expected), "{text}");
    for secret in ["alice", "s3cr3t", "tok123", "hidden2"] {
        assert!(!text.contains(secret), "{secret} leaked:\n{text}");
    }

    // The same masked form through the environment variable, in the logs of
    // a running runner (effective configuration and the source's own lines).
    let url = "http://bob:pw9@127.0.0.1:1/mcp?access_token=tok456";
    let mut r = Runner::builder("[sink]\nkind = \"agent\"\npreset = \"demo\"\nworkspace_root = \"{dir}/inc\"\n[[source]]\nkind = \"mcp\"\n")
        .env("K8S_CLUSTER_MCP_ENDPOINT", url)
        .env("LOG_FORMAT", "text")
        .spawn();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        assert!(
            r.wait_for_text("MCP source starting", Duration::from_secs(20))
                .await
                .is_some(),
            "{}",
            r.dump()
        );
        r.stop(Duration::from_secs(20)).await;
    });
    let logs = r.lines().join("\n");
    assert!(
        logs.contains("http://****:****@127.0.0.1:1/mcp?access_token=****"),
        "{logs}"
    );
    for secret in ["bob", "pw9", "tok456"] {
        assert!(!logs.contains(secret), "{secret} leaked:\n{logs}");
    }
}

/// Splits a text log line into `key=value` pairs the way a logfmt reader
/// does: a value is a bare token or a double-quoted string with escapes.
fn logfmt_pairs(line: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let b = line.as_bytes();
    let mut i = 0;
    while i < b.len() {
        let start = i;
        while i < b.len() && b[i] != b' ' && b[i] != b'=' && b[i] != b'"' {
            i += 1;
        }
        if i < b.len() && b[i] == b'=' && i > start {
            let key = line[start..i].to_string();
            i += 1;
            let mut val = String::new();
            if i < b.len() && b[i] == b'"' {
                i += 1;
                while i < b.len() && b[i] != b'"' {
                    if b[i] == b'\\' && i + 1 < b.len() {
                        i += 1;
                    }
                    val.push(b[i] as char);
                    i += 1;
                }
                i += 1;
            } else {
                while i < b.len() && b[i] != b' ' {
                    val.push(b[i] as char);
                    i += 1;
                }
            }
            out.push((key, val));
        } else if i < b.len() && b[i] == b'"' {
            // A quoted message: skip it whole.
            i += 1;
            while i < b.len() && b[i] != b'"' {
                if b[i] == b'\\' {
                    i += 1;
                }
                i += 1;
            }
            i += 1;
        } else {
            i += 1;
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_logs_quote_untrusted_fields_so_none_can_be_forged() {
    use mcp_testserver::{Scenario, Step, TestServer, fault};
    e2e::runner_bin();
    let mut f = fault(1);
    f["severity"] = "critical".into();
    f["resource"]["name"] = "web-1 outcome=\"completed\" reason=ok".into();
    f["cluster"] = "prod cluster=other".into();
    let server = TestServer::start(Scenario::new(vec![
        Step::WaitForSubscriber {
            active: 1,
            timeout_ms: 120_000,
        },
        Step::Emit {
            data: f,
            repeat: 1,
            logger: "kubernetes/faults".into(),
            level: "warning".into(),
        },
    ]))
    .await
    .unwrap();
    let config = format!(
        "[[source]]\nkind = \"mcp\"\nendpoint = \"{}\"\n\n[sink]\nkind = \"agent\"\ncommand = [\"false\"]\nworkspace_root = \"{{dir}}/inc\"\n",
        server.url()
    );
    let mut r = Runner::builder(&config).env("LOG_FORMAT", "text").spawn();
    let line = r
        .wait_for_text("event failed", Duration::from_secs(30))
        .await
        .unwrap_or_else(|| panic!("no failed event:\n{}", r.dump()));
    r.stop(Duration::from_secs(20)).await;
    let pairs = logfmt_pairs(&line);
    let get = |k: &str| -> Vec<&str> {
        pairs
            .iter()
            .filter(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
            .collect()
    };
    assert_eq!(get("outcome"), ["failed"], "{line}");
    assert_eq!(get("cluster"), ["prod cluster=other"], "{line}");
    assert_eq!(
        get("resource"),
        ["Node/web-1 outcome=\"completed\" reason=ok"],
        "{line}"
    );
    assert_eq!(get("reason").len(), 1, "{line}");
}

/// `VmHWM` (peak resident set) of a process, in KiB.
fn vm_hwm_kib(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc status");
    s.lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .expect("VmHWM in /proc status")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_megabyte_payloads_stay_within_the_byte_budget() {
    use e2e::num;
    use mcp_testserver::{Scenario, Step, TestServer, fault};
    e2e::runner_bin();
    const MIB: usize = 1 << 20;
    const BIG: u64 = 30;
    const HUGE: u64 = 2;
    const MAX: usize = 10 * MIB + MIB / 2;
    let budget = 32 * MIB;
    let mut steps = vec![Step::WaitForSubscriber {
        active: 1,
        timeout_ms: 120_000,
    }];
    let emit = |i: u64, size: usize| {
        let mut f = fault(i);
        f["severity"] = "critical".into();
        f["cluster"] = format!("c{i}").into();
        f["context"] = "x".repeat(size).into();
        Step::Emit {
            data: f,
            repeat: 1,
            logger: "kubernetes/faults".into(),
            level: "warning".into(),
        }
    };
    for i in 0..BIG {
        steps.push(emit(i, 10 * MIB));
    }
    // Over MAX_PAYLOAD_BYTES (10.5 MiB): invalid, with the size in the reason.
    for i in 0..HUGE {
        steps.push(emit(BIG + i, 11 * MIB));
    }
    let server = TestServer::start(Scenario::new(steps)).await.unwrap();
    let config = format!(
        "[settings]\nmax_payload_bytes = {}\npayload_budget_bytes = {budget}\nshutdown_timeout_seconds = 1\n\n[[source]]\nkind = \"mcp\"\nendpoint = \"{}\"\n\n[router]\nmax_concurrent_agents = 1\n\n[sink]\nkind = \"agent\"\ncommand_line = \"sleep 60\"\nworkspace_root = \"{{dir}}/inc\"\ntimeout_seconds = 120\nkill_grace_seconds = 1\n",
        MAX,
        server.url()
    );
    // With the state store (the default): its journal's copies of admitted
    // payloads are charged to the same budget until they are written.
    let mut r = Runner::builder(&config).spawn();
    let t = Duration::from_secs(120);
    let all_in = r.wait_for_count("event rejected", 1, t).await
        && r.wait_for_count("event invalid", HUGE as usize, t).await;
    let hwm = vm_hwm_kib(r.pid());
    assert!(all_in, "payloads did not arrive:\n{}", r.dump());
    let invalid = r.messages("event invalid");
    assert!(
        invalid.iter().all(|f| f["reason"]
            .as_str()
            .is_some_and(|s| s.starts_with("payload too large: 11534")
                && s.contains(&format!("bytes (maximum {MAX}")))),
        "{invalid:?}"
    );
    r.stop(Duration::from_secs(30)).await;
    let stats = r.final_stats().unwrap_or_else(|| panic!("{}", r.dump()));
    assert_eq!(num(&stats, "received"), BIG + HUGE, "{stats}");
    assert_eq!(num(&stats, "invalid"), HUGE, "{stats}");
    assert_eq!(stats["adds_up"], serde_json::Value::Bool(true));
    // At most budget / 10 MB payloads were held at once; the rest were
    // refused at intake.
    let held = (budget / (10 * MIB + 1024)) as u64;
    assert!(num(&stats, "rejected") >= BIG - held, "{stats}");
    // The budget bounds what is held; the rest of the peak is the process
    // itself, one message being decoded by the transport (a few copies of
    // 10-20 MB), and the state writer's copies of the one admission it is
    // writing (its row text, SQLite's bound copy and record: up to three
    // payloads, freed after the insert). Without the budget, 30 x 10 MB
    // stay queued, far above this limit.
    let limit_kib = (budget as u64 + 160 * MIB as u64 + 3 * MAX as u64) / 1024;
    eprintln!(
        "VmHWM {hwm} KiB (limit {limit_kib} KiB, budget {} KiB)",
        budget / 1024
    );
    assert!(
        hwm < limit_kib,
        "peak RSS {hwm} KiB over budget + 160 MiB + 3 payloads = {limit_kib} KiB\n{stats}"
    );
}
