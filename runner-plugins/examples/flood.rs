//! Flood: 1,000,000 fault events across 1,000 clusters through the real
//! stage chain (parse → validate → severity → dedup) and router, with slow
//! agents (a sink that sleeps 30 s of tokio time). Checks that the caps hold
//! and that memory stays flat (bounded queues, bounded dedup table).
//!
//! ```text
//! cargo run --release -p runner-plugins --example flood [-- EVENTS CLUSTERS MAX_KEYS]
//! cargo run -p runner-plugins --example flood -- storm [FAULTS REPORTS]
//! ```
//!
//! `storm`: FAULTS distinct faults (default 20,000) on 10 clusters, each
//! reported REPORTS times (default 5, so 100,000 events) in waves 60 virtual
//! seconds apart (all within the 300 s dedup window). Counts the duplicate
//! verdicts given to a fault that had no incident queued, running or run at
//! that moment: reports the runner was blind to.
//!
//! Runs on tokio's paused clock on one thread: arrivals are 1,000 events per
//! virtual second, so the run covers ~1,000 virtual seconds (the dedup window
//! of 300 s expires three times) in a few wall-clock seconds. Exits 1 when an
//! invariant is violated.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant as WallInstant};

use async_trait::async_trait;
use runner_core::pipeline::{ChainResult, StageChain};
use runner_core::router::{Router, RouterLimits};
use runner_core::{
    CancellationToken, Envelope, Event, Outcome, RawPayload, Recorder, Severity, Sink, SinkResult,
    Stage, StageFuture,
};
use runner_plugins::component::{BuildContext, ComponentConfig};
use runner_plugins::stages::dedup::{DedupConfig, DedupStage};
use runner_plugins::stages::severity::SeverityConfig;

const AGENT_TIME: Duration = Duration::from_secs(30);
/// Hot resources per cluster: 4 of 5 events come from these (each repeats
/// every ~25 virtual seconds: duplicates). The 5th event names a resource
/// never seen before (200,000 over the flood, twice the dedup table's
/// default 100,000 keys: eviction runs throughout).
const HOT: u64 = 20;

/// A slow agent that checks the caps from the inside.
struct SlowSink {
    per_cluster: Mutex<HashMap<String, usize>>,
    running: AtomicUsize,
    max_running: AtomicUsize,
    cluster_violation: AtomicBool,
}

#[async_trait]
impl Sink for SlowSink {
    fn name(&self) -> &str {
        "slow-agent"
    }
    async fn handle(&self, env: &Envelope, kill: CancellationToken) -> SinkResult {
        let c = env.event.cluster.clone();
        {
            let mut pc = self.per_cluster.lock().unwrap();
            let n = pc.entry(c.clone()).or_insert(0);
            *n += 1;
            if *n > 1 {
                self.cluster_violation.store(true, Ordering::SeqCst);
            }
        }
        let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_running.fetch_max(now, Ordering::SeqCst);
        let r = tokio::select! {
            _ = tokio::time::sleep(AGENT_TIME) => SinkResult::completed(),
            _ = kill.cancelled() => SinkResult::abandoned("killed"),
        };
        self.running.fetch_sub(1, Ordering::SeqCst);
        let mut pc = self.per_cluster.lock().unwrap();
        let n = pc.get_mut(&c).unwrap();
        *n -= 1;
        if *n == 0 {
            pc.remove(&c);
        }
        r
    }
}

/// Shares the dedup stage with the report (the chain owns boxed stages).
/// In `storm` mode it also tracks, per fault name, incidents still queued or
/// running and faults whose incident ran.
struct Shared(Arc<DedupStage>, Option<Arc<Mutex<Tracker>>>);

#[derive(Default)]
struct Tracker {
    live: HashMap<String, u32>,
    ran: std::collections::HashSet<String>,
}

impl Stage for Shared {
    fn name(&self) -> &str {
        self.0.name()
    }
    fn process<'a>(&'a self, event: &'a mut Event) -> StageFuture<'a> {
        self.0.process(event)
    }
    fn finished(&self, event: &Event, outcome: Outcome) {
        if let Some(t) = &self.1 {
            let mut t = t.lock().unwrap();
            let name = &event.resource.name;
            if let Some(n) = t.live.get_mut(name) {
                *n -= 1;
            }
            if matches!(
                outcome,
                Outcome::Completed | Outcome::Failed | Outcome::TimedOut
            ) {
                t.ran.insert(name.clone());
            }
        }
        self.0.finished(event, outcome)
    }
}

