//! Containment of every process an agent starts, including those that leave
//! its session (`setsid`) or double-fork, and of agents left behind by a
//! runner that was SIGKILLed.
//!
//! An agent is a session leader. Its processes are found in `/proc` by:
//! descent from the leader; its session or process group; the
//! `INCIDENT_ID=<id>` marker in their initial environment; identities
//! (pid + start time) seen in earlier scans; orphans re-parented to the
//! runner (a child subreaper) that are outside the runner's session and not
//! another live agent; and the descendants of all of these. Identity is
//! always pid *and* start time, so a recycled pid is never mistaken for an
//! agent's process.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// One line of `/proc/<pid>/stat`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Proc {
    pub pid: i32,
    pub ppid: i32,
    pub pgid: i32,
    pub sid: i32,
    /// Start time in clock ticks since boot: with the pid, an identity.
    pub start: u64,
    pub state: char,
    pub comm: String,
}

pub(crate) fn parse_stat(s: &str) -> Option<Proc> {
    let open = s.find('(')?;
    let close = s.rfind(')')?;
    let pid = s[..open].trim().parse().ok()?;
    let comm = s[open + 1..close].to_string();
    let f: Vec<&str> = s[close + 1..].split_whitespace().collect();
    // After the name: state(0) ppid(1) pgrp(2) session(3) ... starttime(19).
    Some(Proc {
        pid,
        state: f.first()?.chars().next()?,
        ppid: f.get(1)?.parse().ok()?,
        pgid: f.get(2)?.parse().ok()?,
        sid: f.get(3)?.parse().ok()?,
        start: f.get(19)?.parse().ok()?,
        comm,
    })
}

pub(crate) fn stat(pid: i32) -> Option<Proc> {
    parse_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// Every process on the host (threads are not listed in `/proc`).
pub(crate) fn table() -> Vec<Proc> {
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    rd.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(stat)
        .collect()
}

/// True when the initial environment of `pid` holds exactly `entry`.
fn environ_has(pid: i32, entry: &[u8]) -> bool {
    std::fs::read(format!("/proc/{pid}/environ"))
        .map(|e| e.split(|b| *b == 0).any(|v| v == entry))
        .unwrap_or(false)
}

pub(crate) fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

fn self_pid() -> i32 {
    std::process::id() as i32
}

fn self_sid() -> i32 {
    // SAFETY: getsid(0) reads the caller's session id.
    unsafe { libc::getsid(0) }
}

/// Pids of agent leaders this process started and has not reaped. Held
/// during a spawn and during an orphan sweep, so a sweep never takes a
/// just-forked agent of another incident for an orphan.
static LIVE_LEADERS: Mutex<BTreeSet<i32>> = Mutex::new(BTreeSet::new());

pub(crate) fn with_leaders<R>(f: impl FnOnce(&mut BTreeSet<i32>) -> R) -> R {
    let mut g = LIVE_LEADERS.lock().unwrap_or_else(|e| e.into_inner());
    f(&mut g)
}

/// The live leaders, copied. Taken *after* reading the process table, the
/// copy holds every leader in that table: a leader appears in the table
/// only once forked, forking happens under the lock together with the
/// insert (`process::spawn`), so the copy waits for a spawn in progress.
/// The scan itself (a few ms) stays outside the lock, off the spawns' path.
pub(crate) fn leaders() -> BTreeSet<i32> {
    with_leaders(|l| l.clone())
}

/// Descendants (by parent pid) of `seeds`, seeds included.
fn closure(table: &[Proc], seeds: HashSet<i32>) -> Vec<Proc> {
    let mut children: HashMap<i32, Vec<i32>> = HashMap::new();
    for p in table {
        children.entry(p.ppid).or_default().push(p.pid);
    }
    let mut all = seeds.clone();
    let mut stack: Vec<i32> = seeds.into_iter().collect();
    while let Some(pid) = stack.pop() {
        for c in children.get(&pid).into_iter().flatten() {
            if all.insert(*c) {
                stack.push(*c);
            }
        }
    }
    let me = self_pid();
    table
        .iter()
        .filter(|p| all.contains(&p.pid) && p.pid != me)
        .cloned()
        .collect()
}

/// The processes of one agent, tracked while it runs.
#[derive(Debug)]
pub(crate) struct Tree {
    pub incident: String,
    pub leader: i32,
    pub leader_start: u64,
    /// (pid, start) of every process seen in the tree.
    pub known: HashSet<(i32, u64)>,
    /// Where the identities are persisted for a restart (see [`Record`]).
    record: Option<PathBuf>,
}

/// The on-disk form, `<workspace root>/.agents/<incident>.json`.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Record {
    pub boot_id: String,
    pub runner_pid: i32,
    pub runner_start: u64,
    pub incident: String,
    pub leader: i32,
    pub leader_start: u64,
    pub known: Vec<(i32, u64)>,
}

