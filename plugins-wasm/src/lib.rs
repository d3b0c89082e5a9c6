//! WASM stages: sandboxed custom filters as WebAssembly components.
//!
//! A plugin implements the WIT world `event-runner:plugin/plugin@0.1.0`
//! (`wit/event-runner-plugin.wit`): `init(config)` once, then
//! `filter(event) -> verdict` per event. See `docs/plugins.md`.
//!
//! Sandbox, per stage:
//! * WASI 0.2 is linked, granting nothing (see [`wasi`]): no preopened
//!   directories, an empty environment, no sockets or name lookups, stdin
//!   closed, stdout/stderr into the plugin's log; clocks and random are
//!   allowed. Components from the JavaScript and Python toolchains import
//!   these interfaces whether or not they use them. Outbound HTTP
//!   (`wasi:http`, which componentize-js links for `fetch`) is linked to
//!   functions that trap; any other import fails `runner validate` with the
//!   names of what the plugin imports;
//! * a per-call deadline via epoch interruption (a background thread ticks
//!   the shared engine every millisecond while a call is in flight, and
//!   sleeps otherwise, see [`epoch`]);
//! * a linear-memory cap via a resource limiter;
//! * a trap, a timeout or an error result becomes the configured `on_error`
//!   outcome, is counted and logged; a trapped instance is thrown away and
//!   re-created (and re-initialized) for the next event.
//!
//! The component is compiled once when the stage is built (or loaded from
//! the compile cache, see [`cache`]); the instance is reused across events,
//! so guest globals persist between events until a failure forces a fresh
//! instance. Inside a tokio runtime a call runs on the blocking pool, never
//! on the intake task's worker thread.

mod bindings {
    wasmtime::component::bindgen!({ path: "wit", world: "plugin" });
}

pub mod cache;
pub mod epoch;
mod log;
mod stage;
pub mod view;
mod wasi;

pub use cache::{CacheOutcome, CompileCache};
pub use log::{LogLevel, PluginLogLine};
pub use stage::{OnError, WasmStage, WasmStats, remember_compiled};

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use runner_core::Stage;
use runner_core::config::TableReader;

/// The WIT package version this host implements. A component built against
/// another version is rejected at load time.
pub const WIT_PACKAGE: &str = "event-runner:plugin@0.1.0";
/// The interface every plugin exports.
pub const FILTER_EXPORT: &str = "event-runner:plugin/filter@0.1.0";
const FILTER_PREFIX: &str = "event-runner:plugin/filter@";
const HOST_PREFIX: &str = "event-runner:plugin/host@";
const VERSION: &str = "0.1.0";

/// How often the epoch advances; the granularity of `timeout_ms`.
pub const EPOCH_TICK: Duration = Duration::from_millis(1);
/// Deadline for `init` (and instantiation), independent of `timeout_ms`:
/// plugins may build tables there, and an interpreter-based guest (Python,
/// JavaScript) sets up its runtime.
pub const INIT_TIMEOUT: Duration = Duration::from_secs(5);

pub const DEFAULT_TIMEOUT_MS: u64 = 20;
pub const DEFAULT_MAX_MEMORY_MB: u64 = 16;
pub const DEFAULT_DISABLE_AFTER: u32 = 5;
/// A Rust guest needs about 1.1 MiB to instantiate.
const MIN_MEMORY_MB: u64 = 2;
const MAX_MEMORY_MB: u64 = 4096;
/// Stages run one event at a time in order, so a plugin that uses its whole
/// deadline on every event limits intake to `1000 / timeout_ms` events per
/// second: one second is the most a single call may hold the chain.
pub const MAX_TIMEOUT_MS: u64 = 1_000;
/// Larger files are not plugins; refuse before compiling.
const MAX_FILE_BYTES: u64 = 64 * 1024 * 1024;

/// The wasmtime version this host is built with (Cargo.toml pins it); part
/// of the compile cache key.
pub const WASMTIME_VERSION: &str = "48.0.8";

