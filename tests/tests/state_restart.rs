//! The durable state store, end to end: the real `runner` binary is killed
//! (SIGKILL) or stopped (SIGTERM) in the middle of a storm with slow agents
//! and started again on the same `STATE_DIR`. Nothing admitted is lost,
//! nothing investigated is investigated again inside its dedup window,
//! interrupted incidents run once more, no agent process survives, and the
//! counters add up across both runs.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use e2e::restart::Shared;
use e2e::{Runner, num};
use mcp_testserver::{Scenario, Step, TestServer, fault};
use serde_json::Value;

const T: Duration = Duration::from_secs(60);
const CLUSTERS: [&str; 4] = ["alpha", "beta", "gamma", "delta"];
/// Distinct faults per run; fault `i` is on cluster `i % 4`.
const FAULTS: u64 = 12;
/// Agents for `workload-0..FAST` finish at once in the first run; the
/// others sleep until killed.
const FAST: u64 = 4;

fn event(i: u64) -> Value {
    let mut f = fault(i);
    f["cluster"] = Value::String(CLUSTERS[(i % 4) as usize].into());
    f["severity"] = Value::String("critical".into());
    f
}

fn storm() -> Scenario {
    let mut steps = vec![Step::WaitForSubscriber {
        active: 1,
        timeout_ms: 120_000,
    }];
    for i in 0..FAULTS {
        steps.push(Step::Emit {
            data: event(i),
            repeat: 1,
            logger: "kubernetes/faults".into(),
            level: "warning".into(),
        });
    }
    Scenario::new(steps)
}

/// Logs `start <name> <pid of a grandchild>` and `end <name>` to `$E2E_LOG`.
/// `slow_from`: workloads with a number at or above it sleep 300 s (until
/// killed); the others write their investigation at once.
fn agent(slow_from: u64) -> String {
    format!(
        "n=${{RESOURCE_NAME#workload-}}; d=0.1; [ \"$n\" -ge {slow_from} ] && d=300; \
         sleep \"$d\" & echo \"start $RESOURCE_NAME $!\" >> \"$E2E_LOG\"; wait; mkdir -p output; \
         printf '# Investigation\\n\\n## Root Cause\\n\\nThe fault of %s was investigated by the restart test agent.\\n' \"$RESOURCE_NAME\" > output/investigation.md; \
         echo \"end $RESOURCE_NAME\" >> \"$E2E_LOG\""
    )
}

fn config(url: &str, agent: &str, shared: &Path, shutdown_secs: u64) -> String {
    let shared = shared.display().to_string();
    format!(
        r#"[settings]
log_format = "json"
shutdown_timeout_seconds = {shutdown_secs}
state_dir = "{shared}/state"

[[source]]
kind = "mcp"
endpoint = "{url}"

[[stage]]
kind = "severity"
threshold = "ERROR"

[[stage]]
kind = "dedup"
window_seconds = 600

[router]
max_concurrent_agents = 2
cluster_queue_size = 10
global_queue_size = 100

[sink]
kind = "agent"
command_line = {agent:?}
workspace_root = "{shared}/incidents"
timeout_seconds = 600
kill_grace_seconds = 1
env_allow = ["E2E_LOG"]
sandbox_write_paths = ["{shared}/logs"]
"#
    )
}

fn pid_alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| !s.contains(") Z "))
        .unwrap_or(false)
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

/// Run 1 until `FAST` incidents completed and two slow agents run, then
/// `stop` it. Returns the pids of the slow agents' sleeps.
async fn first_run(shared: &Shared, shutdown_secs: u64, stop: Stop) -> Vec<i32> {
    let server = TestServer::start(storm()).await.unwrap();
    let mut r = Runner::builder(&config(
        &server.url(),
        &agent(FAST),
        &shared.root,
        shutdown_secs,
    ))
    .env("E2E_LOG", shared.log().display().to_string())
    .spawn();
    poll("the fast incidents and two slow agents", &r, || {
        shared.count("end ") == FAST as usize && shared.count("start ") == FAST as usize + 2
    })
    .await;
    // Every payload of the storm is durable (admitted or decided) and the
    // fast incidents' outcomes are committed.
    poll("the storm committed to the state file", &r, || {
        shared.stored() == (FAULTS, FAST, FAULTS - FAST)
    })
    .await;
    let slow: Vec<i32> = shared
        .lines()
        .iter()
        .filter_map(|l| {
            let mut p = l.split_whitespace();
            (p.next() == Some("start")).then(|| {
                let name = p.next().unwrap();
                let pid: i32 = p.next().unwrap().parse().unwrap();
                (name.to_string(), pid)
            })
        })
        .filter(|(name, _)| name.trim_start_matches("workload-").parse::<u64>().unwrap() >= FAST)
        .map(|(_, pid)| pid)
        .collect();
    assert_eq!(slow.len(), 2, "{:?}", shared.lines());
    assert!(slow.iter().all(|p| pid_alive(*p)));
    match stop {
        Stop::Kill => {
            r.signal(libc::SIGKILL);
            let status = r.wait_exit(T).await.expect("runner dies");
            assert_eq!(status.code(), None, "killed by a signal");
            assert!(
                r.final_stats().is_none(),
                "a SIGKILLed runner logs nothing more"
            );
        }
        Stop::Term => {
            r.sigterm();
            let status = r.wait_exit(T).await.expect("runner exits");
            assert_eq!(status.code(), Some(3), "agents were killed\n{}", r.dump());
            let stats = r.final_stats().expect("final statistics");
            assert_eq!(num(&stats, "received"), FAULTS, "{stats}");
            assert_eq!(num(&stats, "completed"), FAST, "{stats}");
            assert_eq!(num(&stats, "abandoned"), 0, "{stats}");
            assert_eq!(num(&stats, "killed"), 2, "{stats}");
            assert_eq!(num(&stats, "interrupted"), 2, "{stats}");
            assert_eq!(num(&stats, "deferred"), FAULTS - FAST, "{stats}");
            assert_eq!(stats["adds_up"], Value::Bool(true), "{stats}");
            assert_eq!(shared.stored(), (FAULTS, FAST, FAULTS - FAST));
        }
    }
    slow
}

