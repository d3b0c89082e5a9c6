//! End to end: hostile shell agents under the real `runner` binary. Every
//! verdict comes from side effects: files outside the workspace, a canary
//! directory, connections reaching recording listeners, secrets found in
//! what the agent could read, processes alive in `/proc`.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use e2e::Runner;
use mcp_testserver::{Scenario, Step, TestServer, fault};
use serde_json::Value;

const T: Duration = Duration::from_secs(30);
const RUNNER_TOKEN: &str = "runner-only-token-7f3a9c1e5b";
const DEMO_KEY: &str = "demo-api-key-allowed-to-agent-42x";
const OUTSIDE_SECRET: &str = "outside-secret-file-content-91b";
const KUBE_TOKEN: &str = "kubeconfig-bearer-token-c0ffee";

fn emit(i: u64) -> Step {
    let mut f = fault(i);
    f["severity"] = Value::String("critical".into());
    Step::Emit {
        data: f,
        repeat: 1,
        logger: "kubernetes/faults".into(),
        level: "warning".into(),
    }
}

async fn server_with(events: u64) -> TestServer {
    let mut steps = vec![Step::WaitForSubscriber {
        active: 1,
        timeout_ms: 120_000,
    }];
    steps.extend((1..=events).map(emit));
    TestServer::start(Scenario::new(steps)).await.unwrap()
}

/// A TCP listener on loopback that counts accepted connections.
fn recording_listener() -> (u16, Arc<AtomicUsize>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let hits = Arc::new(AtomicUsize::new(0));
    let h = hits.clone();
    // Blocked in accept for the rest of the test process; owns no child.
    std::thread::spawn(move || {
        for c in l.incoming() {
            if c.is_ok() {
                h.fetch_add(1, Ordering::SeqCst);
            }
        }
    });
    (port, hits)
}

/// A Slack webhook double on loopback that keeps every request body.
fn recording_webhook() -> (u16, Arc<std::sync::Mutex<Vec<String>>>) {
    use std::io::{Read, Write};
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let bodies = Arc::new(std::sync::Mutex::new(Vec::new()));
    let b = bodies.clone();
    std::thread::spawn(move || {
        for mut c in l.incoming().flatten() {
            let _ = c.set_read_timeout(Some(Duration::from_secs(5)));
            let mut buf = Vec::new();
            let mut chunk = [0u8; 8192];
            // Headers, then Content-Length bytes of body.
            while let Ok(n) = c.read(&mut chunk) {
                if n == 0 {
                    break;
                }
                buf.extend_from_slice(&chunk[..n]);
                let text = String::from_utf8_lossy(&buf).to_string();
                if let Some(end) = text.find("\r\n\r\n") {
                    let len = text[..end]
                        .lines()
                        .find_map(|l| {
                            let (k, v) = l.split_once(':')?;
                            k.eq_ignore_ascii_case("content-length")
                                .then(|| v.trim().parse::<usize>().ok())?
                        })
                        .unwrap_or(0);
                    if buf.len() >= end + 4 + len {
                        break;
                    }
                }
            }
            b.lock()
                .unwrap()
                .push(String::from_utf8_lossy(&buf).to_string());
            let _ =
                c.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok");
        }
    });
    (port, bodies)
}

