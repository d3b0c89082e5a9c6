//! In-process pipeline throughput on one core (current-thread runtime):
//! parse → validate → severity → dedup → route, next to the cost of parsing
//! alone, measured in the same run on the same payloads.
//!
//! `cargo bench -p runner-plugins --bench pipeline`
//!
//! Payloads: ~1 KB flat FaultEvents (the `kubernetes/faults` shape and
//! field order of docs/mcp-events-protocol.md, "Notifications") over 100
//! clusters, 4 namespaces, 8192 distinct resources, 20 % `warning` (filtered
//! by the ERROR threshold). Benchmarks:
//! * `parse/serde_json::from_str`: text → `serde_json::Value`;
//! * `parse/from_str+Event::from_json`: the above plus the event model's
//!   validation: the "parsing alone" baseline;
//! * `chain/parse+validate+severity+dedup`: the `StageChain` with the real
//!   severity and dedup stages, no router;
//! * `pipeline/…+route (agents busy)`: the same plus `Router::admit` with
//!   every agent slot taken (a storm: queueing, overflow `drop`, outcome
//!   recording);
//! * `pipeline/…+route (noop agent)`: the same plus the router's workers
//!   dispatching every routed event to a sink that returns at once, all on
//!   the same thread (dispatch cost per agent run).
//!
//! The dedup window is 300 s on tokio's paused clock; when the payload set
//! wraps, the clock advances 301 s so keys pass again (each resource is
//! admitted once per cycle; its repeats inside a cycle are duplicates).

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use runner_core::pipeline::{ChainResult, StageChain};
use runner_core::router::{OverflowPolicy, Router, RouterLimits};
use runner_core::{CancellationToken, Event, Recorder, Sink};
use serde_json::Value;

mod common;
use common::{Busy, Noop, PAYLOADS, RESOURCES, median, payload, raw, stages};

/// One variant of the paired run: its own stages (own dedup table), chain
/// and optional router.
struct Variant {
    rec: Arc<Recorder>,
    chain: StageChain,
    router: Option<Router>,
}

impl Variant {
    fn new(sink: Option<Arc<dyn Sink>>) -> Variant {
        let rec = Arc::new(Recorder::new(stages()));
        let router = sink.map(|s| Router::new(RouterLimits::default(), s, rec.clone()));
        Variant {
            chain: StageChain::new(rec.clone()),
            rec,
            router,
        }
    }

    async fn batch(&self, payloads: &[String], src: &Arc<str>) -> Duration {
        let t0 = Instant::now();
        for (n, p) in payloads.iter().enumerate() {
            self.rec.received();
            if let ChainResult::Passed(env) = self.chain.process(raw(p, src)).await {
                match &self.router {
                    Some(r) => r.admit(env),
                    None => self
                        .rec
                        .finish(&env, runner_core::Outcome::Completed, "bench", ""),
                }
            }
            if n % 32 == 31 {
                tokio::task::yield_now().await;
            }
        }
        if let Some(r) = &self.router
            && r.snapshot().running == 0
        {
            r.wait_idle().await;
        }
        t0.elapsed()
    }
}

/// Load on a shared machine drifts during a criterion run (benchmarks run
/// one after the other). This run alternates the variants over the same
/// payloads in rounds and reports the median per-round ratio to the parsing
/// baseline, which drift affects far less.
async fn paired(payloads: &[String], src: &Arc<str>) {
    const ROUNDS: usize = 21;
    let chain = Variant::new(None);
    let busy = Variant::new(Some(Arc::new(Busy)));
    let noop = Variant::new(Some(Arc::new(Noop)));
    let (mut json, mut c, mut b, mut n) = (vec![], vec![], vec![], vec![]);
    let mut base_ns = vec![];
    for _ in 0..ROUNDS {
        // Past the dedup window: every round sees the same admissions.
        tokio::time::advance(Duration::from_secs(301)).await;
        let t0 = Instant::now();
        for p in payloads {
            std::hint::black_box(serde_json::from_str::<Value>(p).unwrap());
        }
        let t_json = t0.elapsed().as_secs_f64();
        let t0 = Instant::now();
        for p in payloads {
            let v: Value = serde_json::from_str(p).unwrap();
            std::hint::black_box(Event::from_json(v, None).unwrap());
        }
        let base = t0.elapsed().as_secs_f64();
        base_ns.push(base * 1e9 / payloads.len() as f64);
        json.push(t_json / base);
        c.push(chain.batch(payloads, src).await.as_secs_f64() / base);
        b.push(busy.batch(payloads, src).await.as_secs_f64() / base);
        n.push(noop.batch(payloads, src).await.as_secs_f64() / base);
    }
    eprintln!(
        "paired run ({ROUNDS} rounds × {} payloads, median ratio to parse+validate = {:.0} ns/event):\n  \
         serde_json::from_str only       {:.2}\n  \
         + severity + dedup (chain)       {:.2}\n  \
         + route, agents busy (storm)     {:.2}\n  \
         + route, no-op agent (dispatch)  {:.2}",
        payloads.len(),
        median(base_ns),
        median(json),
        median(c),
        median(b),
        median(n)
    );
    for v in [busy, noop] {
        if let Some(r) = v.router {
            r.shutdown(Duration::ZERO, CancellationToken::new()).await;
        }
        assert!(v.rec.snapshot().adds_up());
    }
}

