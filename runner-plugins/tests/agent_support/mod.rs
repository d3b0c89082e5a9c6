//! Shared helpers of the agent sink tests: events, fake agents, process checks.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use runner_core::{Envelope, Event};
use runner_plugins::sinks::agent::{AgentCommand, AgentSinkConfig};
use serde_json::{Value, json};

pub(crate) fn payload(cluster: &str, ns: &str, kind: &str, name: &str) -> Value {
    json!({
        "subscriptionId": "sub-1",
        "cluster": cluster,
        "faultId": "f00d",
        "faultType": "CrashLoop",
        "severity": "critical",
        "resource": {"apiVersion": "v1", "kind": kind, "name": name, "namespace": ns, "uid": "u-1"},
        "context": "Container entered CrashLoopBackOff state, restart count: 5",
        "timestamp": "2026-11-27T12:00:00Z"
    })
}

pub(crate) fn envelope_of(raw: Value, seq: u64) -> Envelope {
    Envelope {
        seq,
        event: Event::from_json(raw, None).expect("valid test event"),
        source: Arc::from("test"),
        received_at: tokio::time::Instant::now(),
        passed_stages: 0,
        bytes: 0,
        chain: None,
    }
}

pub(crate) fn envelope(seq: u64) -> Envelope {
    envelope_of(
        payload(
            "prod-us-east-1",
            "payments",
            "Pod",
            "payments-api-7d9f8b6c5-x2k4q",
        ),
        seq,
    )
}

/// Writes `body` as an sh script.
pub(crate) fn fake_agent(dir: &Path, name: &str, body: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    path
}

/// Runs the script as `command = ["sh", script]` (the script is the group leader).
pub(crate) fn config(root: &Path, script: &Path) -> AgentSinkConfig {
    let mut c = AgentSinkConfig::new(
        AgentCommand::Argv(vec!["sh".into(), script.display().to_string()]),
        root,
    );
    c.timeout = Duration::from_secs(20);
    c.kill_grace = Duration::from_secs(1);
    // The fake agent's script lives beside the root: the sandbox must let
    // the agent read it (and nothing else there).
    if let Some(dir) = script.parent() {
        c.sandbox.read_paths.push(dir.to_path_buf());
    }
    c
}

/// Runs the script the `AGENT_COMMAND` way: a command line through `sh -c`.
pub(crate) fn config_shell(root: &Path, script: &Path) -> AgentSinkConfig {
    let mut c = config(root, script);
    c.command = AgentCommand::Shell(format!("sh '{}'", script.display()));
    c
}

/// An investigation long enough to count (with a root cause).
pub(crate) const GOOD: &str = r#"mkdir -p output
cat > output/investigation.md <<'MD'
# Investigation

## Summary
The payments API pod is crash looping since the last rollout.

## Root Cause
Confidence: HIGH
The image tag v2.3.1 lacks the DATABASE_URL default and the process exits at start.
Pods of the previous ReplicaSet were healthy.

## Evidence
kubectl logs --previous shows "DATABASE_URL not set".
MD
echo agent-stdout-marker"#;

/// True when `pid` is gone or a zombie (dead, only waiting to be reaped by
/// an init that may not reap in a container).
pub(crate) fn pid_dead(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(s) => {
            let state = s.rsplit(')').next().unwrap_or("").trim_start();
            state.starts_with('Z') || state.starts_with('X')
        }
    }
}

pub(crate) fn read_pid(path: &Path) -> u32 {
    std::fs::read_to_string(path)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// Waits (real time, bounded) until `path` exists.
pub(crate) async fn wait_for_file(path: &Path) {
    for _ in 0..400 {
        if path.exists()
            && std::fs::metadata(path)
                .map(|m| m.len() > 0)
                .unwrap_or(false)
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("{} never appeared", path.display());
}

/// The first incident directory that appears under `root` (10 s at most;
/// `.agents/`, the runner's process records, is not one).
pub(crate) async fn wait_for_incident_dir(root: &Path) -> PathBuf {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(e) = std::fs::read_dir(root).ok().and_then(|d| {
            d.flatten()
                .find(|e| !e.file_name().to_string_lossy().starts_with('.'))
        }) {
            return e.path();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no incident directory appeared under {}",
            root.display()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The only incident directory under `root` (`.agents/`, the runner's
/// process records, is not one).
pub(crate) fn only_incident(root: &Path) -> PathBuf {
    let dirs: Vec<PathBuf> = std::fs::read_dir(root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| !p.file_name().unwrap().to_string_lossy().starts_with('.'))
        .collect();
    assert_eq!(dirs.len(), 1, "{dirs:?}");
    dirs.into_iter().next().unwrap()
}

pub(crate) fn incident_json(dir: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(dir.join("incident.json")).unwrap()).unwrap()
}

/// Log capture for tracing: one global subscriber per test binary (scoped
/// `set_default` subscribers race with tracing's per-callsite interest cache
/// when tests run in parallel). Tests look for their own markers in it.
#[derive(Clone, Default)]
pub(crate) struct Capture(pub Arc<Mutex<Vec<u8>>>);

impl Capture {
    pub(crate) fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl std::io::Write for Capture {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Capture {
    type Writer = Capture;
    fn make_writer(&'a self) -> Capture {
        self.clone()
    }
}

pub(crate) fn capture_logs() -> Capture {
    static CAP: std::sync::OnceLock<Capture> = std::sync::OnceLock::new();
    CAP.get_or_init(|| {
        let cap = Capture::default();
        let sub = tracing_subscriber::fmt()
            .with_writer(cap.clone())
            .with_ansi(false)
            .with_max_level(tracing::Level::DEBUG)
            .finish();
        tracing::subscriber::set_global_default(sub).expect("one global subscriber");
        cap
    })
    .clone()
}
