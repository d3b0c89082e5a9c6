//! The agent sink behind the real router: fake agents record their start
//! and end times, proving the global cap and one-agent-per-cluster hold end
//! to end with real subprocesses; shutdown kills running agents' groups.

mod agent_support;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use agent_support::*;
use runner_core::router::{OverflowPolicy, Router, RouterLimits};
use runner_core::{CancellationToken, Outcome, Recorder, Sink};
use runner_plugins::sinks::agent::AgentSink;

fn limits(max: usize) -> RouterLimits {
    RouterLimits {
        max_concurrent: max,
        global_queue: 100,
        cluster_queue: 10,
        policy: OverflowPolicy::Reject,
        idle_reap: Duration::from_secs(60),
    }
}

fn nanos(p: &Path) -> u128 {
    std::fs::read_to_string(p).unwrap().trim().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cap_and_one_per_cluster_hold_with_real_agents() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    let script = fake_agent(
        tmp.path(),
        "timed.sh",
        &format!("date +%s%N > start\nsleep 0.3\n{GOOD}\ndate +%s%N > end"),
    );
    let sink: Arc<dyn Sink> = Arc::new(AgentSink::new(config(&root, &script)));
    let recorder = Arc::new(Recorder::new(Arc::from(Vec::new())));
    let router = Router::new(limits(2), sink.clone(), recorder.clone());
    let clusters = ["c-a", "c-b", "c-c"];
    for i in 0..9u64 {
        let c = clusters[i as usize % 3];
        recorder.received();
        router.admit(envelope_of(payload(c, "ns", "Pod", &format!("p{i}")), i));
    }
    tokio::time::timeout(Duration::from_secs(60), router.wait_idle())
        .await
        .expect("drained");
    sink.close().await;
    let stats = recorder.snapshot();
    assert_eq!(stats.get(Outcome::Completed), 9, "{stats:?}");
    assert!(stats.adds_up());

    let mut runs: Vec<(String, u128, u128)> = std::fs::read_dir(&root)
        .unwrap()
        .filter(|e| {
            !e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with('.')
        })
        .map(|e| {
            let d = e.unwrap().path();
            let cluster = incident_json(&d)["cluster"].as_str().unwrap().to_string();
            (cluster, nanos(&d.join("start")), nanos(&d.join("end")))
        })
        .collect();
    assert_eq!(runs.len(), 9);
    runs.sort_by_key(|r| r.1);
    let mut max_overlap = 0;
    for (i, a) in runs.iter().enumerate() {
        // Agents running at the instant `a` started (the maximum of
        // concurrency is reached at some start).
        let overlapping = runs.iter().filter(|b| b.1 <= a.1 && a.1 < b.2).count();
        max_overlap = max_overlap.max(overlapping);
        for b in &runs[i + 1..] {
            if a.0 == b.0 {
                assert!(a.2 <= b.1, "two agents of {} overlapped", a.0);
            }
        }
    }
    assert!(
        max_overlap <= 2,
        "cap exceeded: {max_overlap} agents at once"
    );
    assert_eq!(max_overlap, 2, "the cap was never reached: no parallelism");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_kills_running_agents_and_records_abandoned() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    let script = fake_agent(
        tmp.path(),
        "long.sh",
        "sleep 300 &\necho $! > child.pid\necho $$ > leader.pid\nwait",
    );
    let sink: Arc<dyn Sink> = Arc::new(AgentSink::new(config(&root, &script)));
    let recorder = Arc::new(Recorder::new(Arc::from(Vec::new())));
    let router = Router::new(limits(2), sink.clone(), recorder.clone());
    for i in 0..4u64 {
        recorder.received();
        router.admit(envelope_of(payload(&format!("c{i}"), "ns", "Pod", "p"), i));
    }
    // Two agents running (the cap), two queued.
    let mut pidfiles = Vec::new();
    for _ in 0..400 {
        pidfiles = std::fs::read_dir(&root)
            .map(|d| {
                d.map(|e| e.unwrap().path().join("child.pid"))
                    .filter(|p| p.exists() && std::fs::metadata(p).unwrap().len() > 0)
                    .collect()
            })
            .unwrap_or_default();
        if pidfiles.len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(pidfiles.len(), 2);
    let report = router
        .shutdown(Duration::from_millis(200), CancellationToken::new())
        .await;
    sink.close().await;
    assert_eq!(report.abandoned_queued, 2);
    assert_eq!(report.killed, 2);
    let stats = recorder.snapshot();
    assert_eq!(stats.get(Outcome::Abandoned), 4, "{stats:?}");
    assert!(stats.adds_up());
    for p in &pidfiles {
        let child = read_pid(p);
        let leader = read_pid(&p.with_file_name("leader.pid"));
        assert!(
            pid_dead(child) && pid_dead(leader),
            "{child}/{leader} survived"
        );
        assert_eq!(incident_json(p.parent().unwrap())["status"], "abandoned");
    }
}
