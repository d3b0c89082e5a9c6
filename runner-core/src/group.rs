//! Incidents as groups of events: what a grouping stage and the event sink
//! share about one incident.
//!
//! A grouping stage (`kind = "group"` in `runner-plugins`) lets the first
//! event of a group key through as the incident's *leader*, with
//! [`Event::group`](crate::Event::group) set to a shared [`Incident`]. Later
//! events of the same key are *attached* to that incident (the stage ends
//! them with the outcome `merged`) while it is queued or running, and as
//! *recurrences* for a cooldown after it ended. The sink that runs the
//! leader reads the attached events ([`Incident::take_pending`]) into the
//! incident's workspace, before and while its agent runs.
//!
//! The leader's own outcome ends the incident ([`Incident::end`], called by
//! the stage's `Stage::finished`). Counters stay exact: the leader gets the
//! sink's outcome, every attached event its own `merged`.
//!
//! [`GroupHistory`] answers "what did we find last time" for a group key; a
//! workspace-backed implementation lives with the agent sink, a database can
//! back it instead.

use std::collections::VecDeque;
use std::fmt;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use tokio::sync::Notify;
use tokio::time::Instant;

use crate::event::Event;

/// Attached events an incident holds in memory until its sink takes them
/// (while its leader is queued, or between two reads of a running one);
/// beyond this, or beyond [`MAX_PENDING_BYTES`] of payload, they are
/// counted, not kept: a storm must not make memory grow, and merged events
/// no longer count against the payload budget.
pub(crate) const MAX_PENDING: usize = 2_000;
/// Payload bytes (compact JSON) of the events an incident holds in memory.
pub(crate) const MAX_PENDING_BYTES: usize = 4 * 1024 * 1024;

/// The identity of a group.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct GroupKey {
    /// Canonical text of the key's fields (a JSON array of strings): equal
    /// for exactly the events of one group. Untrusted text, escaped.
    pub canonical: String,
    /// Short stable digest of `canonical` (16 hex digits), for indexes. Not
    /// unique under attack: lookups compare `canonical`.
    pub id: String,
    /// The cluster of the group's events.
    pub cluster: String,
    /// Their namespace (empty for cluster-scoped objects).
    pub namespace: String,
    /// The owning workload the key was derived from (`Deployment`, …).
    pub workload_kind: String,
    /// The owning workload's name.
    pub workload_name: String,
    /// How the workload was found (`owner_reference`, `pod_name`, …).
    pub derivation: &'static str,
}

impl GroupKey {
    /// Builds the key from its field values (in key order) and the workload.
    pub fn new(
        fields: &[&str],
        cluster: &str,
        namespace: &str,
        workload: (&str, &str, &'static str),
    ) -> GroupKey {
        let canonical = serde_json::to_string(fields).unwrap_or_default();
        GroupKey {
            id: format!("{:016x}", fnv1a(canonical.as_bytes())),
            canonical,
            cluster: cluster.to_string(),
            namespace: namespace.to_string(),
            workload_kind: workload.0.to_string(),
            workload_name: workload.1.to_string(),
            derivation: workload.2,
        }
    }
}

impl GroupKey {
    /// The key back from its canonical text (as a state store keeps it);
    /// `None` when the text is not a key's canonical form.
    pub fn from_canonical(
        canonical: &str,
        cluster: &str,
        namespace: &str,
        workload: (&str, &str),
    ) -> Option<GroupKey> {
        let fields: Vec<String> = serde_json::from_str(canonical).ok()?;
        let fields: Vec<&str> = fields.iter().map(String::as_str).collect();
        let k = GroupKey::new(
            &fields,
            cluster,
            namespace,
            (workload.0, workload.1, "restored"),
        );
        (k.canonical == canonical).then_some(k)
    }
}

/// FNV-1a, 64 bits: stable across processes and versions (the digest is
/// written to disk), unlike the std hashers.
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// How an event joined its incident.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Joined {
    /// The leader: the event the incident was opened for.
    First,
    /// Arrived while the incident was queued or running.
    Attached,
    /// Arrived after it ended, within the cooldown.
    Recurrence,
}

impl Joined {
    /// The name in reports and `incident.json`: `first`, `attached`, `recurrence`.
    pub fn as_str(self) -> &'static str {
        match self {
            Joined::First => "first",
            Joined::Attached => "attached",
            Joined::Recurrence => "recurrence",
        }
    }
}

/// One event of an incident, as the sink reads it.
#[derive(Debug, Clone)]
pub struct Member {
    /// How the event joined the incident.
    pub joined: Joined,
    /// When it joined.
    pub at: SystemTime,
    /// The event (its `group` is always `None`).
    pub event: Event,
}

/// Where an incident is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Queued or running: new events attach.
    Open,
    /// Its leader reached an outcome at `at`: events attach as recurrences
    /// until `at + cooldown`.
    Ended {
        /// When the leader's outcome was recorded.
        at: Instant,
    },
    /// No more events attach (cooldown over, or it never ran).
    Closed,
}

