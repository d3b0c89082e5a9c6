//! A temporary root shared by the runs of a restart test: the agents' log
//! (`logs/agents.log`, written by the test agent) and the state directory
//! (`state`), read back between and after the runs.

use std::path::PathBuf;

/// The root, removed when dropped.
pub struct Shared {
    _dir: tempfile::TempDir,
    /// Canonical path of the root.
    pub root: PathBuf,
}

impl Default for Shared {
    fn default() -> Shared {
        Shared::new()
    }
}

impl Shared {
    pub fn new() -> Shared {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        std::fs::create_dir_all(root.join("logs")).unwrap();
        Shared { _dir: dir, root }
    }
    pub fn log(&self) -> PathBuf {
        self.root.join("logs").join("agents.log")
    }
    pub fn lines(&self) -> Vec<String> {
        std::fs::read_to_string(self.log())
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }
    pub fn count(&self, what: &str) -> usize {
        self.lines().iter().filter(|l| l.starts_with(what)).count()
    }
    /// `(received, completed, pending)` committed to the state file.
    pub fn stored(&self) -> (u64, u64, u64) {
        let Ok(conn) =
            runner_plugins::state::sqlite::query::open_read_only(&self.root.join("state"))
        else {
            return (0, 0, 0);
        };
        let Ok((rows, pending)) = runner_plugins::state::sqlite::query::counters(&conn) else {
            return (0, 0, 0);
        };
        let get = |n: &str| rows.iter().find(|r| r.0 == n).map_or(0, |r| r.1);
        (get("received"), get("completed"), pending)
    }
    /// Group entries (ended incidents in their cooldown) committed.
    pub fn stored_groups(&self) -> usize {
        let Ok(conn) =
            runner_plugins::state::sqlite::query::open_read_only(&self.root.join("state"))
        else {
            return 0;
        };
        conn.query_row(
            "SELECT COUNT(*) FROM kv WHERE scope = 'stage.group'",
            [],
            |r| r.get::<_, i64>(0),
        )
        .map_or(0, |n| n as usize)
    }
}
