//! The WASM stage: one compiled component, one live instance reused across
//! events, limits applied per call.

use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use runner_core::{Event, Outcome, Severity, Stage, StageFuture, Verdict};
use serde_json::Value;
use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{ResourceLimiter, Store, Trap};

use crate::bindings::event_runner::plugin::host::{self, LogLevel};
use crate::bindings::exports::event_runner::plugin::filter as wit;
use crate::bindings::{Plugin, PluginPre};
use crate::{EPOCH_TICK, INIT_TIMEOUT, WasmStageConfig, engine};

/// What happens to an event when the plugin fails on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnError {
    /// The event continues as if the stage were absent.
    Pass,
    /// The event ends with outcome `plugin_dropped`.
    Drop,
    /// Like `pass`; after `disable_after` consecutive failures the stage
    /// turns itself off (passes everything) with one error log line.
    Disable,
}

impl FromStr for OnError {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        match s {
            "pass" => Ok(OnError::Pass),
            "drop" => Ok(OnError::Drop),
            "disable" => Ok(OnError::Disable),
            _ => Err(()),
        }
    }
}

impl fmt::Display for OnError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            OnError::Pass => "pass",
            OnError::Drop => "drop",
            OnError::Disable => "disable",
        })
    }
}

runner_core::config_enum!(OnError, "one of pass, drop, disable");

/// Longest log line and drop reason kept from a plugin.
const MAX_LOG_LEN: usize = 1024;
const MAX_REASON_LEN: usize = 256;
/// Log lines kept per call; the rest are counted and dropped so a chatty
/// plugin cannot flood the runner's log.
const MAX_LOGS_PER_CALL: u32 = 16;
const MAX_TABLE_ELEMENTS: usize = 100_000;

/// Store data: limits and the per-call log budget.
struct HostState {
    stage: Arc<str>,
    max_memory: usize,
    /// Bytes of linear memory across all memories of the instance.
    memory_used: usize,
    /// Last growth granted, to undo if the OS then failed it.
    last_grant: usize,
    memory_denied: bool,
    logs_this_call: u32,
    logs_suppressed: u32,
    /// The last error-level line the guest logged in this call: a Rust
    /// guest's panic hook (`plugin_kit::forward_panics`) logs the panic
    /// message there just before it aborts, so a trap reports it.
    last_error: Option<String>,
}

impl ResourceLimiter for HostState {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let delta = desired.saturating_sub(current);
        if self.memory_used.saturating_add(delta) > self.max_memory {
            // memory.grow returns -1; a Rust guest then aborts (a trap),
            // which we report as the memory limit thanks to this flag.
            self.memory_denied = true;
            return Ok(false);
        }
        self.memory_used += delta;
        self.last_grant = delta;
        Ok(true)
    }

    fn memory_grow_failed(&mut self, _error: wasmtime::Error) -> wasmtime::Result<()> {
        self.memory_used = self.memory_used.saturating_sub(self.last_grant);
        Ok(())
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }

    fn instances(&self) -> usize {
        // A component instantiates a handful of core instances.
        64
    }

    fn memories(&self) -> usize {
        8
    }

    fn tables(&self) -> usize {
        16
    }
}

/// Keeps log lines on one line and bounded: plugin text may echo event data.
fn clean_line(s: &str, max: usize) -> String {
    let mut out: String = s
        .chars()
        .take(max)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if s.chars().nth(max).is_some() {
        out.push('…');
    }
    out
}

impl host::Host for HostState {
    fn log(&mut self, level: LogLevel, message: String) {
        if matches!(level, LogLevel::Error) {
            self.last_error = Some(clean_line(&message, MAX_LOG_LEN));
        }
        self.logs_this_call += 1;
        if self.logs_this_call > MAX_LOGS_PER_CALL {
            self.logs_suppressed += 1;
            return;
        }
        let msg = clean_line(&message, MAX_LOG_LEN);
        let stage = &*self.stage;
        match level {
            LogLevel::Debug => tracing::debug!(target: "plugin", stage = %stage, "{msg}"),
            LogLevel::Info => tracing::info!(target: "plugin", stage = %stage, "{msg}"),
            LogLevel::Warn => tracing::warn!(target: "plugin", stage = %stage, "{msg}"),
            LogLevel::Error => tracing::error!(target: "plugin", stage = %stage, "{msg}"),
        }
    }
}

