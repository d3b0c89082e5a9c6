//! `kind = "group"`: turns the events of one group key into one incident,
//! as Alertmanager groups alerts (`group_by`, `group_wait`,
//! `group_interval`).
//!
//! * The first event of a key opens an incident and passes on as its
//!   *leader* (`Event::group` set); the sink starts its agent no earlier
//!   than `group_wait` after it arrived, so a burst is collected first.
//! * Events of the key while the incident is queued or running attach to it
//!   (outcome `merged`); the sink writes them to the incident's
//!   `events.jsonl`, also while the agent runs.
//! * When the leader reaches its outcome the incident ends; events of the
//!   key within `group_interval` after that attach as *recurrences*
//!   (`merged` too, counted on the incident). Recurrences do not extend
//!   the interval: a fault that keeps recurring is investigated again every
//!   interval, with what the previous investigation found.
//! * An incident whose leader never ran (dropped or rejected by a full
//!   queue, abandoned at shutdown, withdrawn, stopped by a later stage) is
//!   forgotten at once: the next event of the key opens a new one, so an
//!   overflow never hides a fault. Events that had attached to it stay
//!   `merged` and are listed in its audit log lines.
//!
//! The key (`key`): `cluster`, `namespace`, `workload` (the owning
//! workload, see [`workload`]), `kind`, `name`, `fault_type`.

pub(crate) mod table;
pub(crate) mod workload;

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use runner_core::config::TableReader;
use runner_core::group::{Attach, GroupKey, Incident, Phase};
use runner_core::state::StateScope;
use runner_core::{Event, Outcome, Stage, StageFuture, Verdict};
use tokio::time::Instant;

use crate::component::{BuildContext, ComponentConfig, KeyError, ReadContext};
use crate::settings::{GROUP_INTERVAL_SECONDS, GROUP_WAIT_SECONDS};
use table::GroupTable;

/// A field of the group key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeyField {
    Cluster,
    Namespace,
    /// The owning workload's kind and name.
    Workload,
    Kind,
    Name,
    FaultType,
}

impl KeyField {
    pub(crate) const ALLOWED: &'static str = "cluster, namespace, workload, kind, name, fault_type";

    pub(crate) fn parse(s: &str) -> Option<KeyField> {
        Some(match s.trim() {
            "cluster" => KeyField::Cluster,
            "namespace" => KeyField::Namespace,
            "workload" => KeyField::Workload,
            "kind" => KeyField::Kind,
            "name" => KeyField::Name,
            "fault_type" | "faultType" => KeyField::FaultType,
            _ => return None,
        })
    }
}

pub(crate) const DEFAULT_KEY: [KeyField; 3] =
    [KeyField::Cluster, KeyField::Namespace, KeyField::Workload];

/// Upper bound of `group_wait_seconds` (an hour: longer leaves a storm
/// uninvestigated for too long).
pub(crate) const MAX_WAIT_SECONDS: u64 = 3600;
/// Upper bound of `group_interval_seconds` (a week).
pub(crate) const MAX_INTERVAL_SECONDS: u64 = 7 * 86_400;
/// Upper bound of `max_groups`.
pub(crate) const MAX_GROUPS_LIMIT: usize = 10_000_000;

/// Config type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct GroupConfig {
    pub key: Vec<KeyField>,
    pub group_wait_seconds: u64,
    pub group_interval_seconds: u64,
    pub max_groups: usize,
}

impl Default for GroupConfig {
    fn default() -> Self {
        GroupConfig {
            key: DEFAULT_KEY.to_vec(),
            group_wait_seconds: 10,
            group_interval_seconds: 300,
            max_groups: 100_000,
        }
    }
}

impl ComponentConfig for GroupConfig {
    const KIND: &'static str = "group";
    type Built = Box<dyn Stage>;

    fn read(r: &mut TableReader<'_>, _cx: &ReadContext<'_>) -> Option<Self> {
        let d = GroupConfig::default();
        let wait = r.layered(
            "group_wait_seconds",
            GROUP_WAIT_SECONDS.env,
            d.group_wait_seconds,
        );
        let interval = r.layered(
            "group_interval_seconds",
            GROUP_INTERVAL_SECONDS.env,
            d.group_interval_seconds,
        );
        let max_groups: usize = r.opt_or("max_groups", d.max_groups);
        let mut ok = r
            .check_range(
                "group_wait_seconds",
                GROUP_WAIT_SECONDS.env,
                wait,
                0..=MAX_WAIT_SECONDS,
                "seconds",
            )
            .is_some();
        ok &= r
            .check_range(
                "group_interval_seconds",
                GROUP_INTERVAL_SECONDS.env,
                interval,
                0..=MAX_INTERVAL_SECONDS,
                "seconds",
            )
            .is_some();
        ok &= r
            .check_range("max_groups", "", max_groups, 1..=MAX_GROUPS_LIMIT, "keys")
            .is_some();
        let key = super::read_key(r, &DEFAULT_KEY, KeyField::ALLOWED, KeyField::parse)?;
        ok.then_some(GroupConfig {
            key,
            group_wait_seconds: wait,
            group_interval_seconds: interval,
            max_groups,
        })
    }

