//! `runner demo`: the whole product on this machine with nothing else
//! installed. Three simulated clusters (one test MCP server each, as in
//! production where every cluster runs its own server) emit a scripted fault
//! storm; the real MCP sources, stages, router and the harmless built-in
//! agent process it; a summary table is printed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use std::net::SocketAddr;

use runner_core::config::Overrides;
use runner_core::pipeline::{Pipeline, RunReport};
use serde_json::{Value, json};

use crate::app;
use crate::app::compile::{CompileOptions, compile};
use mcp_testserver::{Scenario, ServerOptions, Step, TestServer};

pub(crate) const CLUSTERS: [&str; 3] = ["prod-us-east-1", "prod-eu-west-1", "staging-us-west-2"];

/// The demo pipeline: the production shape with demo-friendly limits.
pub(crate) fn pipeline_toml(endpoints: &[String], workspace: &Path) -> String {
    let mut s = String::from("[settings]\nlog_level = \"warn\"\nshutdown_timeout_seconds = 10\n\n");
    for (i, ep) in endpoints.iter().enumerate() {
        s.push_str(&format!(
            "[[source]]\nkind = \"mcp\"\nname = \"sim-{}\"\nendpoint = \"{ep}\"\nmode = \"faults\"\nping_interval_seconds = 1\nsubscription_check_seconds = 1\nreconnect_initial_seconds = 1\nreconnect_max_seconds = 2\n\n",
            CLUSTERS[i]
        ));
    }
    s.push_str(&format!(
        "[[stage]]\nkind = \"severity\"\nthreshold = \"ERROR\"\n\n\
         [[stage]]\nkind = \"group\"\ngroup_wait_seconds = 1\ngroup_interval_seconds = 300\n\n\
         [router]\nmax_concurrent_agents = 2\nglobal_queue_size = 20\ncluster_queue_size = 5\noverflow_policy = \"drop\"\n\n\
         [sink]\nkind = \"agent\"\npreset = \"demo\"\ntimeout_seconds = 30\nworkspace_root = {:?}\n",
        workspace.display().to_string()
    ));
    s
}

/// One scripted fault: (faultType, severity, kind, namespace, name, context).
type Spec<'a> = (&'a str, &'a str, &'a str, &'a str, &'a str, &'a str);

fn fault(cluster: &str, n: u32, spec: Spec<'_>) -> Value {
    let (fault_type, severity, kind, ns, name, ctx) = spec;
    let mut resource = json!({
        "apiVersion": match kind { "Deployment" => "apps/v1", "Job" => "batch/v1", _ => "v1" },
        "kind": kind,
        "name": name,
        "uid": format!("{:08x}-0000-4000-8000-{:012x}", n, u64::from(n) * 7919),
    });
    if !ns.is_empty() {
        resource["namespace"] = json!(ns);
    }
    json!({
        "subscriptionId": "sub-00000000",
        "cluster": cluster,
        "faultId": format!("{:016x}", u64::from(n).wrapping_mul(0x9e37_79b9_7f4a_7c15)),
        "faultType": fault_type,
        "severity": severity,
        "resource": resource,
        "context": ctx,
        "timestamp": "2025-12-20T14:02:11Z",
    })
}

