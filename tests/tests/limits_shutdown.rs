//! End to end: the real `runner` binary, the test MCP server on loopback and
//! real agent subprocesses (small sh scripts) prove the concurrency limits
//! and the shutdown contract.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use e2e::{Runner, num};
use mcp_testserver::{Scenario, Step, TestServer, fault};
use serde_json::Value;

const T: Duration = Duration::from_secs(30);

fn event(i: u64, cluster: &str) -> Value {
    let mut f = fault(i);
    f["cluster"] = Value::String(cluster.to_string());
    f["severity"] = Value::String("critical".into());
    f
}

fn emit(data: Value) -> Step {
    Step::Emit {
        data,
        repeat: 1,
        logger: "kubernetes/faults".into(),
        level: "warning".into(),
    }
}

/// `log_dir` is where the agents write their log: outside their workspace,
/// so the sandbox must grant it.
fn config(url: &str, agent: &str, router: &str, shutdown_secs: u64, log_dir: &Path) -> String {
    let log_dir = log_dir.canonicalize().unwrap().display().to_string();
    format!(
        r#"[settings]
log_level = "info"
log_format = "json"
shutdown_timeout_seconds = {shutdown_secs}

[[source]]
kind = "mcp"
endpoint = "{url}"
ping_interval_seconds = 1
subscription_check_seconds = 1

[[stage]]
kind = "severity"
threshold = "ERROR"

[[stage]]
kind = "dedup"

[router]
{router}

[sink]
kind = "agent"
command_line = {agent:?}
workspace_root = "{{dir}}/incidents"
timeout_seconds = 60
kill_grace_seconds = 1
env_allow = ["E2E_LOG"]
sandbox_write_paths = [{log_dir:?}]
"#
    )
}

/// An agent that logs its start and end (with the cluster) to `$E2E_LOG`,
/// works for `secs`, and writes an investigation.
fn recording_agent(secs: &str) -> String {
    format!(
        "echo \"start $CLUSTER $(date +%s%N)\" >> \"$E2E_LOG\"; sleep {secs}; mkdir -p output; \
         printf '# Investigation\\n\\n## Root Cause\\n\\nThe demo fault of %s was investigated by the e2e agent with enough words to pass.\\n' \"$RESOURCE_NAME\" > output/investigation.md; \
         echo \"end $CLUSTER $(date +%s%N)\" >> \"$E2E_LOG\""
    )
}

/// Parses the agent log into (cluster, start_ns, end_ns) intervals.
fn intervals(log: &Path) -> Vec<(String, u128, u128)> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let mut open: HashMap<String, Vec<u128>> = HashMap::new();
    let mut out = Vec::new();
    for line in text.lines() {
        let parts: Vec<&str> = line.split_whitespace().collect();
        let [what, cluster, ts] = parts[..] else {
            panic!("bad log line {line:?}")
        };
        let ts: u128 = ts.parse().unwrap();
        match what {
            "start" => open.entry(cluster.to_string()).or_default().push(ts),
            "end" => {
                let start = open
                    .get_mut(cluster)
                    .and_then(Vec::pop)
                    .expect("end without start");
                out.push((cluster.to_string(), start, ts));
            }
            _ => panic!("bad log line {line:?}"),
        }
    }
    assert!(
        open.values().all(Vec::is_empty),
        "unfinished agents: {open:?}"
    );
    out
}

fn max_overlap(iv: &[(String, u128, u128)]) -> usize {
    let mut points: Vec<(u128, i32)> = iv
        .iter()
        .flat_map(|(_, s, e)| [(*s, 1), (*e, -1)])
        .collect();
    // Ends sort before starts at the same instant.
    points.sort();
    let (mut cur, mut max) = (0i32, 0i32);
    for (_, d) in points {
        cur += d;
        max = max.max(cur);
    }
    max as usize
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caps_and_one_agent_per_cluster_hold_end_to_end() {
    // Build the binary before the scenario's clock starts ticking.
    e2e::runner_bin();
    let clusters = ["alpha", "beta", "gamma", "delta"];
    let mut steps = vec![Step::WaitForSubscriber {
        active: 1,
        timeout_ms: 120_000,
    }];
    for i in 0..16u64 {
        steps.push(emit(event(i, clusters[(i % 4) as usize])));
    }
    let server = TestServer::start(Scenario::new(steps)).await.unwrap();
    let log_dir = tempfile::tempdir().unwrap();
    let log = log_dir.path().join("agents.log");
    let router = "max_concurrent_agents = 2\ncluster_queue_size = 10\nglobal_queue_size = 100";
    let mut r = Runner::builder(&config(
        &server.url(),
        &recording_agent("0.3"),
        router,
        10,
        log_dir.path(),
    ))
    .env("E2E_LOG", log.display().to_string())
    .spawn();
    assert!(
        r.wait_for_count("event completed", 16, T).await,
        "16 agents should complete\n{}",
        r.dump()
    );
    let status = r.stop(T).await;
    assert_eq!(status.code(), Some(0), "{}", r.dump());
    let stats = r.final_stats().expect("final statistics");
    assert_eq!(num(&stats, "received"), 16);
    assert_eq!(num(&stats, "completed"), 16);
    assert_eq!(stats["adds_up"], Value::Bool(true));

    let iv = intervals(&log);
    assert_eq!(iv.len(), 16);
    assert!(max_overlap(&iv) <= 2, "global cap exceeded: {iv:?}");
    assert_eq!(max_overlap(&iv), 2, "the cap should be reached: {iv:?}");
    for c in clusters {
        let mine: Vec<_> = iv.iter().filter(|x| x.0 == c).cloned().collect();
        assert_eq!(mine.len(), 4);
        assert_eq!(max_overlap(&mine), 1, "two agents at once on {c}: {mine:?}");
    }
}

fn pid_alive(pid: i32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| s.contains(") Z "))
            .unwrap_or(true)
}

