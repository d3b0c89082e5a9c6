//! {{name}}: an Event Runner WASM plugin. It drops events whose fault type
//! is listed in `drop_fault_types` and keeps everything else; change
//! `filter` to do what you need. See the runner's docs/plugins.md.
//!
//! config = { drop_fault_types = ["NoisyProbe"] }

use std::sync::OnceLock;

use event_runner::plugin::host::{LogLevel, log};
use exports::event_runner::plugin::filter::{Event, Guest, Verdict};

wit_bindgen::generate!({ path: "wit", world: "plugin" });

static DROP_FAULT_TYPES: OnceLock<Vec<String>> = OnceLock::new();

/// The decision, in a plain function so `cargo test` can check it on the host.
fn dropped<'a>(fault_type: &str, drop: &'a [String]) -> Option<&'a String> {
    drop.iter().find(|t| *t == fault_type)
}

struct Plugin;

impl Guest for Plugin {
    fn init(config: Vec<(String, String)>) -> Result<(), String> {
        let mut drop = Vec::new();
        for (key, value) in config {
            match key.as_str() {
                "drop_fault_types" => drop = value
                    .split(',')
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())
                    .collect(),
                // Typos fail `runner validate` instead of doing nothing.
                other => return Err(format!("unknown config key {other:?} (allowed: drop_fault_types)")),
            }
        }
        log(LogLevel::Info, &format!("{{name}}: dropping {}", drop.join(", ")));
        DROP_FAULT_TYPES.set(drop).map_err(|_| "init called twice".to_string())
    }

    fn filter(event: Event) -> Result<Verdict, String> {
        let drop = DROP_FAULT_TYPES.get().ok_or("not initialized")?;
        Ok(match dropped(&event.fault_type, drop) {
            Some(t) => Verdict::Drop(format!("fault type {t} is dropped")),
            None => Verdict::Keep,
        })
    }
}

export!(Plugin);

#[cfg(test)]
mod tests {
    #[test]
    fn drops_only_listed_fault_types() {
        let drop = vec!["NoisyProbe".to_string()];
        assert!(super::dropped("NoisyProbe", &drop).is_some());
        assert!(super::dropped("CrashLoop", &drop).is_none());
    }
}
