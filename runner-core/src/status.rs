//! Read-only live views of a running pipeline, for operators: source health,
//! outcome counts broken down by bounded labels, agent durations, queues,
//! the running set and the sink's incident log. The admin server and
//! `runner status` read these; nothing here knows about HTTP or a metrics
//! format.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::outcome::Outcome;
use crate::sink::UsageTotals;

/// Label value for clusters beyond the label limit.
pub(crate) const OTHER: &str = "other";
/// Label value when an outcome has no cluster (invalid or refused payloads).
pub(crate) const NO_CLUSTER: &str = "none";
/// Default number of clusters that get their own label value.
pub const DEFAULT_CLUSTER_LABELS: usize = 50;
/// Sources and stage names are configured, hence bounded; this bound only
/// guards against a bug turning event text into a label value.
const MAX_NAMES: usize = 256;

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as u64
}

/// Where a source is in its connection lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SourcePhase {
    /// Not yet tried.
    Starting,
    /// A session attempt is under way (connect, initialize, subscribe).
    Connecting,
    /// Subscribed: events can arrive.
    Subscribed,
    /// Waiting before the next attempt.
    Backoff,
    /// Returned (shutdown or a fatal error).
    Stopped,
}

impl SourcePhase {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            SourcePhase::Starting => "starting",
            SourcePhase::Connecting => "connecting",
            SourcePhase::Subscribed => "subscribed",
            SourcePhase::Backoff => "backoff",
            SourcePhase::Stopped => "stopped",
        }
    }
}

#[derive(Debug)]
struct SourceState {
    phase: SourcePhase,
    /// When the source last stopped being subscribed (or started).
    down_since: Instant,
    subscribed_once: bool,
    backoff_until: Option<Instant>,
    last_error: Option<String>,
}

/// A status handle every source can update (see `SourceContext::status`).
/// Updates are cheap and never block for long; readers take snapshots.
#[derive(Debug)]
pub struct SourceStatus {
    name: Arc<str>,
    state: Mutex<SourceState>,
    sessions: AtomicU64,
    received: AtomicU64,
    /// Unix milliseconds of the last payload; 0 = none yet.
    last_event_ms: AtomicU64,
}

impl SourceStatus {
    /// The status of a new source named `name` (connecting, never subscribed).
    pub fn new(name: &str) -> Arc<SourceStatus> {
        Arc::new(SourceStatus {
            name: Arc::from(name),
            state: Mutex::new(SourceState {
                phase: SourcePhase::Starting,
                down_since: Instant::now(),
                subscribed_once: false,
                backoff_until: None,
                last_error: None,
            }),
            sessions: AtomicU64::new(0),
            received: AtomicU64::new(0),
            last_event_ms: AtomicU64::new(0),
        })
    }

