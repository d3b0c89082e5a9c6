//! One agent subprocess in its own process group: spawn, wait with a
//! timeout, terminate the whole group (SIGTERM, then SIGKILL after a grace
//! period), and make sure nothing of it survives.

use std::fs::File;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Everything needed to start an agent.
#[derive(Debug, Clone)]
pub struct Launch {
    /// Program and arguments; never a shell string built from event data.
    pub argv: Vec<String>,
    pub cwd: PathBuf,
    /// The complete environment (the parent's is cleared).
    pub env: Vec<(String, String)>,
    pub stdout: PathBuf,
    pub stderr: PathBuf,
}

/// How the process ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exit {
    Exited {
        code: Option<i32>,
        signal: Option<i32>,
    },
    /// The timeout fired; `forced` when SIGKILL was needed after the grace.
    TimedOut { forced: bool },
    /// The kill token fired (shutdown grace over); the group was SIGKILLed.
    Killed,
}

/// A running agent. Dropping it before it finished SIGKILLs its group, so a
/// panic or an aborted task cannot leave an agent behind.
pub struct Running {
    child: tokio::process::Child,
    pub pid: u32,
    pgid: i32,
    done: bool,
    label: String,
}

fn signal_group(pgid: i32, sig: libc::c_int) -> bool {
    // SAFETY: kill(2) has no memory-safety preconditions; a negative pid
    // addresses the process group we created with process_group(0).
    unsafe { libc::kill(-pgid, sig) == 0 }
}

/// True while any process (including zombies) is in the group.
fn group_alive(pgid: i32) -> bool {
    if signal_group(pgid, 0) {
        return true;
    }
    std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

fn status_parts(st: ExitStatus) -> Exit {
    use std::os::unix::process::ExitStatusExt;
    Exit::Exited {
        code: st.code(),
        signal: st.signal(),
    }
}

/// Starts `l` in a new process group with stdin closed and output to files.
/// `label` names the incident in logs.
pub fn spawn(l: &Launch, label: &str) -> Result<Running, String> {
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
    let mut cmd = tokio::process::Command::new(prog);
    cmd.args(args)
        .current_dir(&l.cwd)
        .env_clear()
        .envs(l.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::from(out))
        .stderr(Stdio::from(err))
        // Own group: the timeout and shutdown kill the agent and everything it started.
        .process_group(0);
    let child = cmd.spawn().map_err(|e| format!("spawn {prog:?}: {e}"))?;
    let pid = child.id().ok_or("agent exited before its pid was read")?;
    Ok(Running {
        child,
        pid,
        pgid: pid as i32,
        done: false,
        label: label.to_string(),
    })
}

enum Stop {
    Timeout,
    Kill,
}

impl Running {
    /// Waits for the agent; on `timeout` terminates the group (SIGTERM, up to
    /// `grace` for it to empty, then SIGKILL); on `kill` SIGKILLs at once.
    /// Returns only once the leader is reaped and the group signalled empty.
    pub async fn wait(
        mut self,
        timeout: Duration,
        grace: Duration,
        kill: &CancellationToken,
    ) -> Exit {
        let stop = tokio::select! {
            st = self.child.wait() => {
                self.done = true;
                let exit = match st {
                    Ok(st) => status_parts(st),
                    Err(_) => Exit::Exited { code: None, signal: None },
                };
                // The agent may have left background children in its group.
                // (The group id cannot be reused while any member lives.)
                if group_alive(self.pgid) && signal_group(self.pgid, libc::SIGKILL) {
                    tracing::warn!(incident = %self.label, pgid = self.pgid, "agent exited leaving processes behind; killed its process group (SIGKILL)");
                }
                return exit;
            }
            _ = tokio::time::sleep(timeout) => Stop::Timeout,
            _ = kill.cancelled() => Stop::Kill,
        };
        match stop {
            Stop::Kill => {
                signal_group(self.pgid, libc::SIGKILL);
                tracing::warn!(incident = %self.label, pgid = self.pgid, "shutdown grace over: killed agent process group (SIGKILL)");
                let _ = self.child.wait().await;
                self.done = true;
                Exit::Killed
            }
            Stop::Timeout => {
                signal_group(self.pgid, libc::SIGTERM);
                tracing::warn!(incident = %self.label, pgid = self.pgid, timeout_s = timeout.as_secs_f64(), "agent timed out: sent SIGTERM to its process group");
                let deadline = Instant::now() + grace;
                let mut killed_by_token = false;
                loop {
                    // Reap the leader so a zombie does not keep the group "alive".
                    let _ = self.child.try_wait();
                    if !group_alive(self.pgid) || Instant::now() >= deadline {
                        break;
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_millis(50)) => {}
                        _ = kill.cancelled() => { killed_by_token = true; break; }
                    }
                }
                let forced = group_alive(self.pgid) && signal_group(self.pgid, libc::SIGKILL);
                if forced {
                    tracing::warn!(incident = %self.label, pgid = self.pgid, "agent group still alive after grace: killed it (SIGKILL)");
                }
                let _ = self.child.wait().await;
                self.done = true;
                if killed_by_token {
                    Exit::Killed
                } else {
                    Exit::TimedOut { forced }
                }
            }
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if !self.done {
            signal_group(self.pgid, libc::SIGKILL);
            tracing::warn!(incident = %self.label, pgid = self.pgid, "agent task ended early: killed its process group (SIGKILL)");
        }
    }
}
