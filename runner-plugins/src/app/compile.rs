//! The one config compile path: `pipeline.toml` text + overrides → a
//! runnable pipeline, or every error at once. Used by `runner validate`,
//! `runner run`, `runner replay`, the demo and the tests.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use runner_core::config::{ConfigErrors, Effective, Overrides, TableReader};
use runner_core::pipeline::PipelineParts;
use runner_core::router::{
    MAX_CONCURRENT_LIMIT, MAX_QUEUE_LIMIT, MAX_SECONDS_LIMIT, OverflowPolicy, RouterLimits,
};
use runner_core::{Sink, Source, Stage};

use crate::app::admin::ServerConfig;
use crate::cluster::{ClusterConfig, ClusterGuard, Upstream};
use crate::component::{BuildContext, ReadContext};
use crate::settings as env;
use crate::sinks::{self, SinkConfig};
use crate::sources::SourceConfig;
use crate::stages::StageConfig;

/// Upper bounds of `max_payload_bytes` and `payload_budget_bytes`.
const MAX_PAYLOAD_LIMIT: usize = 256 << 20;
const MAX_BUDGET_LIMIT: usize = 64 << 30;

/// Process-level settings from `[settings]`.
#[derive(Debug, Clone)]
pub(crate) struct GlobalSettings {
    pub log_level: String,
    pub log_format: String,
    pub shutdown_timeout: Duration,
    pub intake_queue_size: usize,
    pub payload_budget_bytes: usize,
    /// Where WASM stages keep compiled components; `None`: off.
    pub wasm_cache_dir: Option<PathBuf>,
    /// The durable state store's settings.
    pub state: crate::state::StateSettings,
    /// Where the state lives (`state.dir` resolved), `None` when off.
    pub state_dir: Option<PathBuf>,
}

/// Options that are not configuration but context for compiling.
#[derive(Debug, Clone, Default)]
pub struct CompileOptions {
    /// Directory relative paths in the file resolve against.
    pub base_dir: PathBuf,
    /// Build without sources (replay feeds the stage chain directly).
    pub skip_sources: bool,
}

/// A compiled, not yet started pipeline.
pub struct Compiled {
    pub(crate) settings: GlobalSettings,
    pub(crate) sources: Vec<Box<dyn Source>>,
    pub stages: Vec<Box<dyn Stage>>,
    /// The event sink (it tells the notifier sinks itself).
    pub sink: Arc<dyn Sink>,
    /// Names of the notifier sinks (`slack`), in file order.
    pub(crate) notifiers: Vec<String>,
    /// The agent sink's settings (process-level setup at `run`).
    pub(crate) agent: Option<crate::sinks::agent::AgentSinkConfig>,
    pub(crate) limits: RouterLimits,
    /// `[server]`: the admin HTTP server.
    pub(crate) server: ServerConfig,
    /// Effective configuration (secrets masked) with where each value came from.
    pub effective: Vec<Effective>,
    /// The `[[cluster]]` credentials (shared with the agent sink), for the
    /// startup check.
    pub(crate) clusters: Option<Arc<ClusterGuard>>,
    /// The opened state store (`runner run` opens it after compiling).
    pub state: Option<runner_core::pipeline::DurableState>,
}

impl Compiled {
    pub(crate) fn into_parts(mut self) -> (GlobalSettings, PipelineParts) {
        let state = self.state.take();
        let parts = PipelineParts {
            sources: self.sources,
            stages: self.stages,
            sink: self.sink,
            limits: self.limits,
            intake_capacity: self.settings.intake_queue_size,
            shutdown_grace: self.settings.shutdown_timeout,
            payload_budget: self.settings.payload_budget_bytes,
            cluster_labels: self.server.metrics_cluster_labels,
            state,
        };
        (self.settings, parts)
    }
}

fn take_array(root: &mut toml::Table, key: &str, errors: &mut ConfigErrors) -> Vec<toml::Table> {
    match root.remove(key) {
        None => Vec::new(),
        Some(toml::Value::Array(items)) => items
            .into_iter()
            .enumerate()
            .filter_map(|(i, v)| match v {
                toml::Value::Table(t) => Some(t),
                other => {
                    errors.push(
                        format!("{key}[{i}]"),
                        other.to_string(),
                        "a table ([[{key}]])",
                    );
                    None
                }
            })
            .collect(),
        Some(other) => {
            errors.push(
                key,
                other.to_string(),
                format!("an array of tables ([[{key}]])"),
            );
            Vec::new()
        }
    }
}

fn take_table(root: &mut toml::Table, key: &str, errors: &mut ConfigErrors) -> toml::Table {
    match root.remove(key) {
        None => toml::Table::new(),
        Some(toml::Value::Table(t)) => t,
        Some(other) => {
            errors.push(key, other.to_string(), format!("a table ([{key}])"));
            toml::Table::new()
        }
    }
}