    fn update(&self, f: impl FnOnce(&mut SourceState)) {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut st);
    }

    /// A new session attempt begins (counts a session).
    pub fn connecting(&self) {
        self.sessions.fetch_add(1, Ordering::Relaxed);
        self.update(|s| {
            if s.phase == SourcePhase::Subscribed {
                s.down_since = Instant::now();
            }
            s.phase = SourcePhase::Connecting;
            s.backoff_until = None;
        });
    }

    /// The source is subscribed and events can arrive.
    pub fn subscribed(&self) {
        self.update(|s| {
            s.phase = SourcePhase::Subscribed;
            s.subscribed_once = true;
            s.backoff_until = None;
            s.last_error = None;
        });
    }

    /// The session was lost or failed; the next attempt is in `delay`.
    /// `reason` is shown to operators (keep secrets out of it).
    pub fn backoff(&self, delay: Duration, reason: &str) {
        self.update(|s| {
            if s.phase == SourcePhase::Subscribed {
                s.down_since = Instant::now();
            }
            s.phase = SourcePhase::Backoff;
            s.backoff_until = Some(Instant::now() + delay);
            s.last_error = Some(reason.chars().take(300).collect());
        });
    }

    pub(crate) fn stopped(&self) {
        self.update(|s| {
            s.phase = SourcePhase::Stopped;
            s.backoff_until = None;
        });
    }

    /// Counts one payload handed to the intake (the `Intake` calls this).
    pub(crate) fn event(&self) {
        self.received.fetch_add(1, Ordering::Relaxed);
        self.last_event_ms
            .store(unix_ms(SystemTime::now()), Ordering::Relaxed);
    }

    /// A copy of the status now.
    pub fn snapshot(&self) -> SourceHealth {
        let st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let sessions = self.sessions.load(Ordering::Relaxed);
        let last = self.last_event_ms.load(Ordering::Relaxed);
        SourceHealth {
            name: self.name.to_string(),
            phase: st.phase,
            subscribed_once: st.subscribed_once,
            down_for_seconds: (st.phase != SourcePhase::Subscribed)
                .then(|| now.duration_since(st.down_since).as_secs_f64()),
            next_attempt_in_seconds: st
                .backoff_until
                .map(|t| t.saturating_duration_since(now).as_secs_f64()),
            last_error: st.last_error.clone(),
            sessions,
            reconnects: sessions.saturating_sub(1),
            received: self.received.load(Ordering::Relaxed),
            seconds_since_last_event: (last > 0)
                .then(|| (unix_ms(SystemTime::now()).saturating_sub(last)) as f64 / 1000.0),
        }
    }
}

/// A point-in-time copy of one source's status.
#[derive(Debug, Clone, Serialize)]
pub struct SourceHealth {
    /// The source's name.
    pub name: String,
    /// Where its session is (connecting, subscribed, backing off, …).
    pub phase: SourcePhase,
    /// It has subscribed at least once since startup.
    pub subscribed_once: bool,
    /// How long the source has been without a subscription (None: subscribed).
    pub down_for_seconds: Option<f64>,
    /// Seconds until the next session attempt, while backing off.
    pub next_attempt_in_seconds: Option<f64>,
    /// The last error, cleaned for display.
    pub last_error: Option<String>,
    /// Session attempts so far.
    pub sessions: u64,
    /// `sessions - 1`: attempts after the first.
    pub reconnects: u64,
    /// Payloads handed to the intake.
    pub received: u64,
    /// Seconds since the last payload (None: none yet).
    pub seconds_since_last_event: Option<f64>,
}

/// The answer of a readiness check, with every reason it is not ready.
#[derive(Debug, Clone, Serialize)]
pub struct Readiness {
    /// True when every rule holds.
    pub ready: bool,
    /// Every rule that does not hold, in words.
    pub reasons: Vec<String>,
    /// Shutdown has begun.
    pub shutting_down: bool,
    /// Payloads waiting for the stage chain.
    pub intake_depth: usize,
    /// The intake queue's bound.
    pub intake_capacity: usize,
    /// Every source's status.
    pub sources: Vec<SourceHealth>,
}

/// Readiness rules: every source subscribed at least once and not down for
/// longer than `max_down`; the intake below 90 % full; not shutting down.
pub(crate) fn readiness(
    sources: Vec<SourceHealth>,
    intake_depth: usize,
    intake_capacity: usize,
    shutting_down: bool,
    max_down: Duration,
) -> Readiness {
    let mut reasons = Vec::new();
    if shutting_down {
        reasons.push("shutting down".to_string());
    }
    for s in &sources {
        if !s.subscribed_once {
            reasons.push(format!(
                "source {} has not subscribed yet ({})",
                s.name,
                s.phase.as_str()
            ));
        } else if let Some(d) = s.down_for_seconds
            && d > max_down.as_secs_f64()
        {
            reasons.push(format!(
                "source {} without a subscription for {:.0}s ({}{})",
                s.name,
                d,
                s.phase.as_str(),
                s.last_error
                    .as_deref()
                    .map(|e| format!(": {e}"))
                    .unwrap_or_default()
            ));
        }
    }
    if intake_capacity > 0 && intake_depth * 10 >= intake_capacity * 9 {
        reasons.push(format!(
            "intake saturated ({intake_depth} of {intake_capacity} queued)"
        ));
    }
    Readiness {
        ready: reasons.is_empty(),
        reasons,
        shutting_down,
        intake_depth,
        intake_capacity,
        sources,
    }
}

