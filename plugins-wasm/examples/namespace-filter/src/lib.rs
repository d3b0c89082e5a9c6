//! Allow/deny filter on namespace and kind.
//!
//! Config (every key optional; values are comma-separated glob lists):
//! * `allow_namespaces`: if set, only these namespaces pass,
//! * `deny_namespaces`: these namespaces are dropped (deny wins over allow),
//! * `allow_kinds` / `deny_kinds`: the same for the object kind (`Pod`, `Node`…).
//!
//! Namespace rules do not apply to cluster-scoped objects (empty namespace,
//! e.g. Nodes); use the kind rules for those.

use std::sync::OnceLock;

use event_runner::plugin::host::{LogLevel, log};
use exports::event_runner::plugin::filter::{Event, Guest, Verdict};
use plugin_kit::{any_glob, check_keys, get, list};

wit_bindgen::generate!({ path: "../../wit", world: "plugin" });

struct Rules {
    allow_namespaces: Vec<String>,
    deny_namespaces: Vec<String>,
    allow_kinds: Vec<String>,
    deny_kinds: Vec<String>,
}

// One instance serves many events; the rules are set once by `init`.
static RULES: OnceLock<Rules> = OnceLock::new();

struct NamespaceFilter;

impl Guest for NamespaceFilter {
    fn init(config: Vec<(String, String)>) -> Result<(), String> {
        plugin_kit::forward_panics(|m| log(LogLevel::Error, m));
        const KEYS: [&str; 4] = [
            "allow_namespaces",
            "deny_namespaces",
            "allow_kinds",
            "deny_kinds",
        ];
        check_keys(&config, &KEYS)?;
        let l = |k| get(&config, k).map(list).unwrap_or_default();
        let rules = Rules {
            allow_namespaces: l("allow_namespaces"),
            deny_namespaces: l("deny_namespaces"),
            allow_kinds: l("allow_kinds"),
            deny_kinds: l("deny_kinds"),
        };
        if KEYS.iter().all(|k| get(&config, k).is_none()) {
            return Err(format!(
                "no rules configured; set at least one of {}",
                KEYS.join(", ")
            ));
        }
        RULES
            .set(rules)
            .map_err(|_| "init called twice".to_string())
    }

    fn filter(event: Event) -> Result<Verdict, String> {
        let rules = RULES.get().ok_or("filter called before init")?;
        let ns = event.resource.namespace.as_str();
        let kind = event.resource.kind.as_str();
        if !ns.is_empty() {
            if any_glob(&rules.deny_namespaces, ns) {
                return Ok(Verdict::Drop(format!("namespace {ns} is denied")));
            }
            if !rules.allow_namespaces.is_empty() && !any_glob(&rules.allow_namespaces, ns) {
                return Ok(Verdict::Drop(format!("namespace {ns} is not allowed")));
            }
        }
        if any_glob(&rules.deny_kinds, kind) {
            return Ok(Verdict::Drop(format!("kind {kind} is denied")));
        }
        if !rules.allow_kinds.is_empty() && !any_glob(&rules.allow_kinds, kind) {
            return Ok(Verdict::Drop(format!("kind {kind} is not allowed")));
        }
        Ok(Verdict::Keep)
    }
}

export!(NamespaceFilter);