/// The scripted storm for one cluster: `(before_drop, after_drop)` payloads.
/// Includes repeats, a Deployment's crash-looping pods, mixed severities and (on the first cluster) a
/// malformed payload; the connection is dropped between the two halves.
pub(crate) fn storm(i: usize) -> (Vec<Value>, Vec<Value>) {
    let c = CLUSTERS[i];
    let base = (i as u32 + 1) * 100;
    let pod = format!("payments-api-{i}x2k4q");
    let node = format!("ip-10-42-7-{}.compute.internal", 10 + i);
    let crash = fault(
        c,
        base + 1,
        (
            "CrashLoop",
            "critical",
            "Pod",
            "payments",
            &pod,
            "Container entered CrashLoopBackOff state, restart count: 5, last exit code: 1, termination message: panic: dial tcp 10.96.14.7:5432: connect: connection refused",
        ),
    );
    let oom = fault(
        c,
        base + 2,
        (
            "PodCrash",
            "warning",
            "Pod",
            "search",
            "search-indexer-0",
            "Container crashed with exit code 137, reason: OOMKilled",
        ),
    );
    let node = fault(
        c,
        base + 3,
        (
            "NodeUnhealthy",
            "critical",
            "Node",
            "",
            &node,
            "Node became unhealthy: Ready=False, reason: KubeletNotReady",
        ),
    );
    let job = fault(
        c,
        base + 4,
        (
            "JobFailure",
            "critical",
            "Job",
            "batch",
            "nightly-report-29431200",
            "Job failed, reason: BackoffLimitExceeded, message: Job has reached the specified backoff limit",
        ),
    );
    let deploy = fault(
        c,
        base + 5,
        (
            "DeploymentFailure",
            "critical",
            "Deployment",
            "shop",
            "checkout",
            "Deployment rollout failed: ProgressDeadlineExceeded",
        ),
    );
    let info = fault(
        c,
        base + 6,
        (
            "PodCrash",
            "info",
            "Pod",
            "default",
            "batch-runner",
            "Container exited",
        ),
    );
    // A failed rollout: three pods of the Deployment crash-loop. With the
    // rollout failure below they are one incident of the `group` stage.
    let pods: Vec<Value> = ["x2x8k", "bq9zd", "k4m7w"]
        .iter()
        .enumerate()
        .map(|(k, sfx)| {
            let name = format!("checkout-7d4b9c8f5-{sfx}");
            fault(
                c,
                base + 10 + k as u32,
                (
                    "CrashLoop",
                    "critical",
                    "Pod",
                    "shop",
                    &name,
                    "Container entered CrashLoopBackOff state, restart count: 3, last exit code: 1, termination message: missing env CHECKOUT_DB_URL",
                ),
            )
        })
        .collect();
    let mut first = vec![crash.clone(), oom, crash.clone(), node, info];
    first.extend(pods);
    if i == 0 {
        // Wrong type for severity: counted as invalid, never crashes anything.
        first.push(json!({"cluster": c, "severity": 5, "resource": "not-an-object"}));
    }
    // After the reconnect: a re-emission of the crash loop (a repeat: it
    // attaches to its incident), and new faults; the rollout failure joins
    // its pods' incident.
    let second = vec![crash, job, deploy];
    (first, second)
}

/// Summary row per cluster, read back from the incident workspaces.
#[derive(Debug, Default, Clone)]
pub(crate) struct ClusterRow {
    pub incidents: usize,
    /// Events folded into those incidents (the group stage's counts).
    pub events: u64,
    pub by_status: BTreeMap<String, usize>,
    /// The incident with the most events: (workload, events).
    pub largest: Option<(String, u64)>,
}

pub(crate) fn scan_incidents(root: &Path) -> BTreeMap<String, ClusterRow> {
    let mut rows: BTreeMap<String, ClusterRow> = BTreeMap::new();
    let Ok(dir) = std::fs::read_dir(root) else {
        return rows;
    };
    for entry in dir.flatten() {
        let Ok(text) = std::fs::read_to_string(entry.path().join("incident.json")) else {
            continue;
        };
        let Ok(v) = serde_json::from_str::<Value>(&text) else {
            continue;
        };
        let cluster = v["cluster"].as_str().unwrap_or("?").to_string();
        let status = v["status"].as_str().unwrap_or("?").to_string();
        let row = rows.entry(cluster).or_default();
        row.incidents += 1;
        let events = v["group"]["events"].as_u64().unwrap_or(1);
        row.events += events;
        if events > row.largest.as_ref().map_or(1, |l| l.1) {
            let w = &v["group"]["workload"];
            let name = format!(
                "{} {}",
                w["kind"].as_str().unwrap_or("?"),
                w["name"].as_str().unwrap_or("?")
            );
            row.largest = Some((name, events));
        }
        *row.by_status.entry(status).or_default() += 1;
    }
    rows
}

pub(crate) fn summary_table(report: &RunReport, root: &Path) -> String {
    let mut out = String::new();
    let rows = scan_incidents(root);
    out.push_str("\nEvent Runner demo: summary\n\n");
    out.push_str(&format!(
        "{:<20} {:>9} {:>6}  {:<14} {}\n",
        "cluster", "incidents", "events", "status", "largest incident"
    ));
    out.push_str(&format!(
        "{:-<20} {:->9} {:->6}  {:-<14} {:-<30}\n",
        "", "", "", "", ""
    ));
    for (cluster, row) in &rows {
        let st: Vec<String> = row
            .by_status
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let largest = row
            .largest
            .as_ref()
            .map(|(w, n)| format!("{w} ({n} events)"))
            .unwrap_or_else(|| "-".into());
        out.push_str(&format!(
            "{:<20} {:>9} {:>6}  {:<14} {}\n",
            cluster,
            row.incidents,
            row.events,
            st.join(" "),
            largest
        ));
    }
    out.push_str(
        "\nevents: faults grouped into the incidents (group stage: same cluster, namespace\nand owning workload; repeats and sibling pods are `merged` into one investigation)\n",
    );
    let s = &report.stats;
    out.push_str("\noutcomes\n");
    for (name, v) in s.fields() {
        out.push_str(&format!("  {name:<15} {v}\n"));
    }
    out.push_str(&format!(
        "  {:<15} {}\n",
        "adds up",
        if s.adds_up() {
            "yes (received = sum of outcomes)"
        } else {
            "NO"
        }
    ));
    out.push_str(&format!(
        "\nreports: {}/<incident-id>/report.md (and report.html)\n",
        root.display()
    ));
    out
}

