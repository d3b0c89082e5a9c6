//! The one config compile path: `pipeline.toml` text + overrides → a
//! runnable pipeline, or every error at once. Used by `runner validate`,
//! `runner run`, `runner replay`, the demo and the tests.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use runner_core::config::{ConfigErrors, Effective, Overrides, TableReader};
use runner_core::pipeline::PipelineParts;
use runner_core::router::{OverflowPolicy, RouterLimits};
use runner_core::{Sink, Source, Stage};

use crate::settings as env;
use crate::sinks::agent::AgentSinkConfig;
use crate::sources::mcp::McpSourceConfig;
use crate::stages::{dedup::DedupConfig, severity::SeverityConfig};

/// The built-in stage kinds (a closed set) plus `wasm`.
pub const STAGE_KINDS: &str = "severity, dedup, wasm";
pub const SOURCE_KINDS: &str = "mcp";
pub const SINK_KINDS: &str = "agent";

/// Process-level settings from `[settings]`.
#[derive(Debug, Clone)]
pub struct GlobalSettings {
    pub log_level: String,
    pub log_format: String,
    pub shutdown_timeout: Duration,
    pub intake_queue_size: usize,
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
    pub settings: GlobalSettings,
    pub sources: Vec<Box<dyn Source>>,
    pub stages: Vec<Box<dyn Stage>>,
    pub sink: Arc<dyn Sink>,
    pub limits: RouterLimits,
    /// Effective configuration (secrets masked) with where each value came from.
    pub effective: Vec<Effective>,
}

