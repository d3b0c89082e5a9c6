//! The WASM stage: one compiled component, one live instance reused across
//! events, limits applied per call, calls kept off the runtime's worker
//! threads.

use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use runner_core::{Event, Outcome, Stage, StageFuture, Verdict};
use serde_json::Value;
use wasmtime::component::{Component, HasSelf, Linker, ResourceTable};
use wasmtime::{ResourceLimiter, Store, Trap};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use crate::bindings::event_runner::plugin::host::{self, LogLevel as WitLogLevel};
use crate::bindings::exports::event_runner::plugin::filter as wit;
use crate::bindings::{Plugin, PluginPre};
use crate::cache::CacheOutcome;
use crate::epoch::InFlight;
use crate::log::{LogLevel, MAX_LOG_LEN, PluginLogLine, SharedLog};
use crate::view::severity_from_wit;
use crate::{EPOCH_TICK, INIT_TIMEOUT, WasmStageConfig, engine};
use runner_core::text::excerpt;

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

/// Longest drop reason kept from a plugin.
const MAX_REASON_LEN: usize = 256;
const MAX_TABLE_ELEMENTS: usize = 100_000;

/// Store data: limits, the call log and the (empty) WASI context.
struct HostState {
    log: SharedLog,
    max_memory: usize,
    /// Bytes of linear memory across all memories of the instance.
    memory_used: usize,
    /// Last growth granted, to undo if the OS then failed it.
    last_grant: usize,
    memory_denied: bool,
    wasi: WasiCtx,
    table: ResourceTable,
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
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
            // memory.grow returns -1; a guest then aborts (a trap), which
            // we report as the memory limit thanks to this flag.
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
        // A component instantiates a handful of core instances (dozens for
        // the JavaScript and Python runtimes).
        256
    }

    fn memories(&self) -> usize {
        16
    }

    fn tables(&self) -> usize {
        64
    }
}

