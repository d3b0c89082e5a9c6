//! The admin server of the real `runner` binary, judged by real tools:
//! a Prometheus server (Debian `prometheus`) scraping it on loopback,
//! `promtool check metrics`, headless Chromium (Debian `chromium`) loading
//! the incidents page, and the MCP test server killed and restarted under
//! it. `.ci/run` installs the tools; a missing tool fails the test.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use e2e::{Runner, bin_path, free_port, num};
use mcp_testserver::{Scenario, Step, TestServer, fault};
use serde_json::{Value, json};

const T: Duration = Duration::from_secs(60);

/// A child process killed on drop.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn tool(name: &str) -> PathBuf {
    for dir in ["/usr/bin", "/usr/local/bin", "/bin"] {
        let p = Path::new(dir).join(name);
        if p.exists() {
            return p;
        }
    }
    panic!("{name} is not installed: .ci/run installs it (apt-get install -y {name})");
}

async fn get(url: &str, token: Option<&str>) -> (u16, String, reqwest::header::HeaderMap) {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let mut req = client.get(url);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    match req.send().await {
        Ok(r) => {
            let status = r.status().as_u16();
            let headers = r.headers().clone();
            (status, r.text().await.unwrap_or_default(), headers)
        }
        Err(e) => (0, e.to_string(), Default::default()),
    }
}

/// Polls `f` until it returns `Some`, or panics with `what` at the deadline.
async fn until<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn pipeline(url: &str, stages: &str, sink: &str, extra: &str) -> String {
    format!(
        r#"[settings]
log_level = "info"
shutdown_timeout_seconds = 5

[[source]]
kind = "mcp"
name = "sim"
endpoint = "{url}"
ping_interval_seconds = 1
subscription_check_seconds = 1
reconnect_initial_seconds = 1
reconnect_max_seconds = 1

{stages}

[sink]
kind = "agent"
workspace_root = "{{dir}}/incidents"
{sink}

{extra}
"#
    )
}

const STAGES: &str = "[[stage]]\nkind = \"severity\"\nthreshold = \"ERROR\"\n\n[[stage]]\nkind = \"dedup\"\nwindow_seconds = 300\n";

/// An agent that writes a short, valid investigation.
const WRITES_REPORT: &str = r#"command = ["sh", "-c", "printf '# Investigation\n\n## Root Cause\nThe container exceeds its memory limit under load and is OOM-killed; raise the limit.\nConfidence: HIGH\n' > output/investigation.md"]"#;

fn wait_sub() -> Step {
    Step::WaitForSubscriber {
        active: 1,
        timeout_ms: 120_000,
    }
}

async fn status(base: &str) -> Option<Value> {
    let (code, body, _) = get(&format!("{base}/api/status"), None).await;
    (code == 200).then(|| serde_json::from_str(&body).ok())?
}