pub(crate) fn records_dir(workspace_root: &Path) -> PathBuf {
    workspace_root.join(".agents")
}

impl Tree {
    /// Starts tracking the agent `leader` (already a session leader).
    pub(crate) fn new(incident: &str, leader: i32, records: Option<&Path>) -> Tree {
        let leader_start = stat(leader).map(|p| p.start).unwrap_or(0);
        let t = Tree {
            incident: incident.to_string(),
            leader,
            leader_start,
            known: HashSet::from([(leader, leader_start)]),
            record: records.map(|d| d.join(format!("{incident}.json"))),
        };
        t.persist();
        t
    }

    fn persist(&self) {
        let Some(path) = &self.record else { return };
        let rec = Record {
            boot_id: boot_id(),
            runner_pid: self_pid(),
            runner_start: stat(self_pid()).map(|p| p.start).unwrap_or(0),
            incident: self.incident.clone(),
            leader: self.leader,
            leader_start: self.leader_start,
            known: self.known.iter().copied().collect(),
        };
        let write = || -> std::io::Result<()> {
            if let Some(dir) = path.parent() {
                use std::os::unix::fs::DirBuilderExt;
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(dir)?;
            }
            let bytes = serde_json::to_vec(&rec).map_err(std::io::Error::other)?;
            super::workspace::write_atomic(path, &bytes)
        };
        // Retried once: a concurrent `forget` may remove the empty directory
        // between its creation and the write.
        if let Err(e) = write().or_else(|_| write()) {
            tracing::warn!(incident = %self.incident, error = %e, path = %path.display(), "cannot record agent processes (a restart after a crash may not find them)");
        }
    }

    /// The agent's processes now (leader included while it exists).
    pub(crate) fn members(&self, table: &[Proc], leaders: &BTreeSet<i32>) -> Vec<Proc> {
        let marker = format!("INCIDENT_ID={}", self.incident).into_bytes();
        let (me, my_sid) = (self_pid(), self_sid());
        // SAFETY: getuid has no preconditions.
        let uid = unsafe { libc::getuid() };
        let session_alive = table
            .iter()
            .any(|p| p.pid == self.leader && p.start == self.leader_start)
            || table.iter().any(|p| self.known.contains(&(p.pid, p.start)));
        let seeds: HashSet<i32> = table
            .iter()
            .filter(|p| p.pid != me)
            .filter(|p| {
                self.known.contains(&(p.pid, p.start))
                    // The session and group id stay pinned to the leader's
                    // pid while any member lives; a new process with them
                    // after that would be a reused pid, hence the guard.
                    || (session_alive
                        && (p.sid == self.leader || p.pgid == self.leader)
                        && p.start >= self.leader_start)
                    || (p.ppid == me && p.sid != my_sid && !leaders.contains(&p.pid))
                    || (owned_by(p.pid, uid) && environ_has(p.pid, &marker))
            })
            .map(|p| p.pid)
            .collect();
        closure(table, seeds)
    }

