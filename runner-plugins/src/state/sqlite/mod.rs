//! The embedded state store: one SQLite file (`state.db`, WAL) in the state
//! directory, with an exclusive lock file so two runners never share it.
//!
//! Opening never repairs or resets: a file that is not a database, fails
//! its integrity check, or carries a schema from a newer runner is an error
//! at startup, and the file is left exactly as it was.

pub mod query;
pub(crate) mod schema;

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use runner_core::Outcome;
use runner_core::state::{
    Batch, PendingEvent, PendingState, Recovered, StateError, StateOp, StateStore, StoredCounters,
    StoredEvent, StoredEventRef, now_ms,
};
use rusqlite::{Connection, OpenFlags, OptionalExtension, params};

/// File name of the database inside the state directory.
pub(crate) const DB_FILE: &str = "state.db";
/// Held (flock) while a runner uses the directory.
pub(crate) const LOCK_FILE: &str = "lock";

pub struct SqliteStore {
    conn: Connection,
    path: PathBuf,
    /// Incidents (and their events) older than this are deleted by upkeep.
    history: Duration,
    /// Keeps the directory's lock for the life of the store.
    _lock: File,
}

fn err(path: &Path, what: &str, e: impl std::fmt::Display) -> StateError {
    StateError(format!("state file {}: {what}: {e}", path.display()))
}

/// Creates (0700) or checks the state directory and takes its lock.
fn lock_dir(dir: &Path) -> Result<File, StateError> {
    if let Err(e) = std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
    {
        return Err(StateError(format!(
            "state directory {}: cannot create it: {e}",
            dir.display()
        )));
    }
    let path = dir.join(LOCK_FILE);
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| {
            StateError(format!(
                "state directory {}: not writable ({e}); the runner needs to write its state there (set STATE_DIR to a writable directory, or STATE_DIR=off to run without durable state)",
                dir.display()
            ))
        })?;
    use std::os::fd::AsRawFd;
    // SAFETY: flock on a descriptor we own.
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        return Err(StateError(format!(
            "state directory {}: in use by another runner (its {LOCK_FILE} file is locked); each runner needs its own STATE_DIR",
            dir.display()
        )));
    }
    Ok(f)
}

