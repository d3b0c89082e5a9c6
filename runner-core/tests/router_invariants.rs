//! Deterministic router scenarios on tokio's paused clock: overflow policies
//! with exact seqs, fairness, shutdown (drain, grace, kill, force, a sink
//! that ignores the kill), a panicking sink, and counters that add up.

mod router_support;

use std::time::Duration;

use router_support::{Behaviour, FakeSink, admit, limits, router, settle};
use runner_core::CancellationToken;
use runner_core::Outcome;
use runner_core::router::{KILL_WAIT, OverflowPolicy};
use tokio::time::Instant;

const SEC: Duration = Duration::from_secs(1);

#[tokio::test(start_paused = true)]
async fn drop_removes_oldest_of_cluster_queue() {
    let sink = FakeSink::new(|_| Behaviour::Stuck);
    let (r, rec, t) = router(limits(1, 100, 3, OverflowPolicy::Drop), sink.clone());
    admit(&r, &rec, 0, "a");
    settle().await;
    assert_eq!(sink.started(), vec![0]);
    for seq in 1..=5 {
        admit(&r, &rec, seq, "a");
        assert!(r.cluster_depth("a") <= 3);
    }
    assert_eq!(t.with(Outcome::Dropped), vec![1, 2]);
    assert_eq!(r.cluster_depth("a"), 3);
    let report = r.shutdown(Duration::ZERO, CancellationToken::new()).await;
    assert_eq!(report.abandoned_queued, 3);
    assert_eq!(report.killed, 1);
    let mut abandoned = t.with(Outcome::Abandoned);
    abandoned.sort();
    assert_eq!(abandoned, vec![0, 3, 4, 5]);
    assert!(rec.snapshot().adds_up(), "{:?}", rec.snapshot());
}

#[tokio::test(start_paused = true)]
async fn reject_refuses_newest_of_cluster_queue() {
    let sink = FakeSink::new(|_| Behaviour::Stuck);
    let (r, rec, t) = router(limits(1, 100, 3, OverflowPolicy::Reject), sink.clone());
    admit(&r, &rec, 0, "a");
    settle().await;
    for seq in 1..=5 {
        admit(&r, &rec, seq, "a");
    }
    assert_eq!(t.with(Outcome::Rejected), vec![4, 5]);
    r.shutdown(Duration::ZERO, CancellationToken::new()).await;
    let mut abandoned = t.with(Outcome::Abandoned);
    abandoned.sort();
    assert_eq!(abandoned, vec![0, 1, 2, 3]);
    assert!(rec.snapshot().adds_up());
}

#[tokio::test(start_paused = true)]
async fn global_queue_overflow_drops_oldest_overall() {
    let sink = FakeSink::new(|_| Behaviour::Stuck);
    let (r, rec, t) = router(limits(1, 3, 10, OverflowPolicy::Drop), sink.clone());
    admit(&r, &rec, 0, "x"); // runs, holds the only slot
    settle().await;
    admit(&r, &rec, 1, "a");
    admit(&r, &rec, 2, "b");
    admit(&r, &rec, 3, "c");
    assert_eq!(r.snapshot().queued, 3);
    admit(&r, &rec, 4, "d");
    admit(&r, &rec, 5, "b");
    assert_eq!(t.with(Outcome::Dropped), vec![1, 2]);
    assert_eq!(r.snapshot().queued, 3);
    assert_eq!((r.cluster_depth("a"), r.cluster_depth("b")), (0, 1));
    r.shutdown(Duration::ZERO, CancellationToken::new()).await;
    assert!(rec.snapshot().adds_up());
}

#[tokio::test(start_paused = true)]
async fn global_queue_overflow_rejects_newest() {
    let sink = FakeSink::new(|_| Behaviour::Stuck);
    let (r, rec, t) = router(limits(1, 3, 10, OverflowPolicy::Reject), sink.clone());
    admit(&r, &rec, 0, "x");
    settle().await;
    for (seq, c) in [(1, "a"), (2, "b"), (3, "c"), (4, "d"), (5, "a")] {
        admit(&r, &rec, seq, c);
    }
    assert_eq!(t.with(Outcome::Rejected), vec![4, 5]);
    r.shutdown(Duration::ZERO, CancellationToken::new()).await;
    assert!(rec.snapshot().adds_up());
}

