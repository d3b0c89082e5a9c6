//! `kind = "dedup"`: suppresses an event whose key was admitted within
//! `window_seconds`, or whose earlier event is still queued or running.
//!
//! Design:
//! * The table is a `DashMap` (sharded locks, no global lock; foldhash with
//!   a per-process random seed: cheaper than SipHash) keyed by the
//!   *full* encoded key. Each field is written as a tag, its length and its
//!   bytes, so field boundaries are unambiguous (`"a-b"`,`"c"` and
//!   `"a"`,`"b-c"` are different keys) and equal hashes never merge two
//!   resources: the map compares the stored key on every hit.
//! * A key is suppressed while it is in flight (admitted and not yet at its
//!   terminal outcome, tracked through `Stage::finished`) or within the window
//!   of its last admission, whichever is later. An admission whose event
//!   never became an incident (dropped or rejected by a full queue, abandoned,
//!   stopped by a later stage) is undone when it ends: the key falls back to
//!   its previous admission, or is forgotten, so an overflow never blinds the
//!   runner to a fault for the rest of the window. Duplicates do not extend the
//!   window (a fault repeating every minute still gets an agent every window).
//!   `finished` finds the key by re-encoding the event, so a stage placed
//!   *after* dedup must not change key fields; if one does, the stale
//!   in-flight mark is ignored after [`IN_FLIGHT_STALE`] (24 h).
//! * Expiry is lazy: an expired entry is reused on its next lookup. When the
//!   table grows beyond `max_keys`, one caller (an atomic flag elects it)
//!   removes expired entries and then the oldest (by last admission, in-flight
//!   keys last) down to a low-water mark, so the scan is amortized over many
//!   inserts. Evictions of live keys are counted.
//! * Time is `tokio::time::Instant`, so tests run on tokio's paused clock.

use std::borrow::Cow;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use dashmap::DashMap;
use dashmap::mapref::entry::Entry;
use runner_core::config::TableReader;
use runner_core::state::StateScope;
use runner_core::{Event, Outcome, Stage, StageFuture, Verdict};
use tokio::time::Instant;

use crate::component::{BuildContext, ComponentConfig, KeyError, ReadContext};
use crate::settings::{DEDUP_MAX_KEYS, DEDUP_WINDOW_SECONDS};

/// A field of the dedup key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyField {
    Cluster,
    Namespace,
    Kind,
    Name,
    /// Falls back to cluster/namespace/kind/name/fault type when the server
    /// sends no `faultId` (older servers): otherwise every such event would
    /// share one key.
    FaultId,
    FaultType,
    Uid,
    ApiVersion,
}

impl KeyField {
    pub(crate) const ALLOWED: &'static str =
        "cluster, namespace, kind, name, fault_id, fault_type, uid, api_version";

    pub(crate) fn parse(s: &str) -> Option<KeyField> {
        Some(match s.trim() {
            "cluster" => KeyField::Cluster,
            "namespace" => KeyField::Namespace,
            "kind" => KeyField::Kind,
            "name" => KeyField::Name,
            "fault_id" | "faultId" => KeyField::FaultId,
            "fault_type" | "faultType" => KeyField::FaultType,
            "uid" => KeyField::Uid,
            "api_version" | "apiVersion" => KeyField::ApiVersion,
            _ => return None,
        })
    }
}

pub(crate) const DEFAULT_KEY: [KeyField; 4] = [
    KeyField::Cluster,
    KeyField::Namespace,
    KeyField::Kind,
    KeyField::Name,
];

/// Config type (what `pipeline.toml` says).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DedupConfig {
    pub window_seconds: u64,
    pub key: Vec<KeyField>,
    pub max_keys: usize,
}

impl Default for DedupConfig {
    fn default() -> Self {
        DedupConfig {
            window_seconds: DEDUP_WINDOW_SECONDS.default_value(),
            key: DEFAULT_KEY.to_vec(),
            max_keys: DEDUP_MAX_KEYS.default_value(),
        }
    }
}

/// Upper bound of `window_seconds` (one week).
pub(crate) const MAX_WINDOW_SECONDS: u64 = 7 * 86_400;
/// Upper bound of `max_keys`.
pub(crate) const MAX_KEYS_LIMIT: usize = 10_000_000;

impl ComponentConfig for DedupConfig {
    const KIND: &'static str = "dedup";
    type Built = Box<dyn Stage>;

    fn read(r: &mut TableReader<'_>, _cx: &ReadContext<'_>) -> Option<Self> {
        let window_seconds: u64 = r.setting(&DEDUP_WINDOW_SECONDS);
        let max_keys: usize = r.setting(&DEDUP_MAX_KEYS);
        // A week of window and ten million keys (about a GiB of table) are
        // far beyond any real storm; bigger values are typos.
        let mut ok = r
            .check_range(
                "window_seconds",
                DEDUP_WINDOW_SECONDS.env,
                window_seconds,
                0..=MAX_WINDOW_SECONDS,
                "seconds",
            )
            .is_some();
        ok &= r
            .check_range(
                "max_keys",
                DEDUP_MAX_KEYS.env,
                max_keys,
                1..=MAX_KEYS_LIMIT,
                "keys",
            )
            .is_some();
        let key = super::read_key(r, &DEFAULT_KEY, KeyField::ALLOWED, KeyField::parse)?;
        ok.then_some(DedupConfig {
            window_seconds,
            key,
            max_keys,
        })
    }

    fn build(&self, _cx: &BuildContext) -> Result<Box<dyn Stage>, KeyError> {
        Ok(Box::new(DedupStage::new(self)))
    }
}

#[derive(Debug, Clone, Copy)]
struct Slot {
    /// Last time an event with this key passed the stage.
    admitted: Instant,
    /// Passed events not yet at their terminal outcome.
    in_flight: u32,
    /// The admission before `admitted`, restored when the current one ends
    /// without an incident (see [`never_ran`]); `None` if there was none.
    before: Option<Instant>,
}