/// A live instance and its store.
struct Live {
    store: Store<HostState>,
    plugin: Plugin,
}

struct Inner {
    /// `None` after a trap: the next event instantiates afresh.
    live: Option<Live>,
    consecutive_failures: u32,
}

/// Counters of one WASM stage.
#[derive(Debug, Default)]
struct Stats {
    calls: AtomicU64,
    kept: AtomicU64,
    dropped: AtomicU64,
    replaced: AtomicU64,
    failures: AtomicU64,
    timeouts: AtomicU64,
    memory_limits: AtomicU64,
    traps: AtomicU64,
    errors: AtomicU64,
    instantiations: AtomicU64,
    skipped_disabled: AtomicU64,
}

/// A snapshot of a WASM stage's counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WasmStats {
    /// `filter` calls attempted (including ones that failed).
    pub calls: u64,
    pub kept: u64,
    pub dropped: u64,
    pub replaced: u64,
    /// Every failure, whatever its kind (the four counters below add up to it).
    pub failures: u64,
    pub timeouts: u64,
    pub memory_limits: u64,
    /// Other traps, and failed re-instantiation or re-initialization.
    pub traps: u64,
    /// Error results from `filter` and invalid replacement events.
    pub errors: u64,
    /// Instances created, the first one included.
    pub instantiations: u64,
    /// Events passed without a call because the stage is disabled.
    pub skipped_disabled: u64,
    pub disabled: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FailKind {
    Timeout,
    Memory,
    Trap,
    Error,
}

/// A `[[stage]] kind = "wasm"` stage.
pub struct WasmStage {
    name: String,
    path_display: String,
    pre: PluginPre<HostState>,
    config: Vec<(String, String)>,
    timeout_ms: u64,
    deadline_ticks: u64,
    max_memory: usize,
    on_error: OnError,
    disable_after: u32,
    inner: Mutex<Inner>,
    disabled: AtomicBool,
    stats: Stats,
}

fn ticks(d: std::time::Duration) -> u64 {
    // +1: the current tick may be nearly over when the call starts.
    (d.as_micros() / EPOCH_TICK.as_micros()).max(1) as u64 + 1
}

fn describe_trap(e: &wasmtime::Error, state: &HostState, timeout_ms: u64) -> (FailKind, String) {
    if matches!(e.downcast_ref::<Trap>(), Some(Trap::Interrupt)) {
        return (
            FailKind::Timeout,
            format!("timed out after {timeout_ms} ms (interrupted)"),
        );
    }
    if state.memory_denied {
        return (
            FailKind::Memory,
            format!(
                "memory limit of {} MiB reached (max_memory_mb); trapped: {}",
                state.max_memory >> 20,
                e.root_cause()
            ),
        );
    }
    let said = match &state.last_error {
        Some(m) => format!(" after logging: {m}"),
        None => String::new(),
    };
    (FailKind::Trap, format!("trapped: {}{said}", e.root_cause()))
}

