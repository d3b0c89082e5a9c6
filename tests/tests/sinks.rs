//! End to end: several `[[sink]]` tables. The real `runner` binary, the test
//! MCP server on loopback, a small sh agent and two loopback Slack webhooks
//! that record what they were sent; and the `[sink]` table of earlier
//! versions, whose `SLACK_WEBHOOK_URL` still becomes a Slack notifier.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::routing::post;
use e2e::{Runner, num};
use mcp_testserver::{Scenario, Step, TestServer, fault};
use serde_json::Value;

const T: Duration = Duration::from_secs(30);

/// A webhook on loopback recording every JSON body it was posted.
struct Hook {
    got: Arc<Mutex<Vec<Value>>>,
    url: String,
    task: tokio::task::JoinHandle<()>,
}

impl Hook {
    async fn start(secret: &str) -> Hook {
        let got: Arc<Mutex<Vec<Value>>> = Arc::default();
        async fn record(
            State(got): State<Arc<Mutex<Vec<Value>>>>,
            axum::Json(v): axum::Json<Value>,
        ) -> &'static str {
            got.lock().unwrap().push(v);
            "ok"
        }
        let app = Router::new()
            .route("/services/{*rest}", post(record))
            .with_state(got.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Hook {
            got,
            url: format!("http://{addr}/services/T0/B0/{secret}"),
            task,
        }
    }

    fn headers(&self) -> Vec<String> {
        self.got
            .lock()
            .unwrap()
            .iter()
            .map(|v| {
                v["blocks"][0]["text"]["text"]
                    .as_str()
                    .unwrap_or("")
                    .to_string()
            })
            .collect()
    }

    /// Waits until `n` messages arrived, or the deadline passed.
    async fn wait_for(&self, n: usize) -> bool {
        let deadline = tokio::time::Instant::now() + T;
        while tokio::time::Instant::now() < deadline {
            if self.got.lock().unwrap().len() >= n {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    }
}

impl Drop for Hook {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn one_fault_server() -> TestServer {
    let mut f = fault(1);
    f["severity"] = Value::String("critical".into());
    TestServer::start(Scenario::new(vec![
        Step::WaitForSubscriber {
            active: 1,
            timeout_ms: 120_000,
        },
        Step::Emit {
            data: f,
            repeat: 1,
            logger: "kubernetes/faults".into(),
            level: "warning".into(),
        },
    ]))
    .await
    .unwrap()
}

/// Writes an investigation and records which webhook variables it saw.
const AGENT: &str = "mkdir -p output; \
    printf '# Investigation\\n\\n## Root Cause\\n\\nThe e2e fault was investigated by the sinks test agent with enough words.\\n' > output/investigation.md; \
    echo \"A=${E2E_HOOK_A:-unset} B=${E2E_HOOK_B:-unset} S=${SLACK_WEBHOOK_URL:-unset}\" > \"$E2E_LOG\"";

fn source(url: &str) -> String {
    format!(
        "[settings]\nlog_format = \"json\"\n\n[[source]]\nkind = \"mcp\"\nendpoint = \"{url}\"\n\n[[stage]]\nkind = \"severity\"\n\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_slack_sinks_beside_the_agent_sink_each_get_the_incident() {
    e2e::runner_bin();
    let (a, b) = (Hook::start("SECRETA").await, Hook::start("SECRETB").await);
    let server = one_fault_server().await;
    let log_dir = tempfile::tempdir().unwrap();
    let log = log_dir.path().join("agent.log");
    // The agent writes its log outside its workspace: the sandbox must allow it.
    let logdir = log_dir.path().canonicalize().unwrap().display().to_string();
    let config = format!(
        "{}[[sink]]\nkind = \"slack\"\nwebhook_env = \"E2E_HOOK_A\"\n\n\
         [[sink]]\nkind = \"agent\"\ncommand_line = {AGENT:?}\nworkspace_root = \"{{dir}}/incidents\"\nenv_allow = [\"E2E_LOG\"]\nsandbox_write_paths = [{logdir:?}]\n\n\
         [[sink]]\nkind = \"slack\"\nwebhook_env = \"E2E_HOOK_B\"\n",
        source(&server.url())
    );
    let mut r = Runner::builder(&config)
        .env("E2E_LOG", log.display().to_string())
        .env("E2E_HOOK_A", &a.url)
        .env("E2E_HOOK_B", &b.url)
        .spawn();
    assert!(
        r.wait_for_count("event completed", 1, T).await,
        "{}",
        r.dump()
    );
    assert!(a.wait_for(1).await && b.wait_for(1).await, "{}", r.dump());
    let status = r.stop(T).await;
    assert_eq!(status.code(), Some(0), "{}", r.dump());
    let stats = r.final_stats().expect("final statistics");
    assert_eq!(num(&stats, "completed"), 1);
    for hook in [&a, &b] {
        assert_eq!(
            hook.headers(),
            ["Kubernetes incident triaged :white_check_mark:"],
            "one message per webhook"
        );
    }
    // Both webhooks are secrets of their sinks: never passed to the agent.
    let seen = std::fs::read_to_string(&log).unwrap();
    assert_eq!(seen.trim(), "A=unset B=unset S=unset");
    let logs = r.dump();
    assert!(
        !logs.contains("SECRETA") && !logs.contains("SECRETB"),
        "{logs}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_sink_table_with_slack_webhook_url_still_notifies() {
    e2e::runner_bin();
    let hook = Hook::start("SECRETLEGACY").await;
    let server = one_fault_server().await;
    let log_dir = tempfile::tempdir().unwrap();
    let log = log_dir.path().join("agent.log");
    // The agent writes its log outside its workspace: the sandbox must allow it.
    let logdir = log_dir.path().canonicalize().unwrap().display().to_string();
    let config = format!(
        "{}[sink]\nkind = \"agent\"\ncommand_line = {AGENT:?}\nworkspace_root = \"{{dir}}/incidents\"\nenv_allow = [\"E2E_LOG\"]\nsandbox_write_paths = [{logdir:?}]\n",
        source(&server.url())
    );
    let mut r = Runner::builder(&config)
        .env("E2E_LOG", log.display().to_string())
        .env("SLACK_WEBHOOK_URL", &hook.url)
        .spawn();
    assert!(hook.wait_for(1).await, "{}", r.dump());
    let status = r.stop(T).await;
    assert_eq!(status.code(), Some(0), "{}", r.dump());
    assert_eq!(
        hook.headers(),
        ["Kubernetes incident triaged :white_check_mark:"]
    );
    assert_eq!(
        std::fs::read_to_string(&log).unwrap().trim(),
        "A=unset B=unset S=unset"
    );
}
