//! Pipeline throughput with the durable state store on vs off: the same
//! payloads through parse → severity → dedup → route, once with no store
//! and once with the SQLite store (journal, writer thread, a real file in
//! a temp dir), alternated in rounds so load drift on a shared machine
//! hits both alike. Reports the median per-round ratio on / off.
//!
//! `cargo bench -p runner-plugins --bench state`
//!
//! Two cases, as in `benches/pipeline.rs`: a storm (every agent slot taken:
//! queueing, overflow `drop`; the store writes admissions, dedup keys and
//! counters) and dispatch (a sink that returns at once: every admitted
//! event becomes a stored incident with its start and outcome).

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use criterion::{Criterion, criterion_group, criterion_main};
use runner_core::pipeline::{ChainResult, StageChain};
use runner_core::router::{Router, RouterLimits};
use runner_core::state::{JOURNAL_CAPACITY, Journal, StateScope, StateStore, Writer};
use runner_core::{
    CancellationToken, Envelope, RawPayload, Recorder, Severity, Sink, SinkResult, Stage,
};
use runner_plugins::component::{BuildContext, ComponentConfig};
use runner_plugins::stages::dedup::DedupConfig;
use runner_plugins::stages::severity::SeverityConfig;
use runner_plugins::state::sqlite::SqliteStore;

const PAYLOADS: usize = 16_384;
const RESOURCES: usize = 8_192;

/// The ~1 KB payload of `benches/pipeline.rs`.
fn payload(i: usize) -> String {
    let r = (i * 2_654_435_761) % RESOURCES;
    let cluster = r % 100;
    let ns = ["payments", "checkout", "search", "default"][r % 4];
    let (fault, sev) = if i.is_multiple_of(5) {
        ("PodCrash", "warning")
    } else {
        ("CrashLoop", "critical")
    };
    let head = format!(
        r#"{{"subscriptionId":"sub-3f9a2c71","cluster":"prod-cluster-{cluster:03}","faultId":"{:016x}","faultType":"{fault}","severity":"{sev}","resource":{{"apiVersion":"v1","kind":"Pod","name":"{ns}-api-7d9f8b6c5-{r:05}","namespace":"{ns}","uid":"3f1c2e4a-8b7d-4c6e-9a1f-{r:012}"}},"context":"Container entered CrashLoopBackOff state, restart count: {}, last exit code: 1, termination message: "#,
        (r as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15),
        i % 50
    );
    let tail = r#"","timestamp":"2025-12-20T14:02:11Z"}"#;
    let pad = 1024usize.saturating_sub(head.len() + tail.len());
    let filler: String =
        "panic: runtime error: invalid memory address or nil pointer dereference; "
            .chars()
            .cycle()
            .take(pad)
            .collect();
    format!("{head}{filler}{tail}")
}

struct Busy;
#[async_trait]
impl Sink for Busy {
    fn name(&self) -> &str {
        "busy"
    }
    async fn handle(&self, _env: &Envelope, kill: CancellationToken) -> SinkResult {
        kill.cancelled().await;
        SinkResult::abandoned("killed")
    }
}

struct Noop;
#[async_trait]
impl Sink for Noop {
    fn name(&self) -> &str {
        "noop"
    }
    async fn handle(&self, _env: &Envelope, _kill: CancellationToken) -> SinkResult {
        SinkResult::completed()
    }
}

fn stages() -> Arc<[Box<dyn Stage>]> {
    let sev = SeverityConfig {
        threshold: Severity::Error,
    };
    let dedup = DedupConfig {
        window_seconds: 300,
        ..DedupConfig::default()
    };
    let cx = BuildContext::default();
    vec![sev.build(&cx).unwrap(), dedup.build(&cx).unwrap()].into()
}

/// One pipeline, with or without a store.
struct Variant {
    rec: Arc<Recorder>,
    chain: StageChain,
    router: Router,
    writer: Option<(Writer, tempfile::TempDir)>,
}

