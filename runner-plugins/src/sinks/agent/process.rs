//! One agent subprocess in its own session: spawn (kernel sandbox applied
//! before exec, killed if the runner dies), wait with a timeout, terminate
//! everything it started (SIGTERM, then SIGKILL after a grace period), and
//! make sure nothing of it survives, not even processes that left its
//! session (see `contain`).

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::contain::{self, Proc, Tree};
use super::sandbox;

/// How often the agent's process tree is scanned while it runs, so that
/// processes that leave its session are known by identity.
const TRACK_EVERY: Duration = Duration::from_millis(250);
/// Upper bound for one kill sweep (a fork loop cannot hold the sink).
const SWEEP_WITHIN: Duration = Duration::from_secs(2);

/// Everything needed to start an agent.
#[derive(Debug, Clone)]
pub(crate) struct Launch {
    /// Program and arguments; never a shell string built from event data.
    pub argv: Vec<String>,
    pub cwd: PathBuf,
    /// The complete environment (the parent's is cleared).
    pub env: Vec<(String, String)>,
    pub stdout: PathBuf,
    pub stderr: PathBuf,
    /// Cap of each of the two logs; beyond it output is read and discarded
    /// (0: no cap, the agent writes the files itself).
    pub log_max_bytes: u64,
}

/// How the process ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Exit {
    Exited {
        code: Option<i32>,
        signal: Option<i32>,
    },
    /// The timeout fired; `forced` when SIGKILL was needed after the grace.
    TimedOut { forced: bool },
    /// The kill token fired (shutdown grace over); the group was SIGKILLed.
    Killed,
}

/// How the agent ended and what it left behind.
#[derive(Debug, Clone)]
pub(crate) struct Finished {
    pub exit: Exit,
    /// Processes of the agent still alive when the runner cleaned up
    /// (after the leader exited, after the grace, or at kill), leader
    /// excluded; all were SIGKILLed.
    pub leftovers: Vec<Proc>,
}

/// A running agent. Dropping it before it finished SIGKILLs all its
/// processes, so a panic or an aborted task cannot leave an agent behind.
pub(crate) struct Running {
    child: tokio::process::Child,
    pub pid: u32,
    pgid: i32,
    done: bool,
    label: String,
    tree: Tree,
    /// Threads writing the capped logs; joined before `wait` returns, so
    /// the report reads complete logs.
    copiers: Vec<std::thread::JoinHandle<()>>,
}

fn status_parts(st: ExitStatus) -> Exit {
    use std::os::unix::process::ExitStatusExt;
    Exit::Exited {
        code: st.code(),
        signal: st.signal(),
    }
}

/// Runs `f` on one long-lived thread. `PR_SET_PDEATHSIG` fires when the
/// *thread* that forked the child ends, and tokio ends idle threads, so
/// every agent is forked from this thread, which never ends.
fn on_spawner_thread<R: Send + 'static>(f: impl FnOnce() -> R + Send + 'static) -> R {
    type Job = Box<dyn FnOnce() + Send>;
    static TX: OnceLock<Mutex<mpsc::Sender<Job>>> = OnceLock::new();
    let tx = TX.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("agent-spawner".into())
            .spawn(move || {
                for job in rx {
                    job();
                }
            })
            .expect("spawn the agent-spawner thread");
        Mutex::new(tx)
    });
    let (rtx, rrx) = mpsc::sync_channel(1);
    tx.lock()
        .unwrap_or_else(|e| e.into_inner())
        .send(Box::new(move || {
            let _ = rtx.send(f());
        }))
        .expect("agent-spawner thread alive");
    rrx.recv().expect("agent-spawner thread answers")
}