/// The `[[sink]]` tables with their error prefixes; a single `[sink]` table
/// (earlier versions) is accepted as one sink and keeps its prefix `sink`.
fn take_sinks(root: &mut toml::Table, errors: &mut ConfigErrors) -> Vec<(String, toml::Table)> {
    match root.remove("sink") {
        None => Vec::new(),
        Some(toml::Value::Table(t)) => vec![("sink".to_string(), t)],
        Some(other) => {
            root.insert("sink".to_string(), other);
            take_array(root, "sink", errors)
                .into_iter()
                .enumerate()
                .map(|(i, t)| (format!("sink[{i}]"), t))
                .collect()
        }
    }
}

fn kind_of(
    t: &mut toml::Table,
    prefix: &str,
    allowed: &str,
    errors: &mut ConfigErrors,
) -> Option<String> {
    match t.remove("kind") {
        Some(toml::Value::String(k)) => Some(k),
        Some(other) => {
            errors.push(
                format!("{prefix}.kind"),
                other.to_string(),
                format!("one of {allowed}"),
            );
            None
        }
        None => {
            errors.push(
                format!("{prefix}.kind"),
                "(missing)",
                format!("one of {allowed}"),
            );
            None
        }
    }
}

/// Compiles a pipeline from TOML text. Reports every error found.
/// `settings.wasm_cache_dir`: `off`, `default` (the user's cache
/// directory: `$XDG_CACHE_HOME/event-runner/wasm`, else
/// `$HOME/.cache/event-runner/wasm`; off when neither is set) or a path
/// (relative to the config file's directory).
fn wasm_cache_dir(value: &str, overrides: &Overrides, base_dir: &Path) -> Option<PathBuf> {
    match value {
        "off" => None,
        crate::settings::WASM_CACHE_DIR_DEFAULT => {
            let env = overrides.environment();
            let nonempty = |k: &str| env.get(k).filter(|v| !v.is_empty()).map(PathBuf::from);
            nonempty("XDG_CACHE_HOME")
                .or_else(|| nonempty("HOME").map(|h| h.join(".cache")))
                .map(|d| d.join("event-runner").join("wasm"))
        }
        path => Some(base_dir.join(path)),
    }
}

