//! The owning workload of an event's resource, for the group key.
//!
//! Fault payloads name the failing object (usually a Pod), not what owns
//! it. The owner is found, in this order:
//!
//! 1. `ownerReferences` in the payload (`resource.ownerReferences` or a
//!    top-level `ownerReferences`), the controller reference first: a
//!    ReplicaSet owner is then mapped to its Deployment and a Job owner to
//!    its CronJob by the name rules below.
//! 2. The resource's name, by the names Kubernetes controllers generate:
//!    * Pod `<cronjob>-<8+ digits>-<5 random>` → CronJob `<cronjob>`
//!      (a CronJob's Job is named after its schedule time in minutes);
//!    * Pod `<deploy>-<6..10 hash>-<5 random>` → Deployment `<deploy>`
//!      (ReplicaSet pod: pod-template-hash, then a random suffix);
//!    * Pod `<name>-<5 random>` → workload `<name>`, kind `Workload` (a
//!      DaemonSet, Job or bare ReplicaSet pod: the name cannot tell which);
//!    * Pod `<sts>-<ordinal>` (decimal, no leading zero, up to 5 digits) →
//!      StatefulSet `<sts>`;
//!    * ReplicaSet `<deploy>-<6..10 hash>` → Deployment `<deploy>`;
//!    * Job `<cronjob>-<8+ digits>` → CronJob `<cronjob>`.
//!
//!    "Random" and "hash" segments use the alphabet Kubernetes generates
//!    them from (`bcdfghjklmnpqrstvwxz2456789`: no vowels, so ordinary words
//!    do not match).
//! 3. Otherwise the resource itself.
//!
//! Every input is untrusted: names of any length and content yield a
//! workload without panicking, and a derived name is never empty.

use serde_json::Value;

use runner_core::Event;
use runner_core::event::MAX_NAME_LEN;

/// The alphabet of Kubernetes' generated name suffixes and hashes.
const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// An owning workload and how it was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Workload {
    pub kind: String,
    pub name: String,
    /// `owner_reference`, `name`, or `resource` (the resource itself).
    pub how: &'static str,
}

impl Workload {
    fn new(kind: &str, name: &str, how: &'static str) -> Workload {
        Workload {
            kind: kind.to_string(),
            name: name.to_string(),
            how,
        }
    }
}

fn generated(seg: &str, len: std::ops::RangeInclusive<usize>) -> bool {
    len.contains(&seg.len()) && seg.bytes().all(|b| ALPHABET.contains(&b))
}

fn digits(seg: &str) -> bool {
    !seg.is_empty() && seg.bytes().all(|b| b.is_ascii_digit())
}

/// `name` split at its last `-`: `(prefix, last)`, both non-empty.
fn split_last(name: &str) -> Option<(&str, &str)> {
    let (a, b) = name.rsplit_once('-')?;
    (!a.is_empty() && !b.is_empty()).then_some((a, b))
}

/// A ReplicaSet name `<deploy>-<hash>` → the Deployment's name.
fn deployment_of_replicaset(name: &str) -> Option<&str> {
    let (deploy, hash) = split_last(name)?;
    (generated(hash, 6..=10) || (digits(hash) && hash.len() <= 10)).then_some(deploy)
}

/// A Job name `<cronjob>-<schedule minutes>` → the CronJob's name.
fn cronjob_of_job(name: &str) -> Option<&str> {
    let (cron, stamp) = split_last(name)?;
    (digits(stamp) && stamp.len() >= 8).then_some(cron)
}

/// Maps an owner (from `ownerReferences`) up to its own controller where
/// the name says so.
fn lift(kind: &str, name: &str, how: &'static str) -> Workload {
    match kind {
        "ReplicaSet" => match deployment_of_replicaset(name) {
            Some(d) => Workload::new("Deployment", d, how),
            None => Workload::new(kind, name, how),
        },
        "Job" => match cronjob_of_job(name) {
            Some(c) => Workload::new("CronJob", c, how),
            None => Workload::new(kind, name, how),
        },
        _ => Workload::new(kind, name, how),
    }
}

/// A usable owner field: a non-empty string, no longer than a Kubernetes
/// name, without control characters (it ends up in keys and reports).
fn field<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    let s = v.get(key)?.as_str()?;
    (!s.is_empty() && s.len() <= MAX_NAME_LEN && !s.chars().any(char::is_control)).then_some(s)
}

