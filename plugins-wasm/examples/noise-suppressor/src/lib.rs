//! Suppresses known-noisy faults by pattern on fault type and context.
//!
//! Config: every key names a rule; its value is
//! `FAULT_TYPE_GLOB | CONTEXT_GLOB`, for example
//! `probe = "Unhealthy | *Readiness probe failed*"`. The fault type glob is
//! case-sensitive; the context glob is matched case-insensitively against the
//! whole context (surround it with `*` to match a substring). A missing
//! `| CONTEXT_GLOB` means any context. Dropped events carry the rule's name
//! as the reason, and each suppression is logged at debug level.

use std::sync::OnceLock;

use event_runner::plugin::host::{LogLevel, log};
use exports::event_runner::plugin::filter::{Event, Guest, Verdict};
use plugin_kit::glob;

wit_bindgen::generate!({ path: "../../wit", world: "plugin" });

struct Rule {
    name: String,
    fault_type: String,
    /// Lowercased.
    context: String,
}

static RULES: OnceLock<Vec<Rule>> = OnceLock::new();

struct NoiseSuppressor;

impl Guest for NoiseSuppressor {
    fn init(config: Vec<(String, String)>) -> Result<(), String> {
        plugin_kit::forward_panics(|m| log(LogLevel::Error, m));
        if config.is_empty() {
            return Err(
                "no rules configured; add NAME = \"FAULT_TYPE_GLOB | CONTEXT_GLOB\"".to_string(),
            );
        }
        let mut rules = Vec::new();
        for (name, value) in config {
            let (ft, ctx) = match value.split_once('|') {
                Some((ft, ctx)) => (ft.trim(), ctx.trim()),
                None => (value.trim(), "*"),
            };
            if ft.is_empty() || ctx.is_empty() {
                return Err(format!(
                    "rule {name}: {value:?} is not FAULT_TYPE_GLOB | CONTEXT_GLOB"
                ));
            }
            rules.push(Rule {
                name,
                fault_type: ft.to_string(),
                context: ctx.to_lowercase(),
            });
        }
        log(
            LogLevel::Info,
            &format!("{} suppression rule(s) loaded", rules.len()),
        );
        RULES
            .set(rules)
            .map_err(|_| "init called twice".to_string())
    }

    fn filter(event: Event) -> Result<Verdict, String> {
        let rules = RULES.get().ok_or("filter called before init")?;
        let mut context_lc: Option<String> = None;
        for rule in rules {
            if !glob(&rule.fault_type, &event.fault_type) {
                continue;
            }
            let ctx = context_lc.get_or_insert_with(|| event.context.to_lowercase());
            if glob(&rule.context, ctx) {
                log(
                    LogLevel::Debug,
                    &format!("suppressed {} by rule {}", event.fault_type, rule.name),
                );
                return Ok(Verdict::Drop(format!("known noise (rule {})", rule.name)));
            }
        }
        Ok(Verdict::Keep)
    }
}

export!(NoiseSuppressor);