/// Starts `l` as a session leader with stdin closed and output to files,
/// under the Landlock ruleset and socket filter `sandbox` when given, with SIGKILL as its
/// parent-death signal. `label` names the incident in logs; `records` is
/// where its process identities are kept for a restart after a crash.
pub(crate) fn spawn(
    l: &Launch,
    label: &str,
    sandbox: Option<sandbox::ChildRestrictions>,
    records: Option<&Path>,
) -> Result<Running, String> {
    let Some((prog, args)) = l.argv.split_first() else {
        return Err("empty command".into());
    };
    let create = |p: &PathBuf| {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(p)
    };
    let out: File = create(&l.stdout).map_err(|e| format!("create stdout log: {e}"))?;
    let err: File = create(&l.stderr).map_err(|e| format!("create stderr log: {e}"))?;
    let mut copiers = Vec::new();
    let (out, err): (Stdio, Stdio) = if l.log_max_bytes == 0 {
        (Stdio::from(out), Stdio::from(err))
    } else {
        // Through pipes: the runner writes the logs and stops at the cap,
        // so a chatty agent cannot fill the disk.
        let mut ends = Vec::new();
        for (file, what) in [(out, "stdout"), (err, "stderr")] {
            let (r, w) = std::io::pipe().map_err(|e| format!("{what} pipe: {e}"))?;
            copiers.push(capped_copy(r, file, l.log_max_bytes, what)?);
            ends.push(Stdio::from(w));
        }
        let err = ends.pop().expect("two pipes");
        (ends.pop().expect("two pipes"), err)
    };
    let mut cmd = tokio::process::Command::new(prog);
    cmd.args(args)
        .current_dir(&l.cwd)
        .env_clear()
        .envs(l.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err);
    let parent = std::process::id() as libc::pid_t;
    // The filter moves into the closure: the child reads it between fork
    // and exec.
    let (ruleset, filter) = match sandbox {
        Some(s) => (Some(s.ruleset), s.filter),
        None => (None, Vec::new()),
    };
    let fd = ruleset.as_ref().map_or(-1, |f| f.as_raw_fd());
    // SAFETY: the closure runs between fork and exec and makes only
    // async-signal-safe system calls; it allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            // Own session (and group): the timeout and shutdown reach the
            // agent and everything it started; no controlling terminal.
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The runner died before the line above: do not run orphaned.
            if libc::getppid() != parent {
                return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
            }
            if fd >= 0 {
                sandbox::restrict_in_child(fd, &filter)?;
            }
            Ok(())
        });
    }
    let handle = tokio::runtime::Handle::current();
    let spawned = on_spawner_thread(move || {
        let _rt = handle.enter();
        // Registered under the lock: a concurrent sweep never sees this
        // agent as somebody's orphan.
        contain::with_leaders(|leaders| {
            let child = cmd.spawn()?;
            if let Some(pid) = child.id() {
                leaders.insert(pid as i32);
            }
            Ok::<_, std::io::Error>(child)
        })
    });
    // The ruleset descriptor is close-on-exec; the parent's copy goes now.
    // (The parent's ends of the log pipes went with `cmd` on the spawner
    // thread: the copiers see EOF once every process of the agent is gone.)
    drop(ruleset);
    let child = spawned.map_err(|e| format!("spawn {prog:?}: {e}"))?;
    let pid = child.id().ok_or("agent exited before its pid was read")?;
    let tree = Tree::new(label, pid as i32, records);
    Ok(Running {
        child,
        pid,
        pgid: pid as i32,
        done: false,
        label: label.to_string(),
        tree,
        copiers,
    })
}

/// Copies an agent's output pipe into its log file up to `cap` bytes;
/// the rest is read (the agent never blocks on a full pipe) and discarded,
/// and the log ends with a line that says how much.
fn capped_copy(
    mut from: std::io::PipeReader,
    mut to: File,
    cap: u64,
    what: &'static str,
) -> Result<std::thread::JoinHandle<()>, String> {
    use std::io::{Read, Write};
    std::thread::Builder::new()
        .name(format!("agent-{what}"))
        .spawn(move || {
            let mut buf = vec![0u8; 64 * 1024];
            let (mut written, mut dropped) = (0u64, 0u64);
            loop {
                let n = match from.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(_) => break,
                };
                let keep = (cap.saturating_sub(written) as usize).min(n);
                if keep > 0 && to.write_all(&buf[..keep]).is_ok() {
                    written += keep as u64;
                }
                dropped += (n - keep) as u64;
            }
            if dropped > 0 {
                let _ = write!(
                    to,
                    "\n[event runner: {what} log capped at {cap} bytes; {dropped} more bytes discarded]\n"
                );
            }
        })
        .map_err(|e| format!("{what} copier thread: {e}"))
}

enum Stop {
    Timeout,
    Kill,
}