#[tokio::test(start_paused = true)]
async fn busy_cluster_does_not_starve_another() {
    for max in [1usize, 2, 3] {
        let sink = FakeSink::new(|_| Behaviour::Sleep(Duration::from_millis(10)));
        let (r, rec, _t) = router(
            limits(max, 2000, 1000, OverflowPolicy::Reject),
            sink.clone(),
        );
        for seq in 0..1000 {
            admit(&r, &rec, seq, "busy");
        }
        admit(&r, &rec, 1000, "quiet");
        r.wait_idle().await;
        let started = sink.started();
        assert_eq!(started.len(), 1001);
        let pos = started.iter().position(|s| *s == 1000).unwrap();
        assert!(pos <= max, "max {max}: quiet event started as run #{pos}");
        assert!(sink.max_running() <= max);
        assert!(!sink.violated());
        r.shutdown(SEC, CancellationToken::new()).await;
        assert_eq!(rec.snapshot().get(Outcome::Completed), 1001);
        assert!(rec.snapshot().adds_up());
    }
}

#[tokio::test(start_paused = true)]
async fn several_busy_clusters_share_slots_round_robin() {
    // 4 clusters each with a long backlog, 2 slots: every cluster gets a
    // run before any cluster gets its third one.
    let sink = FakeSink::new(|_| Behaviour::Sleep(Duration::from_millis(10)));
    let (r, rec, _t) = router(limits(2, 400, 100, OverflowPolicy::Reject), sink.clone());
    for seq in 0..400u64 {
        admit(&r, &rec, seq, &format!("c{}", seq / 100));
    }
    r.wait_idle().await;
    let started = sink.started();
    let first8: Vec<u64> = started[..8].iter().map(|s| s / 100).collect();
    for c in 0..4 {
        assert_eq!(first8.iter().filter(|x| **x == c).count(), 2, "{first8:?}");
    }
    r.shutdown(SEC, CancellationToken::new()).await;
    assert!(rec.snapshot().adds_up());
}

#[tokio::test(start_paused = true)]
async fn next_event_of_cluster_starts_when_previous_finishes() {
    let sink = FakeSink::new(|_| Behaviour::Sleep(Duration::from_secs(5)));
    let (r, rec, _t) = router(limits(5, 100, 10, OverflowPolicy::Drop), sink.clone());
    let t0 = Instant::now();
    for seq in 0..3 {
        admit(&r, &rec, seq, "a");
    }
    r.wait_idle().await;
    // Serial on one cluster, no gaps: 3 × 5 s.
    assert_eq!(t0.elapsed(), Duration::from_secs(15));
    assert_eq!(sink.max_running(), 1);
    r.shutdown(SEC, CancellationToken::new()).await;
}

#[tokio::test(start_paused = true)]
async fn shutdown_drains_running_and_abandons_queued() {
    let sink = FakeSink::new(|_| Behaviour::Sleep(Duration::from_secs(10)));
    let (r, rec, t) = router(limits(2, 100, 10, OverflowPolicy::Drop), sink.clone());
    for seq in 0..5 {
        admit(&r, &rec, seq, "a");
    }
    admit(&r, &rec, 5, "b");
    settle().await;
    let t0 = Instant::now();
    let report = r
        .shutdown(Duration::from_secs(60), CancellationToken::new())
        .await;
    assert_eq!(
        t0.elapsed(),
        Duration::from_secs(10),
        "waited for the running ones only"
    );
    assert_eq!(report.abandoned_queued, 4);
    assert_eq!(report.killed, 0);
    let mut done = t.with(Outcome::Completed);
    done.sort();
    assert_eq!(done, vec![0, 5]);
    let mut abandoned = t.with(Outcome::Abandoned);
    abandoned.sort();
    assert_eq!(abandoned, vec![1, 2, 3, 4]);
    // Closed: later events are abandoned at once.
    admit(&r, &rec, 6, "c");
    assert_eq!(t.outcome_of(6), Some(Outcome::Abandoned));
    assert_eq!(r.snapshot().workers, 0);
    assert!(rec.snapshot().adds_up());
}

#[tokio::test(start_paused = true)]
async fn stuck_sink_is_killed_after_grace() {
    let sink = FakeSink::new(|seq| {
        if seq == 0 {
            Behaviour::Stuck
        } else {
            Behaviour::Sleep(Duration::from_secs(1))
        }
    });
    let (r, rec, t) = router(limits(2, 100, 10, OverflowPolicy::Drop), sink.clone());
    admit(&r, &rec, 0, "a");
    admit(&r, &rec, 1, "b");
    settle().await;
    let t0 = Instant::now();
    let report = r
        .shutdown(Duration::from_secs(5), CancellationToken::new())
        .await;
    assert_eq!(t0.elapsed(), Duration::from_secs(5));
    assert_eq!(report.killed, 1);
    assert_eq!(t.outcome_of(0), Some(Outcome::Abandoned));
    assert_eq!(t.outcome_of(1), Some(Outcome::Completed));
    assert_eq!(sink.running(), 0);
    assert!(rec.snapshot().adds_up());
}

