//! Shared end-to-end harness: build and spawn the real `runner` binary with
//! a temporary `pipeline.toml`, capture its stderr (JSON logs), wait for log
//! lines, signal it, and always kill it on drop.
//!
//! ```ignore
//! let mut r = e2e::Runner::builder(&config).env("MCP_TOKEN", "x").spawn();
//! r.wait_for_message("subscribed to MCP events", Duration::from_secs(10)).await.unwrap();
//! r.sigterm();
//! let status = r.wait_exit(Duration::from_secs(10)).await.unwrap();
//! let stats = r.final_stats().unwrap();
//! ```

pub mod kube_double;
pub mod model_server;
pub mod restart;
pub mod scene;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use serde_json::Value;

/// The workspace root (the parent of this crate).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// `target/<profile>` of the running test binary.
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    // target/<profile>/deps/<test-binary>
    exe.parent()
        .and_then(Path::parent)
        .expect("test binary lives in target/<profile>/deps")
        .to_path_buf()
}

/// Path of a binary of the `runner-plugins` package (`runner`,
/// `mcp-test-server`), built once per test process with the same cargo and
/// profile as the tests. `E2E_SKIP_BUILD=1` uses what is already built.
pub fn bin_path(name: &str) -> PathBuf {
    static BUILT: OnceLock<()> = OnceLock::new();
    let dir = profile_dir();
    BUILT.get_or_init(|| {
        if std::env::var_os("E2E_SKIP_BUILD").is_some() {
            return;
        }
        let mut cmd = Command::new(env!("CARGO"));
        cmd.args(["build", "-q", "-p", "runner-plugins", "--bins"])
            .current_dir(workspace_root());
        if dir.file_name().is_some_and(|n| n == "release") {
            cmd.arg("--release");
        }
        let status = cmd.status().expect("run cargo build");
        assert!(
            status.success(),
            "cargo build -p runner-plugins --bins failed"
        );
    });
    let p = dir.join(name);
    assert!(p.exists(), "{} not found after building", p.display());
    p
}

/// The `runner` binary.
pub fn runner_bin() -> PathBuf {
    bin_path("runner")
}

/// A free TCP port on 127.0.0.1 (bound and released; racy but fine for tests).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind 127.0.0.1:0")
}

/// A `[sink]` that finishes at once (no agent CLI needed). Events reaching
/// it end as `failed` (no investigation written); tests assert on intake
/// counters, not on agents.
pub fn quick_sink_toml(workspace: &Path) -> String {
    format!(
        "[sink]\nkind = \"agent\"\ncommand = [\"true\"]\nworkspace_root = {:?}\n",
        workspace.display().to_string()
    )
}

/// Spawns the runner; see [`Runner::builder`].
pub struct RunnerBuilder {
    config: String,
    args: Vec<String>,
    env: Vec<(String, String)>,
    subcommand: String,
    user: Option<(u32, u32)>,
    wrap: Vec<String>,
}

impl RunnerBuilder {
    /// Starts the runner through this command line (e.g. `unshare … sh -c
    /// '…; exec "$0" "$@"'`), which gets the runner's path and arguments
    /// after its own. The wrapper must `exec` the runner, so that the
    /// process id stays the runner's.
    pub fn wrap(mut self, argv: &[&str]) -> Self {
        self.wrap = argv.iter().map(|s| s.to_string()).collect();
        self
    }
    /// Extra command-line arguments after `--config <file>`.
    pub fn arg(mut self, a: impl Into<String>) -> Self {
        self.args.push(a.into());
        self
    }
    pub fn env(mut self, k: impl Into<String>, v: impl Into<String>) -> Self {
        self.env.push((k.into(), v.into()));
        self
    }
    /// Runs the runner as `uid`/`gid` (supplementary groups dropped); the
    /// run's temp dir is given to that user. Needs root.
    pub fn as_user(mut self, uid: u32, gid: u32) -> Self {
        self.user = Some((uid, gid));
        self
    }
    /// `run` by default.
    pub fn subcommand(mut self, s: impl Into<String>) -> Self {
        self.subcommand = s.into();
        self
    }

    pub fn spawn(self) -> Runner {
        let dir = tempfile::tempdir().expect("temp dir");
        // `{dir}` in the config stands for this run's temp dir.
        let config = self
            .config
            .replace("{dir}", &dir.path().display().to_string());
        let path = dir.path().join("pipeline.toml");
        std::fs::write(&path, config).expect("write pipeline.toml");
        let mut cmd = match self.wrap.split_first() {
            Some((prog, rest)) => {
                let mut c = Command::new(prog);
                c.args(rest).arg(runner_bin());
                c
            }
            None => Command::new(runner_bin()),
        };
        if let Some((uid, gid)) = self.user {
            use std::os::unix::process::CommandExt;
            for p in [dir.path(), path.as_path()] {
                std::os::unix::fs::chown(p, Some(uid), Some(gid)).expect("chown the run's dir");
            }
            cmd.uid(uid).gid(gid);
        }
        cmd.arg(&self.subcommand)
            .arg("--config")
            .arg(&path)
            .args(&self.args)
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // The caller's environment must not leak settings into the test.
        for s in runner_plugins::settings::SETTINGS {
            cmd.env_remove(s.env);
        }
        cmd.env_remove("RUST_LOG").env("LOG_FORMAT", "json");
        // Tests run in parallel: the admin server's fixed default port would
        // collide. Tests that want it set ADMIN_LISTEN (port 0) themselves.
        cmd.env("ADMIN_LISTEN", "off");
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn runner");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let mut readers = Vec::new();
        for out in [
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
        ]
        .into_iter()
        .flatten()
        {
            let l = lines.clone();
            readers.push(std::thread::spawn(move || {
                for line in BufReader::new(out).lines().map_while(Result::ok) {
                    if std::env::var_os("E2E_ECHO").is_some() {
                        eprintln!("runner| {line}");
                    }
                    l.lock().expect("lines lock").push(line);
                }
            }));
        }
        Runner {
            child,
            lines,
            dir,
            status: None,
            _readers: readers,
        }
    }
}