/// Maps label values to small ids, up to a bound; later values share
/// `overflow`. Values, once given an id, keep it: a Prometheus counter
/// series must never move between label values.
#[derive(Debug)]
struct Interner {
    ids: HashMap<String, u32>,
    names: Vec<Arc<str>>,
    limit: usize,
    overflow: u32,
}

impl Interner {
    fn new(limit: usize, overflow: &str) -> Interner {
        Interner {
            ids: HashMap::new(),
            names: vec![Arc::from(overflow)],
            limit,
            overflow: 0,
        }
    }
    fn id(&mut self, name: &str) -> u32 {
        if let Some(&id) = self.ids.get(name) {
            return id;
        }
        if self.ids.len() >= self.limit {
            return self.overflow;
        }
        let id = self.names.len() as u32;
        self.names.push(Arc::from(name));
        self.ids.insert(name.to_string(), id);
        id
    }
}

#[derive(Debug)]
struct BreakdownInner {
    clusters: Interner,
    sources: Interner,
    stages: Interner,
    counts: HashMap<(u8, u32, u32, u32), u64>,
}

/// Outcome counts by (outcome, cluster, source, stage). Clusters: the first
/// `cluster_limit` distinct names get their own label value, later ones are
/// counted under [`OTHER`] (documented in docs/operations.md).
#[derive(Debug)]
pub struct OutcomeBreakdown {
    inner: Mutex<BreakdownInner>,
}

/// One row of [`OutcomeBreakdown::rows`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutcomeRow {
    /// The outcome.
    pub outcome: Outcome,
    /// The cluster label ([`OTHER`] past the limit).
    pub cluster: Arc<str>,
    /// The source that received the events.
    pub source: Arc<str>,
    /// The stage that stopped them (empty when none did).
    pub stage: Arc<str>,
    /// Events counted.
    pub count: u64,
}

impl Serialize for Outcome {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl OutcomeBreakdown {
    pub(crate) fn new(cluster_limit: usize) -> OutcomeBreakdown {
        OutcomeBreakdown {
            inner: Mutex::new(BreakdownInner {
                clusters: Interner::new(cluster_limit, OTHER),
                sources: Interner::new(MAX_NAMES, OTHER),
                stages: Interner::new(MAX_NAMES, OTHER),
                counts: HashMap::new(),
            }),
        }
    }

    pub(crate) fn record(&self, outcome: Outcome, cluster: &str, source: &str, stage: &str) {
        let cluster = if cluster.is_empty() {
            NO_CLUSTER
        } else {
            cluster
        };
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let key = (
            outcome as u8,
            g.clusters.id(cluster),
            g.sources.id(source),
            g.stages.id(stage),
        );
        *g.counts.entry(key).or_insert(0) += 1;
    }

    /// The label value `cluster` is counted under (without claiming one).
    pub fn cluster_label(&self, cluster: &str) -> Arc<str> {
        let g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let name = if cluster.is_empty() {
            NO_CLUSTER
        } else {
            cluster
        };
        let id = g
            .clusters
            .ids
            .get(name)
            .copied()
            .unwrap_or(g.clusters.overflow);
        g.clusters.names[id as usize].clone()
    }

