use std::collections::HashMap;

use proptest::prelude::*;
use runner_core::config::{ConfigErrors, Overrides};
use runner_core::group::Phase;
use serde_json::json;

use super::*;

fn read(text: &str) -> (Option<GroupConfig>, ConfigErrors) {
    let (ov, mut errors, mut effective) = (Overrides::new(), ConfigErrors::default(), Vec::new());
    let dir = std::env::temp_dir();
    let mut r = TableReader::new(
        "stage[1]",
        text.parse().unwrap(),
        &ov,
        &mut errors,
        &mut effective,
    );
    let c = <GroupConfig as ComponentConfig>::read(&mut r, &ReadContext::single(&dir, &ov));
    r.finish();
    (c, errors)
}

#[test]
fn config_defaults_and_every_error_at_once() {
    let (c, errors) = read("");
    assert!(errors.is_empty(), "{errors}");
    assert_eq!(c.unwrap(), GroupConfig::default());

    let (c, errors) = read(
        "key = ['cluster', 'pod']\ngroup_wait_seconds = 7200\ngroup_interval_seconds = -1\nmax_groups = 0\ntypo = 1",
    );
    assert!(c.is_none());
    let text = errors.to_string();
    assert_eq!(errors.len(), 5, "{text}");
    assert!(text.contains("stage[1].key: invalid value \"pod\"; allowed: fields among: cluster, namespace, workload, kind, name, fault_type"), "{text}");
    assert!(text.contains("stage[1].group_wait_seconds: invalid value 7200; allowed: an integer in 0..=3600 (seconds)"), "{text}");
    assert!(text.contains("stage[1].group_interval_seconds"), "{text}");
    assert!(
        text.contains("stage[1].max_groups: invalid value 0"),
        "{text}"
    );
    assert!(text.contains("stage[1].typo: unknown key"), "{text}");

    let (_, errors) = read("key = []");
    assert!(
        errors.to_string().contains("a non-empty list of"),
        "{errors}"
    );

    let (c, errors) = read("key = ['cluster', 'fault_type', 'cluster']\ngroup_wait_seconds = 0");
    assert!(errors.is_empty(), "{errors}");
    let c = c.unwrap();
    assert_eq!(c.key, vec![KeyField::Cluster, KeyField::FaultType]);
    assert_eq!(c.group_wait_seconds, 0);
}

fn pod(cluster: &str, ns: &str, name: &str) -> Event {
    Event::from_json(
        json!({"cluster": cluster, "severity": "critical", "faultType": "CrashLoop",
               "resource": {"kind": "Pod", "name": name, "namespace": ns}}),
        None,
    )
    .unwrap()
}

#[tokio::test(start_paused = true)]
async fn pods_of_one_deployment_form_one_incident_others_do_not() {
    let stage = GroupStage::new(&GroupConfig::default());
    let mut leader = pod("c", "shop", "web-7d4b9c8f5-x2x8k");
    assert_eq!(stage.process(&mut leader).resolve().await, Verdict::Pass);
    let inc = leader.group.clone().expect("leader carries its incident");
    assert_eq!(inc.key.workload_kind, "Deployment");
    assert_eq!(inc.key.workload_name, "web");
    for suffix in ["bbbbb", "zz99q", "x2x8k"] {
        let mut e = pod("c", "shop", &format!("web-7d4b9c8f5-{suffix}"));
        let v = stage.process(&mut e).resolve().await;
        assert!(
            matches!(
                v,
                Verdict::Drop {
                    outcome: Outcome::Merged,
                    ..
                }
            ),
            "{v:?}"
        );
        assert!(e.group.is_none());
    }
    // Another namespace, another cluster, another workload: own incidents.
    for e in [
        pod("c", "other", "web-7d4b9c8f5-x2x8k"),
        pod("d", "shop", "web-7d4b9c8f5-x2x8k"),
        pod("c", "shop", "db-0"),
    ] {
        let mut e = e;
        assert_eq!(stage.process(&mut e).resolve().await, Verdict::Pass);
    }
    assert_eq!(inc.counts().attached, 3);
    assert_eq!(inc.take_pending().len(), 4);
    assert_eq!(stage.table().len(), 4);
}

#[tokio::test(start_paused = true)]
async fn a_leader_that_never_ran_is_forgotten() {
    let stage = GroupStage::new(&GroupConfig::default());
    let mut a = pod("c", "ns", "db-0");
    assert_eq!(stage.process(&mut a).resolve().await, Verdict::Pass);
    stage.finished(&a, Outcome::Dropped);
    assert_eq!(a.group.as_ref().unwrap().phase(), Phase::Closed);
    let mut b = pod("c", "ns", "db-1");
    assert_eq!(stage.process(&mut b).resolve().await, Verdict::Pass);
    assert!(!Arc::ptr_eq(
        a.group.as_ref().unwrap(),
        b.group.as_ref().unwrap()
    ));
}

