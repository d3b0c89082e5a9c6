//! End to end: the real `runner` binary with an `alertmanager` source, the
//! real Prometheus Alertmanager on loopback routing to it, and real agent
//! subprocesses (small sh scripts). Alertmanager is the Debian package
//! `prometheus-alertmanager` (`.ci/run` installs it); without it these tests
//! fail, they do not skip.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime};

use e2e::{Runner, num};
use runner_core::date::rfc3339_millis as rfc3339;
use serde_json::{Value, json};

const T: Duration = Duration::from_secs(30);
const TOKEN: &str = "e2e-am-token-5f1c";

/// Polls `f` until it returns `Some` or the deadline passes.
async fn until<R>(timeout: Duration, mut f: impl FnMut() -> Option<R>) -> Option<R> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if let Some(r) = f() {
            return Some(r);
        }
        if std::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn alertmanager_bin() -> PathBuf {
    for name in ["prometheus-alertmanager", "alertmanager"] {
        for dir in std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()) {
            let p = dir.join(name);
            if p.is_file() {
                return p;
            }
        }
    }
    panic!("Prometheus Alertmanager not found in PATH: apt-get install -y prometheus-alertmanager");
}

/// A real Alertmanager on loopback; killed on drop.
struct Alertmanager {
    child: Child,
    url: String,
    http: reqwest::Client,
    _dir: tempfile::TempDir,
}