impl WasmStage {
    pub(crate) fn load(cfg: &WasmStageConfig) -> Result<WasmStage, String> {
        let engine = engine();
        let meta = std::fs::metadata(&cfg.path)
            .map_err(|e| format!("an existing WASM component file (cannot open it: {e})"))?;
        if !meta.is_file() {
            return Err("a WASM component file (this path is not a regular file)".into());
        }
        if meta.len() > crate::MAX_FILE_BYTES {
            return Err(format!(
                "a WASM component of at most {} MiB (this file has {} bytes)",
                crate::MAX_FILE_BYTES >> 20,
                meta.len()
            ));
        }
        let bytes = std::fs::read(&cfg.path)
            .map_err(|e| format!("a readable WASM component file (cannot read it: {e})"))?;
        // A core module (wasm32-wasip1 / -unknown-unknown build) has layer 0
        // in bytes 6..8; components have layer 1.
        if bytes.len() >= 8 && bytes[..4] == *b"\0asm" && bytes[6..8] == [0, 0] {
            return Err(
                "a WebAssembly component; this file is a core module (build the plugin with \
                 `cargo build --release --target wasm32-wasip2`, see docs/plugins.md)"
                    .into(),
            );
        }
        let component = Component::new(engine, &bytes)
            .map_err(|e| format!("a valid WebAssembly component (this file is not one: {e:#})"))?;
        crate::check_interface(engine, &component)?;

        let mut linker: Linker<HostState> = Linker::new(engine);
        Plugin::add_to_linker::<HostState, HasSelf<HostState>>(&mut linker, |s| s)
            .map_err(|e| format!("a loadable plugin (linking the host interface failed: {e:#})"))?;
        provide_hash_seed(&mut linker, &component)?;
        provide_empty_environment(&mut linker, &component)?;
        // Everything else the component imports (WASI from the Rust
        // standard library, mostly) traps if called: that is the sandbox.
        linker
            .define_unknown_imports_as_traps(&component)
            .map_err(|e| format!("a loadable plugin (its imports cannot be linked: {e:#})"))?;
        let pre = linker
            .instantiate_pre(&component)
            .and_then(PluginPre::new)
            .map_err(|e| {
                format!(
                    "a plugin matching {} (its exports do not: {e:#}; WIT mismatch, rebuild it \
                     with plugins-wasm/wit/event-runner-plugin.wit)",
                    crate::WIT_PACKAGE
                )
            })?;

        let stage = WasmStage {
            name: cfg.stage_name(),
            path_display: cfg.path.display().to_string(),
            pre,
            config: cfg.config.clone(),
            timeout_ms: cfg.timeout_ms,
            deadline_ticks: ticks(std::time::Duration::from_millis(cfg.timeout_ms)),
            max_memory: (cfg.max_memory_mb as usize) << 20,
            on_error: cfg.on_error,
            disable_after: cfg.disable_after,
            inner: Mutex::new(Inner {
                live: None,
                consecutive_failures: 0,
            }),
            disabled: AtomicBool::new(false),
            stats: Stats::default(),
        };
        let live = stage.instantiate()?;
        stage.inner.lock().expect("not poisoned").live = Some(live);
        tracing::info!(
            stage = %stage.name,
            path = %stage.path_display,
            timeout_ms = stage.timeout_ms,
            max_memory_mb = cfg.max_memory_mb,
            on_error = %stage.on_error,
            "WASM stage loaded"
        );
        Ok(stage)
    }

    /// A fresh store and instance, initialized with the stage's config.
    fn instantiate(&self) -> Result<Live, String> {
        self.stats.instantiations.fetch_add(1, Ordering::Relaxed);
        let mut store = Store::new(
            engine(),
            HostState {
                stage: Arc::from(self.name.as_str()),
                max_memory: self.max_memory,
                memory_used: 0,
                last_grant: 0,
                memory_denied: false,
                logs_this_call: 0,
                logs_suppressed: 0,
                last_error: None,
            },
        );
        store.limiter(|s| s);
        store.set_epoch_deadline(ticks(INIT_TIMEOUT));
        let describe = |store: &Store<HostState>, e: &wasmtime::Error| {
            describe_trap(e, store.data(), INIT_TIMEOUT.as_millis() as u64).1
        };
        let plugin = match self.pre.instantiate(&mut store) {
            Ok(p) => p,
            Err(e) if store.data().memory_denied => {
                return Err(format!(
                    "a plugin that starts within max_memory_mb = {} MiB (instantiating it needs more: {})",
                    self.max_memory >> 20,
                    e.root_cause()
                ));
            }
            Err(e) if e.downcast_ref::<Trap>().is_some() => {
                return Err(format!(
                    "a plugin that instantiates (it {})",
                    describe(&store, &e)
                ));
            }
            // Not a trap: the exports' types did not check against ours.
            Err(e) => {
                return Err(format!(
                    "a plugin matching {} (WIT mismatch: {}; rebuild it against \
                     plugins-wasm/wit/event-runner-plugin.wit)",
                    crate::WIT_PACKAGE,
                    e.root_cause()
                ));
            }
        };
        match plugin
            .event_runner_plugin_filter()
            .call_init(&mut store, &self.config)
        {
            Ok(Ok(())) => {}
            Ok(Err(msg)) => {
                return Err(format!(
                    "a plugin whose init succeeds (init returned an error: {})",
                    clean_line(&msg, MAX_LOG_LEN)
                ));
            }
            Err(e) => {
                return Err(format!(
                    "a plugin whose init succeeds (init {})",
                    describe(&store, &e)
                ));
            }
        }
        Ok(Live { store, plugin })
    }

