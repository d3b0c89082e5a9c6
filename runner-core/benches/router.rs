//! Router cost per event on one core: `admit` + worker hand-off + a no-op
//! sink + outcome recording, and `admit` under constant overflow (`drop`
//! policy, slots all taken) where every admit also evicts the oldest.
//!
//! `cargo bench -p runner-core --bench router`

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use runner_core::router::{OverflowPolicy, Router, RouterLimits};
use runner_core::{CancellationToken, Envelope, Event, Recorder, Sink, SinkResult, Stage};

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

struct Blocked;

#[async_trait]
impl Sink for Blocked {
    fn name(&self) -> &str {
        "blocked"
    }
    async fn handle(&self, _env: &Envelope, kill: CancellationToken) -> SinkResult {
        kill.cancelled().await;
        SinkResult::abandoned("killed")
    }
}

fn events(n: usize) -> Vec<Event> {
    (0..n)
        .map(|i| {
            Event::from_json(
                serde_json::json!({"cluster": format!("cluster-{}", i % 100), "severity": "critical",
                    "faultType": "CrashLoop", "resource": {"kind": "Pod", "name": format!("pod-{i}"), "namespace": "ns"}}),
                None,
            )
            .unwrap()
        })
        .collect()
}

fn env(seq: u64, e: &Event, src: &Arc<str>) -> Envelope {
    Envelope {
        seq,
        event: e.clone(),
        source: src.clone(),
        received_at: tokio::time::Instant::now(),
        passed_stages: 0,
        bytes: 0,
        chain: None,
    }
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let evs = events(4096);
    let src: Arc<str> = Arc::from("bench");
    let mut g = c.benchmark_group("router");
    g.throughput(Throughput::Elements(1));
    g.measurement_time(Duration::from_secs(3));
    g.warm_up_time(Duration::from_secs(1));

    g.bench_function("admit+run noop sink (100 clusters)", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let rec = Arc::new(Recorder::new(Arc::from(Vec::<Box<dyn Stage>>::new())));
                let limits = RouterLimits {
                    max_concurrent: 5,
                    global_queue: 1 << 20,
                    cluster_queue: 1 << 20,
                    policy: OverflowPolicy::Drop,
                    idle_reap: Duration::from_secs(60),
                };
                let router = Router::new(limits, Arc::new(Noop), rec);
                let t0 = Instant::now();
                for i in 0..iters {
                    router.admit(env(i, &evs[i as usize % evs.len()], &src));
                    if i % 64 == 63 {
                        tokio::task::yield_now().await;
                    }
                }
                router.wait_idle().await;
                let d = t0.elapsed();
                router
                    .shutdown(Duration::ZERO, CancellationToken::new())
                    .await;
                d
            })
        })
    });

    g.bench_function("admit with overflow drop (slots taken)", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let rec = Arc::new(Recorder::new(Arc::from(Vec::<Box<dyn Stage>>::new())));
                let limits = RouterLimits {
                    max_concurrent: 1,
                    global_queue: 100,
                    cluster_queue: 10,
                    policy: OverflowPolicy::Drop,
                    idle_reap: Duration::from_secs(60),
                };
                let router = Router::new(limits, Arc::new(Blocked), rec);
                let t0 = Instant::now();
                for i in 0..iters {
                    router.admit(env(i, &evs[i as usize % evs.len()], &src));
                }
                let d = t0.elapsed();
                router
                    .shutdown(Duration::ZERO, CancellationToken::new())
                    .await;
                d
            })
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
