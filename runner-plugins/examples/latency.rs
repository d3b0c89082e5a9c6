//! End-to-end latency: from the MCP server sending a fault to the agent
//! process running its first line, with the runner's own phases.
//!
//! ```sh
//! cargo build --release -p runner-plugins --bins --example latency
//! target/release/examples/latency [EVENTS] [RATE] [LOAD] [SANDBOX] [DIR]
//! # e.g. latency 1200 20 0 off           (idle machine)
//! #      latency 1200 20 2 off           (2 busy-looping processes)
//! ```
//!
//! EVENTS faults (default 1,200) are sent one by one, RATE per second
//! (default 20), through the in-process test MCP server to the real
//! `runner` binary (next to this example in the target dir), each on a
//! cluster of its own with free agent capacity (up to 256 agents at once),
//! through a `severity` and a `dedup` stage. An agent slot stays taken for
//! the whole incident (agent exit, containment sweep, reports, fsyncs), so
//! a RATE far above what the machine finishes per second measures
//! queueing. LOAD (default 0) child processes spin in a loop meanwhile,
//! like `stress -c LOAD`. SANDBOX is the sink's `sandbox` (`off` by default;
//! `enforce` adds the Landlock policy to the spawn). DIR holds the workspaces
//! (default: a temp dir; pass a tmpfs or ext4 path to compare).
//!
//! Stamps, all on the realtime clock of one machine:
//! * `sent`: taken right before the server's `emit` of the notification;
//! * the runner's `timings` in each `incident.json` (arrival at the intake
//!   and every phase up to the spawn, see `docs/performance.md`);
//! * `started`: the agent (this binary run as `latency agent`) writes the
//!   clock into `output/started` as the first thing in `main`.
//!
//! Printed: p50 / p90 / p99 / max per phase over all events, and the total
//! from `sent` to `started`. The runner's log goes to DIR/runner.log.
//! `RUNNER_BIN=path` runs another runner build (phases it does not report
//! print as `-`; the end-to-end row is always measured).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mcp_testserver::{Scenario, TestServer, fault};
use serde_json::Value;

fn now_unix_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_micros() as u64
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("agent") => agent(),
        Some("spin") => {
            // Dies with the harness, whatever way it ends.
            unsafe {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0);
            }
            let parent = args.get(2).and_then(|p| p.parse::<i32>().ok());
            if parent != Some(unsafe { libc::getppid() }) {
                std::process::exit(0);
            }
            loop {
                std::hint::black_box(0u64);
            }
        }
        _ => {}
    }
    let num = |i: usize, d: u64| {
        args.get(i)
            .map(|s| s.parse::<u64>().expect("a number"))
            .unwrap_or(d)
    };
    let events = num(1, 1200);
    let rate = num(2, 20).max(1);
    let load = num(3, 0);
    let sandbox = args.get(4).cloned().unwrap_or_else(|| "off".into());
    let tmp;
    let dir = match args.get(5) {
        Some(d) => {
            let d = PathBuf::from(d).join(format!("latency-{}", std::process::id()));
            std::fs::create_dir_all(&d).expect("create DIR");
            d
        }
        None => {
            tmp = tempfile::tempdir().expect("temp dir");
            tmp.path().to_path_buf()
        }
    };
    let spinners: Vec<Child> = (0..load)
        .map(|_| {
            Command::new(std::env::current_exe().expect("own path"))
                .args(["spin", &std::process::id().to_string()])
                .spawn()
                .expect("start a busy loop")
        })
        .collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let result = rt.block_on(run(events, rate, &sandbox, &dir));
    for mut s in spinners {
        let _ = s.kill();
        let _ = s.wait();
    }
    match result {
        Ok(()) => {}
        Err(e) => {
            eprintln!("latency: {e}");
            std::process::exit(1);
        }
    }
}

/// The agent: stamp first, then exit.
fn agent() -> ! {
    let t = now_unix_us();
    let mut ok = std::fs::write("output/started", t.to_string()).is_ok();
    // A report, so that the incident completes like a real one.
    let report = "# Investigation\n\nLatency probe: nothing investigated.\n".repeat(40);
    ok &= std::fs::write("output/investigation.md", report).is_ok();
    std::process::exit(if ok { 0 } else { 1 });
}

struct Runner(Child);

