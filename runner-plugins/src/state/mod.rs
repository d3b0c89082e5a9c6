//! The runner's durable state (`STATE_DIR`): settings, and the SQLite
//! implementation of `runner_core::state::StateStore`.

pub mod sqlite;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use runner_core::config::TableReader;
use runner_core::pipeline::DurableState;
use runner_core::state::{JOURNAL_CAPACITY, Journal, StateStore};

use crate::settings::{STATE_DIR, STATE_HISTORY_DAYS, STATE_RERUN_INTERRUPTED};

/// `STATE_DIR`'s default: `state` next to the workspace root (same volume
/// as the workspaces whose history it keeps, but not among them: the root
/// holds only incident directories).
pub(crate) const DEFAULT_DIR: &str = "<WORKSPACE_ROOT>/../state";
const ROOT_MARKER: &str = "<WORKSPACE_ROOT>";
/// Upper bound of `rerun_interrupted`: an agent that keeps getting killed
/// is not helped by a tenth attempt.
pub(crate) const MAX_RERUNS: u32 = 10;
/// Upper bound of `state_history_days` (ten years).
pub(crate) const MAX_HISTORY_DAYS: u64 = 3650;

/// `[settings]` keys of the state store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StateSettings {
    /// As configured (`off`, a path, or a path under `<WORKSPACE_ROOT>`).
    pub dir: String,
    pub rerun_interrupted: u32,
    pub history_days: u64,
}

impl Default for StateSettings {
    fn default() -> Self {
        StateSettings {
            dir: DEFAULT_DIR.into(),
            rerun_interrupted: 1,
            history_days: 90,
        }
    }
}

impl StateSettings {
    pub(crate) fn read(r: &mut TableReader<'_>) -> StateSettings {
        let dir: String = r.setting(&STATE_DIR);
        if dir.trim().is_empty() {
            r.error(
                "state_dir",
                "\"\"",
                format!("a directory path, {DEFAULT_DIR} (default) or off"),
            );
        } else if dir != "off" && !dir.contains(ROOT_MARKER) {
            let p = Path::new(&dir);
            if p.exists() && !p.is_dir() {
                r.error(
                    "state_dir",
                    format!("{dir:?}"),
                    "a directory (this is a file), or off",
                );
            }
        }
        let rerun_interrupted: u32 =
            r.setting_in(&STATE_RERUN_INTERRUPTED, 0..=MAX_RERUNS, "re-runs");
        let history_days: u64 = r.setting_in(&STATE_HISTORY_DAYS, 1..=MAX_HISTORY_DAYS, "days");
        StateSettings {
            dir,
            rerun_interrupted,
            history_days,
        }
    }

    /// The directory, or `None` when the store is off. `workspace_root`
    /// replaces `<WORKSPACE_ROOT>` (`./incidents` without an agent sink).
    pub(crate) fn resolve(&self, workspace_root: Option<&Path>) -> Option<PathBuf> {
        if self.dir == "off" {
            return None;
        }
        if let Some(rest) = self.dir.strip_prefix(ROOT_MARKER) {
            let mut base = workspace_root
                .unwrap_or(Path::new("./incidents"))
                .to_path_buf();
            let mut rest = rest.trim_start_matches('/');
            // `..` lexically, so a root that does not exist yet works too.
            while let Some(r) = rest.strip_prefix("..") {
                base = match base.parent() {
                    Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
                    _ => PathBuf::from("."),
                };
                rest = r.trim_start_matches('/');
            }
            return Some(if rest.is_empty() {
                base
            } else {
                base.join(rest)
            });
        }
        Some(PathBuf::from(&self.dir))
    }

    #[cfg(test)]
    fn with_dir(dir: &str) -> StateSettings {
        StateSettings {
            dir: dir.into(),
            ..StateSettings::default()
        }
    }

    pub(crate) fn history(&self) -> Duration {
        Duration::from_secs(self.history_days * 86_400)
    }
}

/// Opens the store in `dir` and reads what previous runs left. Every error
/// says what is wrong with which file; nothing is reset or repaired.
pub(crate) fn open(dir: &Path, settings: &StateSettings) -> Result<DurableState, String> {
    // Every startup error names the setting, so the operator knows what
    // to fix; a full disk gets its own hint.
    let named = |e: runner_core::state::StateError| {
        let full = e.0.contains("disk is full") || e.0.contains("No space left");
        format!(
            "STATE_DIR {}: {}{}",
            dir.display(),
            e.0,
            if full {
                " (no space left on the device of STATE_DIR: free space there, or point STATE_DIR at another volume; nothing was reset)"
            } else {
                ""
            }
        )
    };
    let mut store = sqlite::SqliteStore::open(dir, settings.history()).map_err(named)?;
    let recovered = store.recover().map_err(named)?;
    // Upkeep once at startup: expired keys never reach the stages.
    store.maintain();
    Ok(DurableState {
        store: Box::new(store),
        recovered,
        rerun_interrupted: settings.rerun_interrupted,
        journal: Journal::new(JOURNAL_CAPACITY),
    })
}

/// The journal of an opened store, for components that record into it
/// outside the event path (workspace retention).
pub(crate) fn journal(ds: &DurableState) -> Arc<Journal> {
    ds.journal.clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_dir_is_next_to_the_workspace_root() {
        let d = StateSettings::default();
        assert_eq!(
            d.resolve(Some(Path::new("/var/lib/event-runner/incidents"))),
            Some(PathBuf::from("/var/lib/event-runner/state"))
        );
        assert_eq!(
            d.resolve(Some(Path::new("incidents"))),
            Some(PathBuf::from("./state"))
        );
        assert_eq!(d.resolve(None), Some(PathBuf::from("./state")));
        assert_eq!(StateSettings::with_dir("off").resolve(None), None);
        assert_eq!(
            StateSettings::with_dir("<WORKSPACE_ROOT>/.state").resolve(Some(Path::new("/w"))),
            Some(PathBuf::from("/w/.state"))
        );
        assert_eq!(
            StateSettings::with_dir("/srv/state").resolve(Some(Path::new("/w"))),
            Some(PathBuf::from("/srv/state"))
        );
    }
}