/// One engine for every WASM stage, with epoch interruption on. The
/// component-model features are those the JavaScript (componentize-js) and
/// Python (componentize-py) toolchains emit by default: their components
/// carry the async builtins (`task.*`, `context.*`, error contexts) even
/// when the plugin's own functions are synchronous.
pub(crate) fn engine() -> &'static wasmtime::Engine {
    static ENGINE: OnceLock<wasmtime::Engine> = OnceLock::new();
    ENGINE.get_or_init(|| {
        let mut cfg = wasmtime::Config::new();
        cfg.epoch_interruption(true);
        cfg.wasm_component_model(true);
        cfg.wasm_component_model_async(true);
        cfg.wasm_component_model_error_context(true);
        wasmtime::Engine::new(&cfg).expect("wasmtime engine configuration is valid")
    })
}

/// `[[stage]] kind = "wasm"` settings.
#[derive(Debug, Clone)]
pub struct WasmStageConfig {
    /// The component file, resolved against the config file's directory.
    pub path: PathBuf,
    /// Optional label; the stage is named `wasm:<name or file stem>`.
    pub name: Option<String>,
    /// `config = { … }` as key/value strings, in key order.
    pub config: Vec<(String, String)>,
    pub timeout_ms: u64,
    pub max_memory_mb: u64,
    pub on_error: OnError,
    /// Consecutive failures before an `on_error = "disable"` stage turns off.
    pub disable_after: u32,
    /// Where compiled components are kept between runs; `None`: compile
    /// every time (see [`CompileCache`]).
    pub cache_dir: Option<PathBuf>,
}

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// Renders one `config` value as the string the plugin receives; arrays are
/// joined with commas.
fn config_text(v: &toml::Value) -> Option<String> {
    match v {
        toml::Value::String(s) => Some(s.clone()),
        toml::Value::Integer(i) => Some(i.to_string()),
        toml::Value::Float(f) => Some(f.to_string()),
        toml::Value::Boolean(b) => Some(b.to_string()),
        toml::Value::Array(items) => items
            .iter()
            .map(|i| match i {
                toml::Value::Array(_) | toml::Value::Table(_) => None,
                other => config_text(other),
            })
            .collect::<Option<Vec<_>>>()
            .map(|v| v.join(",")),
        toml::Value::Table(_) | toml::Value::Datetime(_) => None,
    }
}

impl WasmStageConfig {
    /// A config with defaults for `path` (tests, benchmarks).
    pub fn new(path: impl Into<PathBuf>) -> WasmStageConfig {
        WasmStageConfig {
            path: path.into(),
            name: None,
            config: Vec::new(),
            timeout_ms: DEFAULT_TIMEOUT_MS,
            max_memory_mb: DEFAULT_MAX_MEMORY_MB,
            on_error: OnError::Pass,
            disable_after: DEFAULT_DISABLE_AFTER,
            cache_dir: None,
        }
    }