pub fn compile(
    text: &str,
    overrides: &Overrides,
    opts: &CompileOptions,
) -> Result<Compiled, ConfigErrors> {
    let mut errors = ConfigErrors::default();
    let mut effective = Vec::new();
    let mut root: toml::Table = match text.parse() {
        Ok(t) => t,
        Err(e) => {
            let e: toml::de::Error = e;
            errors.push(
                "(file)",
                "(not valid TOML)",
                format!("TOML syntax: {}", e.to_string().trim()),
            );
            return Err(errors);
        }
    };
    let settings_t = take_table(&mut root, "settings", &mut errors);
    let sources_t = take_array(&mut root, "source", &mut errors);
    let stages_t = take_array(&mut root, "stage", &mut errors);
    let router_t = take_table(&mut root, "router", &mut errors);
    let sinks_t = take_sinks(&mut root, &mut errors);
    let clusters_t = take_array(&mut root, "cluster", &mut errors);
    let server_t = take_table(&mut root, "server", &mut errors);
    for k in root.keys() {
        errors.push(
            k.clone(),
            "(unknown key)",
            "one of: settings, source, stage, router, cluster, sink, server",
        );
    }

    // [settings]
    let settings = {
        let mut r = TableReader::new(
            "settings",
            settings_t,
            overrides,
            &mut errors,
            &mut effective,
        );
        let log_level: String = r.setting(&env::LOG_LEVEL);
        if !["debug", "info", "warn", "error"].contains(&log_level.to_ascii_lowercase().as_str()) {
            r.error(
                "log_level",
                format!("{log_level:?}"),
                "one of debug, info, warn, error",
            );
        }
        let log_format: String = r.setting(&env::LOG_FORMAT);
        if !["text", "json"].contains(&log_format.as_str()) {
            r.error("log_format", format!("{log_format:?}"), "one of text, json");
        }
        let shutdown: u64 = r.setting_in(
            &env::SHUTDOWN_TIMEOUT_SECONDS,
            0..=MAX_SECONDS_LIMIT,
            "seconds",
        );
        let intake: usize = r.setting_in(&env::INTAKE_QUEUE_SIZE, 1..=MAX_QUEUE_LIMIT, "payloads");
        let max_payload: usize =
            r.setting_in(&env::MAX_PAYLOAD_BYTES, 1024..=MAX_PAYLOAD_LIMIT, "bytes");
        let budget: usize = r.setting_in(
            &env::PAYLOAD_BUDGET_BYTES,
            (1 << 20)..=MAX_BUDGET_LIMIT,
            "bytes",
        );
        if budget < max_payload {
            r.error(
                "payload_budget_bytes",
                budget.to_string(),
                format!("at least max_payload_bytes ({max_payload}): one payload must fit"),
            );
        }
        // Before any stage is built: WASM replacements obey the same limit.
        runner_core::event::set_max_payload_bytes(max_payload);
        let cache: String = r.setting(&env::WASM_CACHE_DIR);
        let wasm_cache_dir = wasm_cache_dir(&cache, overrides, &opts.base_dir);
        let state = crate::state::StateSettings::read(&mut r);
        r.finish();
        GlobalSettings {
            log_level: log_level.to_ascii_lowercase(),
            log_format,
            shutdown_timeout: Duration::from_secs(shutdown),
            intake_queue_size: intake,
            payload_budget_bytes: budget,
            wasm_cache_dir,
            state,
            state_dir: None,
        }
    };

    let cx_build = BuildContext {
        environment: overrides.environment().clone(),
        wasm_cache_dir: settings.wasm_cache_dir.clone(),
        ..BuildContext::default()
    };

    // Environment variables holding some component's secret: checked
    // against every component (agents never get them).
    let mut secrets: Vec<String> = Vec::new();

    // [server]
    let server = {
        let mut r = TableReader::new("server", server_t, overrides, &mut errors, &mut effective);
        let c = ServerConfig::read(&mut r);
        r.finish();
        c
    };
    secrets.extend(server.secret_envs());

    // [[source]]
    let mut sources: Vec<Box<dyn Source>> = Vec::new();
    let mut source_configs: Vec<(String, SourceConfig)> = Vec::new();
    if !opts.skip_sources {
        if sources_t.is_empty() {
            errors.push(
                "source",
                "(missing)",
                format!("at least one [[source]] (kind: {})", SourceConfig::kinds()),
            );
        }
        // Flags and environment variables name one source: with several,
        // each is configured in the file.
        let empty = overrides.without_values();
        let ov = if sources_t.len() == 1 {
            overrides
        } else {
            &empty
        };
        let count = sources_t.len();
        for (index, mut t) in sources_t.into_iter().enumerate() {
            let prefix = format!("source[{index}]");
            let Some(kind) = kind_of(&mut t, &prefix, &SourceConfig::kinds(), &mut errors) else {
                continue;
            };
            secrets.extend(SourceConfig::secret_envs(&kind, &t));
            let cx = ReadContext {
                base_dir: &opts.base_dir,
                index,
                count,
                overrides,
            };
            let mut r = TableReader::new(prefix.clone(), t, ov, &mut errors, &mut effective);
            let c = SourceConfig::read(&kind, &mut r, &cx);
            r.finish();
            if let Some(c) = c {
                source_configs.push((prefix, c));
            }
        }
    }

    // [[stage]]
    let mut stages: Vec<Box<dyn Stage>> = Vec::new();
    let count = stages_t.len();
    for (index, mut t) in stages_t.into_iter().enumerate() {
        let prefix = format!("stage[{index}]");
        let Some(kind) = kind_of(&mut t, &prefix, &StageConfig::kinds(), &mut errors) else {
            continue;
        };
        let cx = ReadContext {
            base_dir: &opts.base_dir,
            index,
            count,
            overrides,
        };
        let mut r = TableReader::new(prefix.clone(), t, overrides, &mut errors, &mut effective);
        let c = StageConfig::read(&kind, &mut r, &cx);
        r.finish();
        // Built at once: a WASM module that does not load is a config error.
        match c.map(|c| c.build(&cx_build)) {
            Some(Ok(s)) => stages.push(s),
            Some(Err(e)) => e.push_to(&prefix, &mut errors),
            None => {}
        }
    }

    // [router]
    let limits = {
        let mut r = TableReader::new("router", router_t, overrides, &mut errors, &mut effective);
        let max: usize = r.setting_in(
            &env::MAX_CONCURRENT_AGENTS,
            1..=MAX_CONCURRENT_LIMIT,
            "agents",
        );
        let global: usize = r.setting_in(&env::GLOBAL_QUEUE_SIZE, 1..=MAX_QUEUE_LIMIT, "events");
        let cluster: usize = r.setting_in(&env::CLUSTER_QUEUE_SIZE, 1..=MAX_QUEUE_LIMIT, "events");
        let policy: OverflowPolicy = r.setting(&env::QUEUE_OVERFLOW_POLICY);
        let idle: u64 = r.setting_in(&env::IDLE_WORKER_SECONDS, 1..=MAX_SECONDS_LIMIT, "seconds");
        r.finish();
        RouterLimits {
            max_concurrent: max,
            global_queue: global,
            cluster_queue: cluster,
            policy,
            idle_reap: Duration::from_secs(idle),
        }
    };

    // [[cluster]]
    let clusters = read_clusters(clusters_t, overrides, opts, &mut errors, &mut effective);

    // [[sink]] (or one [sink] table, as in earlier versions)
    let mut sink_configs: Vec<(String, SinkConfig)> = Vec::new();
    if sinks_t.is_empty() {
        errors.push(
            "sink",
            "(missing)",
            "a [[sink]] table (kind: agent; plus any number of kind = \"slack\")",
        );
    }
    let count = sinks_t.len();
    for (index, (prefix, mut t)) in sinks_t.into_iter().enumerate() {
        let Some(kind) = kind_of(&mut t, &prefix, &SinkConfig::kinds(), &mut errors) else {
            continue;
        };
        secrets.extend(SinkConfig::secret_envs(&kind, &t));
        let cx = ReadContext {
            base_dir: &opts.base_dir,
            index,
            count,
            overrides,
        };
        let mut r = TableReader::new(prefix.clone(), t, overrides, &mut errors, &mut effective);
        let c = SinkConfig::read(&kind, &mut r, &cx);
        r.finish();
        if let Some(mut c) = c {
            if let SinkConfig::Agent(a) = &mut c {
                a.clusters = clusters.clone();
            }
            sink_configs.push((prefix, c));
        }
    }

    // Rules across components, then the sources and sinks are built.
    for (prefix, c) in &source_configs {
        for e in c.check_secrets(&secrets) {
            e.push_to(prefix, &mut errors);
        }
    }
    for (prefix, c) in &sink_configs {
        for e in c.check_secrets(&secrets) {
            e.push_to(prefix, &mut errors);
        }
    }
    for (prefix, c) in source_configs {
        match c.build(&cx_build) {
            Ok(s) => sources.push(s),
            Err(e) => e.push_to(&prefix, &mut errors),
        }
    }
    // The agent redacts every secret variable of every component.
    let mut agent = None;
    for (_, c) in sink_configs.iter_mut() {
        if let sinks::SinkConfig::Agent(a) = c {
            a.secret_envs = secrets.clone();
            a.public_url = server.public_url.clone();
            agent = Some(a.clone());
        }
    }
    let built = sinks::assemble(sink_configs, &cx_build, &mut errors);

    if !errors.is_empty() {
        return Err(errors);
    }
    let built = built.expect("sinks are assembled when no error was found");
    let mut settings = settings;
    settings.state_dir = settings
        .state
        .resolve(agent.as_ref().map(|a| a.workspace_root.as_path()));
    Ok(Compiled {
        state: None,
        settings,
        sources,
        stages,
        sink: built.events,
        notifiers: built.notifiers,
        agent,
        limits,
        server,
        effective,
        clusters,
    })
}