impl SqliteStore {
    /// Opens (or creates) `dir/state.db`, checks it, and migrates it to
    /// this build's schema.
    pub fn open(dir: &Path, history: Duration) -> Result<SqliteStore, StateError> {
        let lock = lock_dir(dir)?;
        let path = dir.join(DB_FILE);
        let conn = Connection::open_with_flags(
            &path,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| err(&path, "cannot open", e))?;
        conn.busy_timeout(Duration::from_secs(5))
            .map_err(|e| err(&path, "cannot open", e))?;
        // Read-only checks first: nothing is written to a file we refuse.
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(|e| err(&path, "not a readable SQLite database (left untouched; move it away to start with an empty state, or restore a backup)", e))?;
        if version > schema::VERSION {
            return Err(err(
                &path,
                "schema too new",
                format!(
                    "schema version {version} was written by a newer runner; this one knows versions up to {} (left untouched; upgrade the runner, or point STATE_DIR elsewhere)",
                    schema::VERSION
                ),
            ));
        }
        let check: String = conn
            .query_row("PRAGMA quick_check", [], |r| r.get(0))
            .map_err(|e| {
                err(
                    &path,
                    "integrity check failed (left untouched; restore a backup or move it away)",
                    e,
                )
            })?;
        if check != "ok" {
            return Err(err(
                &path,
                "integrity check failed (left untouched; restore a backup or move it away)",
                check,
            ));
        }
        let mode: String = conn
            .query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
            .map_err(|e| err(&path, "cannot enable WAL (is the directory writable?)", e))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(err(&path, "cannot enable WAL", mode));
        }
        // WAL + NORMAL: a committed batch survives a crash of the process;
        // an OS crash may lose the last batches, never corrupt the file.
        conn.execute_batch("PRAGMA synchronous=NORMAL; PRAGMA foreign_keys=OFF;")
            .map_err(|e| err(&path, "cannot configure", e))?;
        let mut store = SqliteStore {
            conn,
            path,
            history,
            _lock: lock,
        };
        store.migrate(version)?;
        Ok(store)
    }

    fn migrate(&mut self, from: i64) -> Result<(), StateError> {
        for v in from..schema::VERSION {
            let tx = self
                .conn
                .transaction()
                .map_err(|e| err(&self.path, "cannot migrate (disk full or read-only?)", e))?;
            tx.execute_batch(schema::MIGRATIONS[v as usize])
                .map_err(|e| err(&self.path, &format!("migration to version {}", v + 1), e))?;
            tx.pragma_update(None, "user_version", v + 1)
                .map_err(|e| err(&self.path, "cannot migrate", e))?;
            tx.commit()
                .map_err(|e| err(&self.path, "cannot migrate (disk full or read-only?)", e))?;
            if from > 0 {
                tracing::info!(file = %self.path.display(), version = v + 1, "state file migrated");
            }
        }
        Ok(())
    }

    fn apply(&mut self, batch: &Batch) -> rusqlite::Result<()> {
        let tx = self.conn.transaction()?;
        {
            let mut counter = tx.prepare_cached(
                "INSERT INTO counters (name, value) VALUES (?1, ?2)
                 ON CONFLICT (name) DO UPDATE SET value = value + excluded.value",
            )?;
            if batch.received > 0 {
                counter.execute(params!["received", batch.received as i64])?;
            }
            for (o, n) in Outcome::ALL.iter().zip(batch.outcomes) {
                if n > 0 {
                    counter.execute(params![o.as_str(), n as i64])?;
                }
            }
            // Events admitted, started and finished within this batch (a
            // quick incident) never need their queue row: their incident
            // is written from the event directly.
            let finished: HashSet<u64> = batch
                .ops
                .iter()
                .filter_map(|o| match o {
                    StateOp::Finish { seq, .. } => Some(*seq),
                    _ => None,
                })
                .collect();
            let mut direct: HashMap<u64, (&str, &runner_core::Event, i64)> = HashMap::new();
            for op in &batch.ops {
                match op {
                    StateOp::Admit {
                        seq,
                        source,
                        event,
                        at_ms,
                        ..
                    } if finished.contains(seq) => {
                        direct.insert(*seq, (&**source, &**event, *at_ms));
                    }
                    StateOp::Start { seq, at_ms } if direct.contains_key(seq) => {
                        let (source, event, admitted_ms) = direct[seq];
                        start_direct(&tx, *seq, source, event, admitted_ms, *at_ms)?;
                    }
                    StateOp::Finish { seq, .. }
                    | StateOp::Defer { seq, .. }
                    | StateOp::Requeue { seq, .. }
                        if direct.contains_key(seq) =>
                    {
                        if let StateOp::Finish { .. } = op {
                            finish_incident(&tx, op)?;
                        }
                    }
                    _ => apply_op(&tx, op)?,
                }
            }
        }
        tx.commit()
    }
}

/// The incident of an event whose admission, start and outcome are all in
/// one batch: the same rows `Admit` + `Start` write, without the queue row.
fn start_direct(
    tx: &rusqlite::Transaction<'_>,
    seq: u64,
    source: &str,
    event: &runner_core::Event,
    admitted_ms: i64,
    started_ms: i64,
) -> rusqlite::Result<()> {
    let text = serde_json::to_string(&StoredEventRef::of(event))
        .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
    let seq = seq as i64;
    let r = &event.resource;
    tx.prepare_cached(
        "INSERT OR IGNORE INTO incidents
           (seq, fault_id, cluster, namespace, kind, name, fault_type, severity, source,
            status, received_ms, started_ms, runs)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, 'running', ?10, ?11, 1)",
    )?
    .execute(params![
        seq,
        event.fault_id,
        event.cluster,
        r.namespace,
        r.kind,
        r.name,
        event.fault_type,
        event.severity.as_str(),
        source,
        admitted_ms,
        started_ms
    ])?;
    tx.prepare_cached(
        "INSERT OR IGNORE INTO incident_events (incident_seq, event_seq, fault_id, received_ms, event)
         VALUES (?1, ?1, ?2, ?3, ?4)",
    )?
    .execute(params![seq, event.fault_id, admitted_ms, text])?;
    Ok(())
}

/// The incident part of `Finish` (its queue row was never written).
fn finish_incident(tx: &rusqlite::Transaction<'_>, op: &StateOp) -> rusqlite::Result<()> {
    if let StateOp::Finish {
        seq,
        outcome,
        reason,
        at_ms,
    } = op
    {
        tx.prepare_cached(
            "UPDATE incidents SET status = ?2, reason = ?3, finished_ms = ?4 WHERE seq = ?1",
        )?
        .execute(params![
            *seq as i64,
            outcome.as_str(),
            (!reason.is_empty()).then_some(reason.as_str()),
            at_ms
        ])?;
    }
    Ok(())
}