    /// Reads a `[[stage]] kind = "wasm"` table, recording every error in `r`.
    pub fn read(r: &mut TableReader<'_>, base_dir: &Path) -> Option<WasmStageConfig> {
        let path: Option<String> = r.req("path");
        let name: Option<String> = r.opt("name");
        // Defaults go through `opt_or` so the startup log and `runner
        // validate` show them as effective values like every other default.
        let timeout_ms: u64 = r.opt_or("timeout_ms", DEFAULT_TIMEOUT_MS);
        let max_memory_mb: u64 = r.opt_or("max_memory_mb", DEFAULT_MAX_MEMORY_MB);
        let on_error: OnError = r.opt_or("on_error", OnError::Pass);
        let disable_after: Option<u32> = r.opt("disable_after");
        if disable_after.is_none() && on_error == OnError::Disable {
            r.record_default("disable_after", DEFAULT_DISABLE_AFTER.to_string());
        }
        let table = r.table("config").unwrap_or_default();
        let mut ok = path.is_some();

        if let Some(n) = &name
            && !valid_name(n)
        {
            r.error(
                "name",
                format!("{n:?}"),
                "1 to 64 characters from A-Z a-z 0-9 - _ .",
            );
            ok = false;
        }
        if !(1..=MAX_TIMEOUT_MS).contains(&timeout_ms) {
            r.error(
                "timeout_ms",
                timeout_ms.to_string(),
                format!("an integer in 1..={MAX_TIMEOUT_MS} (milliseconds per call)"),
            );
            ok = false;
        }
        if !(MIN_MEMORY_MB..=MAX_MEMORY_MB).contains(&max_memory_mb) {
            r.error(
                "max_memory_mb",
                max_memory_mb.to_string(),
                format!("an integer in {MIN_MEMORY_MB}..={MAX_MEMORY_MB} (MiB of linear memory)"),
            );
            ok = false;
        }
        match (disable_after, on_error) {
            (Some(0), _) => {
                r.error("disable_after", "0", "an integer >= 1");
                ok = false;
            }
            (Some(n), OnError::Pass | OnError::Drop) => {
                r.error(
                    "disable_after",
                    n.to_string(),
                    "only with on_error = \"disable\" (remove it or change on_error)",
                );
                ok = false;
            }
            _ => {}
        }
        let mut config = Vec::with_capacity(table.len());
        for (k, v) in &table {
            match config_text(v) {
                Some(s) => config.push((k.clone(), s)),
                None => {
                    r.error(
                        &format!("config.{k}"),
                        v.to_string(),
                        "a string, number, boolean or an array of those",
                    );
                    ok = false;
                }
            }
        }
        if !ok {
            return None;
        }
        let path = PathBuf::from(path?);
        let path = if path.is_absolute() {
            path
        } else {
            base_dir.join(path)
        };
        Some(WasmStageConfig {
            path,
            name,
            config,
            timeout_ms,
            max_memory_mb,
            on_error,
            disable_after: disable_after.unwrap_or(DEFAULT_DISABLE_AFTER),
            cache_dir: None,
        })
    }

    /// The stage name: `wasm:<name or file stem>`.
    pub fn stage_name(&self) -> String {
        let label = match &self.name {
            Some(n) => n.clone(),
            None => self
                .path
                .file_stem()
                .map(|s| {
                    s.to_string_lossy()
                        .chars()
                        .map(|c| {
                            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                                c
                            } else {
                                '_'
                            }
                        })
                        .collect()
                })
                .unwrap_or_else(|| "plugin".into()),
        };
        format!("wasm:{label}")
    }

    /// Compiles the component, instantiates it and calls `init(config)`:
    /// every way a plugin can be unusable fails here, with a message that
    /// reads after "allowed:" in a config error.
    pub fn build(&self) -> Result<Box<dyn Stage>, String> {
        Ok(Box::new(self.build_stage()?))
    }

    /// Like [`build`](Self::build), returning the concrete stage (its
    /// counters are visible to tests and benchmarks).
    pub fn build_stage(&self) -> Result<WasmStage, String> {
        WasmStage::load(self)
    }
}