impl Alertmanager {
    /// Routes every alert to `webhook` with bearer `token_file`, grouped by
    /// alertname, with short waits so tests see notifications in seconds.
    async fn start(webhook: &str, token_file: &Path) -> Alertmanager {
        let dir = tempfile::tempdir().unwrap();
        let config = format!(
            r#"route:
  receiver: runner
  group_by: ['alertname']
  group_wait: 1s
  group_interval: 1s
  repeat_interval: 1h
receivers:
  - name: runner
    webhook_configs:
      - url: '{webhook}'
        send_resolved: true
        http_config:
          authorization:
            type: Bearer
            credentials_file: '{}'
"#,
            token_file.display()
        );
        let cfg = dir.path().join("alertmanager.yml");
        std::fs::write(&cfg, config).unwrap();
        let port = e2e::free_port();
        let log = std::fs::File::create(dir.path().join("alertmanager.log")).unwrap();
        let child = Command::new(alertmanager_bin())
            .arg(format!("--config.file={}", cfg.display()))
            .arg(format!(
                "--storage.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            // No HA gossip: a single instance that listens on nothing else.
            .arg("--cluster.listen-address=")
            .arg("--log.level=debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn alertmanager");
        let am = Alertmanager {
            child,
            url: format!("http://127.0.0.1:{port}"),
            http: reqwest::Client::new(),
            _dir: dir,
        };
        let deadline = std::time::Instant::now() + T;
        loop {
            let ready = am
                .http
                .get(format!("{}/-/ready", am.url))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if ready {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "alertmanager not ready: {}",
                am.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        am
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("alertmanager.log")).unwrap_or_default()
    }

    /// Posts alerts to Alertmanager's API, as Prometheus does.
    async fn post(&self, alerts: &[Value]) {
        let r = self
            .http
            .post(format!("{}/api/v2/alerts", self.url))
            .json(&alerts)
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{}", r.text().await.unwrap());
    }
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn at(offset_secs: i64) -> String {
    let now = SystemTime::now();
    let t = if offset_secs >= 0 {
        now + Duration::from_secs(offset_secs as u64)
    } else {
        now - Duration::from_secs(offset_secs.unsigned_abs())
    };
    rfc3339(t)
}

fn alert(name: &str, labels: &[(&str, &str)], starts_at: &str, ends_at: Option<&str>) -> Value {
    let mut l = serde_json::Map::new();
    l.insert("alertname".into(), json!(name));
    for (k, v) in labels {
        l.insert((*k).into(), json!(v));
    }
    let mut a = json!({
        "labels": l,
        "annotations": {"summary": format!("{name} on {labels:?}"), "runbook_url": "https://runbooks.example/x"},
        "startsAt": starts_at,
        "generatorURL": "http://prometheus.example/graph",
    });
    if let Some(e) = ends_at {
        a["endsAt"] = json!(e);
    }
    a
}

/// An agent that logs `start <resource name>` / `end <resource name>` to
/// `$E2E_LOG`, works for `secs` and writes an investigation.
fn agent(secs: &str) -> String {
    format!(
        "echo \"start $RESOURCE_NAME $CLUSTER $(date +%s%N)\" >> \"$E2E_LOG\"; sleep {secs}; mkdir -p output; \
         printf '# Investigation\\n\\n## Root Cause\\n\\nThe alert on %s was investigated by the e2e agent with enough words to pass.\\n' \"$RESOURCE_NAME\" > output/investigation.md; \
         echo \"end $RESOURCE_NAME $CLUSTER $(date +%s%N)\" >> \"$E2E_LOG\""
    )
}

struct Setup {
    dir: tempfile::TempDir,
}

impl Setup {
    fn new() -> Setup {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("token"), format!("{TOKEN}\n")).unwrap();
        Setup { dir }
    }
    fn token_file(&self) -> PathBuf {
        self.dir.path().join("token")
    }
    fn agent_log(&self) -> PathBuf {
        self.dir.path().join("agents.log")
    }
    fn agent_lines(&self) -> Vec<String> {
        std::fs::read_to_string(self.agent_log())
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }
    /// A runner config with one alertmanager source on an ephemeral port.
    fn config(&self, settings: &str, source: &str, router: &str, agent_cmd: &str) -> String {
        format!(
            r#"[settings]
log_format = "json"
shutdown_timeout_seconds = 20
{settings}

[[source]]
kind = "alertmanager"
name = "am"
listen = "127.0.0.1:0"
token_file = {token:?}
{source}

[[stage]]
kind = "severity"
threshold = "WARNING"

[[stage]]
kind = "dedup"
key = ["cluster", "fault_id"]
# Small enough that the flood reaches the bound (memory stays flat).
max_keys = 2000

[router]
{router}

[sink]
kind = "agent"
command_line = {agent_cmd:?}
workspace_root = "{{dir}}/incidents"
timeout_seconds = 60
env_allow = ["E2E_LOG"]
# The agents' log lives outside their workspace: the sandbox must grant it.
sandbox_write_paths = [{logdir:?}]
"#,
            token = self.token_file().display().to_string(),
            logdir = self.dir.path().display().to_string(),
        )
    }
    fn spawn(&self, config: &str) -> Runner {
        Runner::builder(config)
            .env("E2E_LOG", self.agent_log().display().to_string())
            .spawn()
    }
}

/// The webhook URL the runner logged once it listens.
async fn webhook_of(r: &Runner) -> String {
    let rec = r
        .wait_for_message("alertmanager webhook listening", T)
        .await
        .unwrap_or_else(|| panic!("runner never listened:\n{}", r.dump()));
    let addr = rec["address"].as_str().expect("address field");
    format!("http://{addr}/webhook")
}

fn audit(r: &Runner, outcome: &str) -> Vec<Value> {
    r.messages(&format!("event {outcome}"))
}

#[tokio::test]
async fn grouped_alerts_become_incidents_and_a_resolve_cancels_the_queued_one() {
    let s = Setup::new();
    let config = s.config(
        "log_level = \"debug\"",
        "cluster = \"prod-eu\"",
        "max_concurrent_agents = 1",
        &agent("4"),
    );
    let mut r = s.spawn(&config);
    let url = webhook_of(&r).await;
    let am = Alertmanager::start(&url, &s.token_file()).await;

    let starts = at(-60);
    let crash = |pod: &str| {
        alert(
            "KubePodCrashLooping",
            &[
                ("namespace", "shop"),
                ("pod", pod),
                ("severity", "critical"),
            ],
            &starts,
            None,
        )
    };
    am.post(&[
        crash("cart-0"),
        crash("cart-1"),
        crash("cart-2"),
        alert(
            "CPUThrottlingHigh",
            &[
                ("namespace", "shop"),
                ("pod", "cart-0"),
                ("severity", "info"),
            ],
            &starts,
            None,
        ),
    ])
    .await;

    // Alertmanager groups by alertname: the three crash loops arrive in one
    // request, or, on a loaded machine where its group_wait ends between two
    // of them, in several requests of that group (the follow-up carries the
    // whole group again, so the sum can exceed 3; dedup absorbs the repeats).
    let grouped = until(T, || {
        let accepted: u64 = r
            .messages("alertmanager notification received")
            .iter()
            .filter(|f| {
                f["group"]
                    .as_str()
                    .is_some_and(|g| g.contains("KubePodCrashLooping"))
            })
            .filter_map(|f| f["accepted"].as_u64())
            .sum();
        (accepted >= 3).then_some(accepted)
    })
    .await;
    assert!(
        grouped.is_some(),
        "the crash loops never arrived:\n{}",
        r.dump()
    );
    let first = until(T, || {
        s.agent_lines()
            .first()
            .map(|l| l.split_whitespace().nth(1).unwrap().to_string())
    })
    .await
    .expect("no agent started");
    // One agent per cluster: the other two wait. Resolve one of them.
    let victim = ["cart-0", "cart-1", "cart-2"]
        .into_iter()
        .find(|p| *p != first)
        .unwrap();
    am.post(&[alert(
        "KubePodCrashLooping",
        &[
            ("namespace", "shop"),
            ("pod", victim),
            ("severity", "critical"),
        ],
        &starts,
        Some(&at(-1)),
    )])
    .await;
    let cancelled = r
        .wait_for(T, |f| f["message"] == "event cancelled")
        .await
        .unwrap_or_else(|| panic!("no cancellation:\n{}\n{}", r.dump(), am.log()));
    assert_eq!(cancelled["resource"], format!("Pod/{victim}"));
    assert!(
        cancelled["reason"]
            .as_str()
            .unwrap()
            .starts_with("alert resolved at "),
        "{cancelled}"
    );
    assert!(
        r.wait_for_count("event completed", 2, Duration::from_secs(40))
            .await,
        "{}",
        r.dump()
    );
    let status = r.stop(T).await;
    assert!(status.success(), "{status:?}\n{}", r.dump());
    let st = r.final_stats().expect("final statistics");
    assert_eq!(num(&st, "completed"), 2, "{st}");
    assert_eq!(num(&st, "cancelled"), 1, "{st}");
    assert_eq!(num(&st, "filtered"), 1, "{st}");
    // The resolve notification re-sent the two still firing: duplicates.
    assert!(num(&st, "duplicate") >= 2, "{st}");
    assert_eq!(st["adds_up"], true, "{st}");
    let started: BTreeSet<String> = s
        .agent_lines()
        .iter()
        .filter(|l| l.starts_with("start "))
        .map(|l| l.split_whitespace().nth(1).unwrap().to_string())
        .collect();
    let expected: BTreeSet<String> = ["cart-0", "cart-1", "cart-2"]
        .into_iter()
        .filter(|p| *p != victim)
        .map(str::to_string)
        .collect();
    assert_eq!(started, expected);
    // Each incident keeps the whole alert for the agent.
    let incidents = r.dir().join("incidents");
    let mut events = 0;
    for d in std::fs::read_dir(&incidents).unwrap().flatten() {
        let Ok(text) = std::fs::read_to_string(d.path().join("event.json")) else {
            continue;
        };
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["alert"]["labels"]["alertname"], "KubePodCrashLooping");
        assert_eq!(v["cluster"], "prod-eu");
        assert!(v["faultId"].as_str().is_some_and(|f| !f.is_empty()));
        events += 1;
    }
    assert_eq!(events, 2, "incidents in {}", incidents.display());
}

fn one_alert_body(fp: &str) -> Value {
    json!({"version": "4", "status": "firing", "receiver": "runner", "groupKey": "{}:{}",
        "alerts": [{"status": "firing", "labels": {"alertname": "KubeJobFailed", "job_name": "backup",
            "namespace": "ops", "severity": "warning"}, "annotations": {"description": "Job failed"},
            "startsAt": at(-5), "endsAt": "0001-01-01T00:00:00Z", "fingerprint": fp}]})
}

#[tokio::test]
async fn unauthorized_oversized_and_malformed_requests() {
    let s = Setup::new();
    let config = s.config(
        "",
        "cluster = \"c1\"\nmax_body_bytes = 65536",
        "",
        &agent("0"),
    );
    let mut r = s.spawn(&config);
    let url = webhook_of(&r).await;
    let http = reqwest::Client::new();
    let body = one_alert_body("f00d");
    // 401s: no credentials, a wrong token, basic instead of bearer.
    for auth in [
        None,
        Some("Bearer wrong".to_string()),
        Some(format!("Basic {TOKEN}")),
    ] {
        let mut req = http.post(&url).json(&body);
        if let Some(a) = &auth {
            req = req.header("authorization", a);
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), 401, "{auth:?}");
        assert!(resp.headers().contains_key("www-authenticate"));
    }
    let bearer = format!("Bearer {TOKEN}");
    // 400s, each counted `invalid` with its reason.
    for (payload, needle) in [
        ("not json".to_string(), "not an Alertmanager webhook"),
        (
            json!({"version": "3", "alerts": []}).to_string(),
            "unsupported webhook payload version",
        ),
        (
            json!({"version": "4", "alerts": [{"status": "firing", "labels": {}}]}).to_string(),
            "fingerprint",
        ),
    ] {
        let resp = http
            .post(&url)
            .header("authorization", &bearer)
            .header("content-type", "application/json")
            .body(payload)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 400);
        let v: Value = resp.json().await.unwrap();
        assert_eq!(v["status"], "invalid");
        assert!(v["reason"].as_str().unwrap().contains(needle), "{v}");
    }
    // A declared Content-Length over the limit is refused before any body
    // byte is read (raw request: the headers alone, so the answer cannot
    // race a body the server will never read).
    {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let addr = url
            .trim_start_matches("http://")
            .trim_end_matches("/webhook");
        let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
        c.write_all(
            format!(
                "POST /webhook HTTP/1.1\r\nhost: {addr}\r\nauthorization: {bearer}\r\n\
                 content-type: application/json\r\ncontent-length: 70000\r\n\r\n"
            )
            .as_bytes(),
        )
        .await
        .unwrap();
        let mut answer = Vec::new();
        tokio::time::timeout(T, c.read_to_end(&mut answer))
            .await
            .expect("no answer")
            .unwrap();
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
        assert!(answer.contains("exceeds max_body_bytes"), "{answer}");
    }
    let resp = http
        .post(&url)
        .header("authorization", &bearer)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.json::<Value>().await.unwrap()["accepted"], 1);
    assert!(
        r.wait_for_count("event completed", 1, T).await,
        "{}",
        r.dump()
    );
    r.stop(T).await;
    let st = r.final_stats().expect("final statistics");
    // Unauthenticated requests were never counted as received.
    assert_eq!(num(&st, "received"), 5, "{st}");
    assert_eq!(num(&st, "invalid"), 4, "{st}");
    assert_eq!(num(&st, "completed"), 1, "{st}");
    assert_eq!(st["adds_up"], true, "{st}");
    let stopped = r.messages("alertmanager webhook stopped").pop().unwrap();
    assert_eq!(stopped["unauthorized"], 3);
    assert_eq!(stopped["bad_requests"], 4);
}

