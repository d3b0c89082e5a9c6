//! Grouping across a restart, end to end: the real `runner` binary with the
//! `group` stage and the state store is SIGKILLed while one incident is in
//! its cooldown and another waits out `group_wait`, then started again on
//! the same `STATE_DIR`. A repeat of the ended incident attaches to it as a
//! recurrence (`merged`, no new agent); the waiting group is not lost: its
//! leader runs once after the restart and its repeat attaches to it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use e2e::restart::Shared;
use e2e::{Runner, num};
use mcp_testserver::{Scenario, Step, TestServer};
use serde_json::{Value, json};

const T: Duration = Duration::from_secs(60);

fn fault(cluster: &str, pod: &str, id: &str) -> Step {
    Step::Emit {
        data: json!({
            "cluster": cluster,
            "faultId": id,
            "faultType": "CrashLoop",
            "severity": "critical",
            "resource": {"apiVersion": "v1", "kind": "Pod", "name": pod, "namespace": "shop"},
            "context": format!("Back-off restarting failed container in {pod}"),
        }),
        repeat: 1,
        logger: "kubernetes/faults".into(),
        level: "warning".into(),
    }
}

/// Logs `start <cluster> <resource>` and `end <cluster>` to `$E2E_LOG`.
const AGENT: &str = r#"echo "start $CLUSTER $RESOURCE_NAME" >> "$E2E_LOG"
sleep 0.1
printf '# Investigation\n\n## Root Cause\n\nThe grouped fault of %s was investigated by the restart test agent.\n' "$RESOURCE_NAME" > output/investigation.md
echo "end $CLUSTER" >> "$E2E_LOG""#;

fn config(url: &str, root: &Path, group_wait: u64) -> String {
    let root = root.display().to_string();
    format!(
        r#"[settings]
log_level = "debug"
log_format = "json"
shutdown_timeout_seconds = 5
state_dir = "{root}/state"

[[source]]
kind = "mcp"
endpoint = "{url}"

[[stage]]
kind = "group"
group_wait_seconds = {group_wait}
group_interval_seconds = 600

[router]
max_concurrent_agents = 2

[sink]
kind = "agent"
command_line = {AGENT:?}
workspace_root = "{root}/incidents"
timeout_seconds = 60
kill_grace_seconds = 1
env_allow = ["E2E_LOG"]
sandbox_write_paths = ["{root}/logs"]
"#
    )
}

async fn poll(what: &str, r: &Runner, mut f: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + T;
    while !f() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}\n{}",
            r.dump()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_keeps_cooldowns_and_waiting_groups() {
    e2e::runner_bin();
    let shared = Shared::new();

    // Run 1: the `web` Deployment's incident runs and ends; 4 s later a pod
    // of `api` opens a group that waits out its 3 s `group_wait` when the
    // runner is killed.
    let server = TestServer::start(Scenario::new(vec![
        Step::WaitForSubscriber {
            active: 1,
            timeout_ms: 120_000,
        },
        fault("alpha", "web-7d4b9c8f5-bcdfg", "web-1"),
        Step::Sleep { ms: 4000 },
        fault("beta", "api-5f6d7c8b9-hjklm", "api-1"),
    ]))
    .await
    .unwrap();
    let mut r = Runner::builder(&config(&server.url(), &shared.root, 3))
        .env("E2E_LOG", shared.log().display().to_string())
        .spawn();
    poll(
        "web's incident to end and api's leader to be stored",
        &r,
        || {
            shared.count("end alpha") == 1
                && shared.stored() == (2, 1, 1)
                && shared.stored_groups() == 1
        },
    )
    .await;
    r.signal(libc::SIGKILL);
    let status = r.wait_exit(T).await.expect("runner dies");
    assert_eq!(status.code(), None, "killed by a signal");
    assert_eq!(
        shared.count("start beta"),
        0,
        "api's group was still waiting when the runner was killed: {:?}",
        shared.lines()
    );

    // Run 2: a repeat of each group arrives at once.
    let server = TestServer::start(Scenario::new(vec![
        Step::WaitForSubscriber {
            active: 1,
            timeout_ms: 120_000,
        },
        fault("alpha", "web-7d4b9c8f5-npqrs", "web-2"),
        fault("beta", "api-5f6d7c8b9-tvwxz", "api-2"),
    ]))
    .await
    .unwrap();
    let mut r = Runner::builder(&config(&server.url(), &shared.root, 1))
        .env("E2E_LOG", shared.log().display().to_string())
        .spawn();
    poll("api's incident to run after the restart", &r, || {
        shared.count("end beta") == 1 && shared.stored() == (4, 2, 0)
    })
    .await;
    poll("both repeats decided", &r, || {
        r.messages("event merged").len() == 2
    })
    .await;
    let status = r.stop(T).await;
    assert_eq!(status.code(), Some(0), "{}", r.dump());

    // One agent per group over both runs: web's repeat did not start a
    // second investigation inside its cooldown.
    assert_eq!(shared.count("start alpha"), 1, "{:?}", shared.lines());
    assert_eq!(shared.count("start beta"), 1, "{:?}", shared.lines());
    let merged = r.messages("event merged");
    let reason = |id: &str| {
        merged
            .iter()
            .find(|m| m.to_string().contains(id))
            .map(|m| m["reason"].as_str().unwrap_or_default().to_string())
            .unwrap_or_else(|| panic!("no merged line for {id}: {merged:?}"))
    };
    assert!(reason("web-2").starts_with("recurrence"), "{merged:?}");
    assert!(reason("api-2").starts_with("attached"), "{merged:?}");

    let stats = r.final_stats().expect("final statistics");
    assert_eq!(num(&stats, "received"), 2, "{stats}");
    assert_eq!(num(&stats, "recovered"), 1, "{stats}");
    assert_eq!(num(&stats, "merged"), 2, "{stats}");
    assert_eq!(num(&stats, "completed"), 1, "{stats}");
    assert_eq!(stats["adds_up"], Value::Bool(true), "{stats}");
    let total = r
        .messages("cumulative statistics")
        .pop()
        .expect("cumulative statistics");
    assert_eq!(
        num(&total, "reruns"),
        0,
        "api's leader waited queued, without an agent: {total}"
    );
    assert_eq!(num(&total, "total_received"), 4, "{total}");
    assert_eq!(num(&total, "total_completed"), 2, "{total}");
    assert_eq!(num(&total, "total_merged"), 2, "{total}");
    assert_eq!(total["total_adds_up"], Value::Bool(true), "{total}");

    // api's incident (run after the restart) holds its recovered leader.
    let api: Vec<PathBuf> = std::fs::read_dir(shared.root.join("incidents"))
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            std::fs::read_to_string(p.join("incident.json"))
                .is_ok_and(|t| t.contains("api-5f6d7c8b9-hjklm"))
        })
        .collect();
    assert_eq!(api.len(), 1, "{api:?}");
    let events = std::fs::read_to_string(api[0].join("events.jsonl")).unwrap_or_default();
    assert!(events.contains("api-1"), "{events}");
}