    fn build(&self, _cx: &BuildContext) -> Result<Box<dyn Stage>, KeyError> {
        Ok(Box::new(GroupStage::new(self)))
    }
}

/// Outcomes of a leader whose incident never ran: the group forgets it.
fn never_ran(outcome: Outcome) -> bool {
    matches!(
        outcome,
        Outcome::Dropped
            | Outcome::Rejected
            | Outcome::Abandoned
            | Outcome::Cancelled
            | Outcome::Filtered
            | Outcome::Duplicate
            | Outcome::PluginDropped
            | Outcome::Invalid
            | Outcome::Merged
    )
}

const ATTACHED: &str = "attached to the queued or running incident of its group";
const RECURRENCE: &str = "recurrence within group_interval of its group's incident";

/// Runtime type.
pub(crate) struct GroupStage {
    key: Vec<KeyField>,
    wait: Duration,
    interval: Duration,
    table: GroupTable,
    /// The state store's scope, when the runner keeps durable state: ended
    /// incidents are written there so their cooldown survives a restart.
    durable: std::sync::OnceLock<StateScope>,
}

/// What the state store keeps per group key (the key is the canonical
/// text): an incident that ended, until its cooldown is over. Open
/// incidents need no entry: their leader is a pending event in the store,
/// and [`Stage::readmitted`] reopens them from it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq)]
pub(crate) struct EndedRecord {
    pub(crate) incident_id: Option<String>,
    /// Wall-clock end of the cooldown (ms since the epoch).
    pub(crate) until_ms: i64,
    pub(crate) cluster: String,
    pub(crate) namespace: String,
    pub(crate) workload_kind: String,
    pub(crate) workload_name: String,
    pub(crate) attached: u64,
    pub(crate) recurrences: u64,
}

impl GroupStage {
    pub(crate) fn new(cfg: &GroupConfig) -> GroupStage {
        GroupStage {
            key: if cfg.key.is_empty() {
                DEFAULT_KEY.to_vec()
            } else {
                cfg.key.clone()
            },
            wait: Duration::from_secs(cfg.group_wait_seconds),
            interval: Duration::from_secs(cfg.group_interval_seconds),
            table: GroupTable::new(cfg.max_groups),
            durable: std::sync::OnceLock::new(),
        }
    }

    /// Restores the ended incidents a previous run wrote (see
    /// [`EndedRecord`]) at `now`; returns how many are still cooling down.
    pub(crate) fn restore(
        &self,
        entries: Vec<(Vec<u8>, Vec<u8>)>,
        now: Instant,
        now_ms: i64,
    ) -> usize {
        let mut restored = 0;
        for (k, v) in entries {
            let (Ok(canonical), Ok(rec)) = (
                String::from_utf8(k),
                serde_json::from_slice::<EndedRecord>(&v),
            ) else {
                tracing::warn!("group stage: a stored group entry does not parse; skipped");
                continue;
            };
            let left = rec.until_ms.saturating_sub(now_ms);
            if left <= 0 {
                continue;
            }
            let Some(key) = GroupKey::from_canonical(
                &canonical,
                &rec.cluster,
                &rec.namespace,
                (&rec.workload_kind, &rec.workload_name),
            ) else {
                continue;
            };
            let counts = runner_core::group::Counts {
                attached: rec.attached,
                recurrences: rec.recurrences,
                not_kept: 0,
            };
            let inc = Arc::new(Incident::restored_ended(
                key,
                now,
                Duration::from_millis(left as u64),
                rec.incident_id,
                counts,
            ));
            self.table.with(&canonical, now, |cur| {
                // An incident already open for the key (none at startup)
                // wins over a stored cooldown.
                let keep = cur.is_some_and(|c| c.phase_at(now) == Phase::Open);
                ((), (!keep).then_some(inc))
            });
            restored += 1;
        }
        restored
    }