    /// Counters so far.
    pub fn stats(&self) -> WasmStats {
        let s = &self.stats;
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        WasmStats {
            calls: g(&s.calls),
            kept: g(&s.kept),
            dropped: g(&s.dropped),
            replaced: g(&s.replaced),
            failures: g(&s.failures),
            timeouts: g(&s.timeouts),
            memory_limits: g(&s.memory_limits),
            traps: g(&s.traps),
            errors: g(&s.errors),
            instantiations: g(&s.instantiations),
            skipped_disabled: g(&s.skipped_disabled),
            disabled: self.disabled.load(Ordering::Relaxed),
        }
    }

    fn run(&self, event: &mut Event) -> Verdict {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        self.stats.calls.fetch_add(1, Ordering::Relaxed);
        if inner.live.is_none() {
            match self.instantiate() {
                Ok(l) => inner.live = Some(l),
                Err(e) => {
                    return self.fail(
                        &mut inner,
                        event,
                        FailKind::Trap,
                        format!("re-creating the instance failed: {e}"),
                    );
                }
            }
        }
        let live = inner.live.as_mut().expect("instantiated above");
        let raw_sent = serde_json::to_string(&*event.raw).unwrap_or_else(|_| "{}".into());
        let input = to_wit(event, raw_sent);
        {
            let st = live.store.data_mut();
            st.logs_this_call = 0;
            st.logs_suppressed = 0;
            st.last_error = None;
        }
        live.store.set_epoch_deadline(self.deadline_ticks);
        let result = live
            .plugin
            .event_runner_plugin_filter()
            .call_filter(&mut live.store, &input);
        let suppressed = live.store.data().logs_suppressed;
        if suppressed > 0 {
            tracing::warn!(stage = %self.name, suppressed, "plugin log lines dropped (limit {MAX_LOGS_PER_CALL} per event)");
        }
        match result {
            Ok(Ok(verdict)) => {
                let v = match verdict {
                    wit::Verdict::Keep => {
                        self.stats.kept.fetch_add(1, Ordering::Relaxed);
                        Verdict::Pass
                    }
                    wit::Verdict::Drop(reason) => {
                        self.stats.dropped.fetch_add(1, Ordering::Relaxed);
                        Verdict::drop(
                            Outcome::PluginDropped,
                            format!("{}: {}", self.name, clean_line(&reason, MAX_REASON_LEN)),
                        )
                    }
                    wit::Verdict::Replace(new) => match apply(event, new, &input.raw_json) {
                        Ok(()) => {
                            self.stats.replaced.fetch_add(1, Ordering::Relaxed);
                            Verdict::Modified
                        }
                        Err(e) => {
                            return self.fail(
                                &mut inner,
                                event,
                                FailKind::Error,
                                format!("invalid replacement event: {e}"),
                            );
                        }
                    },
                };
                inner.consecutive_failures = 0;
                v
            }
            Ok(Err(msg)) => self.fail(
                &mut inner,
                event,
                FailKind::Error,
                format!("returned an error: {}", clean_line(&msg, MAX_REASON_LEN)),
            ),
            Err(e) => {
                let (kind, detail) = describe_trap(&e, live.store.data(), self.timeout_ms);
                // A trapped instance may hold broken invariants: never reuse it.
                inner.live = None;
                self.fail(&mut inner, event, kind, detail)
            }
        }
    }