/// Outcomes of an admitted event that never became an incident: dropped or
/// rejected by a full queue, abandoned at shutdown, or stopped by a stage
/// after dedup. Such an admission must not suppress later reports of the
/// fault: only an incident queued, running or run does.
fn never_ran(outcome: Outcome) -> bool {
    matches!(
        outcome,
        Outcome::Dropped
            | Outcome::Rejected
            | Outcome::Abandoned
            | Outcome::Filtered
            | Outcome::Duplicate
            | Outcome::PluginDropped
            | Outcome::Invalid
    )
}

/// Runtime type.
pub struct DedupStage {
    window: Duration,
    key: Vec<KeyField>,
    max_keys: usize,
    table: DashMap<Box<[u8]>, Slot, foldhash::fast::RandomState>,
    /// Entries in `table`, kept here so the bound check does not lock every shard.
    len: AtomicUsize,
    evicting: AtomicBool,
    /// The first live-key eviction is logged at warn, later ones at debug.
    warned: AtomicBool,
    evictions: AtomicU64,
    /// Set when the runner keeps durable state: admissions are written
    /// there, so a restart keeps every window.
    durable: std::sync::OnceLock<Durable>,
}

/// The stage's share of the state store and the clock mapping: the table
/// counts in `tokio::time::Instant`, the store in wall-clock milliseconds.
struct Durable {
    scope: StateScope,
    base: Instant,
    base_ms: i64,
}

impl Durable {
    fn ms(&self, t: Instant) -> i64 {
        self.base_ms + t.saturating_duration_since(self.base).as_millis() as i64
            - self.base.saturating_duration_since(t).as_millis() as i64
    }
    fn instant(&self, ms: i64, now: Instant) -> Instant {
        let now_ms = self.ms(now);
        let age = Duration::from_millis(now_ms.saturating_sub(ms).max(0) as u64);
        now.checked_sub(age).unwrap_or(now)
    }
}

/// Stored value of a key: admission and previous admission (ms), LE.
fn encode_slot(d: &Durable, slot: &Slot) -> Vec<u8> {
    let mut v = Vec::with_capacity(16);
    v.extend_from_slice(&d.ms(slot.admitted).to_le_bytes());
    v.extend_from_slice(&slot.before.map_or(i64::MIN, |b| d.ms(b)).to_le_bytes());
    v
}

/// No event stays queued or running this long (agent timeouts are minutes).
/// An older in-flight mark is a leak, e.g. a stage after dedup changed the
/// key fields so `finished` could not find the key, and is ignored: the key
/// recovers instead of being suppressed until evicted.
pub(crate) const IN_FLIGHT_STALE: Duration = Duration::from_secs(24 * 3600);

const WITHIN_WINDOW: &str = "key seen within dedup window";
const IN_FLIGHT: &str = "key still queued or running";

impl DedupStage {
    pub fn new(cfg: &DedupConfig) -> DedupStage {
        DedupStage {
            window: Duration::from_secs(cfg.window_seconds),
            key: if cfg.key.is_empty() {
                DEFAULT_KEY.to_vec()
            } else {
                cfg.key.clone()
            },
            max_keys: cfg.max_keys.max(1),
            table: DashMap::default(),
            len: AtomicUsize::new(0),
            evicting: AtomicBool::new(false),
            warned: AtomicBool::new(false),
            evictions: AtomicU64::new(0),
            durable: std::sync::OnceLock::new(),
        }
    }

    /// Writes a key's slot to the state store (no-op without one).
    fn persist(&self, key: &[u8], slot: &Slot) {
        if let Some(d) = self.durable.get() {
            let expires = d.ms(slot.admitted) + self.window.as_millis() as i64;
            d.scope.put(key, encode_slot(d, slot), Some(expires));
        }
    }

    fn unpersist(&self, key: &[u8]) {
        if let Some(d) = self.durable.get() {
            d.scope.delete(key);
        }
    }

    /// Live keys evicted because the table was full.
    pub fn evictions(&self) -> u64 {
        self.evictions.load(Ordering::Relaxed)
    }

    /// Keys currently stored (live or expired-but-not-yet-reclaimed).
    pub fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The encoded key: per field a tag byte, a LEB128 length, then bytes.
    pub(crate) fn encode_key(&self, e: &Event) -> Vec<u8> {
        let mut buf = Vec::with_capacity(96);
        self.encode_into(e, &mut buf);
        buf
    }

    /// Runs `f` on the encoded key, built in a per-thread buffer: no
    /// allocation per event (only a new key is copied into the table).
    fn with_key<R>(&self, e: &Event, f: impl FnOnce(&[u8]) -> R) -> R {
        thread_local! {
            static BUF: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(Vec::with_capacity(256));
        }
        BUF.with(|b| {
            // `try_borrow_mut` guards against re-entrance (a hook calling
            // back into the stage): fall back to a fresh buffer then.
            match b.try_borrow_mut() {
                Ok(mut buf) => {
                    buf.clear();
                    self.encode_into(e, &mut buf);
                    f(&buf)
                }
                Err(_) => f(&self.encode_key(e)),
            }
        })
    }