/// Tries everything a prompt-injected agent could; records what it got in
/// its own workspace (for diagnosis only: the test judges side effects).
const HOSTILE: &str = r#"
set +e
mkdir -p output
log() { echo "$*" >> output/probes.txt; }
echo pwned > "$E2E_OUTSIDE/written.txt" && log "wrote outside"
echo pwned >> "$HOME/.bashrc" && log "wrote home dotfile"
mkdir -p "$HOME/.config/evil" && log "made home dir"
rm -rf "$E2E_OUTSIDE/canary" && log "removed canary"
cat "$E2E_OUTSIDE/secret.txt" >> output/stolen.txt && log "read outside secret"
cat "$HOME/.kube/config" >> output/stolen.txt && log "read kubeconfig"
cat "$INCIDENT_DIR/../../pipeline.toml" >> output/stolen.txt && log "read runner config"
ls /tmp > /dev/null && log "listed /tmp"
for f in /proc/[0-9]*/environ; do echo "== $f $(cat ${f%/environ}/comm 2>/dev/null)"; tr '\0' '\n' < "$f"; done >> output/environ.txt 2>/dev/null
tr '\0' '\n' < /proc/$PPID/environ >> output/runner-environ.txt && log "read runner environ"
(exec 3<>/dev/tcp/127.0.0.1/$E2E_DENIED_PORT) && log "connected to denied port"
(exec 3<>/dev/tcp/127.0.0.1/$E2E_ALLOWED_PORT) && log "connected to allowed port"
kill -0 $PPID && log "can signal the runner"
# Escapes: a new session, a double fork, one with a wiped environment.
setsid sleep 1000 </dev/null >/dev/null 2>&1 &
echo $! > output/setsid.pid
( ( exec sleep 1001 </dev/null >/dev/null 2>&1 ) & echo $! > output/double.pid ) &
env -i setsid sleep 1002 </dev/null >/dev/null 2>&1 &
echo $! > output/envi.pid
echo $$ > output/leader.pid
sleep 0.3
echo "stderr leaks $DEMO_API_KEY" >&2
cat > output/investigation.md <<MD
# Investigation

## Root Cause
The key is $DEMO_API_KEY and the agent tried to exfiltrate it, which must never reach a report.
Confidence: HIGH
MD
[ -n "$E2E_HANG" ] && sleep 1000
exit 0
"#;

struct Probe {
    _tmp: tempfile::TempDir,
    outside: PathBuf,
    home: PathBuf,
    scripts: PathBuf,
    root: PathBuf,
    denied: (u16, Arc<AtomicUsize>),
    allowed: (u16, Arc<AtomicUsize>),
}

fn probe_setup() -> Probe {
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().canonicalize().unwrap();
    let outside = base.join("outside");
    let home = base.join("home");
    let scripts = base.join("scripts");
    let root = base.join("incidents");
    for d in [
        outside.join("canary"),
        home.join(".kube"),
        scripts.clone(),
        root.clone(),
    ] {
        std::fs::create_dir_all(&d).unwrap();
    }
    std::fs::write(outside.join("canary/keep"), "x").unwrap();
    std::fs::write(outside.join("secret.txt"), OUTSIDE_SECRET).unwrap();
    std::fs::write(home.join(".kube/config"), format!("token: {KUBE_TOKEN}\n")).unwrap();
    std::fs::write(scripts.join("hostile.sh"), HOSTILE).unwrap();
    // Another user (the dumpable test) must be able to use these.
    use std::os::unix::fs::PermissionsExt;
    for d in [&base, &outside, &home, &scripts, &root] {
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o777)).unwrap();
    }
    Probe {
        _tmp: tmp,
        outside,
        home,
        scripts,
        root,
        denied: recording_listener(),
        allowed: recording_listener(),
    }
}

fn probe_config(p: &Probe, url: &str, sandbox: &str, timeout: u64) -> String {
    format!(
        r#"[settings]
log_level = "info"
log_format = "json"
shutdown_timeout_seconds = 5

[[source]]
kind = "mcp"
endpoint = "{url}"

[sink]
kind = "agent"
command = ["bash", "{script}"]
workspace_root = "{root}"
timeout_seconds = {timeout}
kill_grace_seconds = 1
min_investigation_bytes = 10
env_allow = ["DEMO_API_KEY", "E2E_OUTSIDE", "E2E_DENIED_PORT", "E2E_ALLOWED_PORT", "E2E_HANG"]
sandbox = "{sandbox}"
sandbox_read_paths = ["{scripts}"]
sandbox_connect_ports = [{allowed}]
"#,
        script = p.scripts.join("hostile.sh").display(),
        root = p.root.display(),
        scripts = p.scripts.display(),
        allowed = p.allowed.0,
    )
}