    fn fail(&self, inner: &mut Inner, event: &Event, kind: FailKind, detail: String) -> Verdict {
        let s = &self.stats;
        s.failures.fetch_add(1, Ordering::Relaxed);
        match kind {
            FailKind::Timeout => &s.timeouts,
            FailKind::Memory => &s.memory_limits,
            FailKind::Trap => &s.traps,
            FailKind::Error => &s.errors,
        }
        .fetch_add(1, Ordering::Relaxed);
        inner.consecutive_failures += 1;
        tracing::warn!(
            stage = %self.name,
            fault_id = event.fault_id_or_dash(),
            event = %event,
            on_error = %self.on_error,
            consecutive = inner.consecutive_failures,
            "WASM plugin failed: {detail}"
        );
        match self.on_error {
            OnError::Pass => Verdict::Pass,
            OnError::Drop => Verdict::drop(
                Outcome::PluginDropped,
                format!("{} failed (on_error=drop): {detail}", self.name),
            ),
            OnError::Disable => {
                if inner.consecutive_failures >= self.disable_after
                    && !self.disabled.swap(true, Ordering::Relaxed)
                {
                    inner.live = None;
                    tracing::error!(
                        stage = %self.name,
                        path = %self.path_display,
                        failures = inner.consecutive_failures,
                        "WASM STAGE DISABLED after {} consecutive failures (last: {detail}); it now passes every event until the runner restarts",
                        inner.consecutive_failures
                    );
                }
                Verdict::Pass
            }
        }
    }
}

impl Stage for WasmStage {
    fn name(&self) -> &str {
        &self.name
    }

    fn process<'a>(&'a self, event: &'a mut Event) -> StageFuture<'a> {
        if self.disabled.load(Ordering::Relaxed) {
            self.stats.skipped_disabled.fetch_add(1, Ordering::Relaxed);
            return StageFuture::Ready(Verdict::Pass);
        }
        StageFuture::Ready(self.run(event))
    }

    fn health(&self) -> runner_core::stage::StageHealth {
        runner_core::stage::StageHealth {
            errors: self.stats.failures.load(Ordering::Relaxed),
            disabled: self.disabled.load(Ordering::Relaxed),
        }
    }
}

/// Rust's `HashMap::new()` asks WASI for a hash seed; without one, any
/// plugin using a `HashMap` would trap. A seed reveals nothing about the
/// host, so this is the one WASI function we implement (any 0.2.x version).
fn provide_hash_seed(linker: &mut Linker<HostState>, component: &Component) -> Result<(), String> {
    let names: Vec<String> = component
        .component_type()
        .imports(engine())
        .map(|(n, _)| n.to_string())
        .filter(|n| n.starts_with("wasi:random/insecure-seed@0.2."))
        .collect();
    for name in names {
        linker
            .instance(&name)
            .and_then(|mut i| {
                i.func_wrap("insecure-seed", |_, (): ()| {
                    use std::hash::BuildHasher;
                    // Keys of a fresh RandomState come from the OS.
                    let s = std::collections::hash_map::RandomState::new();
                    Ok(((s.hash_one(1u8), s.hash_one(2u8)),))
                })
            })
            .map_err(|e| format!("a loadable plugin (linking {name} failed: {e:#})"))?;
    }
    Ok(())
}

