//! Slack notifications: delivery timing with a paused clock (scripted
//! transport), and the real webhook client against a loopback axum server
//! answering 429, 500, then 200; the circuit breaker's messages.

mod agent_support;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agent_support::*;
use async_trait::async_trait;
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use runner_core::{CancellationToken, Outcome, Sink};
use runner_plugins::sinks::agent::AgentSink;
use runner_plugins::sinks::notice::Notices;
use runner_plugins::sinks::slack::{
    Delivery, Notifier, Reply, SlackOptions, SlackSink, Transport, deliver,
};
use serde_json::{Value, json};
use tokio::time::Instant;

/// Answers from a script and records when each POST came.
struct Scripted {
    replies: Mutex<VecDeque<Result<Reply, String>>>,
    at: Mutex<Vec<Instant>>,
    t0: Instant,
}

impl Scripted {
    fn new(replies: Vec<Result<Reply, String>>) -> Scripted {
        Scripted {
            replies: Mutex::new(replies.into()),
            at: Mutex::new(Vec::new()),
            t0: Instant::now(),
        }
    }
    fn offsets(&self) -> Vec<Duration> {
        self.at
            .lock()
            .unwrap()
            .iter()
            .map(|t| *t - self.t0)
            .collect()
    }
}

#[async_trait]
impl Transport for Scripted {
    async fn post(&self, _body: &Value) -> Result<Reply, String> {
        self.at.lock().unwrap().push(Instant::now());
        let next = self.replies.lock().unwrap().pop_front();
        match next {
            Some(r) => r,
            // Script exhausted: hang (a stalled Slack).
            None => std::future::pending().await,
        }
    }
}

fn reply(status: u16, retry_after: Option<u64>) -> Result<Reply, String> {
    Ok(Reply {
        status,
        retry_after: retry_after.map(Duration::from_secs),
    })
}

#[tokio::test(start_paused = true)]
async fn backoff_honours_retry_after_and_doubles() {
    let t = Scripted::new(vec![
        reply(429, Some(3)),
        reply(500, None),
        Err("connection refused".into()),
        reply(200, None),
    ]);
    let o = SlackOptions::default(); // base 1 s, doubling
    let d = deliver(&t, &json!({"text": "x"}), &o).await;
    assert_eq!(d, Delivery::Sent { attempts: 4 });
    // 429 waits its Retry-After (3 s, longer than the first backoff); the
    // backoff (1 s) doubles after every wait, Retry-After ones included, so
    // the 500 waits 2 s and the network error 4 s, each ±10 % jitter.
    let gaps = gaps(&t.offsets());
    assert_eq!(gaps[0], Duration::from_secs(3), "{gaps:?}");
    assert_jittered(gaps[1], 2);
    assert_jittered(gaps[2], 4);
    assert_eq!(gaps.len(), 3);
}

/// The waits between consecutive attempts.
fn gaps(offsets: &[Duration]) -> Vec<Duration> {
    offsets
        .windows(2)
        .map(|w| w[1].checked_sub(w[0]).unwrap())
        .collect()
}

/// `d` is `secs` give or take the backoff's 10 % jitter.
fn assert_jittered(d: Duration, secs: u64) {
    let base = Duration::from_secs(secs);
    assert!(
        d >= base.mul_f64(0.9) && d <= base.mul_f64(1.1),
        "{d:?} is not {secs} s ±10 %"
    );
}

#[tokio::test(start_paused = true)]
async fn bounded_attempts_and_no_retry_on_4xx() {
    let o = SlackOptions {
        max_attempts: 3,
        ..SlackOptions::default()
    };
    let t = Scripted::new(vec![
        reply(503, None),
        reply(502, None),
        reply(500, None),
        reply(200, None),
    ]);
    let d = deliver(&t, &json!({}), &o).await;
    assert_eq!(
        d,
        Delivery::GaveUp {
            attempts: 3,
            last_error: "HTTP 500".into()
        }
    );
    let gaps = gaps(&t.offsets());
    assert_eq!(gaps.len(), 2, "{gaps:?}");
    assert_jittered(gaps[0], 1);
    assert_jittered(gaps[1], 2);

    let t = Scripted::new(vec![reply(404, None), reply(200, None)]);
    let d = deliver(&t, &json!({}), &o).await;
    assert!(matches!(d, Delivery::GaveUp { attempts: 1, .. }), "{d:?}");

    // A huge Retry-After is capped.
    let o = SlackOptions {
        max_retry_after: Duration::from_secs(60),
        ..SlackOptions::default()
    };
    let t = Scripted::new(vec![reply(429, Some(86_400)), reply(200, None)]);
    assert_eq!(
        deliver(&t, &json!({}), &o).await,
        Delivery::Sent { attempts: 2 }
    );
    assert_eq!(t.offsets()[1], Duration::from_secs(60));
}

