//! End to end: the `group` stage in the real `runner` binary, fed by the
//! test MCP server on loopback, with real agent subprocesses (sh scripts).
//! A storm of 200 faults from the pods of one Deployment becomes one
//! incident (one agent) with every event in its `events.jsonl`; unrelated
//! faults keep their own incidents; the caps hold; the outcomes add up.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use e2e::{Runner, num};
use mcp_testserver::{Scenario, Step, TestServer};
use serde_json::{Value, json};

const T: Duration = Duration::from_secs(60);
const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// A distinct 5-character pod suffix, as Kubernetes generates them.
fn suffix(mut i: usize) -> String {
    let mut s = String::new();
    for _ in 0..5 {
        s.push(ALPHABET[i % ALPHABET.len()] as char);
        i /= ALPHABET.len();
    }
    s
}

fn fault(cluster: &str, ns: &str, pod: &str, n: usize) -> Step {
    Step::Emit {
        data: json!({
            "cluster": cluster,
            "faultId": format!("fault-{n}"),
            "faultType": "CrashLoop",
            "severity": "critical",
            "resource": {"apiVersion": "v1", "kind": "Pod", "name": pod, "namespace": ns},
            "context": format!("Back-off restarting failed container in {pod}"),
        }),
        repeat: 1,
        logger: "kubernetes/faults".into(),
        level: "warning".into(),
    }
}

fn config(url: &str, agent: &str, log_dir: &Path) -> String {
    let log_dir = log_dir.canonicalize().unwrap().display().to_string();
    format!(
        r#"[settings]
log_level = "info"
log_format = "json"
shutdown_timeout_seconds = 10

[[source]]
kind = "mcp"
endpoint = "{url}"

[[stage]]
kind = "severity"
threshold = "ERROR"

[[stage]]
kind = "group"
group_wait_seconds = 1
group_interval_seconds = 300

[router]
max_concurrent_agents = 2
cluster_queue_size = 30
global_queue_size = 100

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

/// Logs start and end per cluster to `$E2E_LOG`. The Deployment's agent
/// waits (up to 30 s) until its `events.jsonl` holds all 200 events and
/// records how many lines it saw: events attached while it runs must reach
/// it. Other agents work 0.2 s.
const AGENT: &str = r#"echo "start $CLUSTER $(date +%s%N)" >> "$E2E_LOG"
case "$RESOURCE_NAME" in
  web-*) i=0; n=0
         while [ $i -lt 300 ]; do n=$(wc -l < events.jsonl); [ "$n" -ge 200 ] && break; sleep 0.1; i=$((i+1)); done
         echo "$n" > output/seen-lines ;;
  *) sleep 0.2 ;;
esac
printf '# Investigation\n\n## Root Cause\n\nThe grouped fault of %s was investigated by the e2e agent with enough words to pass.\n' "$RESOURCE_NAME" > output/investigation.md
echo "end $CLUSTER $(date +%s%N)" >> "$E2E_LOG""#;

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
    points.sort();
    let (mut cur, mut max) = (0i32, 0i32);
    for (_, d) in points {
        cur += d;
        max = max.max(cur);
    }
    max as usize
}

fn incidents(root: &Path) -> Vec<(PathBuf, Value)> {
    let mut v: Vec<(PathBuf, Value)> = std::fs::read_dir(root)
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.join("incident.json").is_file())
        .map(|p| {
            let doc =
                serde_json::from_str(&std::fs::read_to_string(p.join("incident.json")).unwrap())
                    .unwrap();
            (p, doc)
        })
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