    fn encode_into(&self, e: &Event, buf: &mut Vec<u8>) {
        fn put(buf: &mut Vec<u8>, s: &str) {
            let mut n = s.len();
            while n >= 0x80 {
                buf.push((n as u8) | 0x80);
                n >>= 7;
            }
            buf.push(n as u8);
            buf.extend_from_slice(s.as_bytes());
        }
        for f in &self.key {
            // One tag byte per field: a key of fields (a, b) never equals (b, a)
            // content-wise, and the fault_id fallback cannot mimic a real id.
            buf.push(*f as u8);
            let r = &e.resource;
            match f {
                KeyField::Cluster => put(buf, &e.cluster),
                KeyField::Namespace => put(buf, &r.namespace),
                KeyField::Kind => put(buf, &r.kind),
                KeyField::Name => put(buf, &r.name),
                KeyField::FaultType => put(buf, &e.fault_type),
                KeyField::Uid => put(buf, &r.uid),
                KeyField::ApiVersion => put(buf, &r.api_version),
                KeyField::FaultId => match &e.fault_id {
                    Some(id) => {
                        buf.push(1);
                        put(buf, id);
                    }
                    None => {
                        buf.push(0);
                        for s in [&e.cluster, &r.namespace, &r.kind, &r.name, &e.fault_type] {
                            put(buf, s);
                        }
                    }
                },
            }
        }
    }

    fn suppressed(&self, ent: &Slot, now: Instant) -> Option<&'static str> {
        let age = now.saturating_duration_since(ent.admitted);
        if ent.in_flight > 0 && age < IN_FLIGHT_STALE {
            Some(IN_FLIGHT)
        } else if age < self.window {
            Some(WITHIN_WINDOW)
        } else {
            None
        }
    }

    /// Decides for one event; on pass the key is marked admitted and in flight.
    fn check(&self, e: &Event) -> Verdict {
        self.with_key(e, |key| self.check_key(key))
    }

    fn check_key(&self, key: &[u8]) -> Verdict {
        let now = Instant::now();
        // Fast path: known key (no allocation for the stored key).
        if let Some(mut ent) = self.table.get_mut(key) {
            return self.decide(key, &mut ent, now);
        }
        // The shard lock held by `entry` makes check-and-insert atomic: two
        // racing events with one key yield exactly one admission.
        let len = match self.table.entry(Box::from(key)) {
            Entry::Occupied(mut o) => return self.decide(key, o.get_mut(), now),
            Entry::Vacant(v) => {
                // Counted while the shard lock is held, so an eviction can
                // never remove (and subtract) the entry before it was added.
                let len = self.len.fetch_add(1, Ordering::Relaxed) + 1;
                let slot = Slot {
                    admitted: now,
                    in_flight: 1,
                    before: None,
                };
                self.persist(key, &slot);
                v.insert(slot);
                len
            }
        };
        if len > self.max_keys {
            self.evict(now);
        }
        Verdict::Pass
    }

    fn decide(&self, key: &[u8], ent: &mut Slot, now: Instant) -> Verdict {
        match self.suppressed(ent, now) {
            Some(why) => Verdict::Drop {
                outcome: Outcome::Duplicate,
                reason: Cow::Borrowed(why),
            },
            None => {
                ent.before = Some(ent.admitted);
                ent.admitted = now;
                // Not `+= 1`: a pass means nothing (live) was in flight, and
                // this forgets a stale mark for good.
                ent.in_flight = 1;
                self.persist(key, ent);
                Verdict::Pass
            }
        }
    }

    /// Brings the table back under `max_keys`: expired entries first, then
    /// the oldest admissions (in-flight keys only when nothing else is left).
    /// Shrinks to a low-water mark 1/16 below the bound so the O(n) scan runs
    /// once per many inserts, not on each one.
    fn evict(&self, now: Instant) {
        if self.evicting.swap(true, Ordering::Acquire) {
            return; // Another caller is already at it.
        }
        let target = self.max_keys - self.max_keys / 16;
        let mut expired = 0usize;
        self.table.retain(|_, ent| {
            let keep = self.suppressed(ent, now).is_some();
            if !keep {
                expired += 1;
            }
            keep
        });
        self.len.fetch_sub(expired, Ordering::Relaxed);
        let len = self.len.load(Ordering::Relaxed);
        let mut evicted = 0usize;
        if len > target {
            // (in flight?, admitted): live idle keys go before in-flight ones.
            let mut ages: Vec<(bool, Instant)> = self
                .table
                .iter()
                .map(|r| (r.value().in_flight > 0, r.value().admitted))
                .collect();
            let excess = (len - target).min(ages.len());
            if excess > 0 {
                let (_, nth, _) = ages.select_nth_unstable(excess - 1);
                let cutoff = *nth;
                let mut budget = excess;
                self.table.retain(|_, ent| {
                    if budget > 0 && (ent.in_flight > 0, ent.admitted) <= cutoff {
                        budget -= 1;
                        false
                    } else {
                        true
                    }
                });
                evicted = excess - budget;
                self.len.fetch_sub(evicted, Ordering::Relaxed);
                self.evictions.fetch_add(evicted as u64, Ordering::Relaxed);
            }
        }
        tracing::debug!(
            expired,
            evicted,
            evictions_total = self.evictions.load(Ordering::Relaxed),
            remaining = self.len.load(Ordering::Relaxed),
            max_keys = self.max_keys,
            "dedup table over max_keys: reclaimed expired keys and evicted the oldest"
        );
        // Evicting live keys means repeats may get agents again: say so once.
        if evicted > 0 && !self.warned.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                max_keys = self.max_keys,
                "dedup table full of live keys: evicting the oldest (duplicates of evicted keys will pass); consider raising DEDUP_MAX_KEYS"
            );
        }
        self.evicting.store(false, Ordering::Release);
    }
}

impl Stage for DedupStage {
    fn name(&self) -> &str {
        "dedup"
    }

    fn process<'a>(&'a self, event: &'a mut Event) -> StageFuture<'a> {
        StageFuture::Ready(self.check(event))
    }