fn proc_status() -> (u64, u64) {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kb = |key: &str| {
        s.lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    (kb("VmRSS:"), kb("VmHWM:"))
}

/// A ~1 KB `kubernetes/faults` payload. 20 % are `warning` (filtered at ERROR).
fn payload(i: u64, clusters: u64) -> String {
    let cluster = i % clusters;
    let k = i / clusters;
    let r = if k % 5 == 4 { 1_000 + k } else { (k * 7) % HOT };
    let sev = if (i / 7).is_multiple_of(5) {
        "warning"
    } else {
        "critical"
    };
    format!(
        r#"{{"subscriptionId":"sub-3f9a2c71","cluster":"prod-{cluster:04}","faultId":"{:016x}","faultType":"CrashLoop","severity":"{sev}","resource":{{"apiVersion":"v1","kind":"Pod","name":"api-7d9f8b6c5-{r:06}","namespace":"ns-{}","uid":"3f1c2e4a-8b7d-4c6e-9a1f-{r:012}"}},"context":"Container entered CrashLoopBackOff state, restart count: {}, waiting message: back-off 5m0s restarting failed container=app pod=api-7d9f8b6c5-{r:06}, last exit code: 1, last reason: Error, termination message: panic: runtime error: invalid memory address or nil pointer dereference [signal SIGSEGV: segmentation violation code=0x1 addr=0x0 pc=0x4a5f3e] goroutine 1 [running]: main.main() /app/main.go:42 +0x1e exit status 2; panic: runtime error: invalid memory address or nil pointer dereference [signal SIGSEGV: segmentation violation code=0x1 addr=0x0 pc=0x4a5f3e] goroutine 1 [running]: main.main() /app/main.go:42 +0x1e exit status 2 .......................................................................","timestamp":"2025-12-20T14:02:11Z"}}"#,
        r.wrapping_mul(0x2545_f491_4f6c_dd1d),
        r % 7,
        i % 50
    )
}

fn main() {
    let mut args = std::env::args().skip(1).peekable();
    if args.peek().map(String::as_str) == Some("storm") {
        args.next();
        let faults: u64 = args.next().map_or(20_000, |a| a.parse().expect("FAULTS"));
        let reports: u64 = args.next().map_or(5, |a| a.parse().expect("REPORTS"));
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .unwrap();
        rt.block_on(storm(faults, reports));
        return;
    }
    let events: u64 = args
        .next()
        .map_or(1_000_000, |a| a.parse().expect("EVENTS"));
    let clusters: u64 = args.next().map_or(1_000, |a| a.parse().expect("CLUSTERS"));
    let max_keys: usize = args
        .next()
        .map_or(100_000, |a| a.parse().expect("MAX_KEYS"));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap();
    let ok = rt.block_on(flood(events, clusters, max_keys));
    std::process::exit(if ok { 0 } else { 1 });
}

async fn flood(events: u64, clusters: u64, max_keys: usize) -> bool {
    let limits = RouterLimits::default();
    let dedup = Arc::new(DedupStage::new(&DedupConfig {
        max_keys,
        ..DedupConfig::default()
    }));
    let stages: Vec<Box<dyn Stage>> = vec![
        SeverityConfig {
            threshold: Severity::Error,
        }
        .build(&BuildContext::default())
        .expect("severity stage"),
        Box::new(Shared(dedup.clone(), None)),
    ];
    let recorder = Arc::new(Recorder::new(stages.into()));
    let chain = StageChain::new(recorder.clone());
    let sink = Arc::new(SlowSink {
        per_cluster: Mutex::new(HashMap::new()),
        running: AtomicUsize::new(0),
        max_running: AtomicUsize::new(0),
        cluster_violation: AtomicBool::new(false),
    });
    let router = Router::new(limits, sink.clone(), recorder.clone());
    // FLOOD_STATE_DIR=<dir>: with the durable state store on (SQLite in
    // <dir>, writer thread, journal), as `runner run` has it by default.
    let state_dir = std::env::var_os("FLOOD_STATE_DIR").map(std::path::PathBuf::from);
    let writer = state_dir.as_ref().map(|dir| {
        use runner_core::state::{JOURNAL_CAPACITY, Journal, StateScope, StateStore, Writer};
        let mut store =
            runner_plugins::state::sqlite::SqliteStore::open(dir, Duration::from_secs(90 * 86_400))
                .expect("open the state store");
        let _ = store.recover().expect("read the state store");
        let journal = Journal::new(JOURNAL_CAPACITY);
        recorder.set_journal(journal.clone());
        Stage::attach_state(
            &*dedup,
            StateScope::new("stage.dedup", journal.clone()),
            Vec::new(),
        );
        Writer::spawn(journal, Box::new(store))
    });
    let src: Arc<str> = Arc::from("flood");
    let (rss0, _) = proc_status();
    println!(
        "flood: {events} events, {clusters} clusters, agents {} s (virtual), dedup max_keys {max_keys}, limits: max_concurrent {} global_queue {} cluster_queue {} policy {}",
        AGENT_TIME.as_secs(),
        limits.max_concurrent,
        limits.global_queue,
        limits.cluster_queue,
        limits.policy
    );
    println!(
        "{:>9} {:>10} {:>10} {:>7} {:>7} {:>8} {:>10} {:>10}",
        "events", "VmRSS kB", "VmHWM kB", "queued", "running", "workers", "dedup keys", "evictions"
    );
    let wall = WallInstant::now();
    let (mut max_queued, mut max_running, mut max_depth) = (0usize, 0usize, 0usize);
    let mut rss_samples = Vec::new();
    let step = (events / 10).max(1);
    for i in 0..events {
        if i.is_multiple_of(100) && i > 0 {
            // 1,000 events per virtual second; lets timers and workers run.
            tokio::time::advance(Duration::from_millis(100)).await;
        }
        let text = payload(i, clusters);
        recorder.received();
        let raw = RawPayload {
            data: serde_json::from_str(&text).expect("valid JSON"),
            source: src.clone(),
            cluster_fill: None,
            received_at: tokio::time::Instant::now(),
        };
        if let ChainResult::Passed(env) = chain.process(raw).await {
            let cluster = env.event.cluster.clone();
            router.admit(env);
            let snap = router.snapshot();
            max_queued = max_queued.max(snap.queued);
            max_running = max_running.max(snap.running);
            max_depth = max_depth.max(router.cluster_depth(&cluster));
        }
        if (i + 1).is_multiple_of(step) {
            let (rss, hwm) = proc_status();
            let snap = router.snapshot();
            rss_samples.push(rss);
            println!(
                "{:>9} {:>10} {:>10} {:>7} {:>7} {:>8} {:>10} {:>10}",
                i + 1,
                rss,
                hwm,
                snap.queued,
                snap.running,
                snap.workers,
                dedup.len(),
                dedup.evictions()
            );
        }
    }
    let feed = wall.elapsed();
    let report = router
        .shutdown(Duration::from_secs(60), CancellationToken::new())
        .await;
    if let (Some(w), Some(dir)) = (writer, &state_dir) {
        let j = w.journal().clone();
        w.close();
        let size = |f: &str| std::fs::metadata(dir.join(f)).map_or(0, |m| m.len());
        println!(
            "state store: {} commits, {} failed; state.db {} kB, state.db-wal {} kB",
            j.commits().0,
            j.commits().1,
            size("state.db") / 1024,
            size("state.db-wal") / 1024
        );
    }
    let (rss, hwm) = proc_status();
    let s = recorder.snapshot();
    println!(
        "fed {events} events in {:.2} s wall ({:.0} events/s incl. payload formatting); shutdown: {:?}",
        feed.as_secs_f64(),
        events as f64 / feed.as_secs_f64(),
        report
    );
    let fields: Vec<String> = s.fields().iter().map(|(k, v)| format!("{k}={v}")).collect();
    println!("final statistics: {}", fields.join(" "));
    println!(
        "max observed: running {} (sink: {}), queued {}, cluster depth {}; RSS start {rss0} kB, end {rss} kB, peak {hwm} kB",
        max_running,
        sink.max_running.load(Ordering::SeqCst),
        max_queued,
        max_depth
    );
    let mut ok = true;
    let mut check = |cond: bool, what: &str| {
        println!("{} {what}", if cond { "ok  " } else { "FAIL" });
        ok &= cond;
    };
    check(s.adds_up(), "every event has exactly one outcome");
    check(s.received == events, "received == events fed");
    check(
        max_running <= limits.max_concurrent
            && sink.max_running.load(Ordering::SeqCst) <= limits.max_concurrent,
        "global cap never exceeded",
    );
    check(
        !sink.cluster_violation.load(Ordering::SeqCst),
        "never two agents on one cluster",
    );
    check(
        max_queued <= limits.global_queue && max_depth <= limits.cluster_queue,
        "queues within bounds",
    );
    check(dedup.len() <= max_keys, "dedup table within max_keys");
    // Flat: once the dedup table is at its bound (expired keys are reclaimed
    // from ~50 % of the flood on), RSS grows less than 5 % (or 2 MiB of
    // allocator slack on a small heap) to the end. A leak of 4 bytes per
    // event would already exceed that.
    if rss_samples.len() >= 6 {
        let base = rss_samples[4];
        let last = *rss_samples.last().unwrap();
        println!(
            "RSS at 50 %: {base} kB, at end: {last} kB ({:+.2} %)",
            (last as f64 - base as f64) * 100.0 / base as f64
        );
        check(
            last <= base + (base / 20).max(2048),
            "RSS flat (< +5 % or +2 MiB from half of the flood to the end)",
        );
    }
    ok
}

/// A storm: every fault reported `reports` times in waves; see the module doc.
async fn storm(faults: u64, reports: u64) {
    let clusters = 10u64;
    let limits = RouterLimits::default();
    let dedup = Arc::new(DedupStage::new(&DedupConfig::default()));
    let tracker = Arc::new(Mutex::new(Tracker::default()));
    let stages: Vec<Box<dyn Stage>> = vec![Box::new(Shared(dedup.clone(), Some(tracker.clone())))];
    let recorder = Arc::new(Recorder::new(stages.into()));
    let chain = StageChain::new(recorder.clone());
    let sink = Arc::new(SlowSink {
        per_cluster: Mutex::new(HashMap::new()),
        running: AtomicUsize::new(0),
        max_running: AtomicUsize::new(0),
        cluster_violation: AtomicBool::new(false),
    });
    let router = Router::new(limits, sink.clone(), recorder.clone());
    let src: Arc<str> = Arc::from("storm");
    let (mut blind, mut blinded) = (0u64, std::collections::HashSet::new());
    let wave = Duration::from_secs(60);
    for r in 0..reports {
        let start = tokio::time::Instant::now();
        for f in 0..faults {
            if f.is_multiple_of(100) && f > 0 {
                tokio::time::advance(Duration::from_millis(100)).await;
            }
            let name = format!("workload-{f:06}");
            recorder.received();
            let raw = RawPayload {
                data: serde_json::json!({"cluster": format!("prod-{:02}", f % clusters),
                    "faultType": "CrashLoop", "severity": "critical",
                    "resource": {"kind": "Pod", "namespace": "default", "name": name}}),
                source: src.clone(),
                cluster_fill: None,
                received_at: tokio::time::Instant::now(),
            };
            match chain.process(raw).await {
                ChainResult::Passed(env) => {
                    *tracker.lock().unwrap().live.entry(name).or_insert(0) += 1;
                    router.admit(env);
                }
                ChainResult::Stopped(Outcome::Duplicate, _) => {
                    let t = tracker.lock().unwrap();
                    if t.live.get(&name).copied().unwrap_or(0) == 0 && !t.ran.contains(&name) {
                        blind += 1;
                        blinded.insert(name);
                    }
                }
                ChainResult::Stopped(..) => {}
            }
        }
        if r + 1 < reports {
            tokio::time::sleep_until(start + wave).await;
        }
    }
    router.wait_idle().await;
    router
        .shutdown(Duration::from_secs(60), CancellationToken::new())
        .await;
    let s = recorder.snapshot();
    let t = tracker.lock().unwrap();
    let fields: Vec<String> = s.fields().iter().map(|(k, v)| format!("{k}={v}")).collect();
    println!(
        "storm: {faults} faults x {reports} reports on {clusters} clusters, waves {} s apart",
        wave.as_secs()
    );
    println!("final statistics: {}", fields.join(" "));
    println!(
        "faults investigated: {}; never investigated: {}",
        t.ran.len(),
        faults as usize - t.ran.len()
    );
    println!(
        "blind duplicates (no incident queued, running or run): {blind} verdicts on {} faults",
        blinded.len()
    );
}