    /// Adds the current members to the known identities.
    pub(crate) fn track(&mut self) {
        let table = table();
        let members = self.members(&table, &leaders());
        let before = self.known.len();
        self.known.extend(members.iter().map(|p| (p.pid, p.start)));
        if self.known.len() != before {
            self.persist();
        }
    }

    /// Sends `sig` to every member. Returns those signalled.
    pub(crate) fn signal(&mut self, sig: libc::c_int) -> Vec<Proc> {
        let table = table();
        let m = self.members(&table, &leaders());
        self.known.extend(m.iter().map(|p| (p.pid, p.start)));
        for p in &m {
            kill_exact(p, sig);
        }
        m
    }

    /// SIGKILLs every member until a scan finds none alive (or `within`
    /// passes), reaping the orphans re-parented to the runner. The leader
    /// is not reaped here: its `Child` owner does that. Returns the
    /// processes that were alive (not zombies) and killed, leader excluded.
    pub(crate) fn sweep(&mut self, within: Duration) -> Vec<Proc> {
        let deadline = Instant::now() + within;
        let mut killed: HashMap<(i32, u64), Proc> = HashMap::new();
        loop {
            let m = self.signal_kill_round();
            let alive: Vec<&Proc> = m.iter().filter(|p| p.state != 'Z').collect();
            for p in &alive {
                if p.pid != self.leader {
                    killed.insert((p.pid, p.start), (*p).clone());
                }
            }
            reap_orphans(&m, self.leader);
            if alive.is_empty() || Instant::now() >= deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let mut v: Vec<Proc> = killed.into_values().collect();
        v.sort_by_key(|p| p.pid);
        v
    }

    fn signal_kill_round(&mut self) -> Vec<Proc> {
        self.signal(libc::SIGKILL)
    }

    /// Removes the on-disk record (the agent is fully gone), and the
    /// records directory once empty, so an idle root holds only incidents.
    pub(crate) fn forget(&self) {
        if let Some(p) = &self.record {
            let _ = std::fs::remove_file(p);
            if let Some(dir) = p.parent() {
                let _ = std::fs::remove_dir(dir);
            }
        }
    }
}

fn owned_by(pid: i32, uid: libc::uid_t) -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(format!("/proc/{pid}"))
        .map(|m| m.uid() == uid)
        .unwrap_or(false)
}

/// Signals `p` only if its pid still names the same process.
fn kill_exact(p: &Proc, sig: libc::c_int) {
    if stat(p.pid).is_some_and(|now| now.start == p.start) {
        // SAFETY: kill(2) has no memory-safety preconditions.
        unsafe {
            libc::kill(p.pid, sig);
        }
    }
}

/// Reaps zombies among `m` that are the runner's children by re-parenting.
fn reap_orphans(m: &[Proc], leader: i32) {
    let me = self_pid();
    for p in m {
        if p.ppid == me && p.pid != leader {
            let mut st = 0;
            // SAFETY: waitpid on a specific pid with WNOHANG; `st` is ours.
            unsafe {
                libc::waitpid(p.pid, &mut st, libc::WNOHANG);
            }
        }
    }
}

/// Kills what agents of an earlier run (same boot, a runner that is gone)
/// left alive, from the records under `workspace_root`. Returns, per
/// incident, the processes killed. Only exact identities, the incident's
/// marker and their descendants are touched.
pub(crate) fn kill_leftovers(workspace_root: &Path) -> Vec<(String, Vec<Proc>)> {
    let dir = records_dir(workspace_root);
    let Ok(rd) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let boot = boot_id();
    let mut out = Vec::new();
    for e in rd.flatten() {
        let path = e.path();
        let Some(rec) = std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice::<Record>(&b).ok())
        else {
            let _ = std::fs::remove_file(&path);
            continue;
        };
        // Another runner, alive, with the same workspace root owns it.
        let owner_alive = rec.boot_id == boot
            && rec.runner_pid != self_pid()
            && stat(rec.runner_pid).is_some_and(|p| p.start == rec.runner_start && p.state != 'Z');
        if owner_alive {
            continue;
        }
        if rec.boot_id == boot {
            let mut t = Tree {
                incident: rec.incident.clone(),
                leader: rec.leader,
                leader_start: rec.leader_start,
                known: rec.known.iter().copied().collect(),
                record: None,
            };
            // Orphans of *this* runner are never the old run's: exclude
            // that rule by pretending every child is a live leader.
            let killed = t.sweep_foreign(Duration::from_secs(2));
            if !killed.is_empty() {
                out.push((rec.incident.clone(), killed));
            }
        }
        let _ = std::fs::remove_file(&path);
    }
    let _ = std::fs::remove_dir(&dir);
    out
}