    /// Every non-zero count, sorted by its labels.
    pub fn rows(&self) -> Vec<OutcomeRow> {
        let g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let mut rows: Vec<OutcomeRow> = g
            .counts
            .iter()
            .map(|(&(o, c, s, st), &count)| OutcomeRow {
                outcome: Outcome::ALL[o as usize],
                cluster: g.clusters.names[c as usize].clone(),
                source: g.sources.names[s as usize].clone(),
                stage: g.stages.names[st as usize].clone(),
                count,
            })
            .collect();
        rows.sort_by(|a, b| {
            (a.outcome.as_str(), &a.cluster, &a.source, &a.stage).cmp(&(
                b.outcome.as_str(),
                &b.cluster,
                &b.source,
                &b.stage,
            ))
        });
        rows
    }
}

/// Upper bounds (seconds) of the agent duration histogram buckets.
pub(crate) const DURATION_BUCKETS: [f64; 11] = [
    1.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 900.0, 1800.0, 3600.0,
];

/// A fixed-bucket histogram of sink call durations per outcome.
#[derive(Debug, Default)]
pub struct DurationHistogram {
    inner: Mutex<HashMap<Outcome, HistogramData>>,
}

/// Cumulative counts per bucket (`le` = [`DURATION_BUCKETS`], then +Inf).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct HistogramData {
    /// Sum of the observed durations.
    pub sum_seconds: f64,
    /// Observations.
    pub count: u64,
    /// Non-cumulative counts per bucket; the last is +Inf.
    pub buckets: [u64; DURATION_BUCKETS.len() + 1],
}

impl HistogramData {
    /// `(upper bound, count in this bucket alone)` pairs, +Inf last.
    pub fn per_bucket(&self) -> Vec<(f64, u64)> {
        DURATION_BUCKETS
            .iter()
            .copied()
            .chain([f64::INFINITY])
            .zip(self.buckets.iter().copied())
            .collect()
    }
}

impl DurationHistogram {
    pub(crate) fn observe(&self, outcome: Outcome, d: Duration) {
        let secs = d.as_secs_f64();
        let i = DURATION_BUCKETS
            .iter()
            .position(|le| secs <= *le)
            .unwrap_or(DURATION_BUCKETS.len());
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let h = g.entry(outcome).or_default();
        h.sum_seconds += secs;
        h.count += 1;
        h.buckets[i] += 1;
    }

    /// Every outcome's histogram, sorted by outcome name.
    pub fn snapshot(&self) -> Vec<(Outcome, HistogramData)> {
        let g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let mut v: Vec<_> = g.iter().map(|(o, h)| (*o, h.clone())).collect();
        v.sort_by_key(|(o, _)| o.as_str());
        v
    }
}

/// An event waiting in a cluster queue or being handled by the sink.
#[derive(Debug, Clone, Serialize)]
pub struct WorkItem {
    /// The event's sequence number.
    pub seq: u64,
    /// Its cluster.
    pub cluster: String,
    /// Its namespace.
    pub namespace: String,
    /// Its resource kind.
    pub kind: String,
    /// Its resource name.
    pub name: String,
    /// Its severity.
    pub severity: String,
    /// Its fault type.
    pub fault_type: String,
    /// Seconds since it was received (queued) or started (running).
    pub seconds: f64,
}

/// What a sink knows about one incident, for the incidents page.
#[derive(Debug, Clone, Serialize)]
pub struct IncidentView {
    /// The incident's id (its workspace name).
    pub id: String,
    /// The event's pipeline sequence number (joins with [`WorkItem::seq`]).
    pub seq: u64,
    /// The cluster of the leading event.
    pub cluster: String,
    /// Its namespace.
    pub namespace: String,
    /// Its resource kind.
    pub kind: String,
    /// Its resource name.
    pub name: String,
    /// Its severity.
    pub severity: String,
    /// Its fault type.
    pub fault_type: String,
    /// created, running, completed, failed, timed_out, abandoned.
    pub status: String,
    /// When the agent started (RFC 3339).
    pub started_at: Option<String>,
    /// How long the agent ran.
    pub duration_ms: Option<u64>,
    /// Agent cost in US dollars, when the agent reports it.
    pub cost_usd: Option<f64>,
    /// Input tokens the agent reported.
    pub input_tokens: Option<u64>,
    /// Output tokens the agent reported.
    pub output_tokens: Option<u64>,
    /// A report exists and can be served.
    pub has_report: bool,
}