impl host::Host for HostState {
    fn log(&mut self, level: WitLogLevel, message: String) {
        let level = match level {
            WitLogLevel::Debug => LogLevel::Debug,
            WitLogLevel::Info => LogLevel::Info,
            WitLogLevel::Warn => LogLevel::Warn,
            WitLogLevel::Error => LogLevel::Error,
        };
        self.log
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(level, &message);
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
    call_nanos: AtomicU64,
    max_call_nanos: AtomicU64,
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
    /// Time spent inside `filter` calls (and re-instantiations), summed.
    pub call_nanos: u64,
    /// The longest single call.
    pub max_call_nanos: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FailKind {
    Timeout,
    Memory,
    Trap,
    Error,
}

/// The part of a stage a call needs, shared with the blocking thread that
/// runs it.
struct Core {
    name: String,
    pre: PluginPre<HostState>,
    config: Vec<(String, String)>,
    timeout_ms: u64,
    deadline_ticks: u64,
    max_memory: usize,
    log: SharedLog,
    inner: Mutex<Inner>,
    stats: Stats,
}

/// A `[[stage]] kind = "wasm"` stage.
pub struct WasmStage {
    core: Arc<Core>,
    path_display: String,
    on_error: OnError,
    disable_after: u32,
    disabled: AtomicBool,
    init_logs: Vec<PluginLogLine>,
    cache: CacheOutcome,
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
    let log = state.log.lock().unwrap_or_else(|p| p.into_inner());
    let said = match log.last_error() {
        Some(m) => format!(" after logging: {m}"),
        None => String::new(),
    };
    (FailKind::Trap, format!("trapped: {}{said}", e.root_cause()))
}

/// What one call produced, before the stage's policy applies.
struct CallResult {
    result: Result<wit::Verdict, (FailKind, String)>,
    lines: Vec<PluginLogLine>,
    suppressed: u32,
}

/// Reads the component file with the checks that give the clearest message.
fn read_component(cfg: &WasmStageConfig) -> Result<Vec<u8>, String> {
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
    Ok(bytes)
}

/// Compiled components kept in memory for the rest of the process, when
/// [`remember_compiled`] turned it on.
static MEMO: Mutex<Vec<(Vec<u8>, Component)>> = Mutex::new(Vec::new());
static MEMO_ON: AtomicBool = AtomicBool::new(false);
/// Distinct components remembered at most (each holds its machine code).
const MEMO_MAX: usize = 16;

/// Keeps every component this process compiles in memory, so building the
/// same stages again (`runner test` builds a fresh chain per case) only
/// instantiates. Off by default: `run` builds each stage once and would
/// only hold a second copy of the file's bytes.
pub fn remember_compiled(on: bool) {
    MEMO_ON.store(on, Ordering::Relaxed);
    if !on {
        MEMO.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }
}

/// Compiles `bytes`, from memory (see [`remember_compiled`]) or through the
/// cache when one is configured and usable.
fn compile(cfg: &WasmStageConfig, bytes: &[u8]) -> Result<(Component, CacheOutcome), String> {
    if !MEMO_ON.load(Ordering::Relaxed) {
        return compile_uncached(cfg, bytes);
    }
    // Compared by content, not path: a rebuilt file is compiled again.
    if let Some((_, c)) = MEMO
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .find(|(b, _)| b == bytes)
    {
        return Ok((c.clone(), CacheOutcome::Hit));
    }
    let (component, outcome) = compile_uncached(cfg, bytes)?;
    let mut memo = MEMO.lock().unwrap_or_else(|p| p.into_inner());
    if memo.len() < MEMO_MAX {
        memo.push((bytes.to_vec(), component.clone()));
    }
    Ok((component, outcome))
}

fn compile_uncached(
    cfg: &WasmStageConfig,
    bytes: &[u8],
) -> Result<(Component, CacheOutcome), String> {
    let engine = engine();
    let compile = || {
        Component::new(engine, bytes)
            .map_err(|e| format!("a valid WebAssembly component (this file is not one: {e:#})"))
    };
    let Some(dir) = &cfg.cache_dir else {
        return Ok((compile()?, CacheOutcome::Disabled));
    };
    match crate::cache::CompileCache::open(dir) {
        Ok(cache) => cache.load_or_compile(engine, bytes, compile),
        Err(e) => {
            tracing::warn!(stage = %cfg.stage_name(), error = %e, "WASM compile cache unusable; compiling without it");
            Ok((compile()?, CacheOutcome::Disabled))
        }
    }
}

impl WasmStage {
    pub(crate) fn load(cfg: &WasmStageConfig) -> Result<WasmStage, String> {
        let engine = engine();
        let name = cfg.stage_name();
        let bytes = read_component(cfg)?;
        let started = std::time::Instant::now();
        let (component, cache) = compile(cfg, &bytes)?;
        let load_ms = started.elapsed().as_millis() as u64;
        crate::check_interface(engine, &component)?;

        let unsatisfiable: Vec<String> = component
            .component_type()
            .imports(engine)
            .map(|(n, _)| n.to_string())
            .filter(|n| crate::wasi::classify(n) == crate::wasi::ImportKind::Unsatisfiable)
            .collect();
        if !unsatisfiable.is_empty() {
            return Err(crate::wasi::unsatisfiable_message(&name, &unsatisfiable));
        }

        let mut linker: Linker<HostState> = Linker::new(engine);
        Plugin::add_to_linker::<HostState, HasSelf<HostState>>(&mut linker, |s| s)
            .map_err(|e| format!("a loadable plugin (linking the host interface failed: {e:#})"))?;
        crate::wasi::add_to_linker(&mut linker)
            .map_err(|e| format!("a loadable plugin (linking WASI failed: {e:#})"))?;
        crate::wasi::link_denied(&mut linker, &component)
            .map_err(|e| format!("a loadable plugin (its imports cannot be linked: {e:#})"))?;
        let instance_pre = linker.instantiate_pre(&component).map_err(|e| {
            format!(
                "a plugin whose imports the runner provides ({name} imports something in a \
                 form this runner does not implement: {e:#}; rebuild it with the toolchain \
                 versions docs/plugins.md lists)"
            )
        })?;
        let pre = PluginPre::new(instance_pre).map_err(|e| {
            format!(
                "a plugin matching {} (its exports do not: {e:#}; WIT mismatch, rebuild it \
                 with plugins-wasm/wit/event-runner-plugin.wit)",
                crate::WIT_PACKAGE
            )
        })?;

        let core = Arc::new(Core {
            name: name.clone(),
            pre,
            config: cfg.config.clone(),
            timeout_ms: cfg.timeout_ms,
            deadline_ticks: ticks(std::time::Duration::from_millis(cfg.timeout_ms)),
            max_memory: (cfg.max_memory_mb as usize) << 20,
            log: SharedLog::default(),
            inner: Mutex::new(Inner {
                live: None,
                consecutive_failures: 0,
            }),
            stats: Stats::default(),
        });
        let live = core.instantiate();
        let (init_logs, suppressed) = core.take_log();
        crate::log::emit(&name, &init_logs, suppressed);
        core.inner.lock().expect("not poisoned").live = Some(live?);
        tracing::info!(
            stage = %name,
            path = %cfg.path.display(),
            timeout_ms = cfg.timeout_ms,
            max_memory_mb = cfg.max_memory_mb,
            on_error = %cfg.on_error,
            cache = cache.as_str(),
            load_ms,
            "WASM stage loaded"
        );
        Ok(WasmStage {
            core,
            path_display: cfg.path.display().to_string(),
            on_error: cfg.on_error,
            disable_after: cfg.disable_after,
            disabled: AtomicBool::new(false),
            init_logs,
            cache,
        })
    }

    /// Counters so far.
    pub fn stats(&self) -> WasmStats {
        let s = &self.core.stats;
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
            call_nanos: g(&s.call_nanos),
            max_call_nanos: g(&s.max_call_nanos),
        }
    }

    /// What the plugin logged while it was loaded and initialized.
    pub fn init_logs(&self) -> &[PluginLogLine] {
        &self.init_logs
    }

    /// Whether the compiled component came from the compile cache.
    pub fn cache_outcome(&self) -> &CacheOutcome {
        &self.cache
    }

    /// Applies the call's result and the `on_error` policy to the event.
    fn conclude(&self, event: &mut Event, view: &wit::Event, out: CallResult) -> Verdict {
        crate::log::emit(&self.core.name, &out.lines, out.suppressed);
        let s = &self.core.stats;
        let verdict = match out.result {
            Ok(wit::Verdict::Keep) => {
                s.kept.fetch_add(1, Ordering::Relaxed);
                Verdict::Pass
            }
            Ok(wit::Verdict::Drop(reason)) => {
                s.dropped.fetch_add(1, Ordering::Relaxed);
                Verdict::drop(
                    Outcome::PluginDropped,
                    format!("{}: {}", self.core.name, excerpt(&reason, MAX_REASON_LEN)),
                )
            }
            Ok(wit::Verdict::Replace(new)) => match apply(event, new, &view.raw_json) {
                Ok(()) => {
                    s.replaced.fetch_add(1, Ordering::Relaxed);
                    Verdict::Modified
                }
                Err(e) => {
                    return self.fail(
                        event,
                        FailKind::Error,
                        format!("invalid replacement event: {e}"),
                    );
                }
            },
            Err((kind, detail)) => return self.fail(event, kind, detail),
        };
        self.core.lock().consecutive_failures = 0;
        verdict
    }

    fn fail(&self, event: &Event, kind: FailKind, detail: String) -> Verdict {
        let s = &self.core.stats;
        s.failures.fetch_add(1, Ordering::Relaxed);
        match kind {
            FailKind::Timeout => &s.timeouts,
            FailKind::Memory => &s.memory_limits,
            FailKind::Trap => &s.traps,
            FailKind::Error => &s.errors,
        }
        .fetch_add(1, Ordering::Relaxed);
        let mut inner = self.core.lock();
        inner.consecutive_failures += 1;
        let name = &self.core.name;
        tracing::warn!(
            stage = %name,
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
                format!("{name} failed (on_error=drop): {detail}"),
            ),
            OnError::Disable => {
                if inner.consecutive_failures >= self.disable_after
                    && !self.disabled.swap(true, Ordering::Relaxed)
                {
                    inner.live = None;
                    tracing::error!(
                        stage = %name,
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

impl Core {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn take_log(&self) -> (Vec<PluginLogLine>, u32) {
        self.log.lock().unwrap_or_else(|p| p.into_inner()).take()
    }

    /// A fresh store and instance, initialized with the stage's config.
    fn instantiate(&self) -> Result<Live, String> {
        self.stats.instantiations.fetch_add(1, Ordering::Relaxed);
        let _ticking = InFlight::enter();
        self.log.lock().unwrap_or_else(|p| p.into_inner()).begin();
        let mut store = Store::new(
            engine(),
            HostState {
                log: self.log.clone(),
                max_memory: self.max_memory,
                memory_used: 0,
                last_grant: 0,
                memory_denied: false,
                wasi: crate::wasi::context(&self.log),
                table: ResourceTable::new(),
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
                    excerpt(&msg, MAX_LOG_LEN)
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

    /// One `filter` call; runs on whatever thread calls it (never a
    /// runtime worker: WASI's blocking functions drive their own futures).
    fn call(&self, view: &wit::Event) -> CallResult {
        let started = std::time::Instant::now();
        let mut inner = self.lock();
        self.stats.calls.fetch_add(1, Ordering::Relaxed);
        let result = self.call_locked(&mut inner, view);
        drop(inner);
        let nanos = started.elapsed().as_nanos().min(u128::from(u64::MAX)) as u64;
        self.stats.call_nanos.fetch_add(nanos, Ordering::Relaxed);
        self.stats
            .max_call_nanos
            .fetch_max(nanos, Ordering::Relaxed);
        let (lines, suppressed) = self.take_log();
        CallResult {
            result,
            lines,
            suppressed,
        }
    }

    fn call_locked(
        &self,
        inner: &mut Inner,
        view: &wit::Event,
    ) -> Result<wit::Verdict, (FailKind, String)> {
        if inner.live.is_none() {
            match self.instantiate() {
                Ok(l) => inner.live = Some(l),
                Err(e) => {
                    return Err((
                        FailKind::Trap,
                        format!("re-creating the instance failed: {e}"),
                    ));
                }
            }
        }
        let live = inner.live.as_mut().expect("instantiated above");
        self.log.lock().unwrap_or_else(|p| p.into_inner()).begin();
        let _ticking = InFlight::enter();
        live.store.set_epoch_deadline(self.deadline_ticks);
        let result = live
            .plugin
            .event_runner_plugin_filter()
            .call_filter(&mut live.store, view);
        match result {
            Ok(Ok(verdict)) => Ok(verdict),
            Ok(Err(msg)) => Err((
                FailKind::Error,
                format!("returned an error: {}", excerpt(&msg, MAX_REASON_LEN)),
            )),
            Err(e) => {
                let failure = describe_trap(&e, live.store.data(), self.timeout_ms);
                // A trapped instance may hold broken invariants: never reuse it.
                inner.live = None;
                Err(failure)
            }
        }
    }
}

impl Stage for WasmStage {
    fn name(&self) -> &str {
        &self.core.name
    }

    fn process<'a>(&'a self, event: &'a mut Event) -> StageFuture<'a> {
        if self.disabled.load(Ordering::Relaxed) {
            self.core
                .stats
                .skipped_disabled
                .fetch_add(1, Ordering::Relaxed);
            return StageFuture::Ready(Verdict::Pass);
        }
        let view = crate::view::of(event);
        if tokio::runtime::Handle::try_current().is_err() {
            // No runtime (validate, benchmarks, synchronous tests): this
            // thread may block.
            let out = self.core.call(&view);
            return StageFuture::Ready(self.conclude(event, &view, out));
        }
        // Inside the runtime, the call runs on the blocking pool: the
        // intake task's worker thread stays free for sources, the router
        // and the admin server while a plugin runs up to its deadline.
        let core = self.core.clone();
        StageFuture::Pending(Box::pin(async move {
            let v = view.clone();
            let out = match tokio::task::spawn_blocking(move || core.call(&v)).await {
                Ok(out) => out,
                Err(e) => std::panic::resume_unwind(e.into_panic()),
            };
            self.conclude(event, &view, out)
        }))
    }

    fn health(&self) -> runner_core::stage::StageHealth {
        let s = self.stats();
        runner_core::stage::StageHealth {
            errors: s.failures,
            disabled: s.disabled,
            plugin: true,
            calls: s.calls,
            call_nanos: s.call_nanos,
            max_call_nanos: s.max_call_nanos,
        }
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
    apply_fields(&mut cand, &new);
    let raw_kept = raw.is_none();
    if let Some(raw) = raw {
        cand.raw = raw;
    }
    cand.validate().map_err(|e| e.to_string())?;
    *event = cand;
    if raw_kept {
        // The plugin's record is now the event's view: the next WASM stage
        // need not build (and serialize) it again.
        crate::view::remember(event, new);
    }
    Ok(())
}

fn apply_fields(event: &mut Event, new: &wit::Event) {
    event.fault_id = new.fault_id.clone().filter(|f| !f.is_empty());
    event.cluster.clone_from(&new.cluster);
    event
        .resource
        .api_version
        .clone_from(&new.resource.api_version);
    event.resource.kind.clone_from(&new.resource.kind);
    event.resource.name.clone_from(&new.resource.name);
    event.resource.namespace.clone_from(&new.resource.namespace);
    event.resource.uid.clone_from(&new.resource.uid);
    event.fault_type.clone_from(&new.fault_type);
    event.severity = severity_from_wit(new.severity);
    event.context.clone_from(&new.context);
    event.timestamp.clone_from(&new.timestamp);
}