#[tokio::test(start_paused = true)]
async fn a_stalled_slack_never_blocks_the_sender() {
    let t = Arc::new(Scripted::new(vec![]));
    let o = SlackOptions {
        queue: 1,
        flush_timeout: Duration::from_secs(5),
        ..SlackOptions::default()
    };
    let n = Notifier::new(t.clone(), o, "http://x/****".into());
    let t0 = Instant::now();
    for i in 0..10 {
        n.send(format!("m{i}"), json!({"i": i}));
    }
    assert_eq!(t0.elapsed(), Duration::ZERO, "send never waits");
    tokio::task::yield_now().await;
    n.close().await;
    // close waited exactly its bound for the hung delivery, then gave up.
    assert_eq!(t0.elapsed(), Duration::from_secs(5));
    assert_eq!(t.offsets().len(), 1);
}

/// One request the webhook server received: when, path, JSON body.
type Received = (std::time::Instant, String, Value);
/// A scripted answer: status and optional Retry-After.
type Answer = (u16, Option<&'static str>);

#[derive(Clone, Default)]
struct Hook {
    /// (status, retry-after) per request, then 200.
    script: Arc<Mutex<VecDeque<Answer>>>,
    got: Arc<Mutex<Vec<Received>>>,
}

async fn hook(
    State(h): State<Hook>,
    uri: axum::http::Uri,
    body: String,
) -> (StatusCode, HeaderMap, &'static str) {
    let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    h.got
        .lock()
        .unwrap()
        .push((std::time::Instant::now(), uri.path().to_string(), v));
    let (status, ra) = h.script.lock().unwrap().pop_front().unwrap_or((200, None));
    let mut headers = HeaderMap::new();
    if let Some(ra) = ra {
        headers.insert("retry-after", ra.parse().unwrap());
    }
    (
        StatusCode::from_u16(status).unwrap(),
        headers,
        if status == 200 { "ok" } else { "no" },
    )
}

async fn serve(h: Hook) -> (String, tokio::task::JoinHandle<()>) {
    let app = Router::new()
        .route("/services/{*rest}", post(hook))
        .with_state(h);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    (format!("http://{addr}/services/T000/B000/SECRETXYZ"), task)
}

/// The agent sink's notifiers: one Slack sink posting to `url`.
fn slack(url: &str, opts: SlackOptions) -> Notices {
    Notices::slack(SlackSink::new(url, opts).unwrap())
}

fn fields_text(msg: &Value) -> String {
    msg["blocks"].to_string()
}

#[tokio::test]
async fn webhook_retries_429_and_500_then_delivers() {
    let logs = capture_logs();
    let h = Hook::default();
    h.script
        .lock()
        .unwrap()
        .extend([(429, Some("1")), (500, None)]);
    let (url, server) = serve(h.clone()).await;

    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    let script = fake_agent(tmp.path(), "agent.sh", GOOD);
    let cfg = config(&root, &script);
    let opts = SlackOptions {
        base_backoff: Duration::from_millis(50),
        ..SlackOptions::default()
    };
    let sink = AgentSink::with_notices(cfg, slack(&url, opts));
    let res = sink.handle(&envelope(3), CancellationToken::new()).await;
    assert_eq!(res.outcome, Outcome::Completed);
    sink.close().await;

    let got = h.got.lock().unwrap().clone();
    assert_eq!(got.len(), 3, "429, 500, 200: {got:?}");
    assert!(
        got.iter()
            .all(|(_, p, _)| p == "/services/T000/B000/SECRETXYZ")
    );
    // Retry-After: 1 was honoured.
    assert!(
        got[1].0 - got[0].0 >= Duration::from_millis(950),
        "{:?}",
        got[1].0 - got[0].0
    );
    assert_eq!(got[0].2, got[2].2, "the same message is retried");
    let msg = &got[2].2;
    let blocks = fields_text(msg);
    let dir = only_incident(&root);
    for want in [
        "prod-us-east-1",
        "payments",
        "Pod/payments-api-7d9f8b6c5-x2k4q",
        "CrashLoop",
        "CRITICAL",
        "Root Cause (HIGH confidence)",
        "The image tag v2.3.1 lacks the DATABASE_URL default and the process exits at start.",
        "Pods of the previous ReplicaSet were healthy.",
        "*Duration:*",
        &dir.canonicalize()
            .unwrap()
            .join("report.md")
            .display()
            .to_string(),
        dir.file_name().unwrap().to_str().unwrap(),
    ] {
        assert!(blocks.contains(want), "{want:?} not in {blocks}");
    }
    assert_eq!(msg["blocks"][0]["type"], "header");
    assert!(msg["text"].as_str().unwrap().contains("CrashLoop"));

    let text = logs.text();
    let id = dir.file_name().unwrap().to_str().unwrap();
    assert!(
        text.lines().any(|l| l.contains("slack message sent")
            && l.contains(id)
            && l.contains("attempts=3")),
        "{text}"
    );
    assert!(
        !text.contains("SECRETXYZ"),
        "webhook leaked into logs:\n{text}"
    );
    assert!(text.contains("/****"), "{text}");
    server.abort();
}

#[tokio::test]
async fn unreachable_webhook_is_logged_masked_and_does_not_block() {
    let logs = capture_logs();
    // A port nobody listens on.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    let script = fake_agent(tmp.path(), "agent.sh", GOOD);
    let cfg = config(&root, &script);
    let url = format!("http://127.0.0.1:{port}/services/T1/B1/SECRETABC");
    let opts = SlackOptions {
        base_backoff: Duration::from_millis(10),
        max_attempts: 2,
        ..SlackOptions::default()
    };
    let sink = AgentSink::with_notices(cfg, slack(&url, opts));
    let res = sink.handle(&envelope(3), CancellationToken::new()).await;
    assert_eq!(res.outcome, Outcome::Completed);
    sink.close().await;
    let text = logs.text();
    let dir = only_incident(&root);
    let id = dir.file_name().unwrap().to_str().unwrap();
    assert!(
        text.lines()
            .any(|l| l.contains("slack message not delivered") && l.contains(id)),
        "{text}"
    );
    assert!(
        !text.contains("SECRETABC"),
        "webhook leaked into logs:\n{text}"
    );
}

#[tokio::test]
async fn degraded_once_then_recovered_once() {
    let h = Hook::default();
    let (url, server) = serve(h.clone()).await;
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    let flag = tmp.path().join("healthy");
    let script = fake_agent(
        tmp.path(),
        "agent.sh",
        &format!("[ -f '{}' ] || exit 1\n{GOOD}", flag.display()),
    );
    let mut cfg = config(&root, &script);
    cfg.failure_alert_threshold = 2;
    let sink = AgentSink::with_notices(cfg, slack(&url, SlackOptions::default()));
    let mut outcomes = Vec::new();
    for i in 0..3 {
        outcomes.push(
            sink.handle(&envelope(i), CancellationToken::new())
                .await
                .outcome,
        );
    }
    std::fs::write(&flag, "").unwrap();
    for i in 3..5 {
        outcomes.push(
            sink.handle(&envelope(i), CancellationToken::new())
                .await
                .outcome,
        );
    }
    sink.close().await;
    use Outcome::*;
    assert_eq!(outcomes, vec![Failed, Failed, Failed, Completed, Completed]);

    let headers: Vec<String> = h
        .got
        .lock()
        .unwrap()
        .iter()
        .map(|(_, _, v)| v["blocks"][0]["text"]["text"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        headers,
        vec![
            "Kubernetes incident triage failed :x:",
            "Kubernetes incident triage failed :x:",
            "AI agents degraded :warning:",
            "Kubernetes incident triage failed :x:",
            "Kubernetes incident triaged :white_check_mark:",
            "AI agents recovered :white_check_mark:",
            "Kubernetes incident triaged :white_check_mark:",
        ]
    );
    let got = h.got.lock().unwrap();
    let degraded = got[2].2["blocks"][1]["text"]["text"].as_str().unwrap();
    assert!(
        degraded.contains("2 consecutive") && degraded.contains("exited with code 1"),
        "{degraded}"
    );
    let failed = fields_text(&got[0].2);
    assert!(
        failed.contains("not determined (agent exited with code 1)"),
        "{failed}"
    );
    server.abort();
}

#[tokio::test]
async fn with_a_public_url_the_message_links_to_the_incident_page() {
    let h = Hook::default();
    let (url, server) = serve(h.clone()).await;
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    let script = fake_agent(tmp.path(), "agent.sh", GOOD);
    let mut cfg = config(&root, &script);
    cfg.public_url = Some("https://runner.example.com".into());
    let sink = AgentSink::with_notices(cfg, slack(&url, SlackOptions::default()));
    let res = sink.handle(&envelope(4), CancellationToken::new()).await;
    assert_eq!(res.outcome, Outcome::Completed);
    sink.close().await;

    let got = h.got.lock().unwrap().clone();
    assert_eq!(got.len(), 1, "{got:?}");
    let blocks = fields_text(&got[0].2);
    let dir = only_incident(&root);
    let id = dir.file_name().unwrap().to_str().unwrap();
    let link = format!("https://runner.example.com/incidents/{id}");
    assert!(blocks.contains(&link), "{link} not in {blocks}");
    assert!(
        !blocks.contains(&root.display().to_string()),
        "no host path once a public URL is set: {blocks}"
    );
    // The incident log the admin server serves names the same incident and
    // resolves its report inside the workspace.
    let log = runner_core::Sink::incident_log(&sink).expect("agent sink keeps a log");
    let recent = log.recent();
    assert_eq!(recent.len(), 1);
    assert_eq!(recent[0].id, id);
    assert_eq!(recent[0].status, "completed");
    assert_eq!(recent[0].seq, 4);
    let report = log.report_html(id).expect("report of a known incident");
    assert!(report.starts_with(dir.canonicalize().unwrap()));
    assert!(report.exists());
    assert!(log.report_html("../../etc/passwd").is_none());
    server.abort();
}