/// A running `runner` process. Killed (SIGKILL) on drop if still running.
pub struct Runner {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    dir: tempfile::TempDir,
    status: Option<ExitStatus>,
    _readers: Vec<std::thread::JoinHandle<()>>,
}

/// The `fields` of a tracing JSON line (message included), or the line,
/// with the fields of the line's `event` span (the event's identity: `seq`,
/// `cluster`, `fault_id`, …) added, as a reader of the log sees them.
fn fields(v: &Value) -> Value {
    let mut f = v.get("fields").unwrap_or(v).clone();
    let event = v.get("spans").and_then(Value::as_array).and_then(|spans| {
        spans
            .iter()
            .find(|s| s.get("name").and_then(Value::as_str) == Some("event"))
    });
    if let (Some(span), Some(obj)) = (event.and_then(Value::as_object), f.as_object_mut()) {
        for (k, val) in span.iter().filter(|(k, _)| *k != "name") {
            obj.entry(k.clone()).or_insert_with(|| val.clone());
        }
    }
    f
}

impl Runner {
    /// `runner run --config <tmp>/pipeline.toml` with `config` (where
    /// `{dir}` is replaced by the run's temp dir) and `LOG_FORMAT=json`.
    pub fn builder(config: &str) -> RunnerBuilder {
        RunnerBuilder {
            config: config.to_string(),
            args: Vec::new(),
            env: Vec::new(),
            subcommand: "run".into(),
            user: None,
            wrap: Vec::new(),
        }
    }

    pub fn start(config: &str) -> Runner {
        Self::builder(config).spawn()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The run's temp dir (holds pipeline.toml).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Every line printed so far (stderr and stdout, interleaved).
    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().expect("lines lock").clone()
    }

    /// Every line that parses as JSON.
    pub fn json_lines(&self) -> Vec<Value> {
        self.lines()
            .iter()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// JSON log records whose `fields.message` equals `message`, as their fields.
    pub fn messages(&self, message: &str) -> Vec<Value> {
        self.json_lines()
            .iter()
            .map(fields)
            .filter(|f| f.get("message").and_then(Value::as_str) == Some(message))
            .collect()
    }

    pub fn count(&self, message: &str) -> usize {
        self.messages(message).len()
    }

    /// Waits for a JSON record whose fields satisfy `pred`; returns its fields.
    pub async fn wait_for(
        &self,
        timeout: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Option<Value> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Some(v) = self.json_lines().iter().map(fields).find(|f| pred(f)) {
                return Some(v);
            }
            if std::time::Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn wait_for_message(&self, message: &str, timeout: Duration) -> Option<Value> {
        self.wait_for(timeout, |f| {
            f.get("message").and_then(Value::as_str) == Some(message)
        })
        .await
    }

    /// Waits until at least `n` records carry `message`.
    pub async fn wait_for_count(&self, message: &str, n: usize, timeout: Duration) -> bool {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if self.count(message) >= n {
                return true;
            }
            if std::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits for any raw line containing `needle`.
    pub async fn wait_for_text(&self, needle: &str, timeout: Duration) -> Option<String> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Some(l) = self.lines().into_iter().find(|l| l.contains(needle)) {
                return Some(l);
            }
            if std::time::Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child's pid has no memory effects.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, sig);
        }
    }

    pub fn sigterm(&self) {
        self.signal(libc::SIGTERM);
    }

    pub fn try_status(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().ok().flatten();
        }
        self.status
    }

    /// Waits for the process to exit; `None` on timeout (still running).
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Some(s) = self.try_status() {
                // Let the reader threads drain the pipes.
                for _ in 0..50 {
                    if self._readers.iter().all(|r| r.is_finished()) {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                return Some(s);
            }
            if std::time::Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGTERM, then wait; SIGKILL if it does not exit within `timeout`.
    pub async fn stop(&mut self, timeout: Duration) -> ExitStatus {
        self.sigterm();
        if let Some(s) = self.wait_exit(timeout).await {
            return s;
        }
        let _ = self.child.kill();
        let s = self.child.wait().expect("wait runner");
        self.status = Some(s);
        s
    }

    /// Fields of the `final statistics` record (after exit).
    pub fn final_stats(&self) -> Option<Value> {
        self.messages("final statistics").pop()
    }

    /// Dumps the captured output (for assertion messages).
    pub fn dump(&self) -> String {
        let lines = self.lines();
        let start = lines.len().saturating_sub(200);
        lines[start..].join("\n")
    }
}

impl Drop for Runner {
    fn drop(&mut self) {
        if self.try_status().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A numeric field of a record.
pub fn num(v: &Value, key: &str) -> u64 {
    v.get(key)
        .and_then(Value::as_u64)
        .unwrap_or_else(|| panic!("no numeric {key} in {v}"))
}
