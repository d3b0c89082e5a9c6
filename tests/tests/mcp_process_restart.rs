//! The `mcp-test-server` binary killed with SIGKILL and started again on
//! the same port mid-stream: the runner notices, resubscribes on a fresh
//! session and receives the events emitted after the restart.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use e2e::{Runner, bin_path, free_port, num, quick_sink_toml};

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts the binary with `scenario`; returns once it printed its URL.
fn start(port: u16, scenario: &str, dir: &std::path::Path, name: &str) -> (Server, String) {
    let path = dir.join(name);
    std::fs::File::create(&path)
        .and_then(|mut f| f.write_all(scenario.as_bytes()))
        .unwrap();
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
    (Server(child), url)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_and_restarted_server_process_is_resubscribed() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let wait = r#"{"wait_for_subscriber": {"active": 1, "timeout_ms": 30000}}"#;
    let (first, url) = start(
        port,
        &format!("{wait}\n{{\"storm\": {{\"count\": 3}}}}\n"),
        dir.path(),
        "one.jsonl",
    );
    let cfg = format!(
        "[settings]\nlog_level = \"debug\"\nlog_format = \"json\"\nshutdown_timeout_seconds = 2\n\n[[source]]\nkind = \"mcp\"\nendpoint = \"{url}\"\nping_interval_seconds = 1\nsubscription_check_seconds = 1\nreconnect_max_seconds = 2\n\n{}",
        quick_sink_toml(std::path::Path::new("{dir}/incidents"))
    );
    let mut r = Runner::start(&cfg);
    let t = Duration::from_secs(30);
    assert!(
        r.wait_for_count("event validated", 3, t).await,
        "{}",
        r.dump()
    );
    drop(first); // SIGKILL: connections reset, sessions gone.
    let (_second, _) = start(
        port,
        &format!("{wait}\n{{\"storm\": {{\"count\": 3, \"first\": 3}}}}\n"),
        dir.path(),
        "two.jsonl",
    );
    assert!(
        r.wait_for_count("event validated", 6, t).await,
        "{}",
        r.dump()
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let status = r.stop(t).await;
    assert_eq!(status.code(), Some(0), "{}", r.dump());
    let stats = r.final_stats().unwrap();
    assert_eq!(num(&stats, "received"), 6, "{}", r.dump());
    assert!(r.count("subscribed to MCP events") >= 2);
}