#[tokio::test(start_paused = true)]
async fn the_table_is_bounded_by_evicting_ended_incidents() {
    let stage = GroupStage::new(&GroupConfig {
        max_groups: 10,
        ..GroupConfig::default()
    });
    for i in 0..30 {
        let mut e = pod("c", &format!("ns{i}"), "db-0");
        assert_eq!(stage.decide(&mut e, Instant::now()), Verdict::Pass);
        stage.finished(&e, Outcome::Completed);
    }
    assert!(stage.table().len() <= 10, "{}", stage.table().len());
    assert!(stage.table().evictions() > 0);
}

// ---- Property test against a reference model, on the paused clock ----

/// Names and the workload the model expects them to belong to.
const NAMES: [(&str, &str); 6] = [
    ("web-7d4b9c8f5-x2x8k", "Deployment/web"),
    ("web-7d4b9c8f5-bbbbb", "Deployment/web"),
    ("web-6c5d4f9b8-zz99q", "Deployment/web"),
    ("db-0", "StatefulSet/db"),
    ("db-1", "StatefulSet/db"),
    ("standalone", "Pod/standalone"),
];

#[derive(Debug, Clone)]
enum Op {
    Event {
        cluster: usize,
        name: usize,
    },
    /// The current leader of the group of `NAMES[name]` in `cluster`
    /// reaches its outcome (`ran`: completed, else dropped).
    Finish {
        cluster: usize,
        name: usize,
        ran: bool,
    },
    Advance {
        secs: u64,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..2usize, 0..NAMES.len()).prop_map(|(cluster, name)| Op::Event { cluster, name }),
        2 => (0..2usize, 0..NAMES.len(), any::<bool>()).prop_map(|(cluster, name, ran)| Op::Finish { cluster, name, ran }),
        2 => (0..40u64).prop_map(|secs| Op::Advance { secs }),
    ]
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum ModelPhase {
    Open,
    Ended(u64),
}

#[derive(Debug, Default, Clone, Copy, PartialEq)]
struct ModelCounts {
    attached: u64,
    recurrences: u64,
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]
    #[test]
    fn group_stage_matches_the_model(
        ops in proptest::collection::vec(op(), 1..120),
        wait in 0..20u64,
        interval in 0..60u64,
    ) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        rt.block_on(async {
            let stage = GroupStage::new(&GroupConfig {
                group_wait_seconds: wait,
                group_interval_seconds: interval,
                ..GroupConfig::default()
            });
            let start = Instant::now();
            let clusters = ["a", "b"];
            let mut now = 0u64;
            // Model: group → phase, and counts of its current incident.
            let mut model: HashMap<(usize, &str), (ModelPhase, ModelCounts)> = HashMap::new();
            // Real: the leader event of each group's current incident.
            let mut leaders: HashMap<(usize, &str), Event> = HashMap::new();
            let (mut received, mut passed, mut merged, mut finished) = (0u64, 0u64, 0u64, 0u64);
            for op in ops {
                match op {
                    Op::Advance { secs } => {
                        tokio::time::advance(Duration::from_secs(secs)).await;
                        now += secs;
                    }
                    Op::Event { cluster, name } => {
                        let g = (cluster, NAMES[name].1);
                        received += 1;
                        let expect = match model.get_mut(&g) {
                            Some((ModelPhase::Open, c)) => { c.attached += 1; "attached" }
                            Some((ModelPhase::Ended(at), c)) if now < *at + interval => { c.recurrences += 1; "recurrence" }
                            _ => "new",
                        };
                        let mut ev = pod(clusters[cluster], "ns", NAMES[name].0);
                        let v = stage.decide(&mut ev, Instant::now());
                        match expect {
                            "new" => {
                                prop_assert_eq!(&v, &Verdict::Pass);
                                let inc = ev.group.clone().expect("leader has its incident");
                                prop_assert_eq!(inc.wait_until, start + Duration::from_secs(now + wait));
                                prop_assert_eq!(format!("{}/{}", inc.key.workload_kind, inc.key.workload_name), NAMES[name].1);
                                model.insert(g, (ModelPhase::Open, ModelCounts::default()));
                                // A replaced leader had ended: it already has its outcome.
                                leaders.insert(g, ev);
                                passed += 1;
                            }
                            _ => {
                                prop_assert!(matches!(v, Verdict::Drop { outcome: Outcome::Merged, .. }), "{:?} expected {}", v, expect);
                                let Verdict::Drop { reason: why, .. } = v else { unreachable!() };
                                prop_assert_eq!(why.contains("recurrence"), expect == "recurrence");
                                merged += 1;
                            }
                        }
                    }
                    Op::Finish { cluster, name, ran } => {
                        let g = (cluster, NAMES[name].1);
                        if let Some((ModelPhase::Open, _)) = model.get(&g) {
                            let leader = &leaders[&g];
                            if ran {
                                stage.finished(leader, Outcome::Completed);
                                model.get_mut(&g).unwrap().0 = ModelPhase::Ended(now);
                            } else {
                                stage.finished(leader, Outcome::Dropped);
                                model.remove(&g);
                            }
                            finished += 1;
                        }
                    }
                }
                // The incident of every group counts what the model counts.
                for (g, (phase, counts)) in &model {
                    let inc = leaders[g].group.as_ref().unwrap();
                    let c = inc.counts();
                    prop_assert_eq!((c.attached, c.recurrences), (counts.attached, counts.recurrences), "{:?}", g);
                    let real = inc.phase_at(Instant::now());
                    match phase {
                        ModelPhase::Open => prop_assert_eq!(real, Phase::Open),
                        ModelPhase::Ended(at) if now < at + interval => prop_assert!(matches!(real, Phase::Ended { .. }), "{:?}", real),
                        ModelPhase::Ended(_) => prop_assert_eq!(real, Phase::Closed),
                    }
                }
            }
            // Leaders still open get their outcome; counters add up.
            for (g, (phase, _)) in &model {
                if *phase == ModelPhase::Open {
                    stage.finished(&leaders[g], Outcome::Completed);
                    finished += 1;
                }
            }
            prop_assert_eq!(received, passed + merged);
            // Every leader that passed got exactly one outcome.
            prop_assert_eq!(finished, passed);
            Ok(())
        })?;
    }
}