/// Checks the file is a component of our WIT version before compiling
/// anything else about it, so the message names the actual problem.
pub(crate) fn check_interface(
    engine: &wasmtime::Engine,
    component: &wasmtime::component::Component,
) -> Result<(), String> {
    let ty = component.component_type();
    let exports: Vec<String> = ty.exports(engine).map(|(n, _)| n.to_string()).collect();
    let imports: Vec<String> = ty.imports(engine).map(|(n, _)| n.to_string()).collect();
    let other_version = |prefix: &str, names: &[String]| {
        names
            .iter()
            .find(|n| n.starts_with(prefix) && n[prefix.len()..] != *VERSION)
            .map(|n| n[prefix.len()..].to_string())
    };
    let mismatch = |v: String| {
        format!(
            "a plugin built against {WIT_PACKAGE}; this one was built against event-runner:plugin@{v} \
             (WIT version mismatch: rebuild it with plugins-wasm/wit/event-runner-plugin.wit)"
        )
    };
    if let Some(v) = other_version(FILTER_PREFIX, &exports).or(other_version(HOST_PREFIX, &imports))
    {
        return Err(mismatch(v));
    }
    if !exports.iter().any(|n| n == FILTER_EXPORT) {
        let shown = if exports.is_empty() {
            "none".to_string()
        } else {
            exports.join(", ")
        };
        return Err(format!(
            "a component exporting {FILTER_EXPORT}; this one exports: {shown} \
             (is it an Event Runner plugin? see docs/plugins.md)"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use runner_core::config::{ConfigErrors, Overrides};

    fn read(text: &str) -> (Option<WasmStageConfig>, ConfigErrors) {
        let ov = Overrides::new();
        let mut errs = ConfigErrors::default();
        let mut eff = Vec::new();
        let mut r = TableReader::new("stage[3]", text.parse().unwrap(), &ov, &mut errs, &mut eff);
        let c = WasmStageConfig::read(&mut r, Path::new("/etc/runner"));
        r.finish();
        (c, errs)
    }

    #[test]
    fn reads_all_keys() {
        let (c, errs) = read(
            r#"path = "plugins/deny.wasm"
               name = "deny-ns"
               timeout_ms = 5
               max_memory_mb = 8
               on_error = "disable"
               disable_after = 2
               config = { deny_namespaces = ["kube-*", "dev"], limit = 3, strict = true, note = "x" }"#,
        );
        assert!(errs.is_empty(), "{errs}");
        let c = c.unwrap();
        assert_eq!(c.path, Path::new("/etc/runner/plugins/deny.wasm"));
        assert_eq!(c.stage_name(), "wasm:deny-ns");
        assert_eq!((c.timeout_ms, c.max_memory_mb), (5, 8));
        assert_eq!((c.on_error, c.disable_after), (OnError::Disable, 2));
        assert_eq!(
            c.config,
            vec![
                ("deny_namespaces".to_string(), "kube-*,dev".to_string()),
                ("limit".to_string(), "3".to_string()),
                ("note".to_string(), "x".to_string()),
                ("strict".to_string(), "true".to_string()),
            ]
        );
    }

    #[test]
    fn defaults_and_stem_name() {
        let (c, errs) = read(r#"path = "/opt/p/my filter.wasm""#);
        assert!(errs.is_empty(), "{errs}");
        let c = c.unwrap();
        assert_eq!(c.path, Path::new("/opt/p/my filter.wasm"));
        assert_eq!(c.stage_name(), "wasm:my_filter");
        assert_eq!(c.timeout_ms, DEFAULT_TIMEOUT_MS);
        assert_eq!(c.max_memory_mb, DEFAULT_MAX_MEMORY_MB);
        assert_eq!(c.on_error, OnError::Pass);
    }

    #[test]
    fn collects_every_error() {
        let (c, errs) = read(
            r#"name = "bad name!"
               timeout_ms = 0
               max_memory_mb = 1
               on_error = "explode"
               disable_after = 3
               config = { nested = { a = 1 } }
               typo = 1"#,
        );
        assert!(c.is_none());
        let text = errs.to_string();
        for needle in [
            "stage[3].path: missing",
            "stage[3].name: invalid value \"bad name!\"",
            "stage[3].timeout_ms: invalid value 0",
            "stage[3].max_memory_mb: invalid value 1",
            "stage[3].on_error: invalid value \"explode\"; allowed: one of pass, drop, disable",
            "stage[3].disable_after: invalid value 3; allowed: only with on_error = \"disable\"",
            "stage[3].config.nested: invalid value",
            "stage[3].typo: unknown key",
        ] {
            assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
        }
    }
}