fn owner_reference(raw: &Value) -> Option<(&str, &str)> {
    let refs = raw
        .get("resource")
        .and_then(|r| r.get("ownerReferences"))
        .or_else(|| raw.get("ownerReferences"))?
        .as_array()?;
    let usable = |r: &&Value| field(r, "kind").is_some() && field(r, "name").is_some();
    let controller = refs
        .iter()
        .filter(usable)
        .find(|r| r.get("controller").and_then(Value::as_bool) == Some(true));
    let r = controller.or_else(|| refs.iter().find(usable))?;
    Some((field(r, "kind")?, field(r, "name")?))
}

/// The pod name rules (see the module docs).
fn from_pod_name(name: &str) -> Option<Workload> {
    let (rest, last) = split_last(name)?;
    if generated(last, 5..=5) {
        if let Some((prefix, mid)) = split_last(rest) {
            if digits(mid) && mid.len() >= 8 {
                return Some(Workload::new("CronJob", prefix, "name"));
            }
            if generated(mid, 6..=10) {
                return Some(Workload::new("Deployment", prefix, "name"));
            }
        }
        return Some(Workload::new("Workload", rest, "name"));
    }
    let ordinal = digits(last) && last.len() <= 5 && (last == "0" || !last.starts_with('0'));
    ordinal.then(|| Workload::new("StatefulSet", rest, "name"))
}

