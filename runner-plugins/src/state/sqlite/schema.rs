//! Versioned schema of the state file. The version is SQLite's
//! `user_version`; each migration takes the file from version `i` to `i+1`
//! in one transaction. A file from a newer runner is refused, untouched.

/// Migrations in order: `MIGRATIONS[i]` upgrades version `i` to `i + 1`.
pub(crate) const MIGRATIONS: &[&str] = &[
    // 1: counters, the queue of admitted events, incidents, their events,
    // and the stages' and sinks' key-value state.
    r#"
CREATE TABLE counters (
    name  TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
CREATE TABLE pending (
    seq         INTEGER PRIMARY KEY,
    state       TEXT NOT NULL,
    reruns      INTEGER NOT NULL DEFAULT 0,
    source      TEXT NOT NULL,
    event       TEXT NOT NULL,
    admitted_ms INTEGER NOT NULL
);
CREATE TABLE incidents (
    seq             INTEGER PRIMARY KEY,
    incident_id     TEXT,
    fault_id        TEXT,
    cluster         TEXT NOT NULL,
    namespace       TEXT NOT NULL,
    kind            TEXT NOT NULL,
    name            TEXT NOT NULL,
    fault_type      TEXT NOT NULL,
    severity        TEXT NOT NULL,
    source          TEXT NOT NULL,
    status          TEXT NOT NULL,
    reason          TEXT,
    received_ms     INTEGER NOT NULL,
    started_ms      INTEGER NOT NULL,
    finished_ms     INTEGER,
    runs            INTEGER NOT NULL DEFAULT 0,
    workspace       TEXT,
    cost_usd        REAL,
    input_tokens    INTEGER,
    output_tokens   INTEGER,
    group_key       TEXT,
    attached_events INTEGER NOT NULL DEFAULT 1,
    pruned_ms       INTEGER
);
CREATE INDEX incidents_started ON incidents (started_ms);
CREATE INDEX incidents_cluster ON incidents (cluster, started_ms);
CREATE INDEX incidents_id ON incidents (incident_id);
CREATE INDEX incidents_group ON incidents (group_key) WHERE group_key IS NOT NULL;
CREATE TABLE incident_events (
    incident_seq INTEGER NOT NULL,
    event_seq    INTEGER NOT NULL,
    fault_id     TEXT,
    received_ms  INTEGER NOT NULL,
    event        TEXT NOT NULL,
    PRIMARY KEY (incident_seq, event_seq)
);
CREATE TABLE kv (
    scope      TEXT NOT NULL,
    key        BLOB NOT NULL,
    value      BLOB NOT NULL,
    expires_ms INTEGER,
    PRIMARY KEY (scope, key)
) WITHOUT ROWID;
CREATE INDEX kv_expires ON kv (expires_ms) WHERE expires_ms IS NOT NULL;
"#,
];

/// The schema version this build writes.
pub(crate) const VERSION: i64 = MIGRATIONS.len() as i64;
