//! Incident workspaces: ids, directory layout, `incident.json` written
//! atomically, and the sanitizing of untrusted event text. Event strings
//! never name a path: the id is generated, every file name is a constant.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::Serialize;
use serde_json::Value;

use runner_core::Event;

/// Lifecycle of an incident, as written to `incident.json`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Status {
    Created,
    Running,
    Completed,
    Failed,
    TimedOut,
    Abandoned,
    /// Exited 0 with a report, but every kubectl call it made failed: the
    /// investigation holds no cluster data (counted as `failed`).
    NoClusterData,
    /// Not launched: the cluster's daily agent budget is used up.
    OverBudget,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ResourceDoc {
    pub api_version: String,
    pub kind: String,
    pub name: String,
    pub namespace: String,
    pub uid: String,
}

/// `incident.json`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct IncidentDoc {
    pub id: String,
    pub fault_id: Option<String>,
    pub cluster: String,
    pub namespace: String,
    pub resource: ResourceDoc,
    pub fault_type: String,
    pub severity: String,
    pub context: String,
    /// Detection time as sent by the server.
    pub timestamp: Option<String>,
    pub created_at: String,
    pub started_at: Option<String>,
    pub completed_at: Option<String>,
    pub status: Status,
    pub exit_code: Option<i32>,
    pub failure_reason: Option<String>,
    pub duration_ms: Option<u64>,
    /// `enforce` or `off`: whether the agent ran under the kernel sandbox.
    pub sandbox: Option<String>,
    /// Processes the agent left running (outside its control or after it
    /// exited) that the runner had to kill.
    pub leftover_processes: Vec<LeftoverProcess>,
    /// What the agent could reach of its cluster (see `cluster`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster_access: Option<String>,
    /// Tokens, cost, turns and kubectl results, when the CLI reports them.
    pub usage: Option<super::usage::Usage>,
    /// What the source said about the event while its agent ran (e.g. the
    /// alert resolved), in arrival order.
    pub notes: Vec<NoteDoc>,
    /// The events grouped into this incident (a `group` stage ran).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group: Option<super::group::GroupDoc>,
    /// Where the time went between the payload's arrival and the agent's
    /// spawn; written with the `running` state.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timings: Option<Timings>,
}

/// The event's path to its agent, phase by phase, in microseconds
/// (`docs/performance.md`, "Latency"). Phases follow each other: their sum
/// is `totalUs`. A phase the event did not pass through is absent.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Timings {
    /// Wall clock (µs since the Unix epoch) when the source handed the
    /// payload to the intake, and when the agent process was spawned: to
    /// line them up with clocks outside the runner.
    pub received_unix_us: u64,
    pub spawned_unix_us: u64,
    /// Waiting in the intake queue for the stage chain.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub intake_wait_us: Option<u64>,
    /// Parsing, validation and every stage.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stages_us: Option<u64>,
    /// From the last stage to the sink: the router's queues and dispatch
    /// (for an event recovered from the state store: from its recovery).
    pub router_us: u64,
    /// Creating the incident workspace.
    pub workspace_us: u64,
    /// An incident's `group_wait` (collecting the burst) and its bookkeeping.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group_us: Option<u64>,
    /// Cluster access and rendering the prompt.
    pub access_prompt_us: u64,
    /// Serializing and writing the agent's inputs (no fsync on this path).
    pub inputs_us: u64,
    /// Budget check, command line and environment, sandbox policy.
    pub prepare_us: u64,
    /// `fork`/`exec` of the agent (returns once the child has exec'd).
    pub spawn_us: u64,
    pub total_us: u64,
}

/// One note on a running incident.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct NoteDoc {
    /// RFC 3339, when the runner received it.
    pub time: String,
    /// The source's words (untrusted, cleaned of control characters).
    pub text: String,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct LeftoverProcess {
    pub pid: i32,
    /// The kernel's short name of the program (untrusted, cleaned).
    pub name: String,
}

impl IncidentDoc {
    pub(crate) fn new(id: &str, ev: &Event) -> Self {
        let r = &ev.resource;
        IncidentDoc {
            id: id.to_string(),
            fault_id: ev.fault_id.clone(),
            cluster: ev.cluster.clone(),
            namespace: r.namespace.clone(),
            resource: ResourceDoc {
                api_version: r.api_version.clone(),
                kind: r.kind.clone(),
                name: r.name.clone(),
                namespace: r.namespace.clone(),
                uid: r.uid.clone(),
            },
            fault_type: ev.fault_type.clone(),
            severity: ev.severity.to_string(),
            context: ev.context.clone(),
            timestamp: ev.timestamp.clone(),
            created_at: rfc3339_now(),
            started_at: None,
            completed_at: None,
            status: Status::Created,
            exit_code: None,
            failure_reason: None,
            duration_ms: None,
            sandbox: None,
            leftover_processes: Vec::new(),
            notes: Vec::new(),
            cluster_access: None,
            usage: None,
            group: None,
            timings: None,
        }
    }
}

