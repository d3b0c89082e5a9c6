//! Workspace retention: incident workspaces older than `retention_days`
//! are deleted, and beyond `retention_max_bytes` the oldest finished ones,
//! so a long-running runner cannot fill its disk. Every deletion is logged
//! and recorded in the state store (the incident keeps its history there,
//! marked "workspace deleted").
//!
//! Only directories that are workspaces are touched: a name that parses as
//! an incident id (`20261127T121500Z-…`) and an `incident.json` inside.
//! Hidden entries (`.agents`) and anything else in the root are left alone.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use runner_core::state::Journal;

use super::config::{AgentSinkConfig, Retention};

/// How often retention runs (and once at startup).
pub(crate) const EVERY: Duration = Duration::from_secs(600);

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Pruned {
    pub id: String,
    pub bytes: u64,
    /// `age` or `size`.
    pub why: &'static str,
}

struct Entry {
    id: String,
    dir: PathBuf,
    created: u64,
    bytes: u64,
    /// Its agent may still run (status created/running and young enough).
    live: bool,
}

/// Seconds since the epoch of an incident id's time prefix.
fn id_time(id: &str) -> Option<u64> {
    let b = id.as_bytes();
    if b.len() < 17 || b[8] != b'T' || b[15] != b'Z' || b[16] != b'-' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<u64> { id.get(r)?.parse().ok() };
    let (y, m, d) = (num(0..4)?, num(4..6)?, num(6..8)?);
    let (hh, mm, ss) = (num(9..11)?, num(11..13)?, num(13..15)?);
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) || hh > 23 || mm > 59 || ss > 60 {
        return None;
    }
    let (y, m) = (y as i64, m as i64);
    let y2 = if m <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let doy = (153 * ((m + 9) % 12) + 2) / 5 + d as i64 - 1;
    let days = era * 146_097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719_468;
    u64::try_from(days)
        .ok()
        .map(|d| d * 86_400 + hh * 3600 + mm * 60 + ss)
}

/// Bytes under `p`, symlinks not followed.
fn size_of(p: &Path) -> u64 {
    let Ok(m) = std::fs::symlink_metadata(p) else {
        return 0;
    };
    if !m.is_dir() {
        return m.len();
    }
    std::fs::read_dir(p)
        .map(|d| d.flatten().map(|e| size_of(&e.path())).sum())
        .unwrap_or(0)
}

fn status_of(dir: &Path) -> Option<String> {
    let text = std::fs::read(dir.join("incident.json")).ok()?;
    let v: serde_json::Value = serde_json::from_slice(&text).ok()?;
    v.get("status")?.as_str().map(str::to_string)
}

/// Deletes a tree, also where an agent left a directory without write
/// permission for its owner.
fn remove(dir: &Path) -> std::io::Result<()> {
    if std::fs::remove_dir_all(dir).is_ok() {
        return Ok(());
    }
    fn open_up(p: &Path) {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(m) = std::fs::symlink_metadata(p)
            && m.is_dir()
        {
            let _ = std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o700));
            if let Ok(d) = std::fs::read_dir(p) {
                for e in d.flatten() {
                    open_up(&e.path());
                }
            }
        }
    }
    open_up(dir);
    std::fs::remove_dir_all(dir)
}

/// One pass over `root`. `live_for`: how long an incident that says it is
/// running may really be running (its agent's timeout plus margins).
pub(crate) fn prune(
    root: &Path,
    r: &Retention,
    now: SystemTime,
    live_for: Duration,
) -> Vec<Pruned> {
    let now_s = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let Ok(dir) = std::fs::read_dir(root) else {
        return Vec::new();
    };
    let mut entries: Vec<Entry> = dir
        .flatten()
        .filter_map(|e| {
            let id = e.file_name().to_str()?.to_string();
            let created = id_time(&id)?;
            let path = e.path();
            let meta = std::fs::symlink_metadata(&path).ok()?;
            if !meta.is_dir() || !path.join("incident.json").exists() {
                return None;
            }
            let status = status_of(&path).unwrap_or_default();
            let live = matches!(status.as_str(), "created" | "running")
                && now_s.saturating_sub(created) < live_for.as_secs();
            Some(Entry {
                id,
                bytes: size_of(&path),
                dir: path,
                created,
                live,
            })
        })
        .collect();
    entries.sort_by(|a, b| a.created.cmp(&b.created).then(a.id.cmp(&b.id)));
    let mut total: u64 = entries.iter().map(|e| e.bytes).sum();
    let mut out = Vec::new();
    for e in entries {
        if e.live {
            continue;
        }
        let too_old = r
            .max_age
            .is_some_and(|a| now_s.saturating_sub(e.created) >= a.as_secs());
        let too_big = r.max_bytes.is_some_and(|m| total > m);
        let why = match (too_old, too_big) {
            (true, _) => "age",
            (false, true) => "size",
            _ => continue,
        };
        match remove(&e.dir) {
            Ok(()) => {
                total -= e.bytes;
                out.push(Pruned {
                    id: e.id,
                    bytes: e.bytes,
                    why,
                });
            }
            Err(err) => {
                tracing::warn!(workspace = %e.dir.display(), error = %err, "retention: cannot delete workspace")
            }
        }
    }
    out
}