fn lines(p: &Path) -> Vec<Value> {
    std::fs::read_to_string(p.join("events.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad line {l:?}: {e}")))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deployment_storm_is_one_incident_with_every_event() {
    e2e::runner_bin();
    let clusters = ["alpha", "beta", "gamma", "delta"];
    let mut steps = vec![Step::WaitForSubscriber {
        active: 1,
        timeout_ms: 120_000,
    }];
    let mut n = 0;
    let web = |steps: &mut Vec<Step>, i: usize, n: &mut usize| {
        steps.push(fault(
            "alpha",
            "shop",
            &format!("web-7d4b9c8f5-{}", suffix(i)),
            *n,
        ));
        *n += 1;
    };
    // The first half of the storm with the 20 unrelated faults in between
    // (some in the Deployment's own cluster and namespace), then, once the
    // Deployment's agent runs, the second half.
    for i in 0..100 {
        web(&mut steps, i, &mut n);
        if i % 5 == 4 {
            let u = i / 5;
            steps.push(fault(clusters[u % 4], "shop", &format!("db{u}-0"), n));
            n += 1;
        }
    }
    steps.push(Step::Sleep { ms: 2000 });
    for i in 100..200 {
        web(&mut steps, i, &mut n);
    }
    assert_eq!(n, 220);
    let server = TestServer::start(Scenario::new(steps)).await.unwrap();
    let log_dir = tempfile::tempdir().unwrap();
    let log = log_dir.path().join("agents.log");
    let mut r = Runner::builder(&config(&server.url(), AGENT, log_dir.path()))
        .env("E2E_LOG", log.display().to_string())
        .spawn();
    assert!(
        r.wait_for_count("event completed", 21, T).await,
        "21 incidents should complete\n{}",
        r.dump()
    );
    // The Deployment's agent ended only after all 200 of its events were in
    // its file, and the unrelated faults came before: all 220 have arrived.
    let status = r.stop(T).await;
    assert_eq!(status.code(), Some(0), "{}", r.dump());

    let stats = r.final_stats().expect("final statistics");
    assert_eq!(num(&stats, "received"), 220, "{stats}");
    assert_eq!(num(&stats, "merged"), 199, "{stats}");
    assert_eq!(num(&stats, "completed"), 21, "{stats}");
    assert_eq!(stats["adds_up"], Value::Bool(true), "{stats}");

    // One incident for the Deployment, holding all 200 events.
    let root = r.dir().join("incidents");
    let all = incidents(&root);
    assert_eq!(all.len(), 21, "{all:?}");
    let (web_dir, web_doc): (Vec<PathBuf>, Vec<Value>) = all
        .iter()
        .filter(|(_, d)| {
            d["group"]["workload"]
                == json!({"kind": "Deployment", "name": "web", "derivedFrom": "name"})
        })
        .cloned()
        .unzip();
    assert_eq!(
        web_dir.len(),
        1,
        "one incident for the Deployment: {web_doc:?}"
    );
    let (dir, doc) = (&web_dir[0], &web_doc[0]);
    assert_eq!(doc["status"], "completed", "{doc}");
    let g = &doc["group"];
    assert_eq!(g["events"], 200, "{g}");
    assert_eq!(g["attached"], 199, "{g}");
    assert_eq!(g["recurrences"], 0, "{g}");
    assert_eq!(g["eventsWritten"], 200, "{g}");
    assert_eq!(g["eventsNotWritten"], 0, "{g}");
    let ev = lines(dir);
    assert_eq!(ev.len(), 200);
    assert_eq!(ev[0]["joined"], "first");
    assert!(ev[1..].iter().all(|l| l["joined"] == "attached"));
    let names: HashSet<&str> = ev
        .iter()
        .map(|l| l["event"]["resource"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names.len(), 200, "every pod's fault is there once");
    // The agent saw the second half arrive while it ran.
    let seen = std::fs::read_to_string(dir.join("output/seen-lines")).unwrap();
    assert_eq!(
        seen.trim(),
        "200",
        "events attached while the agent ran reach events.jsonl"
    );
    // The prompt lists the first events and points at the file; the report
    // says how many were attached.
    let prompt = std::fs::read_to_string(dir.join("prompt.md")).unwrap();
    assert!(prompt.contains("## Events of this incident"), "{prompt}");
    assert!(prompt.contains("Deployment web"), "{prompt}");
    assert!(prompt.contains("events.jsonl"), "{prompt}");
    let report = std::fs::read_to_string(dir.join("report.md")).unwrap();
    assert!(report.contains("groups **200** event(s)"), "{report}");
    assert!(report.contains("**199** attached"), "{report}");

    // The 20 unrelated faults: one incident each, with only their event.
    for (dir, doc) in all.iter().filter(|(d, _)| d != &web_dir[0]) {
        assert_eq!(doc["group"]["events"], 1, "{doc}");
        assert_eq!(doc["group"]["workload"]["kind"], "StatefulSet", "{doc}");
        assert_eq!(lines(dir).len(), 1);
        assert_eq!(doc["status"], "completed", "{doc}");
    }

    // Caps and one agent per cluster.
    let iv = intervals(&log);
    assert_eq!(iv.len(), 21, "one agent per incident: {iv:?}");
    assert!(max_overlap(&iv) <= 2, "global cap exceeded: {iv:?}");
    for c in clusters {
        let mine: Vec<_> = iv.iter().filter(|x| x.0 == c).cloned().collect();
        assert_eq!(max_overlap(&mine), 1, "two agents at once on {c}: {mine:?}");
    }
}

/// Completes at once with an investigation naming the resource.
const QUICK_AGENT: &str = r#"echo "start $CLUSTER $(date +%s%N)" >> "$E2E_LOG"
printf '# Investigation\n\n## Root Cause\n\nFinding-of-%s: the e2e agent investigated this fault with enough words to pass.\n' "$INCIDENT_ID" > output/investigation.md
echo "end $CLUSTER $(date +%s%N)" >> "$E2E_LOG""#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeats_after_the_end_are_recurrences_then_a_new_incident_learns_from_the_last() {
    e2e::runner_bin();
    let pod = |i: usize| format!("api-5f6c7d8b9c-{}", suffix(i));
    // group_interval 5 s: the repeat at 3 s is a recurrence of the first
    // incident (ended well before), the one at 9 s opens a new incident.
    let steps = vec![
        Step::WaitForSubscriber {
            active: 1,
            timeout_ms: 120_000,
        },
        fault("alpha", "shop", &pod(0), 0),
        Step::Sleep { ms: 3000 },
        fault("alpha", "shop", &pod(1), 1),
        Step::Sleep { ms: 6000 },
        fault("alpha", "shop", &pod(2), 2),
    ];
    let server = TestServer::start(Scenario::new(steps)).await.unwrap();
    let log_dir = tempfile::tempdir().unwrap();
    let log = log_dir.path().join("agents.log");
    let cfg = config(&server.url(), QUICK_AGENT, log_dir.path())
        .replace("group_wait_seconds = 1", "group_wait_seconds = 0")
        .replace("group_interval_seconds = 300", "group_interval_seconds = 5");
    let mut r = Runner::builder(&cfg)
        .env("E2E_LOG", log.display().to_string())
        .spawn();
    assert!(
        r.wait_for_count("event completed", 2, T).await,
        "{}",
        r.dump()
    );
    let status = r.stop(T).await;
    assert_eq!(status.code(), Some(0), "{}", r.dump());
    let stats = r.final_stats().expect("final statistics");
    assert_eq!(num(&stats, "received"), 3, "{stats}");
    assert_eq!(num(&stats, "completed"), 2, "{stats}");
    assert_eq!(num(&stats, "merged"), 1, "{stats}");
    assert_eq!(stats["adds_up"], Value::Bool(true), "{stats}");

    let all = incidents(&r.dir().join("incidents"));
    assert_eq!(all.len(), 2, "{all:?}");
    let (first_dir, first) = &all[0];
    let (second_dir, second) = &all[1];
    // The repeat within the interval is on the first incident, as a
    // recurrence, in its file, incident.json and report.
    let g = &first["group"];
    assert_eq!(
        (
            g["events"].as_u64(),
            g["attached"].as_u64(),
            g["recurrences"].as_u64()
        ),
        (Some(2), Some(0), Some(1)),
        "{g}"
    );
    let ev = lines(first_dir);
    assert_eq!(ev.len(), 2);
    assert_eq!(ev[1]["joined"], "recurrence");
    assert_eq!(ev[1]["event"]["resource"]["name"], pod(1));
    let report = std::fs::read_to_string(first_dir.join("report.md")).unwrap();
    assert!(report.contains("**1** recurrence(s)"), "{report}");
    // The new incident was told what the first one found.
    let first_id = first["id"].as_str().unwrap();
    assert_eq!(second["group"]["previousIncident"], first_id, "{second}");
    assert_eq!(second["group"]["events"], 1);
    let prompt = std::fs::read_to_string(second_dir.join("prompt.md")).unwrap();
    assert!(prompt.contains("## What we found last time"), "{prompt}");
    assert!(
        prompt.contains(&format!("Finding-of-{first_id}")),
        "{prompt}"
    );
    let first_prompt = std::fs::read_to_string(first_dir.join("prompt.md")).unwrap();
    assert!(
        !first_prompt.contains("What we found last time"),
        "{first_prompt}"
    );
}
