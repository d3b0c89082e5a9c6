//! A full disk under `STATE_DIR`, for real: the runner runs in its own user
//! and mount namespace (`unshare`) with a tiny tmpfs mounted on its state
//! directory, so SQLite gets a genuine ENOSPC. At startup that is a clear
//! error (exit 2, naming STATE_DIR); while running, events are still
//! investigated, the condition is logged once, `/readyz` says why it is not
//! ready, and the metrics show it.

use std::path::Path;
use std::time::Duration;

use e2e::{Runner, free_port, num};
use mcp_testserver::{Scenario, Step, TestServer};
use serde_json::{Value, json};

const T: Duration = Duration::from_secs(60);

/// Mounts a tmpfs of `size` on `$STATE_MNT` (optionally filled up), then
/// execs the runner.
fn wrap(size: &str, fill: bool) -> Vec<String> {
    let fill = if fill {
        "dd if=/dev/zero of=\"$STATE_MNT/fill\" bs=4k 2>/dev/null; "
    } else {
        ""
    };
    vec![
        "unshare".into(),
        "--user".into(),
        "--map-root-user".into(),
        "--mount".into(),
        "sh".into(),
        "-c".into(),
        format!(
            "mount -t tmpfs -o size={size} tmpfs \"$STATE_MNT\" || exit 99; {fill}exec \"$0\" \"$@\""
        ),
    ]
}

fn unshare_works() -> bool {
    std::process::Command::new("unshare")
        .args(["--user", "--map-root-user", "--mount", "sh", "-c"])
        .arg("mount -t tmpfs -o size=64k tmpfs /mnt")
        .status()
        .is_ok_and(|s| s.success())
}

/// Agents wait while the file `$GATE` exists.
const AGENT: &str = r#"while [ -e "$GATE" ]; do sleep 0.1; done"#;