/// Counts of an incident, as reports show them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counts {
    /// Events attached while queued or running (the leader not included).
    pub attached: u64,
    /// Events attached as recurrences after it ended.
    pub recurrences: u64,
    /// Attached events not kept in memory because the sink did not take
    /// them fast enough ([`MAX_PENDING`]).
    pub not_kept: u64,
}

impl Counts {
    /// Every event of the incident, the leader included.
    pub fn total(&self) -> u64 {
        1 + self.attached + self.recurrences
    }
}

/// What [`Incident::attach`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attach {
    /// The incident was open: the event joined it.
    Attached,
    /// The incident had ended within its cooldown: the event joined as a recurrence.
    Recurrence,
    /// The incident takes no more events: open a new one.
    Closed,
}

struct State {
    phase: Phase,
    counts: Counts,
    pending: VecDeque<Member>,
    /// Payload bytes held in `pending`.
    pending_bytes: usize,
    /// Set by the sink once it has a workspace (for logs and reports).
    incident_id: Option<String>,
    /// Whether attached events are kept for a sink to read. An incident
    /// restored from the state store has no sink call reading them: its
    /// events are counted only.
    keep: bool,
}

/// One incident: a group key, its leader and the events attached to it.
/// Shared (`Arc`) by the grouping stage, the leader event and the sink.
pub struct Incident {
    /// The group this incident belongs to.
    pub key: GroupKey,
    /// When the leader arrived.
    pub opened: Instant,
    /// The sink starts the agent no earlier than this (`group_wait`), so
    /// that a burst is collected before the investigation starts.
    pub wait_until: Instant,
    /// How long after the end repeats still attach (`group_interval`).
    pub cooldown: Duration,
    state: Mutex<State>,
    changed: Notify,
}

impl fmt::Debug for Incident {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Incident")
            .field("key", &self.key.canonical)
            .field("phase", &self.phase())
            .field("counts", &self.counts())
            .finish()
    }
}

impl Incident {
    /// Opens an incident for `leader` (stored without its `group`).
    pub fn open(
        key: GroupKey,
        leader: &Event,
        now: Instant,
        group_wait: Duration,
        cooldown: Duration,
    ) -> Incident {
        let mut first = leader.clone();
        first.group = None;
        let mut pending = VecDeque::new();
        pending.push_back(Member {
            joined: Joined::First,
            at: SystemTime::now(),
            event: first,
        });
        Incident {
            key,
            opened: now,
            wait_until: now + group_wait,
            cooldown,
            state: Mutex::new(State {
                phase: Phase::Open,
                counts: Counts::default(),
                pending,
                pending_bytes: 0,
                incident_id: None,
                keep: true,
            }),
            changed: Notify::new(),
        }
    }