/// A sink's incident log (see `Sink::incident_log`).
pub trait IncidentLog: Send + Sync {
    /// Usage totals since start (default: nothing known).
    fn usage(&self) -> UsageTotals {
        UsageTotals::default()
    }
    /// Most recent first, bounded by the implementation.
    fn recent(&self) -> Vec<IncidentView>;
    /// The HTML report of a known incident. Only ids this log produced are
    /// resolved, so a request cannot name an arbitrary path.
    fn report_html(&self, id: &str) -> Option<PathBuf>;
}

/// The link to an incident's page on the admin server, for messages (Slack):
/// the admin server serves `/incidents/<id>`, the notifiers link to it.
pub fn incident_url(public_url: &str, id: &str) -> String {
    format!("{}/incidents/{}", public_url.trim_end_matches('/'), id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clusters_beyond_the_limit_are_other_and_ids_are_stable() {
        let b = OutcomeBreakdown::new(2);
        b.record(Outcome::Completed, "a", "s", "agent");
        b.record(Outcome::Completed, "b", "s", "agent");
        b.record(Outcome::Completed, "c", "s", "agent");
        b.record(Outcome::Completed, "d", "s", "agent");
        b.record(Outcome::Completed, "a", "s", "agent");
        b.record(Outcome::Invalid, "", "s", "validate");
        let rows = b.rows();
        let get = |c: &str, o: Outcome| {
            rows.iter()
                .find(|r| &*r.cluster == c && r.outcome == o)
                .map(|r| r.count)
        };
        assert_eq!(get("a", Outcome::Completed), Some(2));
        assert_eq!(get("b", Outcome::Completed), Some(1));
        assert_eq!(get(OTHER, Outcome::Completed), Some(2));
        // "none" is the third distinct value: beyond the limit of 2.
        assert_eq!(get(OTHER, Outcome::Invalid), Some(1));
        assert_eq!(rows.iter().map(|r| r.count).sum::<u64>(), 6);
    }

    #[test]
    fn histogram_counts_each_observation_in_its_bucket() {
        let h = DurationHistogram::default();
        h.observe(Outcome::Completed, Duration::from_millis(500));
        h.observe(Outcome::Completed, Duration::from_secs(7));
        h.observe(Outcome::Completed, Duration::from_secs(99_999));
        let s = h.snapshot();
        let b = s[0].1.per_bucket();
        assert_eq!(b[0], (1.0, 1));
        assert_eq!(b[1], (5.0, 0));
        assert_eq!(b[2], (10.0, 1));
        assert_eq!(b.last().unwrap().1, 1);
        assert!(b.last().unwrap().0.is_infinite());
        assert_eq!(s[0].1.count, 3);
    }

    #[test]
    fn readiness_says_why() {
        let st = SourceStatus::new("src");
        let r = readiness(vec![st.snapshot()], 0, 10, false, Duration::from_secs(5));
        assert!(!r.ready);
        assert!(
            r.reasons[0].contains("has not subscribed"),
            "{:?}",
            r.reasons
        );
        st.connecting();
        st.subscribed();
        let r = readiness(vec![st.snapshot()], 9, 10, false, Duration::from_secs(5));
        assert_eq!(r.reasons, vec!["intake saturated (9 of 10 queued)"]);
        let r = readiness(vec![st.snapshot()], 0, 10, true, Duration::from_secs(5));
        assert_eq!(r.reasons, vec!["shutting down"]);
        st.backoff(Duration::from_secs(60), "connection refused");
        let r = readiness(vec![st.snapshot()], 0, 10, false, Duration::ZERO);
        assert!(!r.ready);
        assert!(
            r.reasons[0].contains("connection refused"),
            "{:?}",
            r.reasons
        );
        let r = readiness(vec![st.snapshot()], 0, 10, false, Duration::from_secs(60));
        assert!(r.ready, "a short outage does not flip readiness");
        assert_eq!(st.snapshot().reconnects, 0);
        st.connecting();
        assert_eq!(st.snapshot().reconnects, 1);
    }
}