/// Now, as UTC `2026-11-27T12:15:00.123Z`.
pub(crate) fn rfc3339_now() -> String {
    runner_core::date::rfc3339_millis(SystemTime::now())
}

/// Time-sortable id `20261127T121500Z-000042-9f3a1c2e`: wall time, the
/// event's intake sequence and randomness. Nothing from the event's text.
pub(crate) fn incident_id(t: SystemTime, seq: u64) -> String {
    let u = runner_core::date::Utc::of(t);
    let rnd: u32 = rand::random();
    format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}Z-{seq:06}-{rnd:08x}",
        u.year, u.month, u.day, u.hour, u.minute, u.second
    )
}

/// Paths of one workspace.
#[derive(Debug, Clone)]
pub(crate) struct Workspace {
    pub id: String,
    pub dir: PathBuf,
}

impl Workspace {
    /// Creates `root/<id>/` (0700) with `output/`, `logs/` and `tmp/`. The root is
    /// created if missing. A new id is drawn if the name is taken.
    pub(crate) fn create(root: &Path, seq: u64) -> std::io::Result<Workspace> {
        fs::create_dir_all(root)?;
        let root = root.canonicalize()?;
        let mut last = None;
        for _ in 0..8 {
            let id = incident_id(SystemTime::now(), seq);
            let dir = root.join(&id);
            match fs::DirBuilder::new().mode(0o700).create(&dir) {
                Ok(()) => {
                    // Explicit: the umask must not widen or narrow it.
                    use std::os::unix::fs::PermissionsExt;
                    fs::set_permissions(&dir, fs::Permissions::from_mode(0o700))?;
                    for sub in ["output", "logs", "tmp"] {
                        fs::DirBuilder::new().mode(0o700).create(dir.join(sub))?;
                    }
                    return Ok(Workspace { id, dir });
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| std::io::Error::other("no free incident id")))
    }

    pub(crate) fn event_file(&self) -> PathBuf {
        self.dir.join("event.json")
    }
    pub(crate) fn prompt_file(&self) -> PathBuf {
        self.dir.join("prompt.md")
    }
    pub(crate) fn incident_file(&self) -> PathBuf {
        self.dir.join("incident.json")
    }
    pub(crate) fn investigation(&self) -> PathBuf {
        self.dir.join("output").join("investigation.md")
    }
    pub(crate) fn stdout_log(&self) -> PathBuf {
        self.dir.join("logs").join("agent-stdout.log")
    }
    /// The agent's TMPDIR (the sandbox gives it no other writable temp).
    pub(crate) fn tmp_dir(&self) -> PathBuf {
        self.dir.join("tmp")
    }
    pub(crate) fn stderr_log(&self) -> PathBuf {
        self.dir.join("logs").join("agent-stderr.log")
    }
    pub(crate) fn report_md(&self) -> PathBuf {
        self.dir.join("report.md")
    }
    /// The private HOME of a preset agent (only the files its CLI needs).
    pub(crate) fn agent_home(&self) -> PathBuf {
        self.dir.join("home")
    }

    /// Creates the private HOME (0700) with `files` (0600) in it.
    pub(crate) fn write_home(&self, files: &[(&str, String)]) -> std::io::Result<PathBuf> {
        let home = self.agent_home();
        fs::DirBuilder::new().mode(0o700).create(&home)?;
        for (rel, content) in files {
            let path = home.join(rel);
            if let Some(parent) = path.parent() {
                fs::DirBuilder::new()
                    .mode(0o700)
                    .recursive(true)
                    .create(parent)?;
            }
            write_atomic(&path, content.as_bytes())?;
        }
        Ok(home)
    }

    /// Writes a file of the workspace (0600), replacing it atomically.
    pub(crate) fn write_atomic(&self, name: &str, bytes: &[u8]) -> std::io::Result<()> {
        write_atomic(&self.dir.join(name), bytes)
    }

    /// The files an agent reads at start, written without fsync (see
    /// [`write_unsynced`]); returns their paths for [`sync_files`].
    ///
    /// Only `incident.json` has readers besides the agent (the incidents
    /// page, group updates), so only it is replaced atomically. The others
    /// are new files of a workspace nobody else has written yet and the
    /// agent starts after they are complete: they are created in place
    /// (`O_EXCL`, never through a link), which saves a temp file and a
    /// rename each, metadata operations that cost ~0.3 ms apiece on a busy
    /// ext4 disk.
    pub(crate) fn write_inputs_unsynced(
        &self,
        files: &[(&str, &[u8])],
    ) -> std::io::Result<Vec<PathBuf>> {
        let mut written = Vec::with_capacity(files.len());
        for (name, bytes) in files {
            let path = self.dir.join(name);
            if *name == "incident.json" {
                write_unsynced(&path, bytes)?;
            } else {
                fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&path)?
                    .write_all(bytes)?;
            }
            written.push(path);
        }
        Ok(written)
    }