#[derive(Clone, Copy)]
enum Stop {
    Kill,
    Term,
}

async fn restart(stop: Stop) {
    e2e::runner_bin();
    let shared = Shared::new();
    let slow = first_run(&shared, 1, stop).await;

    // Run 2: same state directory; the same storm arrives again, and every
    // agent is quick now.
    let server = TestServer::start(storm()).await.unwrap();
    let mut r = Runner::builder(&config(&server.url(), &agent(u64::MAX), &shared.root, 10))
        .env("E2E_LOG", shared.log().display().to_string())
        .spawn();
    // What the killed runner's agents left is gone before anything runs.
    poll("the first run's agents to be gone", &r, || {
        slow.iter().all(|p| !pid_alive(*p))
    })
    .await;
    poll("every incident investigated", &r, || {
        shared.count("end ") == FAULTS as usize
    })
    .await;
    poll("the repeated storm decided", &r, || {
        shared.stored().0 == 2 * FAULTS && shared.stored().2 == 0
    })
    .await;
    let status = r.stop(T).await;
    assert_eq!(status.code(), Some(0), "{}", r.dump());

    // No fault was investigated twice: one `end` per workload over both
    // runs; the two interrupted ones started twice (one re-run each).
    let mut starts: HashMap<String, usize> = HashMap::new();
    let mut ends: HashMap<String, usize> = HashMap::new();
    for l in shared.lines() {
        let mut p = l.split_whitespace();
        let (what, name) = (p.next().unwrap(), p.next().unwrap().to_string());
        *match what {
            "start" => starts.entry(name),
            _ => ends.entry(name),
        }
        .or_default() += 1;
    }
    assert_eq!(ends.len(), FAULTS as usize, "{ends:?}");
    assert!(ends.values().all(|n| *n == 1), "{ends:?}");
    let twice: Vec<_> = starts.iter().filter(|(_, n)| **n == 2).collect();
    assert_eq!(
        twice.len(),
        2,
        "interrupted incidents re-run once: {starts:?}"
    );
    assert!(starts.values().all(|n| *n <= 2), "{starts:?}");

    let stats = r.final_stats().expect("final statistics");
    assert_eq!(num(&stats, "received"), FAULTS, "{stats}");
    assert_eq!(num(&stats, "recovered"), FAULTS - FAST, "{stats}");
    assert_eq!(
        num(&stats, "duplicate"),
        FAULTS,
        "repeats inside the window: {stats}"
    );
    assert_eq!(num(&stats, "completed"), FAULTS - FAST, "{stats}");
    assert_eq!(stats["adds_up"], Value::Bool(true), "{stats}");
    let total = r
        .messages("cumulative statistics")
        .pop()
        .expect("cumulative statistics");
    assert_eq!(num(&total, "carried_over_received"), FAULTS, "{total}");
    assert_eq!(num(&total, "carried_over_terminal"), FAST, "{total}");
    assert_eq!(
        num(&total, "carried_over_pending"),
        FAULTS - FAST,
        "{total}"
    );
    assert_eq!(num(&total, "reruns"), 2, "{total}");
    assert_eq!(num(&total, "total_received"), 2 * FAULTS, "{total}");
    assert_eq!(num(&total, "total_completed"), FAULTS, "{total}");
    assert_eq!(num(&total, "total_duplicate"), FAULTS, "{total}");
    assert_eq!(num(&total, "total_pending"), 0, "{total}");
    assert_eq!(total["total_adds_up"], Value::Bool(true), "{total}");

    // The history: one incident per fault, the interrupted ones run twice.
    let out = std::process::Command::new(e2e::runner_bin())
        .args(["incidents", "--json", "--limit", "100"])
        .env("STATE_DIR", shared.root.join("state"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let list: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(list.len(), FAULTS as usize, "{list:?}");
    assert!(list.iter().all(|i| i["status"] == "completed"), "{list:?}");
    let runs: Vec<u64> = list.iter().map(|i| i["runs"].as_u64().unwrap()).collect();
    assert_eq!(runs.iter().filter(|n| **n == 2).count(), 2, "{runs:?}");
    assert_eq!(
        runs.iter().filter(|n| **n == 1).count(),
        FAULTS as usize - 2,
        "{runs:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_storm_then_restart_loses_and_repeats_nothing() {
    restart(Stop::Kill).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_mid_storm_keeps_queued_and_interrupted_incidents_for_the_next_run() {
    restart(Stop::Term).await;
}