fn config(url: &str, mnt: &Path) -> String {
    format!(
        "[settings]\nlog_format = \"json\"\nstate_dir = \"{}/state\"\nshutdown_timeout_seconds = 5\n\
         [[source]]\nkind = \"mcp\"\nendpoint = \"{url}\"\n\
         [router]\nmax_concurrent_agents = 4\ncluster_queue_size = 100\nglobal_queue_size = 1000\n\
         [sink]\nkind = \"agent\"\ncommand_line = {AGENT:?}\nenv_allow = [\"GATE\"]\nworkspace_root = \"{{dir}}/incidents\"\n",
        mnt.display()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_space_at_startup_is_a_clear_error() {
    e2e::runner_bin();
    assert!(
        unshare_works(),
        "unshare --user --map-root-user --mount with a tmpfs must work here"
    );
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().canonicalize().unwrap().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let wrap = wrap("64k", true);
    let argv: Vec<&str> = wrap.iter().map(String::as_str).collect();
    let mut r = Runner::builder(&config("http://127.0.0.1:9/mcp", &mnt))
        .env("STATE_MNT", mnt.display().to_string())
        .wrap(&argv)
        .spawn();
    let status = r.wait_exit(T).await.expect("the runner exits by itself");
    let out = r.lines().join("\n");
    assert_eq!(status.code(), Some(2), "{out}");
    assert!(out.contains("STATE_DIR"), "{out}");
    assert!(out.contains(&format!("{}/state", mnt.display())), "{out}");
    assert!(out.contains("no space left"), "{out}");
    assert!(
        !out.contains("final statistics"),
        "nothing may start: {out}"
    );
}

async fn get(url: &str) -> (u16, String) {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    match client.get(url).send().await {
        Ok(r) => (r.status().as_u16(), r.text().await.unwrap_or_default()),
        Err(_) => (0, String::new()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disk_that_fills_up_while_running_is_reported_and_events_still_run() {
    e2e::runner_bin();
    assert!(
        unshare_works(),
        "unshare --user --map-root-user --mount with a tmpfs must work here"
    );
    const N: u64 = 40;
    let mut steps = vec![Step::WaitForSubscriber {
        active: 1,
        timeout_ms: 120_000,
    }];
    for i in 0..N {
        steps.push(Step::Emit {
            data: json!({
                "cluster": format!("c{}", i % 4),
                "faultId": format!("f-{i}"),
                "faultType": "CrashLoop",
                "severity": "critical",
                "resource": {"kind": "Pod", "name": format!("p-{i}"), "namespace": "ns"},
                // Big enough that a few admissions fill the state volume.
                "context": "x".repeat(60_000),
            }),
            repeat: 1,
            logger: "kubernetes/faults".into(),
            level: "warning".into(),
        });
    }
    let server = TestServer::start(Scenario::new(steps)).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().canonicalize().unwrap().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let port = free_port();
    let gate = dir.path().canonicalize().unwrap().join("gate");
    std::fs::write(&gate, "").unwrap();
    let wrap = wrap("768k", false);
    let argv: Vec<&str> = wrap.iter().map(String::as_str).collect();
    let mut r = Runner::builder(&config(&server.url(), &mnt))
        .env("STATE_MNT", mnt.display().to_string())
        .env("GATE", gate.display().to_string())
        .env("ADMIN_LISTEN", format!("127.0.0.1:{port}"))
        .wrap(&argv)
        .spawn();
    let base = format!("http://127.0.0.1:{port}");
    assert!(
        r.wait_for_message("state store opened", T).await.is_some(),
        "{}",
        r.dump()
    );
    // Agents hold while the gate exists: the queued events' rows fill the
    // state volume, and the store cannot write any more.
    let deadline = std::time::Instant::now() + T;
    let body = loop {
        let (code, body) = get(&format!("{base}/readyz")).await;
        if code == 503 && body.contains("state store cannot write") {
            break body;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "readyz never said the store cannot write: {code} {body}\n{}",
            r.dump()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(body.contains("STATE_DIR"), "{body}");
    let (code, metrics) = get(&format!("{base}/metrics")).await;
    assert_eq!(code, 200);
    assert!(metrics.contains("runner_state_writable 0"), "{metrics}");
    let failed: u64 = metrics
        .lines()
        .find(|l| l.starts_with("runner_state_commits_total{result=\"failed\"}"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{metrics}"));
    assert!(failed >= 1, "{metrics}");
    // The disk stays full: every event is still investigated.
    std::fs::remove_file(&gate).unwrap();
    let deadline = std::time::Instant::now() + T;
    loop {
        let done = r
            .json_lines()
            .iter()
            .filter(|l| {
                l["target"] == "audit"
                    && l["fields"]["message"]
                        .as_str()
                        .is_some_and(|m| m.starts_with("event ") && m != "event queued")
            })
            .count();
        if done as u64 >= N {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{done} of {N} events decided\n{}",
            r.dump()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let log = r.json_lines();
    let count = |level: &str, prefix: &str| {
        log.iter()
            .filter(|l| {
                l["level"] == level
                    && l["fields"]["message"]
                        .as_str()
                        .is_some_and(|m| m.starts_with(prefix))
            })
            .count()
    };
    let errors = count("ERROR", "state store: cannot write");
    let recoveries = count("INFO", "state store: writing again");
    assert!(
        errors >= 1 && (errors == recoveries || errors == recoveries + 1),
        "logged once per condition: {errors} errors, {recoveries} recoveries\n{}",
        r.dump()
    );
    r.sigterm();
    r.wait_exit(T).await.expect("the runner exits");
    let stats = r.final_stats().unwrap_or_else(|| panic!("{}", r.dump()));
    assert_eq!(num(&stats, "received"), N, "{stats}");
    assert_eq!(stats["adds_up"], Value::Bool(true), "{stats}");
    assert_eq!(num(&stats, "rejected"), 0, "{stats}");
}