impl Running {
    /// Waits for the agent; on `timeout` terminates all its processes
    /// (SIGTERM, up to `grace` for them to end, then SIGKILL); on `kill`
    /// SIGKILLs at once. Returns only once the leader is reaped and no
    /// process of the agent is left.
    pub(crate) async fn wait(
        mut self,
        timeout: Duration,
        grace: Duration,
        kill: &CancellationToken,
    ) -> Finished {
        let copiers = std::mem::take(&mut self.copiers);
        let finished = self.wait_exit(timeout, grace, kill).await;
        // Every process of the agent is gone: the pipes are at EOF. Bounded
        // anyway: a descriptor passed to a process outside the agent's
        // tree must not hold the sink.
        let until = Instant::now() + Duration::from_secs(5);
        for c in copiers {
            while !c.is_finished() && Instant::now() < until {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            if c.is_finished() {
                let _ = c.join();
            }
        }
        finished
    }

    async fn wait_exit(
        &mut self,
        timeout: Duration,
        grace: Duration,
        kill: &CancellationToken,
    ) -> Finished {
        let deadline = Instant::now() + timeout;
        let mut tick = tokio::time::interval(TRACK_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let stop = loop {
            tokio::select! {
                st = self.child.wait() => {
                    self.reaped();
                    let exit = match st {
                        Ok(st) => status_parts(st),
                        Err(_) => Exit::Exited { code: None, signal: None },
                    };
                    let leftovers = self.sweep();
                    if !leftovers.is_empty() {
                        tracing::warn!(incident = %self.label, pgid = self.pgid, count = leftovers.len(), processes = %describe(&leftovers), "agent exited leaving processes behind; killed them (SIGKILL)");
                    }
                    return Finished { exit, leftovers };
                }
                _ = tokio::time::sleep_until(deadline) => break Stop::Timeout,
                _ = kill.cancelled() => break Stop::Kill,
                _ = tick.tick() => self.tree.track(),
            }
        };
        match stop {
            Stop::Kill => {
                let leftovers = self.sweep();
                tracing::warn!(incident = %self.label, pgid = self.pgid, count = leftovers.len(), "shutdown grace over: killed the agent and all its processes (SIGKILL)");
                let _ = self.child.wait().await;
                self.reaped();
                let leftovers = self.sweep_after(leftovers);
                Finished {
                    exit: Exit::Killed,
                    leftovers,
                }
            }
            Stop::Timeout => {
                let signalled = self.tree.signal(libc::SIGTERM);
                tracing::warn!(incident = %self.label, pgid = self.pgid, processes = signalled.len(), timeout_s = timeout.as_secs_f64(), "agent timed out: sent SIGTERM to all its processes");
                let grace_end = Instant::now() + grace;
                let mut killed_by_token = false;
                loop {
                    // Reap the leader so a zombie does not count as alive.
                    if let Ok(Some(_)) = self.child.try_wait() {
                        self.reaped();
                    }
                    if !self.any_alive() || Instant::now() >= grace_end {
                        break;
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_millis(50)) => {}
                        _ = kill.cancelled() => { killed_by_token = true; break; }
                    }
                }
                let forced = self.any_alive();
                let leftovers = self.sweep();
                if forced {
                    tracing::warn!(incident = %self.label, pgid = self.pgid, count = leftovers.len(), "agent still alive after grace: killed all its processes (SIGKILL)");
                }
                let _ = self.child.wait().await;
                self.reaped();
                let leftovers = self.sweep_after(leftovers);
                if killed_by_token {
                    Finished {
                        exit: Exit::Killed,
                        leftovers,
                    }
                } else {
                    Finished {
                        exit: Exit::TimedOut { forced },
                        leftovers,
                    }
                }
            }
        }
    }

    /// The leader was reaped: its pid may be reused from now on.
    fn reaped(&mut self) {
        self.done = true;
        let pid = self.pgid;
        contain::with_leaders(|l| l.remove(&pid));
    }

    fn any_alive(&self) -> bool {
        let table = contain::table();
        self.tree
            .members(&table, &contain::leaders())
            .iter()
            .any(|p| p.state != 'Z')
    }

    fn sweep(&mut self) -> Vec<Proc> {
        let v = self.tree.sweep(SWEEP_WITHIN);
        if self.done {
            self.tree.forget();
        }
        v
    }

    /// A last sweep after the leader is reaped; merges what it found.
    fn sweep_after(&mut self, mut first: Vec<Proc>) -> Vec<Proc> {
        for p in self.sweep() {
            if !first.iter().any(|q| q.pid == p.pid && q.start == p.start) {
                first.push(p);
            }
        }
        first
    }
}

/// `pid:name` list for logs and reports (names cleaned of control chars).
pub(crate) fn describe(ps: &[Proc]) -> String {
    ps.iter()
        .take(20)
        .map(|p| format!("{}:{}", p.pid, runner_core::text::clean_line(&p.comm, 32)))
        .collect::<Vec<_>>()
        .join(", ")
}

impl Drop for Running {
    fn drop(&mut self) {
        if !self.done {
            let left = self.tree.sweep(SWEEP_WITHIN);
            tracing::warn!(incident = %self.label, pgid = self.pgid, count = left.len(), "agent task ended early: killed the agent and all its processes (SIGKILL)");
            // The leader's zombie is reaped by tokio's orphan queue.
            let pid = self.pgid;
            contain::with_leaders(|l| l.remove(&pid));
        }
        self.tree.forget();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_log_stops_at_its_cap_and_says_how_much_was_discarded() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.log");
        let file = File::create(&path).unwrap();
        let (r, mut w) = std::io::pipe().unwrap();
        let copier = capped_copy(r, file, 4096, "stdout").unwrap();
        // More than a pipe buffer: the writer must never block on the cap.
        for _ in 0..100 {
            w.write_all(&[b'x'; 1000]).unwrap();
        }
        drop(w);
        copier.join().unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with(&"x".repeat(4096)), "{}", text.len());
        assert_eq!(text.matches('x').count(), 4096);
        assert!(
            text.ends_with(
                "[event runner: stdout log capped at 4096 bytes; 95904 more bytes discarded]\n"
            ),
            "{}",
            &text[4096..]
        );
    }
}