impl Compiled {
    pub fn into_parts(self) -> (GlobalSettings, PipelineParts) {
        let parts = PipelineParts {
            sources: self.sources,
            stages: self.stages,
            sink: self.sink,
            limits: self.limits,
            intake_capacity: self.settings.intake_queue_size,
            shutdown_grace: self.settings.shutdown_timeout,
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

fn min1(r: &mut TableReader<'_>, key: &'static str, v: usize) -> usize {
    if v < 1 {
        r.error(key, v.to_string(), "an integer >= 1");
        1
    } else {
        v
    }
}

/// Compiles a pipeline from TOML text. Reports every error found.
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
    let sink_t = root.remove("sink");
    for k in root.keys() {
        errors.push(
            k.clone(),
            "(unknown key)",
            "one of: settings, source, stage, router, sink",
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
        let log_level: String = r.layered("log_level", env::LOG_LEVEL, "info".to_string());
        if !["debug", "info", "warn", "error"].contains(&log_level.to_ascii_lowercase().as_str()) {
            r.error(
                "log_level",
                format!("{log_level:?}"),
                "one of debug, info, warn, error",
            );
        }
        let log_format: String = r.layered("log_format", env::LOG_FORMAT, "text".to_string());
        if !["text", "json"].contains(&log_format.as_str()) {
            r.error("log_format", format!("{log_format:?}"), "one of text, json");
        }
        let shutdown: u64 = r.layered(
            "shutdown_timeout_seconds",
            env::SHUTDOWN_TIMEOUT_SECONDS,
            30,
        );
        let intake: usize = r.layered("intake_queue_size", env::INTAKE_QUEUE_SIZE, 1024);
        let intake = min1(&mut r, "intake_queue_size", intake);
        r.finish();
        GlobalSettings {
            log_level: log_level.to_ascii_lowercase(),
            log_format,
            shutdown_timeout: Duration::from_secs(shutdown),
            intake_queue_size: intake,
        }
    };

    // [[source]]
    let mut sources: Vec<Box<dyn Source>> = Vec::new();
    let mut token_envs: Vec<String> = vec![env::MCP_TOKEN.to_string()];
    if !opts.skip_sources {
        if sources_t.is_empty() {
            errors.push("source", "(missing)", "at least one [[source]] (kind: mcp)");
        }
        let single = sources_t.len() == 1;
        if !single && overrides.get(env::K8S_CLUSTER_MCP_ENDPOINT).is_some() {
            errors.push(
                env::K8S_CLUSTER_MCP_ENDPOINT,
                "(set)",
                "only with exactly one [[source]]; with several, set each `endpoint` in pipeline.toml",
            );
        }
        let empty = Overrides::new();
        for (i, mut t) in sources_t.into_iter().enumerate() {
            // Remember which variables hold source credentials: the agent
            // sink must never pass them on (checked below).
            if let Some(toml::Value::String(name)) = t.get("token_env") {
                token_envs.push(name.clone());
            }
            let prefix = format!("source[{i}]");
            let Some(kind) = kind_of(&mut t, &prefix, SOURCE_KINDS, &mut errors) else {
                continue;
            };
            let ov = if single { overrides } else { &empty };
            let mut r = TableReader::new(prefix.clone(), t, ov, &mut errors, &mut effective);
            match kind.as_str() {
                "mcp" => {
                    if let Some(c) = McpSourceConfig::read(&mut r, i) {
                        sources.push(c.build());
                    }
                }
                other => r.error(
                    "kind",
                    format!("{other:?}"),
                    format!("one of {SOURCE_KINDS}"),
                ),
            }
            r.finish();
        }
    }

    // [[stage]]
    let mut stages: Vec<Box<dyn Stage>> = Vec::new();
    for (i, mut t) in stages_t.into_iter().enumerate() {
        let prefix = format!("stage[{i}]");
        let Some(kind) = kind_of(&mut t, &prefix, STAGE_KINDS, &mut errors) else {
            continue;
        };
        let mut r = TableReader::new(prefix.clone(), t, overrides, &mut errors, &mut effective);
        match kind.as_str() {
            "severity" => {
                if let Some(c) = SeverityConfig::read(&mut r) {
                    stages.push(c.build());
                }
            }
            "dedup" => {
                if let Some(c) = DedupConfig::read(&mut r) {
                    stages.push(c.build());
                }
            }
            "wasm" => {
                if let Some(c) = plugins_wasm::WasmStageConfig::read(&mut r, &opts.base_dir) {
                    match c.build() {
                        Ok(s) => stages.push(s),
                        Err(e) => r.error("path", format!("{:?}", c.path.display().to_string()), e),
                    }
                }
            }
            other => r.error(
                "kind",
                format!("{other:?}"),
                format!("one of {STAGE_KINDS}"),
            ),
        }
        r.finish();
    }

    // [router]
    let limits = {
        let mut r = TableReader::new("router", router_t, overrides, &mut errors, &mut effective);
        let max: usize = r.layered("max_concurrent_agents", env::MAX_CONCURRENT_AGENTS, 5);
        let max = min1(&mut r, "max_concurrent_agents", max);
        let global: usize = r.layered("global_queue_size", env::GLOBAL_QUEUE_SIZE, 100);
        let global = min1(&mut r, "global_queue_size", global);
        let cluster: usize = r.layered("cluster_queue_size", env::CLUSTER_QUEUE_SIZE, 10);
        let cluster = min1(&mut r, "cluster_queue_size", cluster);
        let policy: OverflowPolicy = r.layered(
            "overflow_policy",
            env::QUEUE_OVERFLOW_POLICY,
            OverflowPolicy::Drop,
        );
        let idle: u64 = r.layered("idle_worker_seconds", env::IDLE_WORKER_SECONDS, 60);
        r.finish();
        RouterLimits {
            max_concurrent: max,
            global_queue: global,
            cluster_queue: cluster,
            policy,
            idle_reap: Duration::from_secs(idle.max(1)),
        }
    };

    // [sink]
    let mut sink: Option<Arc<dyn Sink>> = None;
    match sink_t {
        None => errors.push(
            "sink",
            "(missing)",
            format!("a [sink] table (kind: {SINK_KINDS})"),
        ),
        Some(toml::Value::Table(mut t)) => {
            if let Some(kind) = kind_of(&mut t, "sink", SINK_KINDS, &mut errors) {
                let mut r = TableReader::new("sink", t, overrides, &mut errors, &mut effective);
                match kind.as_str() {
                    "agent" => {
                        if let Some(c) = AgentSinkConfig::read(&mut r, &opts.base_dir) {
                            for name in c.env_allow.iter().filter(|n| token_envs.contains(n)) {
                                r.error(
                                    "env_allow",
                                    format!("{name:?}"),
                                    "a name that does not hold a source token (token_env of a [[source]])",
                                );
                            }
                            match c.build() {
                                Ok(s) => sink = Some(s),
                                Err(e) => r.error("(build)", "-", e),
                            }
                        }
                    }
                    other => r.error("kind", format!("{other:?}"), format!("one of {SINK_KINDS}")),
                }
                r.finish();
            }
        }
        Some(other) => errors.push("sink", other.to_string(), "a table ([sink])"),
    }

    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(Compiled {
        settings,
        sources,
        stages,
        sink: sink.expect("no errors implies a sink"),
        limits,
        effective,
    })
}

/// Reads and compiles a file; relative paths inside resolve against its directory.
pub fn compile_file(
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