/// An agent that ignores SIGTERM and leaves a grandchild, recording both pids.
const STUCK_AGENT: &str = "trap '' TERM; sleep 300 & echo \"$$ $!\" >> \"$E2E_LOG\"; wait";

async fn stuck_run(second_signal: bool) {
    e2e::runner_bin();
    let server = TestServer::start(Scenario::new(vec![
        Step::WaitForSubscriber {
            active: 1,
            timeout_ms: 120_000,
        },
        emit(event(1, "alpha")),
        emit(event(2, "beta")),
        emit(event(3, "alpha")),
    ]))
    .await
    .unwrap();
    let log_dir = tempfile::tempdir().unwrap();
    let log = log_dir.path().join("pids.log");
    let grace = if second_signal { 60 } else { 1 };
    let mut r = Runner::builder(&config(
        &server.url(),
        STUCK_AGENT,
        "max_concurrent_agents = 5",
        grace,
        log_dir.path(),
    ))
    .env("E2E_LOG", log.display().to_string())
    // Without a state store killed and queued events end `abandoned`; with
    // one they are kept for the next run (tests/state_restart.rs).
    .env("STATE_DIR", "off")
    .spawn();
    // Two clusters: two agents run, the second alpha event waits in its queue.
    let deadline = std::time::Instant::now() + T;
    while std::fs::read_to_string(&log)
        .unwrap_or_default()
        .lines()
        .count()
        < 2
    {
        assert!(
            std::time::Instant::now() < deadline,
            "agents did not start\n{}",
            r.dump()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let pids: Vec<i32> = std::fs::read_to_string(&log)
        .unwrap()
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect();
    assert_eq!(pids.len(), 4);
    assert!(pids.iter().all(|p| pid_alive(*p)));
    let started = std::time::Instant::now();
    r.sigterm();
    if second_signal {
        assert!(
            r.wait_for_text("shutdown requested", T).await.is_some(),
            "{}",
            r.dump()
        );
        r.sigterm();
    }
    let status = r.wait_exit(T).await.expect("runner exits");
    let took = started.elapsed();
    // Killed agents: exit code 3.
    assert_eq!(status.code(), Some(3), "{}", r.dump());
    if second_signal {
        assert!(
            took < Duration::from_secs(20),
            "second signal must not wait the 60 s grace: {took:?}"
        );
    }
    let stats = r.final_stats().expect("final statistics");
    assert_eq!(num(&stats, "received"), 3);
    assert_eq!(num(&stats, "abandoned"), 3, "2 killed + 1 queued: {stats}");
    assert_eq!(num(&stats, "killed"), 2);
    assert_eq!(stats["adds_up"], Value::Bool(true));
    // No orphan: agents and their grandchildren are gone.
    tokio::time::sleep(Duration::from_millis(200)).await;
    for p in pids {
        assert!(!pid_alive(p), "process {p} survived the shutdown");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stuck_agents_are_killed_after_the_grace_period_without_orphans() {
    stuck_run(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_signal_forces_immediate_exit() {
    stuck_run(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clean_drain_lets_running_agents_finish() {
    e2e::runner_bin();
    let server = TestServer::start(Scenario::new(vec![
        Step::WaitForSubscriber {
            active: 1,
            timeout_ms: 120_000,
        },
        emit(event(7, "alpha")),
    ]))
    .await
    .unwrap();
    let log_dir = tempfile::tempdir().unwrap();
    let log = log_dir.path().join("agents.log");
    let mut r = Runner::builder(&config(
        &server.url(),
        &recording_agent("1.5"),
        "",
        30,
        log_dir.path(),
    ))
    .env("E2E_LOG", log.display().to_string())
    .spawn();
    let deadline = std::time::Instant::now() + T;
    while !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("start")
    {
        assert!(
            std::time::Instant::now() < deadline,
            "agent did not start\n{}",
            r.dump()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    r.sigterm();
    let status = r.wait_exit(T).await.expect("runner exits");
    assert_eq!(status.code(), Some(0), "{}", r.dump());
    let stats = r.final_stats().expect("final statistics");
    assert_eq!(num(&stats, "completed"), 1, "{stats}");
    assert_eq!(num(&stats, "killed"), 0);
    assert_eq!(intervals(&log).len(), 1);
}
