//! Read-only queries for `runner incidents`: a separate read-only
//! connection, so it works next to a running runner (WAL readers never
//! block the writer) and can never change the file.

use std::path::Path;

use rusqlite::{Connection, OpenFlags, params_from_iter, types::Value as Sql};
use serde::Serialize;

use super::DB_FILE;

#[derive(Debug, Clone, Serialize)]
pub(crate) struct IncidentRow {
    pub seq: u64,
    pub incident_id: Option<String>,
    pub fault_id: Option<String>,
    pub cluster: String,
    pub namespace: String,
    pub kind: String,
    pub name: String,
    pub fault_type: String,
    pub severity: String,
    pub source: String,
    pub status: String,
    pub reason: Option<String>,
    pub received_ms: i64,
    pub started_ms: i64,
    pub finished_ms: Option<i64>,
    pub runs: u32,
    pub workspace: Option<String>,
    pub cost_usd: Option<f64>,
    pub input_tokens: Option<i64>,
    pub output_tokens: Option<i64>,
    pub group_key: Option<String>,
    pub attached_events: i64,
    /// Set when retention deleted the workspace.
    pub pruned_ms: Option<i64>,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct EventRow {
    pub seq: u64,
    pub fault_id: Option<String>,
    pub received_ms: i64,
    /// The stored event (identity fields and the original payload).
    pub event: serde_json::Value,
}

#[derive(Debug, Clone, Default)]
pub(crate) struct Filter {
    pub cluster: Option<String>,
    pub status: Option<String>,
    /// Incidents started at or after this (ms since the epoch).
    pub since_ms: Option<i64>,
    pub limit: usize,
}

const COLUMNS: &str = "seq, incident_id, fault_id, cluster, namespace, kind, name, fault_type, \
    severity, source, status, reason, received_ms, started_ms, finished_ms, runs, workspace, \
    cost_usd, input_tokens, output_tokens, group_key, attached_events, pruned_ms";

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<IncidentRow> {
    Ok(IncidentRow {
        seq: r.get::<_, i64>(0)? as u64,
        incident_id: r.get(1)?,
        fault_id: r.get(2)?,
        cluster: r.get(3)?,
        namespace: r.get(4)?,
        kind: r.get(5)?,
        name: r.get(6)?,
        fault_type: r.get(7)?,
        severity: r.get(8)?,
        source: r.get(9)?,
        status: r.get(10)?,
        reason: r.get(11)?,
        received_ms: r.get(12)?,
        started_ms: r.get(13)?,
        finished_ms: r.get(14)?,
        runs: r.get::<_, i64>(15)? as u32,
        workspace: r.get(16)?,
        cost_usd: r.get(17)?,
        input_tokens: r.get(18)?,
        output_tokens: r.get(19)?,
        group_key: r.get(20)?,
        attached_events: r.get(21)?,
        pruned_ms: r.get(22)?,
    })
}

/// Opens `dir/state.db` read-only; a missing file is an error that says so.
pub fn open_read_only(dir: &Path) -> Result<Connection, String> {
    let path = dir.join(DB_FILE);
    if !path.exists() {
        return Err(format!(
            "no state file at {} (STATE_DIR): the runner has not run with this state directory",
            path.display()
        ));
    }
    let conn = Connection::open_with_flags(
        &path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| format!("state file {}: {e}", path.display()))?;
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(|e| {
            format!(
                "state file {}: not a readable database: {e}",
                path.display()
            )
        })?;
    if version > super::schema::VERSION {
        return Err(format!(
            "state file {}: schema version {version} is newer than this runner knows ({})",
            path.display(),
            super::schema::VERSION
        ));
    }
    if version == 0 {
        return Err(format!(
            "state file {}: empty (no schema yet)",
            path.display()
        ));
    }
    Ok(conn)
}

/// Incidents, newest first.
pub(crate) fn list(conn: &Connection, f: &Filter) -> Result<Vec<IncidentRow>, String> {
    let mut sql = format!("SELECT {COLUMNS} FROM incidents WHERE 1=1");
    let mut args: Vec<Sql> = Vec::new();
    if let Some(c) = &f.cluster {
        args.push(Sql::Text(c.clone()));
        sql += &format!(" AND cluster = ?{}", args.len());
    }
    if let Some(s) = &f.status {
        args.push(Sql::Text(s.clone()));
        sql += &format!(" AND status = ?{}", args.len());
    }
    if let Some(t) = f.since_ms {
        args.push(Sql::Integer(t));
        sql += &format!(" AND started_ms >= ?{}", args.len());
    }
    args.push(Sql::Integer(f.limit.max(1) as i64));
    sql += &format!(" ORDER BY started_ms DESC, seq DESC LIMIT ?{}", args.len());
    let mut st = conn.prepare(&sql).map_err(|e| e.to_string())?;
    let rows = st
        .query_map(params_from_iter(args), row)
        .map_err(|e| e.to_string())?;
    rows.collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())
}

/// One incident by its incident id (the workspace name) or its number
/// (`seq`), with its events.
pub(crate) fn show(
    conn: &Connection,
    id: &str,
) -> Result<Option<(IncidentRow, Vec<EventRow>)>, String> {
    let by_id = conn
        .query_row(
            &format!("SELECT {COLUMNS} FROM incidents WHERE incident_id = ?1"),
            [id],
            row,
        )
        .ok();
    let inc = match by_id {
        Some(r) => Some(r),
        None => match id.parse::<i64>() {
            Ok(seq) => conn
                .query_row(
                    &format!("SELECT {COLUMNS} FROM incidents WHERE seq = ?1"),
                    [seq],
                    row,
                )
                .ok(),
            Err(_) => None,
        },
    };
    let Some(inc) = inc else {
        return Ok(None);
    };
    let mut st = conn
        .prepare(
            "SELECT event_seq, fault_id, received_ms, event FROM incident_events
             WHERE incident_seq = ?1 ORDER BY event_seq",
        )
        .map_err(|e| e.to_string())?;
    let events = st
        .query_map([inc.seq as i64], |r| {
            let text: String = r.get(3)?;
            Ok(EventRow {
                seq: r.get::<_, i64>(0)? as u64,
                fault_id: r.get(1)?,
                received_ms: r.get(2)?,
                event: serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)),
            })
        })
        .map_err(|e| e.to_string())?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    Ok(Some((inc, events)))
}

/// The cumulative counters (`received` and one per outcome that occurred),
/// and the number of pending (admitted, not finished) events.
pub fn counters(conn: &Connection) -> Result<(Vec<(String, u64)>, u64), String> {
    let mut st = conn
        .prepare("SELECT name, value FROM counters ORDER BY name")
        .map_err(|e| e.to_string())?;
    let rows = st
        .query_map([], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?.max(0) as u64))
        })
        .map_err(|e| e.to_string())?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    let pending: i64 = conn
        .query_row("SELECT COUNT(*) FROM pending", [], |r| r.get(0))
        .map_err(|e| e.to_string())?;
    Ok((rows, pending.max(0) as u64))
}