fn apply_op(tx: &rusqlite::Transaction<'_>, op: &StateOp) -> rusqlite::Result<()> {
    match op {
        StateOp::Admit {
            seq,
            source,
            event,
            at_ms,
            ..
        } => {
            let text = serde_json::to_string(&StoredEventRef::of(event))
                .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
            tx.prepare_cached(
                "INSERT OR REPLACE INTO pending (seq, state, reruns, source, event, admitted_ms)
                 VALUES (?1, 'queued', 0, ?2, ?3, ?4)",
            )?
            .execute(params![*seq as i64, &**source, text, at_ms])?;
        }
        StateOp::Start { seq, at_ms } => {
            let seq = *seq as i64;
            // The incident's identity comes from its pending row (written
            // in this or an earlier batch, always before its start).
            tx.prepare_cached(
                "INSERT OR IGNORE INTO incidents
                   (seq, fault_id, cluster, namespace, kind, name, fault_type, severity, source,
                    status, received_ms, started_ms, runs)
                 SELECT seq, json_extract(event, '$.fault_id'), json_extract(event, '$.cluster'),
                        json_extract(event, '$.namespace'), json_extract(event, '$.kind'),
                        json_extract(event, '$.name'), json_extract(event, '$.fault_type'),
                        json_extract(event, '$.severity'), source, 'running', admitted_ms, ?2, 0
                 FROM pending WHERE seq = ?1",
            )?
            .execute(params![seq, at_ms])?;
            tx.prepare_cached(
                "UPDATE incidents SET status = 'running', started_ms = ?2, finished_ms = NULL,
                        runs = runs + 1 WHERE seq = ?1",
            )?
            .execute(params![seq, at_ms])?;
            tx.prepare_cached(
                "INSERT OR IGNORE INTO incident_events (incident_seq, event_seq, fault_id, received_ms, event)
                 SELECT seq, seq, json_extract(event, '$.fault_id'), admitted_ms, event
                 FROM pending WHERE seq = ?1",
            )?
            .execute(params![seq])?;
            tx.prepare_cached("UPDATE pending SET state = 'running' WHERE seq = ?1")?
                .execute(params![seq])?;
        }
        StateOp::Incident { seq, meta } => {
            tx.prepare_cached(
                "UPDATE incidents SET incident_id = ?2, workspace = ?3, cost_usd = ?4,
                        input_tokens = ?5, output_tokens = ?6 WHERE seq = ?1",
            )?
            .execute(params![
                *seq as i64,
                meta.id,
                meta.workspace,
                meta.cost_micro_usd.map(|c| c as f64 / 1e6),
                meta.input_tokens.map(|n| n as i64),
                meta.output_tokens.map(|n| n as i64),
            ])?;
        }
        StateOp::Finish {
            seq,
            outcome,
            reason,
            at_ms,
        } => {
            tx.prepare_cached("DELETE FROM pending WHERE seq = ?1")?
                .execute(params![*seq as i64])?;
            tx.prepare_cached(
                "UPDATE incidents SET status = ?2, reason = ?3, finished_ms = ?4 WHERE seq = ?1",
            )?
            .execute(params![
                *seq as i64,
                outcome.as_str(),
                (!reason.is_empty()).then_some(reason.as_str()),
                at_ms
            ])?;
        }
        StateOp::Defer { seq, interrupted } => {
            if *interrupted {
                tx.prepare_cached("UPDATE pending SET state = 'interrupted' WHERE seq = ?1")?
                    .execute(params![*seq as i64])?;
                tx.prepare_cached(
                    "UPDATE incidents SET status = 'interrupted', finished_ms = ?2 WHERE seq = ?1",
                )?
                .execute(params![*seq as i64, now_ms()])?;
            }
        }
        StateOp::Requeue { seq, reruns } => {
            tx.prepare_cached("UPDATE pending SET state = 'queued', reruns = ?2 WHERE seq = ?1")?
                .execute(params![*seq as i64, reruns])?;
        }
        StateOp::Put {
            scope,
            key,
            value,
            expires_ms,
        } => {
            tx.prepare_cached(
                "INSERT OR REPLACE INTO kv (scope, key, value, expires_ms) VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![&**scope, key, value, expires_ms])?;
        }
        StateOp::Delete { scope, key } => {
            tx.prepare_cached("DELETE FROM kv WHERE scope = ?1 AND key = ?2")?
                .execute(params![&**scope, key])?;
        }
        StateOp::Pruned { incident_id, at_ms } => {
            tx.prepare_cached("UPDATE incidents SET pruned_ms = ?2 WHERE incident_id = ?1")?
                .execute(params![incident_id, at_ms])?;
        }
    }
    Ok(())
}

impl StateStore for SqliteStore {
    fn recover(&mut self) -> Result<Recovered, StateError> {
        let path = self.path.clone();
        let e = |x: rusqlite::Error| err(&path, "cannot read", x);
        let mut counters = StoredCounters::default();
        {
            let mut st = self
                .conn
                .prepare("SELECT name, value FROM counters")
                .map_err(e)?;
            let rows = st
                .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))
                .map_err(e)?;
            for row in rows {
                let (name, v) = row.map_err(e)?;
                let v = v.max(0) as u64;
                if name == "received" {
                    counters.received = v;
                } else if let Some(o) = Outcome::ALL.iter().find(|o| o.as_str() == name) {
                    counters.outcomes[*o as usize] = v;
                }
            }
        }
        let mut pending = Vec::new();
        {
            let mut st = self
                .conn
                .prepare(
                    "SELECT seq, state, reruns, source, event, admitted_ms FROM pending ORDER BY seq",
                )
                .map_err(e)?;
            let rows = st
                .query_map([], |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, i64>(2)?,
                        r.get::<_, String>(3)?,
                        r.get::<_, String>(4)?,
                        r.get::<_, i64>(5)?,
                    ))
                })
                .map_err(e)?;
            for row in rows {
                let (seq, state, reruns, source, event, admitted_ms) = row.map_err(e)?;
                let event: StoredEvent = serde_json::from_str(&event)
                    .map_err(|x| err(&path, &format!("pending event {seq} does not parse"), x))?;
                pending.push(PendingEvent {
                    seq: seq as u64,
                    source,
                    event,
                    admitted_ms,
                    state: PendingState::parse(&state).unwrap_or(PendingState::Interrupted),
                    reruns: reruns.max(0) as u32,
                });
            }
        }
        let mut kv: std::collections::HashMap<String, runner_core::state::KvEntries> =
            Default::default();
        {
            let mut st = self
                .conn
                .prepare(
                    "SELECT scope, key, value FROM kv WHERE expires_ms IS NULL OR expires_ms > ?1",
                )
                .map_err(e)?;
            let rows = st
                .query_map([now_ms()], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, Vec<u8>>(1)?,
                        r.get::<_, Vec<u8>>(2)?,
                    ))
                })
                .map_err(e)?;
            for row in rows {
                let (scope, k, v) = row.map_err(e)?;
                kv.entry(scope).or_default().push((k, v));
            }
        }
        let max: Option<i64> = self
            .conn
            .query_row(
                "SELECT MAX(m) FROM (SELECT MAX(seq) AS m FROM pending
                                     UNION ALL SELECT MAX(seq) FROM incidents)",
                [],
                |r| r.get(0),
            )
            .optional()
            .map_err(e)?
            .flatten();
        Ok(Recovered {
            next_seq: max.map_or(0, |m| m as u64 + 1),
            pending,
            counters,
            kv,
        })
    }

    fn commit(&mut self, batch: &Batch) -> Result<(), StateError> {
        self.apply(batch)
            .map_err(|e| err(&self.path, "cannot write (disk full?)", e))
    }

    fn maintain(&mut self) {
        let now = now_ms();
        let cutoff = now - self.history.as_millis() as i64;
        let r = self.conn.execute_batch(&format!(
            "BEGIN;
             DELETE FROM kv WHERE expires_ms IS NOT NULL AND expires_ms <= {now};
             DELETE FROM incident_events WHERE incident_seq IN
               (SELECT seq FROM incidents WHERE started_ms < {cutoff}
                AND seq NOT IN (SELECT seq FROM pending));
             DELETE FROM incidents WHERE started_ms < {cutoff}
                AND seq NOT IN (SELECT seq FROM pending);
             COMMIT;"
        ));
        if let Err(e) = r {
            let _ = self.conn.execute_batch("ROLLBACK");
            tracing::warn!(file = %self.path.display(), error = %e, "state store upkeep failed");
        }
        // Keeps the WAL file from growing between the automatic checkpoints.
        let _ = self.conn.execute_batch("PRAGMA wal_checkpoint(PASSIVE)");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use runner_core::state::{Batch, IncidentMeta, OUTCOMES};
    use std::sync::Arc;

    fn event(name: &str) -> runner_core::Event {
        runner_core::Event::from_json(
            serde_json::json!({"cluster":"c1","severity":"critical","faultId":"f-1","faultType":"CrashLoop",
                "resource":{"kind":"Pod","name":name,"namespace":"ns"}}),
            None,
        )
        .unwrap()
    }

    fn batch(ops: Vec<StateOp>, received: u64, outcomes: &[(Outcome, u64)]) -> Batch {
        let mut o = [0u64; OUTCOMES];
        for (k, n) in outcomes {
            o[*k as usize] += n;
        }
        Batch {
            ops,
            received,
            outcomes: o,
        }
    }

    #[test]
    fn commits_survive_a_reopen_and_the_queue_comes_back_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let src: Arc<str> = Arc::from("mcp");
        let scope: Arc<str> = Arc::from("stage.dedup");
        {
            let mut s = SqliteStore::open(dir.path(), Duration::from_secs(86_400)).unwrap();
            assert_eq!(s.recover().unwrap().next_seq, 0);
            let admit = |seq, name: &str| StateOp::Admit {
                seq,
                source: src.clone(),
                event: Box::new(event(name)),
                at_ms: 1000 + seq as i64,
                bytes: 10,
            };
            s.commit(&batch(
                vec![
                    admit(7, "a"),
                    admit(9, "b"),
                    admit(8, "c"),
                    StateOp::Start {
                        seq: 7,
                        at_ms: 2000,
                    },
                    StateOp::Incident {
                        seq: 7,
                        meta: IncidentMeta {
                            id: "20261129T000000Z-000007-00000000".into(),
                            workspace: "/w/x".into(),
                            cost_micro_usd: Some(1_500_000),
                            input_tokens: Some(10),
                            output_tokens: Some(20),
                        },
                    },
                    StateOp::Finish {
                        seq: 7,
                        outcome: Outcome::Completed,
                        reason: String::new(),
                        at_ms: 3000,
                    },
                    StateOp::Start {
                        seq: 8,
                        at_ms: 2500,
                    },
                    StateOp::Put {
                        scope: scope.clone(),
                        key: b"k".to_vec(),
                        value: b"v".to_vec(),
                        expires_ms: Some(i64::MAX),
                    },
                    StateOp::Put {
                        scope: scope.clone(),
                        key: b"old".to_vec(),
                        value: b"v".to_vec(),
                        expires_ms: Some(1),
                    },
                ],
                5,
                &[(Outcome::Completed, 1), (Outcome::Filtered, 2)],
            ))
            .unwrap();
        }
        let mut s = SqliteStore::open(dir.path(), Duration::from_secs(86_400)).unwrap();
        let r = s.recover().unwrap();
        assert_eq!(r.next_seq, 10);
        assert_eq!(r.counters.received, 5);
        assert_eq!(r.counters.get(Outcome::Completed), 1);
        assert_eq!(r.counters.get(Outcome::Filtered), 2);
        let seqs: Vec<(u64, PendingState)> = r.pending.iter().map(|p| (p.seq, p.state)).collect();
        assert_eq!(
            seqs,
            vec![(8, PendingState::Running), (9, PendingState::Queued)]
        );
        assert_eq!(r.pending[1].event.name, "b");
        assert_eq!(
            r.counters.received,
            r.counters.terminal() + r.pending.len() as u64
        );
        // Expired keys are not handed back.
        assert_eq!(r.kv["stage.dedup"], vec![(b"k".to_vec(), b"v".to_vec())]);
        let conn = query::open_read_only(dir.path()).unwrap();
        let list = query::list(
            &conn,
            &query::Filter {
                limit: 10,
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(list.len(), 2);
        let (done, events) = query::show(&conn, "20261129T000000Z-000007-00000000")
            .unwrap()
            .unwrap();
        assert_eq!(done.status, "completed");
        assert_eq!(done.cost_usd, Some(1.5));
        assert_eq!(done.runs, 1);
        assert_eq!(events.len(), 1);
        assert_eq!(
            query::show(&conn, "8").unwrap().unwrap().0.status,
            "running"
        );
    }

    #[test]
    fn a_second_store_on_the_same_directory_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let _a = SqliteStore::open(dir.path(), Duration::from_secs(60)).unwrap();
        let e = SqliteStore::open(dir.path(), Duration::from_secs(60))
            .err()
            .expect("locked");
        assert!(e.0.contains("in use by another runner"), "{e}");
    }
}