/// The owning workload of `ev`'s resource (see the module docs).
pub(crate) fn derive(ev: &Event) -> Workload {
    let r = &ev.resource;
    if let Some((kind, name)) = owner_reference(&ev.raw) {
        return lift(kind, name, "owner_reference");
    }
    let by_name = match r.kind.as_str() {
        "Pod" => from_pod_name(&r.name),
        "ReplicaSet" => {
            deployment_of_replicaset(&r.name).map(|d| Workload::new("Deployment", d, "name"))
        }
        "Job" => cronjob_of_job(&r.name).map(|c| Workload::new("CronJob", c, "name")),
        _ => None,
    };
    by_name.unwrap_or_else(|| Workload::new(&r.kind, &r.name, "resource"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ev_json(v: Value) -> Event {
        Event::from_json(v, None).unwrap()
    }

    fn ev(kind: &str, name: &str) -> Event {
        ev_json(
            json!({"cluster":"c","severity":"critical","resource":{"kind":kind,"name":name,"namespace":"ns"}}),
        )
    }

    fn w(kind: &str, name: &str) -> (String, String) {
        let d = derive(&ev(kind, name));
        (d.kind, d.name)
    }

    fn pair(k: &str, n: &str) -> (String, String) {
        (k.to_string(), n.to_string())
    }

    #[test]
    fn controller_generated_pod_names() {
        assert_eq!(w("Pod", "web-7d4b9c8f5-x2x8k"), pair("Deployment", "web"));
        assert_eq!(
            w("Pod", "my-api-v2-5f6c7d8b9c-qzk4w"),
            pair("Deployment", "my-api-v2")
        );
        assert_eq!(w("Pod", "backup-28472940-x2x8k"), pair("CronJob", "backup"));
        assert_eq!(
            w("Pod", "node-exporter-x2x8k"),
            pair("Workload", "node-exporter")
        );
        assert_eq!(w("Pod", "db-0"), pair("StatefulSet", "db"));
        assert_eq!(
            w("Pod", "kafka-broker-12"),
            pair("StatefulSet", "kafka-broker")
        );
        assert_eq!(w("ReplicaSet", "web-7d4b9c8f5"), pair("Deployment", "web"));
        assert_eq!(w("Job", "backup-28472940"), pair("CronJob", "backup"));
        assert_eq!(derive(&ev("Pod", "web-7d4b9c8f5-x2x8k")).how, "name");
    }

    #[test]
    fn the_pods_of_one_deployment_share_a_workload() {
        let names = [
            "web-7d4b9c8f5-x2x8k",
            "web-7d4b9c8f5-bbbbb",
            "web-6c5d4f9b8-zz99q",
        ];
        for n in names {
            assert_eq!(w("Pod", n), pair("Deployment", "web"), "{n}");
        }
    }

    #[test]
    fn ordinary_names_stay_themselves() {
        for (kind, name) in [
            ("Pod", "nginx"),
            ("Pod", "nginx-debug"), // vowels: not generated
            ("Pod", "web-007"),     // leading zero: not an ordinal
            ("Pod", "web-123456"),  // too long for an ordinal
            ("Node", "worker-1"),   // only Pods have ordinals
            ("Deployment", "web-7d4b9c8f5"),
            ("Job", "migrate-2"),      // too few digits for a schedule
            ("ReplicaSet", "web-abc"), // not a hash
        ] {
            let d = derive(&ev(kind, name));
            assert_eq!(
                (d.kind.as_str(), d.name.as_str(), d.how),
                (kind, name, "resource")
            );
        }
    }

    #[test]
    fn hostile_names_never_panic_and_never_yield_empty_names() {
        let long = format!("{}-x2x8k", "é".repeat(120));
        let hostile = [
            "-",
            "--",
            "---",
            "-x2x8k",
            "x2x8k-",
            "-7d4b9c8f5-x2x8k",
            "a--x2x8k",
            "-0",
            "0",
            "ä-bcdfg",
            "../../etc/passwd-x2x8k",
            "$(rm -rf /)-0",
            "web-7d4b9c8f5-",
            "\u{202e}evil-x2x8k",
            "💥-💥-💥",
            &long,
            "a-b-c-d-e-f-g-h-i-j-k",
        ];
        for name in hostile {
            for kind in ["Pod", "ReplicaSet", "Job", "Other"] {
                let d = derive(&ev(kind, name));
                assert!(!d.name.is_empty(), "{kind} {name:?} -> {d:?}");
                assert!(!d.kind.is_empty(), "{kind} {name:?} -> {d:?}");
                assert!(
                    name.starts_with(&d.name) || d.name == name,
                    "{name:?} -> {d:?}"
                );
            }
        }
        assert_eq!(
            w("Pod", "../../etc/passwd-x2x8k"),
            pair("Workload", "../../etc/passwd")
        );
        assert_eq!(w("Pod", "-x2x8k"), pair("Pod", "-x2x8k"));
        assert_eq!(w("Pod", "a--x2x8k"), pair("Workload", "a-"));
    }

    #[test]
    fn owner_references_win_and_are_lifted() {
        let with_owner = |owners: Value| {
            ev_json(json!({"cluster":"c","severity":"critical",
                "resource":{"kind":"Pod","name":"db-0","namespace":"ns","ownerReferences":owners}}))
        };
        let d = derive(&with_owner(json!([
            {"kind":"Node","name":"n1"},
            {"kind":"ReplicaSet","name":"web-7d4b9c8f5","controller":true}
        ])));
        assert_eq!(
            (d.kind.as_str(), d.name.as_str(), d.how),
            ("Deployment", "web", "owner_reference")
        );
        let d = derive(&with_owner(
            json!([{"kind":"Job","name":"backup-28472940"}]),
        ));
        assert_eq!((d.kind.as_str(), d.name.as_str()), ("CronJob", "backup"));
        let d = derive(&with_owner(json!([{"kind":"DaemonSet","name":"fluentd"}])));
        assert_eq!((d.kind.as_str(), d.name.as_str()), ("DaemonSet", "fluentd"));
        // Unusable references (wrong types, empty, control characters, too
        // long) are ignored: the name rules apply.
        let too_long = "x".repeat(MAX_NAME_LEN + 1);
        for bad in [
            json!("not an array"),
            json!([{"kind": 1, "name": "x"}]),
            json!([{"kind": "ReplicaSet", "name": ""}]),
            json!([{"kind": "ReplicaSet", "name": "a\nb"}]),
            json!([{"kind": "ReplicaSet", "name": too_long}]),
            json!([null, 3, "x"]),
        ] {
            let d = derive(&with_owner(bad.clone()));
            assert_eq!(
                (d.kind.as_str(), d.name.as_str(), d.how),
                ("StatefulSet", "db", "name"),
                "{bad}"
            );
        }
        // A top-level list counts too (other payload shapes).
        let d = derive(&ev_json(json!({"cluster":"c","severity":"critical",
            "resource":{"kind":"Pod","name":"x"},
            "ownerReferences":[{"kind":"StatefulSet","name":"db"}]})));
        assert_eq!((d.kind.as_str(), d.name.as_str()), ("StatefulSet", "db"));
    }
}