pub(crate) async fn run(dir: Option<PathBuf>, ov: &Overrides) -> ExitCode {
    // `--log-level` or LOG_LEVEL (the flag wins); quiet by default, the
    // summary table is the demo's output.
    let level = ov
        .get(crate::settings::LOG_LEVEL.env)
        .map_or("warn", |(v, _)| v);
    app::init_logging(level, "text", ov.environment());
    let root = match dir {
        Some(d) => d,
        // std::env::temp_dir reads TMPDIR itself: the same rule, from the
        // injected environment.
        None => PathBuf::from(
            ov.environment()
                .get("TMPDIR")
                .filter(|t| !t.is_empty())
                .unwrap_or("/tmp"),
        )
        .join(format!("event-runner-demo-{}", std::process::id())),
    };
    if let Err(e) = std::fs::create_dir_all(&root) {
        eprintln!("error: cannot create {}: {e}", root.display());
        return ExitCode::from(app::EXIT_FATAL);
    }
    match run_inner(&root, ov).await {
        Ok(report) => {
            app::print_stdout(&summary_table(&report, &root));
            app::log_final(&report);
            if report.fatal.is_some() || !report.stats.adds_up() {
                ExitCode::from(app::EXIT_FATAL)
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(e) => {
            eprintln!("error: demo failed: {e}");
            ExitCode::from(app::EXIT_FATAL)
        }
    }
}

async fn run_inner(root: &Path, ov: &Overrides) -> Result<RunReport, String> {
    let mut servers = Vec::new();
    for (i, cluster) in CLUSTERS.iter().enumerate() {
        let (first, second) = storm(i);
        let emit = |data: Value| Step::Emit {
            data,
            repeat: 1,
            logger: "kubernetes/faults".into(),
            level: "warning".into(),
        };
        let mut steps = vec![Step::WaitForSubscriber {
            active: 1,
            timeout_ms: 30_000,
        }];
        steps.extend(first.into_iter().map(emit));
        steps.push(Step::Sleep { ms: 500 });
        if i == 1 {
            // The dropped connection: the GET stream is cut and the server
            // silently cancels the subscription (docs/mcp-events-protocol.md,
            // "Delivery"). The source's
            // liveness check notices and opens a fresh session.
            steps.push(Step::KillStreams {});
            steps.push(Step::WaitForSubscriber {
                active: 1,
                timeout_ms: 30_000,
            });
        }
        steps.extend(second.into_iter().map(emit));
        let opts = ServerOptions {
            cluster: cluster.to_string(),
            ..ServerOptions::default()
        };
        let server = TestServer::start_with(
            SocketAddr::from(([127, 0, 0, 1], 0)),
            opts,
            Scenario::new(steps),
        )
        .await
        .map_err(|e| format!("cannot start the simulated server: {e}"))?;
        servers.push(server);
    }
    let endpoints: Vec<String> = servers.iter().map(TestServer::url).collect();
    let text = pipeline_toml(&endpoints, root);
    // The demo's sources are its own simulated servers: settings that would
    // point them elsewhere do not apply; everything else (agent command,
    // limits, threshold) can still be tried from the command line.
    let mut ov = ov.clone();
    for s in crate::sources::mcp::McpSourceConfig::settings() {
        ov.remove(s.env);
    }
    let opts = CompileOptions {
        base_dir: root.to_path_buf(),
        skip_sources: false,
    };
    let compiled = compile(&text, &ov, &opts).map_err(|e| e.to_string())?;
    let (_settings, parts) = compiled.into_parts();
    let (handle, join) = Pipeline::new(parts).start();
    println!(
        "demo: 3 simulated clusters on {} ; incidents in {}",
        endpoints.join(", "),
        root.display()
    );
    let all_emitted = async {
        for s in &servers {
            s.scenario_finished().await;
        }
    };
    if tokio::time::timeout(Duration::from_secs(60), all_emitted)
        .await
        .is_err()
    {
        eprintln!("warning: the simulated clusters did not finish their scripts within 60 s");
    }
    // Let the last notifications arrive, then wait for every event to end.
    tokio::time::sleep(Duration::from_millis(300)).await;
    if tokio::time::timeout(Duration::from_secs(60), handle.wait_drained())
        .await
        .is_err()
    {
        eprintln!("warning: events still in flight after 60 s; shutting down");
    }
    handle.shutdown();
    let report = join
        .await
        .map_err(|e| format!("pipeline task failed: {e}"))?;
    for s in servers {
        s.shutdown().await;
    }
    Ok(report)
}