    /// An incident that ended in a previous run (restored from the state
    /// store at `now`): events attach as recurrences for `cooldown_left`,
    /// and are counted, not kept (no sink call reads them).
    pub fn restored_ended(
        key: GroupKey,
        now: Instant,
        cooldown_left: Duration,
        incident_id: Option<String>,
        counts: Counts,
    ) -> Incident {
        Incident {
            key,
            opened: now,
            wait_until: now,
            cooldown: cooldown_left,
            state: Mutex::new(State {
                phase: Phase::Ended { at: now },
                counts,
                pending: VecDeque::new(),
                pending_bytes: 0,
                incident_id,
                keep: false,
            }),
            changed: Notify::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding this lock leaves consistent counters (every
        // update is a single assignment): keep going.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The phase at `now` (a cooldown that has run out is `Closed`).
    pub fn phase_at(&self, now: Instant) -> Phase {
        let st = self.lock();
        Self::effective(&st, now, self.cooldown)
    }

    /// The phase now (see [`Incident::phase_at`]).
    pub fn phase(&self) -> Phase {
        self.phase_at(Instant::now())
    }

    fn effective(st: &State, now: Instant, cooldown: Duration) -> Phase {
        match st.phase {
            Phase::Ended { at } if now >= at + cooldown => Phase::Closed,
            p => p,
        }
    }

    /// Attaches `ev` at `now`, unless the incident takes no more events.
    pub fn attach(&self, ev: &Event, now: Instant) -> Attach {
        let mut st = self.lock();
        let how = match Self::effective(&st, now, self.cooldown) {
            Phase::Open => {
                st.counts.attached += 1;
                (Attach::Attached, Joined::Attached)
            }
            Phase::Ended { .. } => {
                st.counts.recurrences += 1;
                (Attach::Recurrence, Joined::Recurrence)
            }
            Phase::Closed => return Attach::Closed,
        };
        let bytes = crate::event::json_size(&ev.raw);
        if !st.keep {
            // Counted on the incident, not kept: nothing will read it.
        } else if st.pending.len() < MAX_PENDING && st.pending_bytes + bytes <= MAX_PENDING_BYTES {
            st.pending_bytes += bytes;
            let mut event = ev.clone();
            event.group = None;
            st.pending.push_back(Member {
                joined: how.1,
                at: SystemTime::now(),
                event,
            });
        } else {
            st.counts.not_kept += 1;
        }
        drop(st);
        self.changed.notify_one();
        how.0
    }

    /// The leader reached its outcome at `now`: recurrences from now on.
    pub fn end(&self, now: Instant) {
        let mut st = self.lock();
        if st.phase == Phase::Open {
            st.phase = Phase::Ended { at: now };
        }
        drop(st);
        self.changed.notify_one();
    }

    /// No more events attach (the leader never ran, or the cooldown ended).
    pub fn close(&self) {
        self.lock().phase = Phase::Closed;
        self.changed.notify_one();
    }

    /// Takes the events not yet read, oldest first.
    pub fn take_pending(&self) -> Vec<Member> {
        let mut st = self.lock();
        st.pending_bytes = 0;
        st.pending.drain(..).collect()
    }

    /// The incident's counts so far.
    pub fn counts(&self) -> Counts {
        self.lock().counts
    }

    /// Resolves after the next attach, end or close (one waiter: the sink).
    pub async fn changed(&self) {
        self.changed.notified().await
    }

    /// Records the sink's id for the incident (its workspace name).
    pub fn set_incident_id(&self, id: &str) {
        self.lock().incident_id = Some(id.to_string());
    }

    /// The sink's id for the incident, once it has one.
    pub fn incident_id(&self) -> Option<String> {
        self.lock().incident_id.clone()
    }
}

/// An earlier incident of a group, as the history knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PastIncident {
    /// The incident's id (its workspace name).
    pub id: String,
    /// Its workspace (reports, `incident.json`, the agent's investigation).
    pub dir: PathBuf,
    /// Its status (`completed`, `failed`, …).
    pub status: String,
    /// When it ended (RFC 3339), if it did.
    pub ended_at: Option<String>,
}

/// Past incidents by group: "what we found last time". Implementations
/// must compare the full [`GroupKey::canonical`], never only the digest.
pub trait GroupHistory: Send + Sync {
    /// The most recent finished incident of `key`, if any is known.
    fn last(&self, key: &GroupKey) -> Option<PastIncident>;
    /// `incident` of `key` finished (replaces the previous one).
    fn record(&self, key: &GroupKey, incident: PastIncident);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(name: &str) -> Event {
        Event::from_str(
            &format!(
                r#"{{"cluster":"c","severity":"critical","resource":{{"kind":"Pod","name":"{name}"}}}}"#
            ),
            None,
        )
        .unwrap()
    }

    fn key() -> GroupKey {
        GroupKey::new(
            &["c", "", "Deployment", "web"],
            "c",
            "",
            ("Deployment", "web", "pod_name"),
        )
    }

    #[test]
    fn canonical_keys_do_not_collide_on_separators() {
        let a = GroupKey::new(&["a-b", "c"], "", "", ("", "", ""));
        let b = GroupKey::new(&["a", "b-c"], "", "", ("", "", ""));
        let c = GroupKey::new(&["a\",\"b", "c"], "", "", ("", "", ""));
        assert_ne!(a.canonical, b.canonical);
        assert_ne!(a.canonical, c.canonical);
        assert_eq!(a.id.len(), 16);
        assert_eq!(a.id, GroupKey::new(&["a-b", "c"], "", "", ("", "", "")).id);
    }

    #[tokio::test(start_paused = true)]
    async fn lifecycle_attach_end_recur_close() {
        let t0 = Instant::now();
        let inc = Incident::open(
            key(),
            &ev("web-1"),
            t0,
            Duration::from_secs(5),
            Duration::from_secs(60),
        );
        assert_eq!(inc.wait_until, t0 + Duration::from_secs(5));
        assert_eq!(inc.attach(&ev("web-2"), t0), Attach::Attached);
        let taken = inc.take_pending();
        assert_eq!(taken.len(), 2);
        assert_eq!(taken[0].joined, Joined::First);
        assert!(taken.iter().all(|m| m.event.group.is_none()));
        inc.end(t0 + Duration::from_secs(10));
        assert_eq!(
            inc.attach(&ev("web-3"), t0 + Duration::from_secs(69)),
            Attach::Recurrence
        );
        assert_eq!(
            inc.attach(&ev("web-3"), t0 + Duration::from_secs(70)),
            Attach::Closed
        );
        let c = inc.counts();
        assert_eq!((c.attached, c.recurrences, c.total()), (1, 1, 3));
    }

    #[tokio::test(start_paused = true)]
    async fn pending_is_bounded_and_counted() {
        let t0 = Instant::now();
        let inc = Incident::open(key(), &ev("web-1"), t0, Duration::ZERO, Duration::ZERO);
        let e = ev("web-2");
        for _ in 0..MAX_PENDING + 5 {
            assert_eq!(inc.attach(&e, t0), Attach::Attached);
        }
        assert_eq!(inc.take_pending().len(), MAX_PENDING);
        assert_eq!(inc.counts().not_kept, 6);
        assert_eq!(inc.counts().attached, MAX_PENDING as u64 + 5);
    }
}