/// One instant query; the scalar value of a single-sample vector.
async fn prom_query(prom: &str, q: &str) -> Vec<(Value, f64)> {
    let client = reqwest::Client::new();
    let enc: String = q
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    let Ok(r) = client
        .get(format!("{prom}/api/v1/query?query={enc}"))
        .send()
        .await
    else {
        return Vec::new();
    };
    let v: Value = r.json().await.unwrap_or(Value::Null);
    v["data"]["result"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| {
            let val = s["value"][1]
                .as_str()
                .and_then(|x| x.parse().ok())
                .unwrap_or(f64::NAN);
            (s["metric"].clone(), val)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_counters_that_match_the_final_statistics() {
    let prometheus = tool("prometheus");
    let promtool = tool("promtool");
    // 20 faults (4 of 5 critical), 3 repeats of one (duplicates), 2 malformed.
    let server = TestServer::start(Scenario::new(vec![
        wait_sub(),
        Step::Storm {
            count: 20,
            first: 0,
        },
        Step::Emit {
            data: fault(0),
            repeat: 3,
            logger: "kubernetes/faults".into(),
            level: "warning".into(),
        },
        Step::Malformed { count: 2 },
    ]))
    .await
    .unwrap();
    let admin_port = free_port();
    let base = format!("http://127.0.0.1:{admin_port}");
    let mut r = Runner::builder(&pipeline(&server.url(), STAGES, "command = [\"true\"]", ""))
        .env("ADMIN_LISTEN", format!("127.0.0.1:{admin_port}"))
        .spawn();

    let dir = tempfile::tempdir().unwrap();
    let prom_port = free_port();
    let cfg = dir.path().join("prometheus.yml");
    std::fs::write(
        &cfg,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: runner\n    static_configs:\n      - targets: ['127.0.0.1:{admin_port}']\n"
        ),
    )
    .unwrap();
    let _prom = Proc(
        Command::new(&prometheus)
            .arg(format!("--config.file={}", cfg.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{prom_port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start prometheus"),
    );
    let prom = format!("http://127.0.0.1:{prom_port}");

    // Every payload received and ended, as the runner itself says.
    let st = until("the runner to drain 25 payloads", T, || async {
        let s = status(&base).await?;
        (s["stats"]["received"] == 25 && s["in_flight"] == 0).then_some(s)
    })
    .await;
    let (code, exposition, headers) = get(&format!("{base}/metrics"), None).await;
    assert_eq!(code, 200);
    assert!(
        headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    let mut check = Command::new(&promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    check
        .stdin
        .take()
        .unwrap()
        .write_all(exposition.as_bytes())
        .unwrap();
    let out = check.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}\n{exposition}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // Prometheus has scraped the drained state.
    until("Prometheus to scrape 25 received", T, || async {
        let v = prom_query(&prom, "sum(runner_events_received_total)").await;
        (v.first().map(|x| x.1) == Some(25.0)).then_some(())
    })
    .await;
    let by_outcome = prom_query(&prom, "sum by (outcome) (runner_events_outcome_total)").await;
    let up = prom_query(&prom, "runner_source_up{source=\"sim\"}").await;
    assert_eq!(up.first().map(|x| x.1), Some(1.0), "{up:?}");
    let agent_calls = prom_query(&prom, "sum(runner_agent_duration_seconds_count)").await;

    let status = r.stop(Duration::from_secs(20)).await;
    assert!(status.success(), "{}", r.dump());
    let fin = r.final_stats().expect("final statistics");
    assert_eq!(fin["adds_up"], true);
    assert_eq!(num(&fin, "received"), 25);
    let mut seen = 0;
    for (metric, v) in &by_outcome {
        let o = metric["outcome"].as_str().unwrap();
        assert_eq!(
            *v as u64,
            num(&fin, o),
            "outcome {o}: Prometheus vs final statistics"
        );
        assert_eq!(
            st["stats"][o].as_u64(),
            Some(*v as u64),
            "outcome {o}: /api/status"
        );
        seen += *v as u64;
    }
    assert_eq!(seen, 25, "{by_outcome:?}");
    // The scenario produced every kind of noise it was built for.
    assert_eq!(num(&fin, "invalid"), 2);
    assert_eq!(num(&fin, "filtered"), 4);
    // Three repeats; a repeat whose first report was dropped by overflow is
    // not suppressed (dedup forgets admissions that never ran), so it goes
    // on to the router instead of counting as a duplicate.
    let dup = num(&fin, "duplicate");
    assert!((1..=3).contains(&dup), "{fin}");
    // One cluster, queue of 10: the storm overflows it (policy drop).
    let agents = num(&fin, "failed") + num(&fin, "completed");
    assert_eq!(agents + num(&fin, "dropped"), 16 + (3 - dup), "{fin}");
    assert!(agents >= 10);
    assert_eq!(agent_calls.first().map(|x| x.1 as u64), Some(agents));
    server.shutdown().await;
}

fn chromium_dump(url: &str) -> String {
    let chromium = tool("chromium");
    let profile = tempfile::tempdir().unwrap();
    let mut child = Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg("--dump-dom")
        .arg(url)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start chromium");
    let mut out = String::new();
    let stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        for l in BufReader::new(stdout).lines().map_while(Result::ok) {
            s.push_str(&l);
            s.push('\n');
        }
        s
    });
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("chromium did not finish within 90 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    out.push_str(&reader.join().unwrap());
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_incidents_page_in_headless_chromium_lists_the_storm_with_working_links() {
    let hostile = "<img src=x onerror=alert(1)>";
    let mut evil = fault(1000);
    evil["resource"]["name"] = json!(hostile);
    evil["cluster"] = json!("prod-<b>eu</b>");
    let mut other_cluster = fault(1005);
    other_cluster["cluster"] = json!("staging-us-west-2");
    // Critical faults only (ids 1000, 1001, 1005, 1006 are critical kinds),
    // plus a repeat that dedup suppresses.
    let server = TestServer::start(Scenario::new(vec![
        wait_sub(),
        Step::Emit {
            data: evil,
            repeat: 1,
            logger: "kubernetes/faults".into(),
            level: "warning".into(),
        },
        Step::Emit {
            data: fault(1001),
            repeat: 2,
            logger: "kubernetes/faults".into(),
            level: "warning".into(),
        },
        Step::Emit {
            data: other_cluster,
            repeat: 1,
            logger: "kubernetes/faults".into(),
            level: "warning".into(),
        },
        Step::Emit {
            data: fault(1006),
            repeat: 1,
            logger: "kubernetes/faults".into(),
            level: "warning".into(),
        },
    ]))
    .await
    .unwrap();
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let mut r = Runner::builder(&pipeline(&server.url(), STAGES, WRITES_REPORT, ""))
        .env("ADMIN_LISTEN", format!("127.0.0.1:{port}"))
        .spawn();
    let incidents = until("4 completed incidents", T, || async {
        let (code, body, _) = get(&format!("{base}/api/incidents"), None).await;
        if code != 200 {
            return None;
        }
        let v: Value = serde_json::from_str(&body).ok()?;
        let recent = v["recent"].as_array()?.clone();
        (recent.len() == 4 && recent.iter().all(|i| i["status"] == "completed")).then_some(recent)
    })
    .await;

    let dom = chromium_dump(&format!("{base}/"));
    assert!(dom.contains("Event Runner: incidents"), "{dom}");
    for i in &incidents {
        let id = i["id"].as_str().unwrap();
        assert!(
            dom.contains(&format!("data-id=\"{id}\"")),
            "incident {id} missing from the page:\n{dom}"
        );
    }
    assert_eq!(
        dom.matches("class=\"incident completed\"").count(),
        4,
        "{dom}"
    );
    // The hostile strings are text, not markup: no element was created.
    assert!(dom.contains("&lt;img src=x onerror=alert(1)&gt;"), "{dom}");
    assert!(dom.contains("prod-&lt;b&gt;eu&lt;/b&gt;"), "{dom}");
    assert!(!dom.contains("<img"), "{dom}");
    assert!(!dom.contains("<b>eu"), "{dom}");
    assert!(!dom.contains("<script"), "{dom}");
    // The dedup'd repeat is not an incident.
    assert_eq!(incidents.len(), 4);

    // Every report link works and serves that incident's report.
    let links: Vec<&str> = dom
        .split("href=\"incidents/")
        .skip(1)
        .filter_map(|s| s.split('"').next())
        .collect();
    assert_eq!(links.len(), 4, "{dom}");
    for id in &links {
        let (code, body, headers) = get(&format!("{base}/incidents/{id}"), None).await;
        assert_eq!(code, 200, "report of {id}");
        assert!(
            headers["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/html")
        );
        assert!(body.contains(id), "report of {id} names it");
        assert!(body.contains("Root Cause"), "report of {id}: {body}");
    }
    // Loaded in the browser too: the report renders as a document.
    let report_dom = chromium_dump(&format!("{base}/incidents/{}", links[0]));
    assert!(report_dom.contains(links[0]), "{report_dom}");
    // Unknown ids and path tricks are not served.
    for bad in ["nope", "..%2F..%2Fetc%2Fpasswd", "..%2Freport.html"] {
        let (code, _, _) = get(&format!("{base}/incidents/{bad}"), None).await;
        assert_eq!(code, 404, "{bad}");
    }

    // `runner status` prints the same incidents from the running instance.
    let out = Command::new(bin_path("runner"))
        .args(["status", "--url", &base])
        .env_remove("ADMIN_TOKEN")
        .env_remove("ADMIN_TOKEN_FILE")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("Recent incidents (4)"), "{text}");
    for i in &incidents {
        assert!(text.contains(i["id"].as_str().unwrap()), "{text}");
    }
    assert!(text.contains("staging-us-west-2"), "{text}");

    let s = r.stop(Duration::from_secs(20)).await;
    assert!(s.success(), "{}", r.dump());
    server.shutdown().await;
}

/// Starts the `mcp-test-server` binary on `port`; returns once it listens.
fn test_server_process(port: u16, dir: &Path, name: &str) -> (Proc, String) {
    let path = dir.join(name);
    std::fs::write(&path, "").unwrap();
    let mut child = Command::new(bin_path("mcp-test-server"))
        .args(["--port", &port.to_string(), "--scenario"])
        .arg(&path)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start mcp-test-server");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_string();
    (Proc(child), url)
}

async fn ready(base: &str) -> (u16, Value) {
    let (code, body, _) = get(&format!("{base}/readyz"), None).await;
    (code, serde_json::from_str(&body).unwrap_or(Value::Null))
}

async fn alive(base: &str) -> bool {
    let (code, body, _) = get(&format!("{base}/healthz"), None).await;
    code == 200 && body.contains("\"alive\"")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_flips_when_the_mcp_server_dies_and_returns_liveness_stays() {
    let dir = tempfile::tempdir().unwrap();
    let mcp_port = free_port();
    let (first, url) = test_server_process(mcp_port, dir.path(), "a.jsonl");
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let mut r = Runner::builder(&pipeline(
        &url,
        "",
        "command = [\"true\"]",
        "[server]\nready_source_down_seconds = 1\n",
    ))
    .env("ADMIN_LISTEN", format!("127.0.0.1:{port}"))
    .spawn();

    until("ready", T, || async {
        let (code, v) = ready(&base).await;
        (code == 200 && v["status"] == "ready").then_some(())
    })
    .await;
    assert!(alive(&base).await);

    drop(first); // SIGKILL
    let body = until("not ready after the server died", T, || async {
        assert!(alive(&base).await, "liveness must stay up");
        let (code, v) = ready(&base).await;
        (code == 503).then_some(v)
    })
    .await;
    assert_eq!(body["status"], "not ready");
    let reason = body["reasons"][0].as_str().unwrap();
    assert!(
        reason.contains("source sim without a subscription"),
        "{body}"
    );
    assert_eq!(body["sources"][0]["subscribed_once"], true);
    assert!(alive(&base).await);

    let (_second, _) = test_server_process(mcp_port, dir.path(), "b.jsonl");
    until("ready again after the server returned", T, || async {
        assert!(alive(&base).await, "liveness must stay up");
        let (code, _) = ready(&base).await;
        (code == 200).then_some(())
    })
    .await;
    let st = status(&base).await.unwrap();
    assert!(st["sources"][0]["sessions"].as_u64().unwrap() >= 2, "{st}");

    let s = r.stop(Duration::from_secs(20)).await;
    assert!(s.success(), "{}", r.dump());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_loopback_without_a_token_is_refused_before_anything_starts() {
    let mut r = Runner::builder(&pipeline(
        "http://127.0.0.1:9/mcp",
        "",
        "command = [\"true\"]",
        "",
    ))
    .env("ADMIN_LISTEN", format!("0.0.0.0:{}", free_port()))
    .spawn();
    let s = r.wait_exit(T).await.expect("exits");
    assert_eq!(s.code(), Some(2), "{}", r.dump());
    let out = r.dump();
    assert!(out.contains("server.listen"), "{out}");
    assert!(out.contains("not loopback, no token"), "{out}");
    assert_eq!(r.count("MCP source starting"), 0, "nothing started: {out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_without_the_token_get_401_probes_stay_open() {
    let token = "e2e-admin-token-0123456789";
    let server = TestServer::start(Scenario::new(vec![])).await.unwrap();
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let mut r = Runner::builder(&pipeline(&server.url(), "", "command = [\"true\"]", ""))
        .env("ADMIN_LISTEN", format!("127.0.0.1:{port}"))
        .env("ADMIN_TOKEN", token)
        .spawn();
    until("the admin server", T, || async {
        alive(&base).await.then_some(())
    })
    .await;
    for path in [
        "/metrics",
        "/api/status",
        "/api/incidents",
        "/",
        "/incidents/x",
    ] {
        let (code, _, headers) = get(&format!("{base}{path}"), None).await;
        assert_eq!(code, 401, "{path} without a token");
        assert!(
            headers
                .get_all("www-authenticate")
                .iter()
                .any(|v| v.to_str().unwrap().starts_with("Bearer")),
            "{path}"
        );
        let (code, _, _) = get(&format!("{base}{path}"), Some("wrong-token-0123456789")).await;
        assert_eq!(code, 401, "{path} with a wrong token");
    }
    let (code, body, _) = get(&format!("{base}/metrics"), Some(token)).await;
    assert_eq!(code, 200);
    assert!(body.contains("runner_events_received_total"));
    // Probes carry no secrets and stay reachable for the kubelet.
    assert!(alive(&base).await);
    let (code, _) = ready(&base).await;
    assert!(code == 200 || code == 503);
    // `runner status` authenticates with ADMIN_TOKEN.
    let out = Command::new(bin_path("runner"))
        .args(["status", "--url", &base])
        .env("ADMIN_TOKEN", token)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new(bin_path("runner"))
        .args(["status", "--url", &base])
        .env_remove("ADMIN_TOKEN")
        .env_remove("ADMIN_TOKEN_FILE")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("401"));
    // The token never appears in the runner's logs.
    let s = r.stop(Duration::from_secs(20)).await;
    assert!(s.success(), "{}", r.dump());
    assert!(!r.dump().contains(token));
    server.shutdown().await;
}
