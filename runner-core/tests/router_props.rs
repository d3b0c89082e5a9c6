//! Property tests of the router's invariants under random load: many
//! clusters, random arrival gaps, random agent durations, both policies, all
//! on tokio's paused clock (deterministic, instant).
//!
//! Before each admit the test waits until the router and a model agree
//! (nothing is between "popped" and "sink started"), then predicts exactly
//! what the admit must do: nothing, drop the oldest queued event of the
//! cluster / of all queues, or reject the new one. The fake sink checks the
//! caps from the inside.

mod router_support;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use proptest::prelude::*;
use router_support::{Behaviour, FakeSink, admit, limits, router};
use runner_core::CancellationToken;
use runner_core::Outcome;
use runner_core::router::OverflowPolicy;

#[derive(Debug, Clone)]
struct Case {
    max: usize,
    global: usize,
    cluster: usize,
    policy: OverflowPolicy,
    clusters: usize,
    /// (cluster index, gap before it in ms, agent duration in ms)
    events: Vec<(usize, u64, u64)>,
    /// Shut down after this many events (None: drain first).
    shutdown_after: Option<usize>,
    grace_ms: u64,
}

fn case() -> impl Strategy<Value = Case> {
    (
        1usize..=5,
        1usize..=24,
        1usize..=6,
        any::<bool>(),
        1usize..=16,
        prop::collection::vec((0usize..16, 0u64..30, 1u64..120), 1..160),
        prop::option::of(0usize..160),
        0u64..200,
    )
        .prop_map(
            |(max, global, cluster, reject, clusters, events, shutdown_after, grace_ms)| Case {
                max,
                global,
                cluster,
                policy: if reject {
                    OverflowPolicy::Reject
                } else {
                    OverflowPolicy::Drop
                },
                clusters,
                events,
                shutdown_after,
                grace_ms,
            },
        )
}

fn run(case: Case) -> Result<(), TestCaseError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    rt.block_on(scenario(case))
}