    fn finished(&self, event: &Event, outcome: Outcome) {
        self.with_key(event, |key| {
            // Missing when evicted meanwhile: nothing to release.
            let forget = {
                let Some(mut ent) = self.table.get_mut(key) else {
                    return;
                };
                ent.in_flight = ent.in_flight.saturating_sub(1);
                if !never_ran(outcome) || ent.in_flight > 0 {
                    return;
                }
                // No incident came of this admission: the key suppresses
                // again only as far as its previous admission does.
                match ent.before.take() {
                    Some(prev) => {
                        ent.admitted = prev;
                        self.persist(key, &ent);
                        return;
                    }
                    None => ent.admitted,
                }
            };
            // First admission of the key: forget it. Only if nothing was
            // admitted in between (the shard lock was released above).
            let gone = self
                .table
                .remove_if(key, |_, e| e.in_flight == 0 && e.admitted == forget);
            if gone.is_some() {
                self.len.fetch_sub(1, Ordering::Relaxed);
                self.unpersist(key);
            }
        })
    }

    /// Restores the windows a previous run left; expired keys are skipped.
    fn attach_state(&self, scope: StateScope, entries: Vec<(Vec<u8>, Vec<u8>)>) {
        let now = Instant::now();
        let d = Durable {
            scope,
            base: now,
            base_ms: runner_core::state::now_ms(),
        };
        let mut restored = 0usize;
        for (key, value) in entries {
            let Some((a, b)) = value.get(..16).map(|v| (&v[..8], &v[8..16])).map(|(a, b)| {
                (
                    i64::from_le_bytes(a.try_into().expect("8 bytes")),
                    i64::from_le_bytes(b.try_into().expect("8 bytes")),
                )
            }) else {
                continue;
            };
            let slot = Slot {
                admitted: d.instant(a, now),
                in_flight: 0,
                before: (b != i64::MIN).then(|| d.instant(b, now)),
            };
            if self.suppressed(&slot, now).is_none() {
                continue;
            }
            if self.table.insert(key.into_boxed_slice(), slot).is_none() {
                self.len.fetch_add(1, Ordering::Relaxed);
                restored += 1;
            }
        }
        if restored > 0 {
            tracing::info!(
                keys = restored,
                "dedup windows restored from the state store"
            );
        }
        let _ = self.durable.set(d);
    }

