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

use criterion::{Criterion, criterion_group, criterion_main};
use runner_core::pipeline::{ChainResult, StageChain};
use runner_core::router::{Router, RouterLimits};
use runner_core::state::{JOURNAL_CAPACITY, Journal, StateScope, StateStore, Writer};
use runner_core::{CancellationToken, Recorder, Sink};
use runner_plugins::state::sqlite::SqliteStore;

mod common;
use common::{Busy, Noop, PAYLOADS, median, payload, raw, stages};

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
            if let ChainResult::Passed(env) = self.chain.process(raw(p, src)).await {
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
    let rt = common::paused_runtime();
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