async fn scenario(c: Case) -> Result<(), TestCaseError> {
    let durations: HashMap<u64, Duration> = c
        .events
        .iter()
        .enumerate()
        .map(|(i, e)| (i as u64, Duration::from_millis(e.2)))
        .collect();
    let sink = FakeSink::new(move |seq| Behaviour::Sleep(durations[&seq]));
    let (r, rec, t) = router(limits(c.max, c.global, c.cluster, c.policy), sink.clone());
    // seq -> cluster of everything admitted.
    let mut admitted: BTreeMap<u64, String> = BTreeMap::new();
    let n = c.shutdown_after.unwrap_or(usize::MAX).min(c.events.len());
    for (i, &(ci, gap, _)) in c.events.iter().take(n).enumerate() {
        if gap > 0 {
            tokio::time::sleep(Duration::from_millis(gap)).await;
        }
        let seq = i as u64;
        let cluster = format!("c{}", ci % c.clusters);

        // Settle, then build the model's queues: admitted, not started, no outcome.
        let mut spins = 0;
        let queued: BTreeMap<u64, String> = loop {
            let started: BTreeSet<u64> = sink.started().into_iter().collect();
            let done: BTreeSet<u64> = t.log().into_iter().map(|(s, _)| s).collect();
            let q: BTreeMap<u64, String> = admitted
                .iter()
                .filter(|(s, _)| !started.contains(s) && !done.contains(s))
                .map(|(s, c)| (*s, c.clone()))
                .collect();
            let snap = r.snapshot();
            if snap.queued == q.len() && snap.running == sink.running() {
                break q;
            }
            spins += 1;
            prop_assert!(spins < 10_000, "router never settled: {snap:?}");
            tokio::task::yield_now().await;
        };
        let depth = queued.values().filter(|x| **x == cluster).count();
        let expected: Option<(u64, Outcome)> = if depth >= c.cluster {
            Some(match c.policy {
                OverflowPolicy::Drop => {
                    let oldest = queued.iter().find(|(_, x)| **x == cluster).unwrap().0;
                    (*oldest, Outcome::Dropped)
                }
                OverflowPolicy::Reject => (seq, Outcome::Rejected),
            })
        } else if queued.len() >= c.global {
            Some(match c.policy {
                OverflowPolicy::Drop => (*queued.keys().next().unwrap(), Outcome::Dropped),
                OverflowPolicy::Reject => (seq, Outcome::Rejected),
            })
        } else {
            None
        };

        let before = t.len();
        admit(&r, &rec, seq, &cluster);
        admitted.insert(seq, cluster.clone());
        let new: Vec<(u64, Outcome)> = t.log()[before..].to_vec();
        prop_assert_eq!(
            new,
            expected.into_iter().collect::<Vec<_>>(),
            "admit of seq {}",
            seq
        );

        let snap = r.snapshot();
        prop_assert!(
            snap.queued <= c.global,
            "global queue {} > {}",
            snap.queued,
            c.global
        );
        prop_assert!(r.cluster_depth(&cluster) <= c.cluster);
        prop_assert!(snap.running <= c.max);
        prop_assert!(sink.max_running() <= c.max);
        prop_assert!(!sink.violated(), "two agents on one cluster");
    }

    let grace = Duration::from_millis(c.grace_ms);
    let report = if c.shutdown_after.is_none() {
        tokio::time::timeout(Duration::from_secs(3600), r.wait_idle())
            .await
            .map_err(|_| TestCaseError::fail("never idle"))?;
        let report = r.shutdown(grace, CancellationToken::new()).await;
        prop_assert_eq!(report.abandoned_queued, 0);
        prop_assert_eq!(report.killed, 0);
        report
    } else {
        let queued_before = r.snapshot().queued;
        let report = r.shutdown(grace, CancellationToken::new()).await;
        prop_assert_eq!(report.abandoned_queued, queued_before);
        report
    };

    // Every admitted event has exactly one outcome; counters add up.
    let log = t.log();
    let mut seen = BTreeSet::new();
    for (s, _) in &log {
        prop_assert!(seen.insert(*s), "seq {} has two outcomes", s);
    }
    prop_assert_eq!(seen.len(), admitted.len());
    let stats = rec.snapshot();
    prop_assert!(stats.adds_up(), "{:?}", stats);
    prop_assert_eq!(stats.received as usize, admitted.len());
    prop_assert_eq!(
        stats.get(Outcome::Abandoned) as usize,
        report.abandoned_queued + report.killed
    );
    // Completed ones were all run by the sink, and nothing ran twice.
    let started = sink.started();
    let uniq: BTreeSet<u64> = started.iter().copied().collect();
    prop_assert_eq!(uniq.len(), started.len(), "an event ran twice");
    for s in t.with(Outcome::Completed) {
        prop_assert!(uniq.contains(&s));
    }
    prop_assert!(sink.max_running() <= c.max);
    prop_assert!(!sink.violated(), "two agents on one cluster");
    prop_assert_eq!(sink.running(), 0);
    prop_assert_eq!(r.snapshot().workers, 0);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn router_invariants_hold(c in case()) {
        run(c)?;
    }
}

/// The same properties on a heavier fixed load: 64 clusters, 3000 events.
#[test]
fn router_invariants_heavy() {
    let mut events = Vec::new();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for _ in 0..3000 {
        // xorshift: a fixed pseudo-random pattern, reproducible.
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        events.push(((x % 64) as usize, (x >> 8) % 3, 1 + (x >> 16) % 200));
    }
    for policy in [OverflowPolicy::Drop, OverflowPolicy::Reject] {
        run(Case {
            max: 5,
            global: 100,
            cluster: 10,
            policy,
            clusters: 64,
            events: events.clone(),
            shutdown_after: None,
            grace_ms: 1000,
        })
        .unwrap();
    }
}