    /// `incident.json`: readers see the old or the new document, never half.
    pub(crate) fn write_incident(&self, doc: &IncidentDoc) -> std::io::Result<()> {
        let bytes = serde_json::to_vec_pretty(doc).map_err(std::io::Error::other)?;
        let _g = INCIDENT_FILE.lock().unwrap_or_else(|p| p.into_inner());
        self.write_atomic("incident.json", &bytes)
    }

    /// Changes part of `incident.json` in place (read, `f`, atomic write),
    /// never interleaved with [`write_incident`](Self::write_incident): a
    /// grouped incident's counts are updated while the sink owns the rest.
    pub(crate) fn update_incident(&self, f: impl FnOnce(&mut Value)) -> std::io::Result<()> {
        use std::io::Read;
        let _g = INCIDENT_FILE.lock().unwrap_or_else(|p| p.into_inner());
        let path = self.incident_file();
        // The agent can write its workspace: only a regular file, bounded.
        if !fs::symlink_metadata(&path)?.is_file() {
            return Err(std::io::Error::other("incident.json is not a regular file"));
        }
        let mut text = Vec::new();
        fs::File::open(&path)?
            .take(4 * 1024 * 1024)
            .read_to_end(&mut text)?;
        let mut v: Value = serde_json::from_slice(&text).map_err(std::io::Error::other)?;
        f(&mut v);
        let bytes = serde_json::to_vec_pretty(&v).map_err(std::io::Error::other)?;
        self.write_atomic("incident.json", &bytes)
    }
}

/// Serializes writes of `incident.json` files (rare: a few per incident).
static INCIDENT_FILE: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Temp file in the same directory, fsync, rename over the target.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    replace(path, bytes, true)
}

/// Like [`write_atomic`] (readers see the old or the new file, never half)
/// but without the fsync: for files the agent must see before it starts,
/// made durable by [`sync_files`] once it runs, so the fsyncs stay off the
/// spawn path.
pub(crate) fn write_unsynced(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    replace(path, bytes, false)
}

/// Flushes files written by [`write_unsynced`] to disk.
pub(crate) fn sync_files(paths: &[PathBuf]) -> std::io::Result<()> {
    for p in paths {
        fs::File::open(p)?.sync_all()?;
    }
    Ok(())
}

fn replace(path: &Path, bytes: &[u8], sync: bool) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = dir.join(format!(".{name}.tmp-{:08x}", rand::random::<u32>()));
    let res = (|| {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(bytes)?;
        if sync {
            f.sync_all()?;
        }
        fs::rename(&tmp, path)
    })();
    if res.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    res
}

#[cfg(test)]
mod tests {
    use super::*;
    use runner_core::date::rfc3339_millis as rfc3339;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn dates() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let t = UNIX_EPOCH + Duration::from_millis(1_795_781_700_123);
        assert_eq!(rfc3339(t), "2026-11-27T12:15:00.123Z");
        // Leap day.
        let t = UNIX_EPOCH + Duration::from_secs(951_782_400);
        assert_eq!(rfc3339(t), "2000-02-29T00:00:00.000Z");
        let id = incident_id(t, 42);
        assert!(id.starts_with("20000229T000000Z-000042-"), "{id}");
        assert_eq!(id.len(), "20000229T000000Z-000042-".len() + 8);
    }

    #[test]
    fn ids_sort_by_time() {
        let a = incident_id(UNIX_EPOCH + Duration::from_secs(1_000_000_000), 999_999);
        let b = incident_id(UNIX_EPOCH + Duration::from_secs(1_000_000_001), 1);
        assert!(a < b);
    }
}