/// An ended incident as the store keeps it is restored for the rest of its
/// cooldown: a repeat inside it is a recurrence, one after it opens a new
/// incident.
#[tokio::test(start_paused = true)]
async fn an_ended_incident_survives_a_restart_for_the_rest_of_its_cooldown() {
    let cfg = GroupConfig {
        group_interval_seconds: 100,
        ..GroupConfig::default()
    };
    let a = GroupStage::new(&cfg);
    let leader = pod("c", "shop", "web-7d4b9c8f5-bcdfg");
    let key = a.key_of(&leader);
    let now_ms = 1_000_000;
    let rec = EndedRecord {
        incident_id: Some("20261129T000000Z-000001-00000000".into()),
        // Ended 40 s ago: 60 s of cooldown left.
        until_ms: now_ms + 60_000,
        cluster: key.cluster.clone(),
        namespace: key.namespace.clone(),
        workload_kind: key.workload_kind.clone(),
        workload_name: key.workload_name.clone(),
        attached: 3,
        recurrences: 0,
    };
    let entries = vec![
        (
            key.canonical.clone().into_bytes(),
            serde_json::to_vec(&rec).unwrap(),
        ),
        (b"[\"x\"]".to_vec(), b"not json".to_vec()),
    ];
    let b = GroupStage::new(&cfg);
    let t0 = Instant::now();
    assert_eq!(b.restore(entries, t0, now_ms), 1);
    let mut repeat = pod("c", "shop", "web-7d4b9c8f5-hjklm");
    assert!(matches!(
        b.decide(&mut repeat, t0 + Duration::from_secs(59)),
        Verdict::Drop { outcome: Outcome::Merged, reason } if reason.starts_with("recurrence")
    ));
    let inc = b
        .table()
        .with(&key.canonical, t0, |c| (c.cloned(), None))
        .unwrap();
    assert_eq!((inc.counts().attached, inc.counts().recurrences), (3, 1));
    assert!(
        inc.take_pending().is_empty(),
        "a restored incident keeps no events"
    );
    let mut later = pod("c", "shop", "web-7d4b9c8f5-npqrs");
    assert_eq!(
        b.decide(&mut later, t0 + Duration::from_secs(61)),
        Verdict::Pass,
        "after the cooldown a new incident opens"
    );
    // An entry whose cooldown is over is not restored.
    let c = GroupStage::new(&cfg);
    let stale = vec![(
        key.canonical.clone().into_bytes(),
        serde_json::to_vec(&rec).unwrap(),
    )];
    assert_eq!(c.restore(stale, t0, now_ms + 60_000), 0);
}

/// A leader recovered from the store reopens its incident: repeats attach.
#[tokio::test(start_paused = true)]
async fn a_recovered_leader_reopens_its_incident() {
    let s = GroupStage::new(&GroupConfig::default());
    let mut leader = pod("c", "shop", "web-7d4b9c8f5-bcdfg");
    s.readmitted(&mut leader);
    let inc = leader.group.clone().expect("the leader leads again");
    assert_eq!(inc.phase(), Phase::Open);
    let mut repeat = pod("c", "shop", "web-7d4b9c8f5-hjklm");
    assert!(matches!(
        s.decide(&mut repeat, Instant::now()),
        Verdict::Drop { outcome: Outcome::Merged, reason } if reason.starts_with("attached")
    ));
    assert_eq!(inc.counts().attached, 1);
}