#[tokio::test]
async fn a_slow_sender_holds_its_slot_only_until_the_body_deadline() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let s = Setup::new();
    let config = s.config(
        "",
        "cluster = \"c1\"\nmax_concurrent_requests = 1\nrequest_timeout_seconds = 1",
        "",
        &agent("0"),
    );
    let mut r = s.spawn(&config);
    let url = webhook_of(&r).await;
    let addr = url
        .trim_start_matches("http://")
        .trim_end_matches("/webhook")
        .to_string();
    // Headers promise a body that never comes: the request holds the only slot.
    let mut slow = tokio::net::TcpStream::connect(&addr).await.unwrap();
    slow.write_all(
        format!(
            "POST /webhook HTTP/1.1\r\nhost: {addr}\r\nauthorization: Bearer {TOKEN}\r\n\
             content-type: application/json\r\ncontent-length: 100\r\n\r\n{{\"version\""
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let http = reqwest::Client::new();
    let bearer = format!("Bearer {TOKEN}");
    let busy = until(T, || {
        let seen = r.count("alertmanager webhook busy: too many requests at once; answered 503");
        (seen > 0).then_some(seen)
    });
    // Answered at once with 503 and Retry-After while the slot is taken.
    let resp = http
        .post(&url)
        .header("authorization", &bearer)
        .json(&one_alert_body("beef"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 503);
    assert!(resp.headers().contains_key("retry-after"));
    assert!(busy.await.is_some());
    // The slow request ends with 400 at its deadline, counted `invalid`.
    let mut answer = Vec::new();
    tokio::time::timeout(T, slow.read_to_end(&mut answer))
        .await
        .expect("slow request never answered")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("request_timeout_seconds"), "{answer}");
    // The slot is free again; the retry is accepted.
    let resp = http
        .post(&url)
        .header("authorization", &bearer)
        .json(&one_alert_body("beef"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    r.stop(T).await;
    let st = r.final_stats().expect("final statistics");
    assert_eq!(num(&st, "received"), 2, "{st}");
    assert_eq!(num(&st, "invalid"), 1, "{st}");
    assert_eq!(st["adds_up"], true, "{st}");
}

#[tokio::test]
async fn full_intake_answers_503_and_alertmanager_retries_until_accepted() {
    const N: usize = 120;
    let s = Setup::new();
    let config = s.config(
        "intake_queue_size = 16",
        "cluster_label = \"k8s_cluster\"",
        "max_concurrent_agents = 4\nglobal_queue_size = 500\ncluster_queue_size = 200",
        "true",
    );
    let mut r = s.spawn(&config);
    let url = webhook_of(&r).await;
    let am = Alertmanager::start(&url, &s.token_file()).await;
    let starts = at(-30);
    let alerts: Vec<Value> = (0..N)
        .map(|i| {
            let cluster = format!("c{}", i % 4);
            let pod = format!("web-{i}");
            alert(
                "KubePodNotReady",
                &[
                    ("k8s_cluster", cluster.as_str()),
                    ("namespace", "web"),
                    ("pod", pod.as_str()),
                    ("severity", "critical"),
                ],
                &starts,
                None,
            )
        })
        .collect();
    am.post(&alerts).await;
    let refused = r
        .wait_for(T, |f| {
            f["message"] == "alertmanager webhook: intake full; answered 503 so Alertmanager retries the group"
        })
        .await;
    assert!(refused.is_some(), "the intake never filled:\n{}", r.dump());
    // Alertmanager's retries get every alert through exactly once.
    let reached = until(Duration::from_secs(60), || {
        let ids: BTreeSet<String> = audit(&r, "failed")
            .iter()
            .filter_map(|f| f["fault_id"].as_str().map(str::to_string))
            .collect();
        (ids.len() >= N).then_some(ids.len())
    })
    .await;
    assert_eq!(reached, Some(N), "{}\n{}", r.dump(), am.log());
    r.stop(T).await;
    let st = r.final_stats().expect("final statistics");
    assert_eq!(st["adds_up"], true, "{st}");
    assert!(num(&st, "rejected") >= 1, "{st}");
    // The sink ran each alert once ("true" writes no report: failed).
    assert_eq!(num(&st, "failed"), N as u64, "{st}");
    assert_eq!(
        num(&st, "received"),
        N as u64 + num(&st, "rejected") + num(&st, "duplicate"),
        "{st}"
    );
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS")
}

/// Largest number of agents running at once, overall and per cluster.
fn overlaps(lines: &[String]) -> (usize, usize) {
    let mut points: Vec<(u128, i32, String)> = Vec::new();
    for l in lines {
        let p: Vec<&str> = l.split_whitespace().collect();
        let [what, _name, cluster, ts] = p[..] else {
            panic!("bad agent log line {l:?}")
        };
        let d = if what == "start" { 1 } else { -1 };
        points.push((ts.parse().unwrap(), d, cluster.to_string()));
    }
    points.sort_by_key(|(t, d, _)| (*t, *d));
    let (mut now, mut max) = (0i32, 0i32);
    let mut per: HashMap<String, i32> = HashMap::new();
    let mut per_max = 0;
    for (_, d, c) in points {
        now += d;
        max = max.max(now);
        let e = per.entry(c).or_default();
        *e += d;
        per_max = per_max.max(*e);
    }
    (max as usize, per_max as usize)
}

#[tokio::test]
async fn floods_of_10000_alerts_keep_caps_counters_and_memory() {
    const ROUNDS: usize = 6;
    const REQUESTS: usize = 100;
    const PER: usize = 100;
    let s = Setup::new();
    let config = s.config(
        "",
        "cluster_label = \"k8s_cluster\"\nmax_concurrent_requests = 8\nmax_tracked_alerts = 1000",
        "max_concurrent_agents = 3\nglobal_queue_size = 50\ncluster_queue_size = 5",
        &agent("0.05"),
    );
    let mut r = s.spawn(&config);
    let url = webhook_of(&r).await;
    let http = reqwest::Client::new();
    let bearer = format!("Bearer {TOKEN}");
    let body = |req: usize| {
        let alerts: Vec<Value> = (0..PER)
            .map(|i| {
                let n = req * PER + i;
                json!({"status": "firing", "labels": {"alertname": "KubePodCrashLooping",
                    "k8s_cluster": format!("c{}", n % 20), "namespace": "ns", "pod": format!("p-{n}"),
                    "severity": "critical"}, "annotations": {"description": "x".repeat(200)},
                    "startsAt": "2026-11-29T09:00:00Z", "fingerprint": format!("{n:016x}")})
            })
            .collect();
        json!({"version": "4", "status": "firing", "receiver": "runner", "groupKey": format!("g{req}"),
            "alerts": alerts})
    };
    let mut refused_sum = 0u64;
    let mut accepted_sum = 0u64;
    let mut rss = Vec::new();
    let started = std::time::Instant::now();
    // Six floods of 10,000 in a row: once queues and tables are full,
    // memory stops growing (the later floods peak where the earlier did,
    // within allocator noise).
    for round in 0..ROUNDS {
        let reqs: Vec<usize> = (round * REQUESTS..(round + 1) * REQUESTS).collect();
        // Four senders at once, like several Alertmanager groups flushing together.
        for chunk in reqs.chunks(4) {
            let mut set = tokio::task::JoinSet::new();
            for &req in chunk {
                let (http, url, bearer, b) = (http.clone(), url.clone(), bearer.clone(), body(req));
                set.spawn(async move {
                    let resp = http
                        .post(&url)
                        .header("authorization", bearer)
                        .json(&b)
                        .send()
                        .await
                        .unwrap();
                    let code = resp.status().as_u16();
                    (code, resp.json::<Value>().await.unwrap())
                });
            }
            while let Some(j) = set.join_next().await {
                let (code, v) = j.unwrap();
                assert!(code == 200 || code == 503, "{code} {v}");
                accepted_sum += v["accepted"].as_u64().unwrap();
                refused_sum += v["refused"].as_u64().unwrap();
            }
        }
        rss.push(rss_kib(r.pid()));
    }
    let elapsed = started.elapsed();
    let total = (ROUNDS * REQUESTS * PER) as u64;
    assert_eq!(accepted_sum + refused_sum, total);
    let status = r.stop(T).await;
    assert!(status.success(), "{status:?}");
    let st = r.final_stats().expect("final statistics");
    eprintln!(
        "flood: {total} alerts in {:.2}s, accepted {accepted_sum}, refused {refused_sum}, RSS KiB after each 10,000: {rss:?}; {st}",
        elapsed.as_secs_f64()
    );
    assert_eq!(num(&st, "received"), total, "{st}");
    assert_eq!(st["adds_up"], true, "{st}");
    // Alerts the intake refused were answered 503 and counted `rejected`.
    assert_eq!(
        num(&st, "rejected"),
        refused_sum + num_router_rejected(&r),
        "{st}"
    );
    let (max, per_cluster) = overlaps(&s.agent_lines());
    assert!(max <= 3, "{max} agents at once");
    assert!(
        per_cluster <= 1,
        "{per_cluster} agents at once in one cluster"
    );
    // Bounded queues: memory does not grow with the number of alerts.
    let first = *rss[..ROUNDS / 2].iter().max().unwrap();
    let second = *rss[ROUNDS / 2..].iter().max().unwrap();
    assert!(
        second <= first + first / 10,
        "RSS grew: {rss:?} KiB after each 10,000 alerts"
    );
}

/// `rejected` recorded by the router (only with overflow_policy = reject).
fn num_router_rejected(r: &Runner) -> u64 {
    audit(r, "rejected")
        .iter()
        .filter(|f| f["stage"] == "router")
        .count() as u64
}

#[test]
fn validate_reports_listen_token_file_and_empty_lists_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("pipeline.toml");
    std::fs::write(
        &p,
        r#"[[source]]
kind = "mcp"
endpoint = "http://127.0.0.1:8080/mcp"

[[source]]
kind = "alertmanager"
listen = "127.0.0.1:notaport"
token_file = "/nonexistent/alertmanager-token"
namespace_labels = []
resource_labels = []

[sink]
kind = "agent"
command = ["true"]
"#,
    )
    .unwrap();
    let out = Command::new(e2e::runner_bin())
        .args(["validate", "--config"])
        .arg(&p)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("4 configuration error(s)"), "{err}");
    for needle in [
        "source[1].listen",
        "127.0.0.1:notaport",
        "source[1].token_file",
        "/nonexistent/alertmanager-token",
        "source[1].namespace_labels",
        "source[1].resource_labels",
    ] {
        assert!(err.contains(needle), "{needle} missing in {err}");
    }
}