#[tokio::test(start_paused = true)]
async fn force_token_skips_the_grace() {
    let sink = FakeSink::new(|_| Behaviour::Stuck);
    let (r, rec, t) = router(limits(2, 100, 10, OverflowPolicy::Drop), sink.clone());
    admit(&r, &rec, 0, "a");
    admit(&r, &rec, 1, "b");
    settle().await;
    let force = CancellationToken::new();
    let f2 = force.clone();
    tokio::spawn(async move {
        tokio::time::sleep(SEC).await;
        f2.cancel();
    });
    let t0 = Instant::now();
    let report = r.shutdown(Duration::from_secs(3600), force).await;
    assert_eq!(t0.elapsed(), SEC);
    assert_eq!(report.killed, 2);
    assert_eq!(t.with(Outcome::Abandoned).len(), 2);
    assert!(rec.snapshot().adds_up());
}

#[tokio::test(start_paused = true)]
async fn sink_ignoring_kill_is_aborted() {
    let sink = FakeSink::new(|_| Behaviour::IgnoreKill);
    let (r, rec, t) = router(limits(1, 100, 10, OverflowPolicy::Drop), sink.clone());
    admit(&r, &rec, 0, "a");
    settle().await;
    let t0 = Instant::now();
    let report = r.shutdown(SEC, CancellationToken::new()).await;
    assert_eq!(t0.elapsed(), SEC + KILL_WAIT);
    assert_eq!(report.killed, 1);
    assert_eq!(t.outcome_of(0), Some(Outcome::Abandoned));
    assert_eq!(sink.running(), 0, "the aborted handle future was dropped");
    assert!(rec.snapshot().adds_up());
}

#[tokio::test(start_paused = true)]
async fn panicking_sink_releases_slot_and_cluster_continues() {
    let sink = FakeSink::new(|seq| {
        if seq == 0 {
            Behaviour::Panic
        } else {
            Behaviour::Sleep(SEC)
        }
    });
    let (r, rec, t) = router(limits(1, 100, 10, OverflowPolicy::Drop), sink.clone());
    admit(&r, &rec, 0, "a");
    admit(&r, &rec, 1, "a");
    admit(&r, &rec, 2, "b");
    r.wait_idle().await;
    assert_eq!(t.outcome_of(0), Some(Outcome::Failed));
    assert_eq!(t.outcome_of(1), Some(Outcome::Completed));
    assert_eq!(t.outcome_of(2), Some(Outcome::Completed));
    assert_eq!(r.snapshot().running, 0);
    let report = r.shutdown(SEC, CancellationToken::new()).await;
    assert_eq!(report.killed, 0);
    let s = rec.snapshot();
    assert!(s.adds_up());
    assert_eq!(s.get(Outcome::Failed), 1);
}

#[tokio::test(start_paused = true)]
async fn idle_workers_are_reaped_and_recreated() {
    let sink = FakeSink::new(|_| Behaviour::Sleep(Duration::from_millis(10)));
    let (r, rec, t) = router(limits(2, 100, 10, OverflowPolicy::Drop), sink.clone());
    for i in 0..50u64 {
        admit(&r, &rec, i, &format!("c{i}"));
    }
    r.wait_idle().await;
    assert_eq!(r.snapshot().workers, 50);
    tokio::time::sleep(Duration::from_secs(2)).await; // idle_reap is 1 s
    assert_eq!(r.snapshot().workers, 0);
    admit(&r, &rec, 50, "c0");
    r.wait_idle().await;
    assert_eq!(t.outcome_of(50), Some(Outcome::Completed));
    r.shutdown(SEC, CancellationToken::new()).await;
    assert_eq!(rec.snapshot().get(Outcome::Completed), 51);
    assert!(rec.snapshot().adds_up());
}

