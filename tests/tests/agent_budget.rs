//! The per-cluster daily budget, end to end: once a cluster's runs for the
//! day are used up, its incidents are not launched and end as
//! `over_budget`; other clusters still run, and the counters add up.

use std::time::Duration;

use e2e::{Runner, num};
use mcp_testserver::{Scenario, Step, TestServer, fault};
use serde_json::Value;

fn emit(i: u64, cluster: &str) -> Step {
    let mut f = fault(i);
    f["cluster"] = Value::String(cluster.into());
    f["severity"] = Value::String("critical".into());
    Step::Emit {
        data: f,
        repeat: 1,
        logger: "kubernetes/faults".into(),
        level: "warning".into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daily_run_budget_stops_launching_per_cluster() {
    e2e::runner_bin();
    let server = TestServer::start(Scenario::new(vec![
        Step::WaitForSubscriber {
            active: 1,
            timeout_ms: 60_000,
        },
        emit(1, "alpha"),
        emit(2, "alpha"),
        emit(3, "alpha"),
        emit(4, "beta"),
    ]))
    .await
    .unwrap();
    let agent = "mkdir -p output; printf '# Investigation\\n\\n## Root Cause\\n\\nA long enough investigation written by the budget test agent for %s.\\n' \"$RESOURCE_NAME\" > output/investigation.md; echo \"$CLUSTER\" >> \"$E2E_LOG\"";
    let log_dir = tempfile::tempdir().unwrap();
    let log = log_dir.path().join("runs.log");
    let config = format!(
        "[settings]\nlog_format = \"json\"\n[[source]]\nkind = \"mcp\"\nendpoint = \"{}\"\n\
         [sink]\nkind = \"agent\"\ncommand_line = {agent:?}\nworkspace_root = \"{{dir}}/incidents\"\n\
         env_allow = [\"E2E_LOG\"]\nsandbox_write_paths = [{:?}]\ndaily_runs_per_cluster = 2\ndaily_budget_usd_per_cluster = 5.0\n",
        server.url(),
        log_dir.path().display().to_string()
    );
    let mut r = Runner::builder(&config)
        .env("E2E_LOG", log.display().to_string())
        .spawn();
    assert!(
        r.wait_for_count("agent finished", 4, Duration::from_secs(60))
            .await,
        "{}",
        r.dump()
    );
    r.stop(Duration::from_secs(20)).await;
    let stats = r.final_stats().expect("final statistics");
    assert_eq!(num(&stats, "completed"), 3, "{stats}");
    assert_eq!(num(&stats, "over_budget"), 1, "{stats}");
    assert_eq!(stats["adds_up"], Value::Bool(true), "{stats}");
    // Only launched agents ran: two for alpha, one for beta.
    let runs = std::fs::read_to_string(&log).unwrap();
    assert_eq!(runs.lines().filter(|l| *l == "alpha").count(), 2, "{runs}");
    assert_eq!(runs.lines().filter(|l| *l == "beta").count(), 1, "{runs}");
    // The refused incident is on disk with its own status and reason.
    let docs: Vec<Value> = std::fs::read_dir(r.dir().join("incidents"))
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| {
            serde_json::from_slice(&std::fs::read(e.path().join("incident.json")).unwrap()).unwrap()
        })
        .collect();
    let over: Vec<&Value> = docs
        .iter()
        .filter(|d| d["status"] == "over_budget")
        .collect();
    assert_eq!(over.len(), 1, "{docs:?}");
    assert_eq!(over[0]["cluster"], "alpha");
    let reason = over[0]["failureReason"].as_str().unwrap();
    assert!(reason.contains("2 of 2 runs today"), "{reason}");
    assert_eq!(
        r.count("daily agent budget exhausted: no more agents for this cluster until 00:00 UTC"),
        1,
        "{}",
        r.dump()
    );
}