impl Tree {
    /// Like [`sweep`](Self::sweep) for a tree that is not ours: the orphan
    /// rule (children of this runner) does not apply, and nothing is reaped
    /// by pid unless it is our child.
    fn sweep_foreign(&mut self, within: Duration) -> Vec<Proc> {
        let deadline = Instant::now() + within;
        let mut killed: HashMap<(i32, u64), Proc> = HashMap::new();
        let me = self_pid();
        loop {
            let table = table();
            // Every child of ours counts as a "live leader", which turns the
            // orphan rule off.
            let ours: BTreeSet<i32> = table
                .iter()
                .filter(|p| p.ppid == me)
                .map(|p| p.pid)
                .collect();
            let m = self.members(&table, &ours);
            self.known.extend(m.iter().map(|p| (p.pid, p.start)));
            let alive: Vec<&Proc> = m.iter().filter(|p| p.state != 'Z').collect();
            for p in &alive {
                kill_exact(p, libc::SIGKILL);
                killed.insert((p.pid, p.start), (*p).clone());
            }
            if alive.is_empty() || Instant::now() >= deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        killed.into_values().collect()
    }
}

/// Marks the runner as a child subreaper (orphans of its agents come back
/// to it instead of init) and non-dumpable (a same-uid agent can neither
/// ptrace it nor read `/proc/<runner>/environ` or its memory).
pub(crate) fn harden_runner_process() -> Vec<String> {
    let mut errs = Vec::new();
    // SAFETY: prctl with integer arguments.
    unsafe {
        if libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) != 0 {
            errs.push(format!(
                "PR_SET_DUMPABLE: {}",
                std::io::Error::last_os_error()
            ));
        }
        if libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0 {
            errs.push(format!(
                "PR_SET_CHILD_SUBREAPER: {}",
                std::io::Error::last_os_error()
            ));
        }
    }
    errs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_parses_names_with_spaces_and_parens() {
        let s =
            "1234 (a (b) c) S 1 1234 1234 0 -1 4194560 100 0 0 0 0 0 0 0 20 0 1 0 987654 1000 100";
        let p = parse_stat(s).unwrap();
        assert_eq!(p.pid, 1234);
        assert_eq!(p.comm, "a (b) c");
        assert_eq!((p.ppid, p.pgid, p.sid), (1, 1234, 1234));
        assert_eq!(p.state, 'S');
        assert_eq!(p.start, 987654);
        let me = stat(std::process::id() as i32).unwrap();
        assert_eq!(me.pid, std::process::id() as i32);
        assert!(me.start > 0);
    }

    #[test]
    fn a_recorded_identity_with_another_start_time_is_not_matched() {
        // Our own process under its real pid but a different start time.
        let me = stat(std::process::id() as i32).unwrap();
        let parent = stat(me.ppid).unwrap();
        let t = Tree {
            incident: "no-such-incident".into(),
            leader: parent.pid,
            leader_start: parent.start + 1,
            known: HashSet::from([(parent.pid, parent.start + 1)]),
            record: None,
        };
        let table = table();
        let m = t.members(&table, &BTreeSet::new());
        assert!(!m.iter().any(|p| p.pid == parent.pid), "{m:?}");
    }
}