impl Variant {
    fn new(sink: Arc<dyn Sink>, durable: bool) -> Variant {
        let rec = Arc::new(Recorder::new(stages()));
        let router = Router::new(RouterLimits::default(), sink, rec.clone());
        let writer = durable.then(|| {
            let dir = tempfile::tempdir().unwrap();
            let mut store = SqliteStore::open(dir.path(), Duration::from_secs(86_400)).unwrap();
            let _ = store.recover().unwrap();
            let journal = Journal::new(JOURNAL_CAPACITY);
            rec.set_journal(journal.clone());
            rec.stages()[1].attach_state(StateScope::new("stage.dedup", journal.clone()), vec![]);
            (Writer::spawn(journal, Box::new(store)), dir)
        });
        Variant {
            chain: StageChain::new(rec.clone()),
            rec,
            router,
            writer,
        }
    }

    async fn batch(&self, payloads: &[String], src: &Arc<str>, drain: bool) -> Duration {
        let t0 = Instant::now();
        for (n, p) in payloads.iter().enumerate() {
            self.rec.received();
            let raw = RawPayload {
                data: serde_json::from_str(p).unwrap(),
                source: src.clone(),
                cluster_fill: None,
                received_at: tokio::time::Instant::now(),
            };
            if let ChainResult::Passed(env) = self.chain.process(raw).await {
                self.router.admit(env);
            }
            if n % 32 == 31 {
                tokio::task::yield_now().await;
            }
        }
        if drain {
            self.router.wait_idle().await;
        }
        t0.elapsed()
    }

    async fn close(self) {
        self.router
            .shutdown(Duration::ZERO, CancellationToken::new())
            .await;
        if let Some((w, _dir)) = self.writer {
            let j = w.journal().clone();
            w.close();
            let (commits, failures) = j.commits();
            assert_eq!(failures, 0);
            assert!(commits > 0);
        }
        assert!(self.rec.snapshot().adds_up());
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

async fn paired(payloads: &[String], src: &Arc<str>) {
    const ROUNDS: usize = 15;
    for (name, drain) in [
        ("storm, agents busy", false),
        ("dispatch, no-op agent", true),
    ] {
        let mk = |durable| {
            let sink: Arc<dyn Sink> = if drain {
                Arc::new(Noop)
            } else {
                Arc::new(Busy)
            };
            Variant::new(sink, durable)
        };
        let (off, on) = (mk(false), mk(true));
        let (mut t_off, mut t_on, mut ratio) = (vec![], vec![], vec![]);
        for _ in 0..ROUNDS {
            tokio::time::advance(Duration::from_secs(301)).await;
            let a = off.batch(payloads, src, drain).await.as_secs_f64();
            let b = on.batch(payloads, src, drain).await.as_secs_f64();
            t_off.push(a * 1e9 / payloads.len() as f64);
            t_on.push(b * 1e9 / payloads.len() as f64);
            ratio.push(b / a);
        }
        eprintln!(
            "{name}: store off {:.0} ns/event, store on {:.0} ns/event, median ratio on/off {:.3} ({ROUNDS} rounds × {} payloads)",
            median(t_off),
            median(t_on),
            median(ratio),
            payloads.len()
        );
        off.close().await;
        on.close().await;
    }
}

fn bench(c: &mut Criterion) {
    let payloads: Vec<String> = (0..PAYLOADS).map(payload).collect();
    let src: Arc<str> = Arc::from("bench");
    // Paused clock: the dedup window is advanced, not waited for. The
    // writer is a real thread writing a real file.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap();
    rt.block_on(paired(&payloads, &src));
    let mut g = c.benchmark_group("state");
    g.measurement_time(Duration::from_secs(3));
    g.warm_up_time(Duration::from_secs(1));
    g.sample_size(10);
    for durable in [false, true] {
        let name = if durable {
            "storm/store on"
        } else {
            "storm/store off"
        };
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let v = Variant::new(Arc::new(Busy), durable);
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        tokio::time::advance(Duration::from_secs(301)).await;
                        total += v.batch(&payloads[..1024], &src, false).await;
                    }
                    v.close().await;
                    total
                })
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