impl Drop for Runner {
    fn drop(&mut self) {
        // SIGTERM first (graceful), then make sure it is gone.
        unsafe {
            libc::kill(self.0.id() as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn run(events: u64, rate: u64, sandbox: &str, dir: &Path) -> Result<(), String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    // RUNNER_BIN: another build of the runner (before/after comparisons).
    let runner = std::env::var_os("RUNNER_BIN")
        .map(PathBuf::from)
        .or_else(|| {
            exe.parent()
                .and_then(Path::parent)
                .map(|d| d.join("runner"))
        })
        .filter(|p| p.exists())
        .ok_or("the runner binary is not built next to this example (cargo build --bin runner)")?;
    let server = TestServer::start(Scenario::empty())
        .await
        .map_err(|e| e.to_string())?;
    let workspaces = dir.join("incidents");
    let config = format!(
        r#"[settings]
log_level = "warn"
log_format = "json"
intake_queue_size = 4096

[server]
listen = "off"

[[source]]
kind = "mcp"
name = "latency"
endpoint = "{url}"

[[stage]]
kind = "severity"
threshold = "ERROR"

[[stage]]
kind = "dedup"

[router]
max_concurrent_agents = 256
global_queue_size = 1000
cluster_queue_size = 10

[[sink]]
kind = "agent"
command = [{exe:?}, "agent"]
workspace_root = {ws:?}
sandbox = "{sandbox}"
"#,
        url = server.url(),
        exe = exe.display().to_string(),
        ws = workspaces.display().to_string(),
    );
    let cfg_path = dir.join("pipeline.toml");
    std::fs::write(&cfg_path, config).map_err(|e| e.to_string())?;
    let log = std::fs::File::create(dir.join("runner.log")).map_err(|e| e.to_string())?;
    let _runner = Runner(
        Command::new(&runner)
            .args(["run", "--config"])
            .arg(&cfg_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("start {}: {e}", runner.display()))?,
    );
    if !server
        .control()
        .wait_for_subscriber(1, Duration::from_secs(30))
        .await
    {
        return Err(format!(
            "the runner did not subscribe within 30 s; see {}",
            dir.join("runner.log").display()
        ));
    }
    // Payloads are built before the clock starts; only the emit is timed.
    let control = server.control();
    let mut sent: HashMap<String, u64> = HashMap::new();
    let period = Duration::from_micros(1_000_000 / rate);
    let mut next = tokio::time::Instant::now();
    let mut critical = 0u64;
    for i in 0..events {
        let mut p = fault(i);
        if p["severity"] != "critical" {
            // Every event should reach an agent: no `warning` ones.
            p["severity"] = "critical".into();
        }
        // A cluster of its own: no event waits for another's agent.
        p["cluster"] = format!("latency-{i}").into();
        let id = p["faultId"].as_str().expect("fault id").to_string();
        tokio::time::sleep_until(next).await;
        next += period;
        sent.insert(id, now_unix_us());
        control.emit(&p).await;
        critical += 1;
    }
    // Every agent writes its stamp; wait for all of them (with a deadline).
    let deadline = Instant::now() + Duration::from_secs(60 + events / 10);
    let rows = loop {
        let rows = collect(&workspaces, &sent);
        if rows.len() as u64 >= critical {
            break rows;
        }
        if Instant::now() > deadline {
            return Err(format!(
                "only {} of {critical} agents stamped their start; see {}",
                rows.len(),
                dir.join("runner.log").display()
            ));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    report(&rows);
    server.shutdown().await;
    Ok(())
}

/// One event's phases in microseconds, named as printed (`None`: a runner
/// without the `timings` object, e.g. an older build for a before/after).
type Row = Vec<(&'static str, Option<u64>)>;

/// Rows of every workspace whose agent has stamped.
fn collect(root: &Path, sent: &HashMap<String, u64>) -> Vec<Row> {
    let Ok(dirs) = std::fs::read_dir(root) else {
        return Vec::new();
    };
    let mut rows = Vec::new();
    for d in dirs.flatten() {
        let p = d.path();
        let Some(started) = std::fs::read_to_string(p.join("output/started"))
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
        else {
            continue;
        };
        let Some(doc) = std::fs::read(p.join("incident.json"))
            .ok()
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
        else {
            continue;
        };
        let t = &doc["timings"];
        let Some(fid) = doc["faultId"].as_str() else {
            continue;
        };
        let Some(&sent) = sent.get(fid) else { continue };
        let f = |k: &str| t[k].as_u64();
        let (spawned, spawn) = (f("spawnedUnixUs"), f("spawnUs"));
        rows.push(vec![
            (
                "server send -> intake (network, source)",
                f("receivedUnixUs").map(|r| r.saturating_sub(sent)),
            ),
            ("intake wait", f("intakeWaitUs")),
            ("parse + stages", f("stagesUs")),
            ("router queue", f("routerUs")),
            ("workspace creation", f("workspaceUs")),
            ("access + prompt", f("accessPromptUs")),
            ("inputs (serialize, write)", f("inputsUs")),
            ("prepare (budget, cmdline, sandbox)", f("prepareUs")),
            ("spawn call (until it returned)", f("spawnUs")),
            // The spawn call returns once the child has exec'd, often
            // after the agent's first line already ran: measured from the
            // call's start instead.
            (
                "spawn call -> agent main",
                spawned
                    .zip(spawn)
                    .map(|(end, d)| started.saturating_sub(end.saturating_sub(d))),
            ),
            ("runner total (intake -> spawned)", f("totalUs")),
            (
                "END TO END (send -> agent main)",
                Some(started.saturating_sub(sent)),
            ),
        ]);
    }
    rows
}

fn report(rows: &[Row]) {
    println!(
        "{} events; microseconds per phase (realtime clock; send and agent stamps outside the runner)",
        rows.len()
    );
    println!(
        "{:<42} {:>8} {:>8} {:>8} {:>8}",
        "phase", "p50", "p90", "p99", "max"
    );
    for (i, (name, _)) in rows[0].iter().enumerate() {
        let mut v: Vec<u64> = rows.iter().filter_map(|r| r[i].1).collect();
        if v.is_empty() {
            println!("{name:<42} {:>8}", "-");
            continue;
        }
        v.sort_unstable();
        let q = |p: f64| v[((v.len() as f64 - 1.0) * p).round() as usize];
        println!(
            "{:<42} {:>8} {:>8} {:>8} {:>8}",
            name,
            q(0.50),
            q(0.90),
            q(0.99),
            v[v.len() - 1]
        );
    }
}