    /// A recovered event is queued or re-run: its key is in flight again.
    fn readmitted(&self, event: &mut Event) {
        self.with_key(event, |key| {
            let now = Instant::now();
            let mut ent = self.table.entry(Box::from(key)).or_insert_with(|| {
                self.len.fetch_add(1, Ordering::Relaxed);
                Slot {
                    admitted: now,
                    in_flight: 0,
                    before: None,
                }
            });
            ent.in_flight += 1;
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use runner_core::config::{ConfigErrors, Overrides};
    use std::sync::Arc;

    fn ev(cluster: &str, ns: &str, kind: &str, name: &str) -> Event {
        Event::from_json(
            serde_json::json!({"cluster": cluster, "severity": "critical", "faultType": "CrashLoop",
                "resource": {"kind": kind, "name": name, "namespace": ns, "uid": "u1"}}),
            None,
        )
        .unwrap()
    }

    impl DedupStage {
        fn build_boxed(self) -> Box<dyn Stage> {
            Box::new(self)
        }
    }

    fn stage(window: u64, max_keys: usize) -> DedupStage {
        DedupStage::new(&DedupConfig {
            window_seconds: window,
            max_keys,
            ..DedupConfig::default()
        })
    }

    fn passes(s: &DedupStage, e: &Event) -> bool {
        match s.check(e) {
            Verdict::Pass => true,
            Verdict::Drop {
                outcome: Outcome::Duplicate,
                ..
            } => false,
            v => panic!("unexpected verdict {v:?}"),
        }
    }

    /// Admission followed by the terminal outcome (the common case).
    fn admit_and_finish(s: &DedupStage, e: &Event) -> bool {
        let p = passes(s, e);
        if p {
            s.finished(e, Outcome::Completed);
        }
        p
    }

    #[tokio::test(start_paused = true)]
    async fn window_expiry_with_paused_clock() {
        let s = stage(300, 100);
        let e = ev("c", "ns", "Pod", "p");
        assert!(admit_and_finish(&s, &e));
        tokio::time::advance(Duration::from_secs(299)).await;
        assert!(!passes(&s, &e), "inside the window");
        // Duplicates do not slide the window: it counts from the admission.
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(admit_and_finish(&s, &e), "window over");
        assert!(!passes(&s, &e));
        // A different resource is never affected.
        assert!(passes(&s, &ev("c", "ns", "Pod", "q")));
    }

    #[tokio::test(start_paused = true)]
    async fn in_flight_suppresses_beyond_window() {
        let s = stage(10, 100);
        let e = ev("c", "ns", "Pod", "p");
        assert!(passes(&s, &e)); // queued/running: no finished() yet
        tokio::time::advance(Duration::from_secs(3600)).await;
        match s.check(&e) {
            Verdict::Drop { reason, .. } => assert_eq!(reason, IN_FLIGHT),
            v => panic!("{v:?}"),
        }
        s.finished(&e, Outcome::Completed);
        // Finished long after the window: admitted again at once.
        assert!(passes(&s, &e));
        // Finished within the window of the admission: window still applies.
        s.finished(&e, Outcome::Failed);
        tokio::time::advance(Duration::from_secs(5)).await;
        match s.check(&e) {
            Verdict::Drop { reason, .. } => assert_eq!(reason, WITHIN_WINDOW),
            v => panic!("{v:?}"),
        }
        tokio::time::advance(Duration::from_secs(5)).await;
        assert!(passes(&s, &e));
    }

    #[tokio::test(start_paused = true)]
    async fn an_admission_that_never_ran_does_not_suppress() {
        let s = stage(300, 100);
        let e = ev("c", "ns", "Pod", "p");
        for outcome in [Outcome::Dropped, Outcome::Rejected, Outcome::Abandoned] {
            assert!(passes(&s, &e));
            assert!(!passes(&s, &e), "queued: suppressed");
            s.finished(&e, outcome);
            assert!(passes(&s, &e), "{outcome:?}: no incident, key forgotten");
            s.finished(&e, Outcome::Dropped);
        }
        assert_eq!(s.len(), 0, "first admissions that never ran leave no key");
        // After an incident ran, a later admission that is dropped falls
        // back to the earlier incident's window.
        assert!(admit_and_finish(&s, &e));
        tokio::time::advance(Duration::from_secs(200)).await;
        assert!(!passes(&s, &e), "within the window of the run");
        tokio::time::advance(Duration::from_secs(100)).await;
        assert!(passes(&s, &e), "window over: admitted");
        s.finished(&e, Outcome::Dropped);
        assert!(passes(&s, &e), "the dropped admission does not suppress");
        s.finished(&e, Outcome::Completed);
        tokio::time::advance(Duration::from_secs(299)).await;
        assert!(!passes(&s, &e), "this one ran: its window applies");
    }

    #[tokio::test(start_paused = true)]
    async fn leaked_in_flight_mark_recovers() {
        let s = stage(300, 100);
        let e = ev("c", "ns", "Pod", "p");
        assert!(passes(&s, &e));
        // A later stage renamed the event: the release misses the key.
        let renamed = ev("c", "ns", "Pod", "p-renamed");
        s.finished(&renamed, Outcome::Completed);
        tokio::time::advance(Duration::from_secs(3600)).await;
        assert!(!passes(&s, &e), "still looks in flight after an hour");
        tokio::time::advance(IN_FLIGHT_STALE).await;
        assert!(passes(&s, &e), "stale mark ignored");
        // The new admission's own release works normally.
        s.finished(&e, Outcome::Completed);
        tokio::time::advance(Duration::from_secs(300)).await;
        assert!(passes(&s, &e));
    }

    #[tokio::test(start_paused = true)]
    async fn zero_window_only_in_flight() {
        let s = stage(0, 100);
        let e = ev("c", "ns", "Pod", "p");
        assert!(passes(&s, &e));
        assert!(!passes(&s, &e));
        s.finished(&e, Outcome::Failed);
        assert!(passes(&s, &e));
    }

    #[tokio::test(start_paused = true)]
    async fn bound_evicts_oldest_and_counts() {
        let s = stage(300, 3);
        let names = ["k1", "k2", "k3", "k4"];
        for n in names {
            assert!(admit_and_finish(&s, &ev("c", "ns", "Pod", n)));
            assert!(s.len() <= 3, "len {} after {n}", s.len());
            tokio::time::advance(Duration::from_secs(1)).await;
        }
        assert_eq!(s.evictions(), 1);
        assert_eq!(s.len(), 3);
        // k1 (oldest) was forgotten; k2..k4 still suppress.
        assert!(!passes(&s, &ev("c", "ns", "Pod", "k2")));
        assert!(!passes(&s, &ev("c", "ns", "Pod", "k4")));
        assert!(admit_and_finish(&s, &ev("c", "ns", "Pod", "k1")));
        assert_eq!(
            s.evictions(),
            2,
            "re-admitting k1 evicted the next oldest (k2)"
        );
        assert!(admit_and_finish(&s, &ev("c", "ns", "Pod", "k2")));
    }

    #[tokio::test(start_paused = true)]
    async fn expired_keys_are_reclaimed_before_live_ones() {
        let s = stage(10, 4);
        for n in ["old1", "old2"] {
            assert!(admit_and_finish(&s, &ev("c", "ns", "Pod", n)));
        }
        tokio::time::advance(Duration::from_secs(11)).await;
        for n in ["a", "b", "c"] {
            assert!(admit_and_finish(&s, &ev("c", "ns", "Pod", n)));
        }
        // 5 > 4: the two expired keys go, no live key is evicted.
        assert_eq!(s.evictions(), 0);
        assert_eq!(s.len(), 3);
        assert!(!passes(&s, &ev("c", "ns", "Pod", "a")));
    }

    #[tokio::test(start_paused = true)]
    async fn in_flight_keys_are_evicted_last() {
        let s = stage(300, 2);
        let busy = ev("c", "ns", "Pod", "busy");
        assert!(passes(&s, &busy)); // stays in flight
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(admit_and_finish(&s, &ev("c", "ns", "Pod", "x")));
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(admit_and_finish(&s, &ev("c", "ns", "Pod", "y")));
        assert_eq!(s.evictions(), 1);
        // The older but in-flight key survived; x was evicted.
        assert!(!passes(&s, &busy));
        assert!(passes(&s, &ev("c", "ns", "Pod", "x")));
    }

    #[test]
    fn field_boundaries_never_collide() {
        let s = stage(300, 100);
        // Same concatenation under a naive "-" or "" separator.
        let a = ev("c", "a-b", "Pod", "c");
        let b = ev("c", "a", "Pod", "b-c");
        let c = ev("c", "ab", "Pod", "c");
        let d = ev("c", "a", "Pod", "bc");
        assert_ne!(s.encode_key(&a), s.encode_key(&b));
        assert_ne!(s.encode_key(&c), s.encode_key(&d));
        for e in [&a, &b, &c, &d] {
            assert!(passes(&s, e), "{e}");
        }
        // Same namespace, different names/kinds: distinct.
        assert!(passes(&s, &ev("c", "ns", "Pod", "web-1")));
        assert!(passes(&s, &ev("c", "ns", "Pod", "web-2")));
        assert!(passes(&s, &ev("c", "ns", "Deployment", "web-1")));
        assert!(passes(&s, &ev("other", "ns", "Pod", "web-1")));
        // Cluster-scoped (empty namespace) vs a namespace: distinct.
        assert!(passes(&s, &ev("c", "", "Node", "n1")));
        assert_eq!(s.len(), 9);
    }

    #[test]
    fn hash_collisions_compare_full_key() {
        // Force every key into one bucket: a constant hasher.
        #[derive(Default, Clone)]
        struct Zero;
        impl std::hash::Hasher for Zero {
            fn finish(&self) -> u64 {
                0
            }
            fn write(&mut self, _: &[u8]) {}
        }
        let m: DashMap<Box<[u8]>, u32, std::hash::BuildHasherDefault<Zero>> = DashMap::default();
        let s = stage(300, 100);
        let a = s.encode_key(&ev("c", "a-b", "Pod", "c"));
        let b = s.encode_key(&ev("c", "a", "Pod", "b-c"));
        m.insert(a.clone().into_boxed_slice(), 1);
        assert!(m.get(&b[..]).is_none(), "equal hash, different key");
        m.insert(b.clone().into_boxed_slice(), 2);
        assert_eq!((*m.get(&a[..]).unwrap(), *m.get(&b[..]).unwrap()), (1, 2));
    }

    #[test]
    fn fault_id_key() {
        let s = DedupStage::new(&DedupConfig {
            key: vec![KeyField::FaultId],
            ..DedupConfig::default()
        });
        let mk = |id: Option<&str>, name: &str| {
            let mut v = serde_json::json!({"cluster": "c", "severity": "critical", "faultType": "CrashLoop",
                "resource": {"kind": "Pod", "name": name, "namespace": "ns"}});
            if let Some(id) = id {
                v["faultId"] = id.into();
            }
            Event::from_json(v, None).unwrap()
        };
        assert!(passes(&s, &mk(Some("aaaa"), "p1")));
        // Same fault id, other container/pod name: duplicate by fault id.
        assert!(!passes(&s, &mk(Some("aaaa"), "p2")));
        // Different fault id on the same resource (another container): new.
        assert!(passes(&s, &mk(Some("bbbb"), "p1")));
        // No faultId: falls back to the resource identity, not one shared key.
        assert!(passes(&s, &mk(None, "p1")));
        assert!(passes(&s, &mk(None, "p2")));
        assert!(!passes(&s, &mk(None, "p2")));
    }

    #[test]
    fn fault_type_in_key() {
        let s = DedupStage::new(&DedupConfig {
            key: vec![
                KeyField::Cluster,
                KeyField::Namespace,
                KeyField::Kind,
                KeyField::Name,
                KeyField::FaultType,
            ],
            ..DedupConfig::default()
        });
        let mut a = ev("c", "ns", "Pod", "p");
        let mut b = a.clone();
        b.fault_type = "PodCrash".into();
        assert!(passes(&s, &a));
        assert!(passes(&s, &b));
        a.fault_type = "PodCrash".into();
        assert!(!passes(&s, &a));
    }

    #[test]
    fn concurrent_threads_admit_each_key_exactly_once() {
        let s = Arc::new(stage(300, 1_000_000));
        let keys: Vec<Event> = (0..200)
            .map(|i| ev(&format!("c{}", i % 7), "ns", "Pod", &format!("p{i}")))
            .collect();
        let keys = Arc::new(keys);
        let passed = Arc::new(AtomicU64::new(0));
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let (s, keys, passed) = (s.clone(), keys.clone(), passed.clone());
                std::thread::spawn(move || {
                    let mut mine = Vec::new();
                    for round in 0..20 {
                        for j in 0..keys.len() {
                            let e = &keys[(j + t * 31 + round) % keys.len()];
                            if passes(&s, e) {
                                passed.fetch_add(1, Ordering::Relaxed);
                                mine.push(e.resource.name.clone());
                            }
                        }
                    }
                    mine
                })
            })
            .collect();
        let mut all: Vec<String> = threads
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect();
        assert_eq!(passed.load(Ordering::Relaxed), 200);
        all.sort();
        all.dedup();
        assert_eq!(all.len(), 200, "every key admitted exactly once");
        assert_eq!(s.len(), 200);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_tasks_with_release() {
        // Each task admits, "runs", and finishes; per key at most one event may
        // be in flight at any instant (window 0: only in-flight suppression).
        let s = Arc::new(stage(0, 1_000_000));
        let running: Arc<Vec<AtomicU64>> = Arc::new((0..10).map(|_| AtomicU64::new(0)).collect());
        let admitted = Arc::new(AtomicU64::new(0));
        let mut tasks = tokio::task::JoinSet::new();
        for t in 0..32u64 {
            let (s, running, admitted) = (s.clone(), running.clone(), admitted.clone());
            tasks.spawn(async move {
                for i in 0..200u64 {
                    let k = ((t + i) % 10) as usize;
                    let e = ev("c", "ns", "Pod", &format!("p{k}"));
                    if passes(&s, &e) {
                        admitted.fetch_add(1, Ordering::Relaxed);
                        let before = running[k].fetch_add(1, Ordering::SeqCst);
                        assert_eq!(before, 0, "two admissions of key {k} in flight");
                        tokio::task::yield_now().await;
                        running[k].fetch_sub(1, Ordering::SeqCst);
                        s.finished(&e, Outcome::Completed);
                    }
                }
            });
        }
        while let Some(r) = tasks.join_next().await {
            r.unwrap();
        }
        assert!(admitted.load(Ordering::Relaxed) >= 10);
        // Everything released: every key passes again.
        for k in 0..10 {
            assert!(passes(&s, &ev("c", "ns", "Pod", &format!("p{k}"))));
        }
    }

    /// End to end through the real chain and router: the router's terminal
    /// outcomes reach `finished`, so "in flight" covers queued and running.
    #[tokio::test(start_paused = true)]
    async fn in_flight_released_by_router_outcomes() {
        use runner_core::pipeline::{ChainResult, StageChain};
        use runner_core::router::{OverflowPolicy, Router, RouterLimits};
        use runner_core::{CancellationToken, Envelope, RawPayload, Recorder, Sink, SinkResult};

        struct Slow;
        #[async_trait::async_trait]
        impl Sink for Slow {
            fn name(&self) -> &str {
                "slow"
            }
            async fn handle(&self, _: &Envelope, _: CancellationToken) -> SinkResult {
                tokio::time::sleep(Duration::from_secs(10)).await;
                SinkResult::completed()
            }
        }
        // Window 0: only the in-flight rule suppresses.
        let stages: Vec<Box<dyn Stage>> = vec![stage(0, 100).build_boxed()];
        let rec = Arc::new(Recorder::new(stages.into()));
        let chain = StageChain::new(rec.clone());
        let limits = RouterLimits {
            max_concurrent: 1,
            global_queue: 10,
            cluster_queue: 1,
            policy: OverflowPolicy::Drop,
            idle_reap: Duration::from_secs(60),
        };
        let router = Router::new(limits, Arc::new(Slow), rec.clone());
        let src: Arc<str> = Arc::from("t");
        let send = |name: &str| {
            rec.received();
            RawPayload {
                data: serde_json::json!({"cluster": "c", "severity": "critical",
                    "resource": {"kind": "Pod", "name": name, "namespace": "ns"}}),
                source: src.clone(),
                cluster_fill: None,
                received_at: Instant::now(),
            }
        };
        let outcome = |r: ChainResult| match r {
            ChainResult::Passed(env) => {
                router.admit(env);
                None
            }
            ChainResult::Stopped(o, _) => Some(o),
        };
        assert_eq!(outcome(chain.process(send("a")).await), None); // runs
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(outcome(chain.process(send("b")).await), None); // queued
        // Both in flight (running / queued): duplicates.
        assert_eq!(
            outcome(chain.process(send("a")).await),
            Some(Outcome::Duplicate)
        );
        assert_eq!(
            outcome(chain.process(send("b")).await),
            Some(Outcome::Duplicate)
        );
        // A new key on the full cluster queue drops "b": b is released at once.
        assert_eq!(outcome(chain.process(send("c")).await), None);
        assert_eq!(outcome(chain.process(send("b")).await), None); // drops c
        assert_eq!(rec.snapshot().get(Outcome::Dropped), 2);
        router.wait_idle().await;
        // Completed: released; passes again.
        assert_eq!(outcome(chain.process(send("a")).await), None);
        router.wait_idle().await;
        router
            .shutdown(Duration::ZERO, CancellationToken::new())
            .await;
        let s = rec.snapshot();
        assert!(s.adds_up(), "{s:?}");
        assert_eq!(s.get(Outcome::Completed), 3); // a, b, a
        assert_eq!(s.get(Outcome::Duplicate), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn an_overflow_drop_does_not_blind_the_runner() {
        use runner_core::pipeline::{ChainResult, StageChain};
        use runner_core::router::{OverflowPolicy, Router, RouterLimits};
        use runner_core::{CancellationToken, Envelope, RawPayload, Recorder, Sink, SinkResult};
        struct Slow;
        #[async_trait::async_trait]
        impl Sink for Slow {
            fn name(&self) -> &str {
                "slow"
            }
            async fn handle(&self, _: &Envelope, _: CancellationToken) -> SinkResult {
                tokio::time::sleep(Duration::from_secs(10)).await;
                SinkResult::completed()
            }
        }
        // A five-minute window: before the fix, "b" dropped by the full
        // queue stayed a duplicate for the whole window.
        let stages: Vec<Box<dyn Stage>> = vec![stage(300, 100).build_boxed()];
        let rec = Arc::new(Recorder::new(stages.into()));
        let chain = StageChain::new(rec.clone());
        let limits = RouterLimits {
            max_concurrent: 1,
            global_queue: 10,
            cluster_queue: 1,
            policy: OverflowPolicy::Drop,
            idle_reap: Duration::from_secs(60),
        };
        let router = Router::new(limits, Arc::new(Slow), rec.clone());
        let src: Arc<str> = Arc::from("t");
        let send = |name: &str| {
            rec.received();
            RawPayload {
                data: serde_json::json!({"cluster": "c", "severity": "critical",
                    "resource": {"kind": "Pod", "name": name, "namespace": "ns"}}),
                source: src.clone(),
                cluster_fill: None,
                received_at: Instant::now(),
            }
        };
        let outcome = |r: ChainResult| match r {
            ChainResult::Passed(env) => {
                router.admit(env);
                None
            }
            ChainResult::Stopped(o, _) => Some(o),
        };
        assert_eq!(outcome(chain.process(send("a")).await), None); // runs
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(outcome(chain.process(send("b")).await), None); // queued
        assert_eq!(outcome(chain.process(send("c")).await), None); // drops b
        assert_eq!(rec.snapshot().get(Outcome::Dropped), 1);
        // b never ran: its next report is investigated, not a duplicate.
        assert_eq!(outcome(chain.process(send("b")).await), None); // drops c
        assert_eq!(outcome(chain.process(send("c")).await), None); // drops b
        assert_eq!(outcome(chain.process(send("b")).await), None); // drops c
        // a ran (is running): still a duplicate.
        assert_eq!(
            outcome(chain.process(send("a")).await),
            Some(Outcome::Duplicate)
        );
        router.wait_idle().await;
        // b ran now: its window applies.
        assert_eq!(
            outcome(chain.process(send("b")).await),
            Some(Outcome::Duplicate)
        );
        router
            .shutdown(Duration::ZERO, CancellationToken::new())
            .await;
        let s = rec.snapshot();
        assert!(s.adds_up(), "{s:?}");
        assert_eq!(s.get(Outcome::Completed), 2); // a, b
        assert_eq!(s.get(Outcome::Dropped), 4);
        assert_eq!(s.get(Outcome::Duplicate), 2);
    }

    /// A tiny reference model of the rules (no eviction: max_keys is large).
    #[derive(Default)]
    struct Model {
        keys: std::collections::HashMap<u8, (u64, bool)>, // admitted at (s), in flight
        before: std::collections::HashMap<u8, u64>,       // the admission before
    }

    impl Model {
        fn process(&mut self, k: u8, now: u64, window: u64) -> bool {
            match self.keys.get(&k) {
                Some(&(at, in_flight)) if in_flight || now - at < window => false,
                prev => {
                    match prev {
                        Some(&(at, _)) => self.before.insert(k, at),
                        None => self.before.remove(&k),
                    };
                    self.keys.insert(k, (now, true));
                    true
                }
            }
        }
        fn finished(&mut self, k: u8, ran: bool) {
            if ran {
                if let Some(e) = self.keys.get_mut(&k) {
                    e.1 = false;
                }
            } else {
                // Back to the admission before this one (if any).
                match self.before.remove(&k) {
                    Some(at) => {
                        self.keys.insert(k, (at, false));
                    }
                    None => {
                        self.keys.remove(&k);
                    }
                }
            }
        }
    }

    #[derive(Debug, Clone)]
    enum Op {
        Event(u8),
        /// The key's incident ended; `true`: it ran, `false`: it never did
        /// (dropped by a full queue).
        Finish(u8, bool),
        Advance(u64),
    }

    fn op() -> impl proptest::strategy::Strategy<Value = Op> {
        use proptest::prelude::*;
        prop_oneof![
            4 => (0u8..12).prop_map(Op::Event),
            2 => ((0u8..12), proptest::bool::ANY).prop_map(|(k, ran)| Op::Finish(k, ran)),
            1 => (0u64..400).prop_map(Op::Advance),
        ]
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 128, ..Default::default() })]

        /// Random events, releases and clock moves agree with the model
        /// verdict for verdict; with a small table, the bound always holds.
        #[test]
        fn matches_model_and_bound(ops in proptest::collection::vec(op(), 1..200), window in 0u64..300, max_keys in 1usize..8) {
            let rt = tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap();
            rt.block_on(async {
                let s = stage(window, 1_000);
                let small = stage(window, max_keys);
                let mut m = Model::default();
                let mut now = 0u64;
                // Releases only for events that passed and are not released yet.
                let mut live: Vec<u8> = Vec::new();
                let ev_of = |k: u8| ev("c", "ns", "Pod", &format!("p{k}"));
                for o in ops {
                    match o {
                        Op::Event(k) => {
                            let e = ev_of(k);
                            let got = passes(&s, &e);
                            proptest::prop_assert_eq!(got, m.process(k, now, window), "key {} at {}", k, now);
                            if got {
                                live.push(k);
                            }
                            passes(&small, &e);
                            proptest::prop_assert!(small.len() <= max_keys, "len {} > {}", small.len(), max_keys);
                        }
                        Op::Finish(k, ran) => {
                            if let Some(i) = live.iter().position(|x| *x == k) {
                                live.swap_remove(i);
                                let e = ev_of(k);
                                let o = if ran { Outcome::Completed } else { Outcome::Dropped };
                                s.finished(&e, o);
                                small.finished(&e, o);
                                m.finished(k, ran);
                            }
                        }
                        Op::Advance(d) => {
                            tokio::time::advance(Duration::from_secs(d)).await;
                            now += d;
                        }
                    }
                }
                proptest::prop_assert_eq!(s.evictions(), 0);
                Ok(())
            })?;
        }
    }

    fn read(toml_text: &str, ov: &Overrides) -> (Option<DedupConfig>, ConfigErrors) {
        let mut errs = ConfigErrors::default();
        let mut eff = Vec::new();
        let mut r = TableReader::new(
            "stage[1]",
            toml_text.parse().unwrap(),
            ov,
            &mut errs,
            &mut eff,
        );
        let dir = std::path::PathBuf::new();
        let c = DedupConfig::read(&mut r, &ReadContext::single(&dir, ov));
        r.finish();
        (c, errs)
    }

    #[test]
    fn config_defaults_overrides_and_errors() {
        let (c, errs) = read("", &Overrides::new());
        assert!(errs.is_empty(), "{errs}");
        assert_eq!(c.unwrap(), DedupConfig::default());

        let mut ov = Overrides::new();
        ov.set(
            DEDUP_WINDOW_SECONDS.env,
            "60",
            runner_core::config::Origin::Env,
        );
        ov.set(DEDUP_MAX_KEYS.env, "5", runner_core::config::Origin::Env);
        let (c, errs) = read("key = ['faultId', 'fault_type', 'fault_id']", &ov);
        assert!(errs.is_empty(), "{errs}");
        let c = c.unwrap();
        assert_eq!(c.window_seconds, 60);
        assert_eq!(c.max_keys, 5);
        assert_eq!(c.key, vec![KeyField::FaultId, KeyField::FaultType]);

        let (c, errs) = read(
            "key = ['cluster', 'labels', 'podname']\nmax_keys = 0",
            &Overrides::new(),
        );
        assert!(c.is_none());
        let text = errs.to_string();
        assert_eq!(errs.len(), 3, "{text}");
        assert!(
            text.contains("stage[1].key: invalid value \"labels\""),
            "{text}"
        );
        assert!(text.contains("\"podname\""), "{text}");
        assert!(
            text.contains("stage[1].max_keys: invalid value 0"),
            "{text}"
        );
        let (_, errs) = read("key = []", &Overrides::new());
        assert_eq!(errs.len(), 1, "{errs}");
    }
}