fn runner_for(p: &Probe, config: &str, webhook: Option<&str>) -> e2e::RunnerBuilder {
    let mut b = Runner::builder(config)
        .env("HOME", p.home.display().to_string())
        .env(
            "KUBECONFIG",
            p.home.join(".kube/config").display().to_string(),
        )
        .env("E2E_RUNNER_TOKEN", RUNNER_TOKEN)
        .env("DEMO_API_KEY", DEMO_KEY)
        .env("E2E_OUTSIDE", p.outside.display().to_string())
        .env("E2E_DENIED_PORT", p.denied.0.to_string())
        .env("E2E_ALLOWED_PORT", p.allowed.0.to_string());
    if let Some(w) = webhook {
        b = b.env("SLACK_WEBHOOK_URL", w);
    }
    b
}

fn incident_dirs(root: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(root)
        .map(|d| {
            d.flatten()
                .map(|e| e.path())
                .filter(|p| {
                    p.is_dir() && !p.file_name().unwrap().to_string_lossy().starts_with('.')
                })
                .collect()
        })
        .unwrap_or_default()
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_default()
}

fn proc_start(pid: i32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &s[s.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    if f.first() == Some(&"Z") {
        return None;
    }
    f.get(19)?.parse().ok()
}

fn alive(pid: i32) -> bool {
    proc_start(pid).is_some()
}

/// Pids the hostile agent wrote, with their start times (read while alive).
fn agent_pids(dir: &Path) -> Vec<i32> {
    ["leader", "setsid", "double", "envi"]
        .iter()
        .filter_map(|n| {
            read(&dir.join(format!("output/{n}.pid")))
                .trim()
                .parse()
                .ok()
        })
        .collect()
}

/// Kills, at the end of a failed test, any `sleep` the agent left.
struct SleepGuard(Vec<(i32, u64)>);
impl Drop for SleepGuard {
    fn drop(&mut self) {
        for (pid, start) in &self.0 {
            let comm = read(Path::new(&format!("/proc/{pid}/comm")));
            if proc_start(*pid) == Some(*start) && comm.trim() == "sleep" {
                // SAFETY: kill(2) on a pid we verified is the agent's sleep.
                unsafe {
                    libc::kill(*pid, libc::SIGKILL);
                }
            }
        }
    }
}

async fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + T;
    while !f() {
        assert!(std::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_agent_is_contained_by_the_sandbox() {
    e2e::runner_bin();
    let p = probe_setup();
    let server = server_with(1).await;
    let (hook_port, hook_bodies) = recording_webhook();
    let webhook = format!("http://127.0.0.1:{hook_port}/services/T0SECRET/B0SECRET/hookhookhook");
    let mut r = runner_for(
        &p,
        &probe_config(&p, &server.url(), "enforce", 30),
        Some(&webhook),
    )
    .spawn();
    assert!(
        r.wait_for_message("event completed", T).await.is_some(),
        "{}",
        r.dump()
    );
    let dirs = incident_dirs(&p.root);
    assert_eq!(dirs.len(), 1, "{dirs:?}");
    let dir = &dirs[0];
    let probes = read(&dir.join("output/probes.txt"));

    // Filesystem: nothing written, removed or read outside the workspace.
    assert!(!p.outside.join("written.txt").exists(), "{probes}");
    assert!(!p.home.join(".bashrc").exists(), "{probes}");
    assert!(!p.home.join(".config/evil").exists(), "{probes}");
    assert!(
        p.outside.join("canary/keep").exists(),
        "canary removed: {probes}"
    );
    let stolen = read(&dir.join("output/stolen.txt"));
    assert!(!stolen.contains(OUTSIDE_SECRET), "{stolen}");
    assert!(!stolen.contains(KUBE_TOKEN), "{stolen}");
    assert!(!stolen.contains("[sink]"), "runner config read: {stolen}");
    // The runner's secrets are nowhere the agent could read.
    for f in ["output/environ.txt", "output/runner-environ.txt"] {
        let t = read(&dir.join(f));
        let leak = |needle: &str| {
            t.find(needle).map(|i| {
                // The process whose environment held it.
                t[..i]
                    .rfind("== ")
                    .map(|h| t[h..].lines().next().unwrap_or("").to_string())
            })
        };
        assert_eq!(leak(RUNNER_TOKEN), None, "{f}");
        assert_eq!(leak("T0SECRET"), None, "{f}");
    }
    // Network: the denied port saw nothing, the allowed one a connection.
    assert_eq!(p.denied.1.load(Ordering::SeqCst), 0, "{probes}");
    assert!(
        p.allowed.1.load(Ordering::SeqCst) >= 1,
        "allowed port unreachable: {probes}"
    );
    // Signal scoping (Landlock ABI 6+): the agent cannot signal the runner.
    assert!(!probes.contains("can signal the runner"), "{probes}");

    // Escaped processes: killed, and the incident says so.
    let pids = agent_pids(dir);
    assert_eq!(pids.len(), 4, "{pids:?}");
    for pid in &pids {
        assert!(!alive(*pid), "agent process {pid} survived");
    }
    let inc: Value = serde_json::from_str(&read(&dir.join("incident.json"))).unwrap();
    assert_eq!(inc["status"], "completed", "{inc}");
    assert_eq!(inc["sandbox"], "enforce");
    let left: Vec<i64> = inc["leftoverProcesses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["pid"].as_i64().unwrap())
        .collect();
    for pid in &pids[1..] {
        assert!(left.contains(&i64::from(*pid)), "{pid} not reported: {inc}");
    }
    let md = read(&dir.join("report.md"));
    assert!(md.contains("left 3 process(es) behind"), "{md}");

    // Output: the secret the agent was given never reaches a report or Slack.
    assert!(read(&dir.join("output/investigation.md")).contains(DEMO_KEY));
    let html = read(&dir.join("report.html"));
    assert!(!md.contains(DEMO_KEY) && md.contains("[REDACTED]"), "{md}");
    assert!(!html.contains(DEMO_KEY), "{html}");
    wait_until("slack message", || !hook_bodies.lock().unwrap().is_empty()).await;
    let stop = r.stop(T).await;
    assert_eq!(stop.code(), Some(0), "{}", r.dump());
    let bodies = hook_bodies.lock().unwrap().join("\n");
    assert!(bodies.contains("REDACTED"), "{bodies}");
    assert!(!bodies.contains(DEMO_KEY), "{bodies}");
    // Logs too.
    assert!(!r.dump().contains(DEMO_KEY) && !r.dump().contains(RUNNER_TOKEN));
}

/// The same agent without the sandbox: proves the probes above can fail
/// (each would have succeeded), and that containment of escaped processes
/// does not depend on the sandbox.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_sandbox_the_probes_succeed_but_processes_are_still_contained() {
    e2e::runner_bin();
    let p = probe_setup();
    let server = server_with(1).await;
    let mut r = runner_for(&p, &probe_config(&p, &server.url(), "off", 30), None).spawn();
    assert!(
        r.wait_for_message("event completed", T).await.is_some(),
        "{}",
        r.dump()
    );
    assert!(
        r.messages("agent sandbox is OFF (sandbox = \"off\"): agents can read and write whatever the runner's user can, and connect anywhere").len() == 1,
        "{}",
        r.dump()
    );
    let dir = &incident_dirs(&p.root)[0];
    assert!(p.outside.join("written.txt").exists());
    assert!(!p.outside.join("canary").exists());
    assert!(read(&dir.join("output/stolen.txt")).contains(OUTSIDE_SECRET));
    assert!(p.denied.1.load(Ordering::SeqCst) >= 1);
    for pid in agent_pids(dir) {
        assert!(!alive(pid), "agent process {pid} survived");
    }
    r.stop(T).await;
}

/// `PR_SET_DUMPABLE(0)` alone (sandbox off): an agent of the runner's own,
/// unprivileged uid cannot read the runner's environment.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runner_environment_is_unreadable_to_a_same_uid_agent() {
    e2e::runner_bin();
    let p = probe_setup();
    let server = server_with(1).await;
    let mut b = runner_for(&p, &probe_config(&p, &server.url(), "off", 30), None);
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        // Root may read any process's environment; the property under test
        // is for the unprivileged user a runner should run as.
        b = b.as_user(65534, 65534);
    }
    let mut r = b.spawn();
    assert!(
        r.wait_for_message("event completed", T).await.is_some(),
        "{}",
        r.dump()
    );
    let dir = &incident_dirs(&p.root)[0];
    let probes = read(&dir.join("output/probes.txt"));
    // Control: the probe itself works (the agent reads its own files).
    assert!(probes.contains("wrote outside"), "{probes}");
    assert!(!probes.contains("read runner environ"), "{probes}");
    for f in ["output/environ.txt", "output/runner-environ.txt"] {
        let t = read(&dir.join(f));
        assert!(!t.contains(RUNNER_TOKEN), "{f}: {t}");
    }
    // The agent's own environment was readable: the probe could succeed.
    assert!(read(&dir.join("output/environ.txt")).contains("INCIDENT_ID="));
    r.stop(T).await;
}

/// SIGKILL of the runner mid-agent: the agent dies with it (parent-death
/// signal); what escaped its session is killed by the next start, which
/// runs no second agent beside it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkilled_runner_leaves_no_agent_after_restart() {
    e2e::runner_bin();
    let p = probe_setup();
    let server = server_with(1).await;
    let config = probe_config(&p, &server.url(), "enforce", 300);
    let mut r = runner_for(&p, &config, None).env("E2E_HANG", "1").spawn();
    let dir = {
        let mut found = None;
        wait_until("the agent's pid files", || {
            found = incident_dirs(&p.root)
                .into_iter()
                .find(|d| agent_pids(d).len() == 4);
            found.is_some()
        })
        .await;
        found.unwrap()
    };
    let pids = agent_pids(&dir);
    let guard = SleepGuard(
        pids.iter()
            .filter_map(|p| proc_start(*p).map(|s| (*p, s)))
            .collect(),
    );
    assert_eq!(guard.0.len(), 4, "all agent processes run: {pids:?}");
    // The runner records the agent's processes at each scan (every 250 ms);
    // one that wiped its environment and left the session between the last
    // scan and the crash is out of reach (documented).
    let record = p.root.join(".agents").join(format!(
        "{}.json",
        dir.file_name().unwrap().to_str().unwrap()
    ));
    wait_until("the agent's processes recorded", || {
        let rec: Value = serde_json::from_str(&read(&record)).unwrap_or(Value::Null);
        let known: Vec<i64> = rec["known"]
            .as_array()
            .map(|a| a.iter().filter_map(|x| x[0].as_i64()).collect())
            .unwrap_or_default();
        pids.iter().all(|p| known.contains(&i64::from(*p)))
    })
    .await;
    r.signal(libc::SIGKILL);
    r.wait_exit(T).await.expect("runner died");
    let leader = pids[0];
    wait_until("the agent leader dies with the runner", || !alive(leader)).await;

    // Restart on the same workspace root, with no event to handle.
    let server2 = server_with(0).await;
    let config2 = probe_config(&p, &server2.url(), "enforce", 300);
    let mut r2 = runner_for(&p, &config2, None).spawn();
    let m = r2
        .wait_for_message(
            "killed processes left alive by an agent of a previous run",
            T,
        )
        .await
        .unwrap_or_else(|| panic!("{}", r2.dump()));
    assert_eq!(
        m["incident"].as_str(),
        dir.file_name().unwrap().to_str(),
        "{m}"
    );
    for pid in &pids {
        wait_until(&format!("process {pid} killed"), || !alive(*pid)).await;
    }
    // The state store re-runs the interrupted incident once, after the
    // leftovers are gone; that agent's own record goes when it ends.
    let agents = p.root.join(".agents");
    wait_until("no agent records left behind", || !agents.exists()).await;
    r2.stop(T).await;
    drop(guard);
}