/// Rust's panic machinery reads `RUST_BACKTRACE` through WASI before the
/// panic hook runs; if that trapped, a panicking plugin would be reported
/// as an unknown import instead of by its own message. The guest gets an
/// empty environment, no arguments and no working directory: nothing of
/// the host is revealed.
fn provide_empty_environment(
    linker: &mut Linker<HostState>,
    component: &Component,
) -> Result<(), String> {
    let names: Vec<String> = component
        .component_type()
        .imports(engine())
        .map(|(n, _)| n.to_string())
        .filter(|n| n.starts_with("wasi:cli/environment@0.2."))
        .collect();
    for name in names {
        linker
            .instance(&name)
            .and_then(|mut i| {
                i.func_wrap("get-environment", |_, (): ()| {
                    Ok((Vec::<(String, String)>::new(),))
                })?;
                i.func_wrap("get-arguments", |_, (): ()| Ok((Vec::<String>::new(),)))?;
                i.func_wrap("initial-cwd", |_, (): ()| Ok((None::<String>,)))
            })
            .map_err(|e| format!("a loadable plugin (linking {name} failed: {e:#})"))?;
    }
    Ok(())
}

fn severity_to_wit(s: Severity) -> wit::Severity {
    match s {
        Severity::Debug => wit::Severity::Debug,
        Severity::Info => wit::Severity::Info,
        Severity::Warning => wit::Severity::Warning,
        Severity::Error => wit::Severity::Error,
        Severity::Critical => wit::Severity::Critical,
    }
}

fn severity_from_wit(s: wit::Severity) -> Severity {
    match s {
        wit::Severity::Debug => Severity::Debug,
        wit::Severity::Info => Severity::Info,
        wit::Severity::Warning => Severity::Warning,
        wit::Severity::Error => Severity::Error,
        wit::Severity::Critical => Severity::Critical,
    }
}

fn to_wit(e: &Event, raw_json: String) -> wit::Event {
    wit::Event {
        fault_id: e.fault_id.clone(),
        cluster: e.cluster.clone(),
        resource: wit::ResourceRef {
            api_version: e.resource.api_version.clone(),
            kind: e.resource.kind.clone(),
            name: e.resource.name.clone(),
            namespace: e.resource.namespace.clone(),
            uid: e.resource.uid.clone(),
        },
        fault_type: e.fault_type.clone(),
        severity: severity_to_wit(e.severity),
        context: e.context.clone(),
        timestamp: e.timestamp.clone(),
        raw_json,
    }
}

/// Maps a plugin's replacement onto the event, holding it to the same limits
/// as a parsed payload. `raw` changes only if the plugin changed `raw-json`.
fn apply(event: &mut Event, new: wit::Event, raw_sent: &str) -> Result<(), String> {
    // A replacement obeys the payload size limit of the intake, so a plugin
    // cannot grow an event past what the byte budget assumes.
    let max = runner_core::event::max_payload_bytes();
    if new.raw_json.len() > max {
        return Err(format!(
            "raw-json is {} bytes, over the maximum payload size of {max} (MAX_PAYLOAD_BYTES)",
            new.raw_json.len()
        ));
    }
    let raw = if new.raw_json != raw_sent {
        match serde_json::from_str::<Value>(&new.raw_json) {
            Ok(v @ Value::Object(_)) => Some(Arc::new(v)),
            Ok(_) => return Err("raw-json is not a JSON object".into()),
            Err(e) => return Err(format!("raw-json is not valid JSON: {e}")),
        }
    } else {
        None
    };
    // Validated on a candidate so a refused replacement leaves the event as
    // it was (the stage's on_error then decides).
    let mut cand = event.clone();
    apply_fields(&mut cand, new);
    if let Some(raw) = raw {
        cand.raw = raw;
    }
    cand.validate().map_err(|e| e.to_string())?;
    *event = cand;
    Ok(())
}

fn apply_fields(event: &mut Event, new: wit::Event) {
    event.fault_id = new.fault_id.filter(|f| !f.is_empty());
    event.cluster = new.cluster;
    event.resource.api_version = new.resource.api_version;
    event.resource.kind = new.resource.kind;
    event.resource.name = new.resource.name;
    event.resource.namespace = new.resource.namespace;
    event.resource.uid = new.resource.uid;
    event.fault_type = new.fault_type;
    event.severity = severity_from_wit(new.severity);
    event.context = new.context;
    event.timestamp = new.timestamp;
}