/// Reads every `[[cluster]]` and (unless replaying) loads each credential
/// with kubectl. `None` when no cluster is configured.
fn read_clusters(
    tables: Vec<toml::Table>,
    overrides: &Overrides,
    opts: &CompileOptions,
    errors: &mut ConfigErrors,
    effective: &mut Vec<Effective>,
) -> Option<Arc<ClusterGuard>> {
    if tables.is_empty() {
        return None;
    }
    let mut loaded = Vec::new();
    let mut seen: Vec<String> = Vec::new();
    for (i, t) in tables.into_iter().enumerate() {
        let prefix = format!("cluster[{i}]");
        let mut r = TableReader::new(prefix, t, overrides, errors, effective);
        if let Some(c) = ClusterConfig::read(&mut r, &opts.base_dir) {
            if seen.contains(&c.name) {
                r.error(
                    "name",
                    format!("{:?}", c.name),
                    "a name not used by another [[cluster]]",
                );
            }
            seen.push(c.name.clone());
            // Replay runs no agent: no credential is needed.
            if !opts.skip_sources {
                match Upstream::load(&c.kubeconfig, c.context.as_deref()) {
                    Ok(u) => loaded.push((c, u)),
                    Err(problems) => {
                        for (key, value, allowed) in problems {
                            r.error(key, value, allowed);
                        }
                    }
                }
            }
        }
        r.finish();
    }
    Some(Arc::new(ClusterGuard::new(loaded)))
}

/// Reads and compiles a file; relative paths inside resolve against its directory.
pub(crate) fn compile_file(
    path: &Path,
    overrides: &Overrides,
    skip_sources: bool,
) -> Result<Compiled, ConfigErrors> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        let mut errs = ConfigErrors::default();
        errs.push(
            "--config",
            format!("{:?}", path.display().to_string()),
            format!("a readable pipeline.toml ({e})"),
        );
        errs
    })?;
    let base_dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
    compile(
        &text,
        overrides,
        &CompileOptions {
            base_dir,
            skip_sources,
        },
    )
}