/// Real threads: 8 producers admit concurrently from a 4-thread runtime
/// while sinks interleave; the caps are checked inside the sink and in
/// snapshots, and every event ends with exactly one outcome.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn multi_thread_stress_keeps_invariants() {
    for policy in [OverflowPolicy::Drop, OverflowPolicy::Reject] {
        let sink = FakeSink::new(|seq| Behaviour::Yield((seq % 13) as u32));
        let (r, rec, t) = router(limits(3, 40, 4, policy), sink.clone());
        let mut producers = tokio::task::JoinSet::new();
        for p in 0..8u64 {
            let (r, rec) = (r.clone(), rec.clone());
            producers.spawn(async move {
                for i in 0..2000u64 {
                    let seq = p * 10_000 + i;
                    admit(&r, &rec, seq, &format!("c{}", (seq * 7) % 50));
                    let s = r.snapshot();
                    assert!(s.queued <= 40 && s.running <= 3, "{s:?}");
                    if i % 16 == 0 {
                        tokio::task::yield_now().await;
                    }
                }
            });
        }
        while let Some(j) = producers.join_next().await {
            j.unwrap();
        }
        tokio::time::timeout(Duration::from_secs(60), r.wait_idle())
            .await
            .expect("drains");
        r.shutdown(SEC, CancellationToken::new()).await;
        assert!(sink.max_running() <= 3);
        assert!(!sink.violated(), "two agents on one cluster");
        let log = t.log();
        let mut seqs: Vec<u64> = log.iter().map(|(s, _)| *s).collect();
        seqs.sort();
        seqs.dedup();
        assert_eq!(seqs.len(), 16_000, "one outcome per event");
        assert_eq!(log.len(), 16_000);
        let s = rec.snapshot();
        assert!(s.adds_up(), "{s:?}");
        assert!(s.get(Outcome::Completed) > 0);
    }
}

/// A group leader waiting out `group_wait` holds no global slot: with a
/// cap of 1, another cluster's event runs at once, and the leader starts
/// when its wait is over. While it waits it is still queued (cancellable).
#[tokio::test(start_paused = true)]
async fn a_waiting_group_holds_no_agent_slot() {
    use runner_core::group::{GroupKey, Incident};
    use std::sync::Arc;
    let sink = FakeSink::new(|_| Behaviour::Stuck);
    let (r, rec, _t) = router(limits(1, 100, 10, OverflowPolicy::Drop), sink.clone());
    let t0 = Instant::now();
    let mut leader = router_support::envelope(0, "a");
    let key = GroupKey::new(&["a", "web"], "a", "ns", ("Deployment", "web", "pod_name"));
    leader.event.group = Some(Arc::new(Incident::open(
        key,
        &leader.event,
        t0,
        10 * SEC,
        60 * SEC,
    )));
    rec.received();
    r.admit(leader);
    settle().await;
    assert_eq!(sink.started(), Vec::<u64>::new(), "the leader waits");
    assert_eq!(r.snapshot().queued, 1);
    admit(&r, &rec, 1, "b");
    settle().await;
    assert_eq!(sink.started(), vec![1], "b runs while a's group waits");
    assert_eq!(sink.max_running(), 1);
    // b holds the only slot until it ends; the leader's wait is over at
    // 10 s but it starts only when a slot is free.
    tokio::time::sleep_until(t0 + 10 * SEC).await;
    settle().await;
    assert_eq!(sink.started(), vec![1]);
    r.shutdown(Duration::ZERO, CancellationToken::new()).await;
    assert!(rec.snapshot().adds_up(), "{:?}", rec.snapshot());
}

/// Once its wait is over the leader takes the free slot.
#[tokio::test(start_paused = true)]
async fn a_group_leader_starts_when_its_wait_is_over() {
    use runner_core::group::{GroupKey, Incident};
    use std::sync::Arc;
    let sink = FakeSink::new(|_| Behaviour::Stuck);
    let (r, rec, _t) = router(limits(1, 100, 10, OverflowPolicy::Drop), sink.clone());
    let t0 = Instant::now();
    let mut leader = router_support::envelope(0, "a");
    let key = GroupKey::new(&["a", "web"], "a", "ns", ("Deployment", "web", "pod_name"));
    leader.event.group = Some(Arc::new(Incident::open(
        key,
        &leader.event,
        t0,
        10 * SEC,
        60 * SEC,
    )));
    rec.received();
    r.admit(leader);
    tokio::time::sleep_until(t0 + 10 * SEC - Duration::from_millis(1)).await;
    settle().await;
    assert!(sink.started().is_empty());
    tokio::time::sleep_until(t0 + 10 * SEC).await;
    settle().await;
    assert_eq!(sink.started(), vec![0]);
    r.shutdown(Duration::ZERO, CancellationToken::new()).await;
    assert!(rec.snapshot().adds_up(), "{:?}", rec.snapshot());
}