    /// Reopens the incident of a leader recovered from the state store at
    /// `now`: repeats attach to it again, and it waits out `group_wait`
    /// anew (the events of the burst that arrive after the restart join).
    pub(crate) fn reopen(&self, ev: &mut Event, now: Instant) {
        let key = self.key_of(ev);
        let canonical = key.canonical.clone();
        let (wait, interval) = (self.wait, self.interval);
        ev.group = None;
        let inc = Arc::new(Incident::open(key, ev, now, wait, interval));
        ev.group = Some(inc.clone());
        self.table.with(&canonical, now, |_| ((), Some(inc)));
    }

    fn record_end(&self, inc: &Incident) {
        let Some(scope) = self.durable.get() else {
            return;
        };
        let c = inc.counts();
        let until_ms = runner_core::state::now_ms()
            .saturating_add(self.interval.as_millis().min(i64::MAX as u128) as i64);
        let rec = EndedRecord {
            incident_id: inc.incident_id(),
            until_ms,
            cluster: inc.key.cluster.clone(),
            namespace: inc.key.namespace.clone(),
            workload_kind: inc.key.workload_kind.clone(),
            workload_name: inc.key.workload_name.clone(),
            attached: c.attached,
            recurrences: c.recurrences,
        };
        if let Ok(v) = serde_json::to_vec(&rec) {
            scope.put(inc.key.canonical.as_bytes(), v, Some(until_ms));
        }
    }

    /// The group state (for tests).
    #[cfg(test)]
    pub(crate) fn table(&self) -> &GroupTable {
        &self.table
    }

    /// The group key of `ev`.
    pub(crate) fn key_of(&self, ev: &Event) -> GroupKey {
        let wl = workload::derive(ev);
        let r = &ev.resource;
        let mut fields: Vec<&str> = Vec::with_capacity(self.key.len() + 1);
        for f in &self.key {
            match f {
                KeyField::Cluster => fields.push(&ev.cluster),
                KeyField::Namespace => fields.push(&r.namespace),
                KeyField::Workload => {
                    fields.push(&wl.kind);
                    fields.push(&wl.name);
                }
                KeyField::Kind => fields.push(&r.kind),
                KeyField::Name => fields.push(&r.name),
                KeyField::FaultType => fields.push(&ev.fault_type),
            }
        }
        GroupKey::new(
            &fields,
            &ev.cluster,
            &r.namespace,
            (&wl.kind, &wl.name, wl.how),
        )
    }

    /// Decides for one event at `now`.
    pub(crate) fn decide(&self, ev: &mut Event, now: Instant) -> Verdict {
        let key = self.key_of(ev);
        let canonical = key.canonical.clone();
        let (wait, interval) = (self.wait, self.interval);
        let attached = self.table.with(&canonical, now, |cur| {
            if let Some(inc) = cur {
                match inc.attach(ev, now) {
                    Attach::Attached => return (Some(ATTACHED), None),
                    Attach::Recurrence => return (Some(RECURRENCE), None),
                    Attach::Closed => {}
                }
            }
            let inc = Arc::new(Incident::open(key, ev, now, wait, interval));
            ev.group = Some(inc.clone());
            (None, Some(inc))
        });
        match attached {
            Some(why) => Verdict::Drop {
                outcome: Outcome::Merged,
                reason: Cow::Borrowed(why),
            },
            None => Verdict::Pass,
        }
    }
}

impl Stage for GroupStage {
    fn name(&self) -> &str {
        "group"
    }

    fn process<'a>(&'a self, event: &'a mut Event) -> StageFuture<'a> {
        StageFuture::Ready(self.decide(event, Instant::now()))
    }

    fn finished(&self, event: &Event, outcome: Outcome) {
        let Some(inc) = &event.group else { return };
        if never_ran(outcome) {
            inc.close();
            self.table.forget(inc);
        } else {
            inc.end(Instant::now());
            if !self.interval.is_zero() {
                self.record_end(inc);
            }
        }
    }

    fn attach_state(&self, scope: StateScope, entries: Vec<(Vec<u8>, Vec<u8>)>) {
        let n = self.restore(entries, Instant::now(), runner_core::state::now_ms());
        if n > 0 {
            tracing::info!(
                groups = n,
                "group cooldowns restored from the state store: repeats attach to their incidents"
            );
        }
        let _ = self.durable.set(scope);
    }

    fn readmitted(&self, event: &mut Event) {
        self.reopen(event, Instant::now());
        if let Some(inc) = &event.group {
            tracing::info!(group = %inc.key.id, cluster = %inc.key.cluster, workload = %inc.key.workload_name, "group incident reopened from the state store: repeats attach to it");
        }
    }
}

#[cfg(test)]
mod tests;