/// Runs [`prune`] at startup and every [`EVERY`]; logs and records each
/// deletion. The task ends with the runtime.
pub(crate) fn spawn(cfg: &AgentSinkConfig, journal: Option<Arc<Journal>>) {
    let r = (*cfg.retention).clone();
    if r.max_age.is_none() && r.max_bytes.is_none() {
        tracing::info!("workspace retention off (retention_days = 0, retention_max_bytes = 0)");
        return;
    }
    let root = cfg.workspace_root.clone();
    // A live agent ends within its timeout and kill grace; an hour more
    // covers the report and a slow shutdown.
    let live_for = cfg.timeout + cfg.kill_grace + Duration::from_secs(3600);
    tokio::spawn(async move {
        loop {
            let (root2, r2) = (root.clone(), r.clone());
            let pruned = tokio::task::spawn_blocking(move || {
                prune(&root2, &r2, SystemTime::now(), live_for)
            })
            .await
            .unwrap_or_default();
            for p in &pruned {
                tracing::info!(incident = %p.id, bytes = p.bytes, reason = p.why, "retention: incident workspace deleted");
                if let Some(j) = &journal {
                    j.pruned(&p.id);
                }
            }
            tokio::time::sleep(EVERY).await;
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ws(root: &Path, id: &str, status: &str, bytes: usize) {
        let d = root.join(id);
        std::fs::create_dir_all(d.join("logs")).unwrap();
        std::fs::write(
            d.join("incident.json"),
            format!("{{\"status\":\"{status}\"}}"),
        )
        .unwrap();
        std::fs::write(d.join("logs").join("agent-stdout.log"), vec![b'x'; bytes]).unwrap();
    }

    #[test]
    fn ids_parse_to_their_time() {
        assert_eq!(id_time("19700101T000000Z-000001-0a0b0c0d"), Some(0));
        assert_eq!(
            id_time("20000229T000000Z-000042-9f3a1c2e"),
            Some(951_782_400)
        );
        assert_eq!(id_time("notes"), None);
        assert_eq!(id_time("20001399T000000Z-000042-9f3a1c2e"), None);
    }

    #[test]
    fn age_then_size_oldest_first_never_live_or_foreign() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let day = 86_400u64;
        let now = UNIX_EPOCH + Duration::from_secs(100 * day);
        let id = |d: u64, n: u32| {
            let t = UNIX_EPOCH + Duration::from_secs(d * day);
            let s = runner_core::date::rfc3339_millis(t);
            // 1970-04-10T00:00:00.000Z → 19700410T000000Z
            format!(
                "{}{}{}T{}{}{}Z-{n:06}-00000000",
                &s[0..4],
                &s[5..7],
                &s[8..10],
                &s[11..13],
                &s[14..16],
                &s[17..19]
            )
        };
        ws(root, &id(50, 1), "completed", 100); // too old
        ws(root, &id(95, 2), "failed", 1000); // oldest young: goes for size
        ws(root, &id(96, 3), "completed", 1000);
        ws(root, &id(99, 4), "running", 1000); // live: kept
        ws(root, &id(98, 5), "completed", 1000);
        std::fs::create_dir_all(root.join(".agents")).unwrap();
        std::fs::create_dir_all(root.join("keep-me")).unwrap();
        std::fs::write(root.join("keep-me").join("incident.json"), "{}").unwrap();
        let r = Retention {
            max_age: Some(Duration::from_secs(30 * day)),
            max_bytes: Some(3500),
            log_max_bytes: 4096,
        };
        let pruned = prune(root, &r, now, Duration::from_secs(2 * day));
        let got: Vec<(String, &str)> = pruned.iter().map(|p| (p.id.clone(), p.why)).collect();
        assert_eq!(
            got,
            vec![(id(50, 1), "age"), (id(95, 2), "size")],
            "{pruned:?}"
        );
        assert!(!root.join(id(50, 1)).exists());
        assert!(root.join(id(96, 3)).exists());
        assert!(root.join(id(99, 4)).exists());
        assert!(root.join(".agents").exists());
        assert!(root.join("keep-me").exists());
    }
}