fn bench(c: &mut Criterion) {
    let payloads: Vec<String> = (0..PAYLOADS).map(payload).collect();
    let avg = payloads.iter().map(String::len).sum::<usize>() / payloads.len();
    eprintln!("payloads: {PAYLOADS}, average size {avg} bytes, {RESOURCES} resources");
    let src: Arc<str> = Arc::from("bench");
    // Paused clock: the dedup window is advanced explicitly, not waited for.
    let rt = common::paused_runtime();
    rt.block_on(paired(&payloads, &src));

    let mut g = c.benchmark_group("pipeline");
    g.throughput(Throughput::Elements(1));
    g.measurement_time(Duration::from_secs(3));
    g.warm_up_time(Duration::from_secs(1));

    let mut i = 0usize;
    g.bench_function("parse/serde_json::from_str", |b| {
        b.iter(|| {
            i = (i + 1) % PAYLOADS;
            serde_json::from_str::<Value>(&payloads[i]).unwrap()
        })
    });
    g.bench_function("parse/from_str+Event::from_json", |b| {
        b.iter(|| {
            i = (i + 1) % PAYLOADS;
            let v: Value = serde_json::from_str(&payloads[i]).unwrap();
            Event::from_json(v, None).unwrap()
        })
    });

    g.bench_function("chain/parse+validate+severity+dedup", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let rec = Arc::new(Recorder::new(stages()));
                let chain = StageChain::new(rec.clone());
                let t0 = Instant::now();
                for n in 0..iters as usize {
                    let k = n % PAYLOADS;
                    if k == 0 && n > 0 {
                        tokio::time::advance(Duration::from_secs(301)).await;
                    }
                    rec.received();
                    if let ChainResult::Passed(env) = chain.process(raw(&payloads[k], &src)).await {
                        // No router here: release the dedup key at once.
                        rec.finish(&env, runner_core::Outcome::Completed, "bench", "");
                    }
                }
                t0.elapsed()
            })
        })
    });

    g.bench_function(
        "pipeline/parse+validate+severity+dedup+route (agents busy)",
        |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let rec = Arc::new(Recorder::new(stages()));
                    let chain = StageChain::new(rec.clone());
                    let router = Router::new(RouterLimits::default(), Arc::new(Busy), rec.clone());
                    let t0 = Instant::now();
                    for n in 0..iters as usize {
                        let k = n % PAYLOADS;
                        if k == 0 && n > 0 {
                            tokio::time::advance(Duration::from_secs(301)).await;
                        }
                        rec.received();
                        if let ChainResult::Passed(env) =
                            chain.process(raw(&payloads[k], &src)).await
                        {
                            router.admit(env);
                        }
                        if n % 32 == 31 {
                            tokio::task::yield_now().await;
                        }
                    }
                    let d = t0.elapsed();
                    router
                        .shutdown(Duration::ZERO, CancellationToken::new())
                        .await;
                    assert!(rec.snapshot().adds_up());
                    d
                })
            })
        },
    );

    g.bench_function(
        "pipeline/parse+validate+severity+dedup+route (noop agent)",
        |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let rec = Arc::new(Recorder::new(stages()));
                    let chain = StageChain::new(rec.clone());
                    let limits = RouterLimits {
                        max_concurrent: 5,
                        global_queue: 100,
                        cluster_queue: 10,
                        policy: OverflowPolicy::Drop,
                        idle_reap: Duration::from_secs(3600),
                    };
                    let router = Router::new(limits, Arc::new(Noop), rec.clone());
                    let t0 = Instant::now();
                    for n in 0..iters as usize {
                        let k = n % PAYLOADS;
                        if k == 0 && n > 0 {
                            router.wait_idle().await;
                            tokio::time::advance(Duration::from_secs(301)).await;
                        }
                        rec.received();
                        if let ChainResult::Passed(env) =
                            chain.process(raw(&payloads[k], &src)).await
                        {
                            router.admit(env);
                        }
                        // Let the router's workers and the sink run on this thread.
                        if n % 32 == 31 {
                            tokio::task::yield_now().await;
                        }
                    }
                    router.wait_idle().await;
                    let d = t0.elapsed();
                    router
                        .shutdown(Duration::ZERO, CancellationToken::new())
                        .await;
                    let s = rec.snapshot();
                    assert!(s.adds_up(), "{s:?}");
                    d
                })
            })
        },
    );
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
