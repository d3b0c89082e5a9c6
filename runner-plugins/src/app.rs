//! The `runner` binary's commands.

use std::io::{BufRead, Write};
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use runner_core::config::{ConfigErrors, Effective, Overrides};
use runner_core::pipeline::{ChainResult, Pipeline, RunReport, StageChain};
use runner_core::{Outcome, RawPayload, Recorder, Stage, StatsSnapshot};

use crate::cli;
use crate::compile::{self, Compiled};

/// Exit codes (documented in README).
pub const EXIT_OK: u8 = 0;
pub const EXIT_FATAL: u8 = 1;
pub const EXIT_CONFIG: u8 = 2;
pub const EXIT_KILLED: u8 = 3;

pub fn main() -> ExitCode {
    // First, before any secret is read or any thread started: a same-uid
    // agent must not be able to read this process's environment or memory,
    // and orphans of agents must come back to it (see sinks::agent::contain).
    let harden_errors = crate::sinks::agent::contain::harden_runner_process();
    let m = cli::command().get_matches();
    let (name, sub) = m.subcommand().expect("subcommand required");
    let ov = cli::overrides(sub, |k| std::env::var(k).ok());
    match name {
        "config-reference" => {
            print_stdout(&crate::settings::reference_table());
            ExitCode::SUCCESS
        }
        "validate" => validate(&cli::config_path(sub), &ov),
        "run" => {
            let rt = runtime();
            rt.block_on(run(&cli::config_path(sub), &ov, &harden_errors))
        }
        "replay" => {
            let file = sub.get_one::<String>("file").expect("required");
            let rt = runtime();
            rt.block_on(replay(Path::new(file), &cli::config_path(sub), &ov))
        }
        "demo" => {
            let dir = sub
                .get_one::<String>("workspace")
                .map(std::path::PathBuf::from);
            let rt = runtime();
            rt.block_on(crate::demo::run(dir, &ov))
        }
        _ => unreachable!("clap rejects unknown subcommands"),
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// Initializes tracing once; `level` and `format` come from the compiled config.
pub fn init_logging(level: &str, format: &str) {
    use tracing_subscriber::EnvFilter;
    // RUST_LOG, when set, refines LOG_LEVEL for debugging a single module.
    // rmcp is silenced by default: it logs handled reconnects as errors, and
    // the MCP source already logs every loss with its cause
    // (RUST_LOG=info,rmcp=debug shows it).
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|s| EnvFilter::try_new(s).ok())
        .unwrap_or_else(|| {
            EnvFilter::new(format!(
                "{level},rmcp=off,wasmtime=warn,cranelift=warn,hyper=warn,reqwest=warn"
            ))
        });
    use std::io::IsTerminal;
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let _ = if format == "json" {
        b.json().try_init()
    } else {
        b.try_init()
    };
}

/// Writes to stdout; a closed pipe (`runner validate | head`) is not an error.
pub fn print_stdout(text: &str) {
    let _ = std::io::stdout().lock().write_all(text.as_bytes());
}

fn print_errors(errs: &ConfigErrors) {
    eprint!("error: {errs}");
}

pub fn log_effective(effective: &[Effective]) {
    for e in effective {
        tracing::info!(key = %e.key, value = %e.value, origin = e.origin.as_str(), "effective configuration");
    }
}

fn validate(path: &Path, ov: &Overrides) -> ExitCode {
    match compile::compile_file(path, ov, false) {
        Ok(c) => {
            let mut out = format!("{}: valid\n", path.display());
            let names = |v: Vec<String>, sep: &str| v.join(sep);
            out += &format!(
                "  sources: {}\n",
                names(
                    c.sources.iter().map(|s| s.name().to_string()).collect(),
                    ", "
                )
            );
            out += &format!(
                "  stages:  {}\n",
                names(
                    c.stages.iter().map(|s| s.name().to_string()).collect(),
                    " -> "
                )
            );
            out += &format!("  sink:    {}\n", c.sink.name());
            if !c.notifiers.is_empty() {
                out += &format!("  notify:  {}\n", c.notifiers.join(", "));
            }
            let pre = c
                .agent
                .as_ref()
                .map(|a| a.preflight(&|k| std::env::var(k).ok()))
                .unwrap_or_default();
            for i in &pre.info {
                out += &format!("  agent:   {i}\n");
            }
            out += "effective configuration:\n";
            for e in &c.effective {
                out += &format!("  {} = {} ({})\n", e.key, e.value, e.origin.as_str());
            }
            print_stdout(&out);
            if !pre.missing.is_empty() {
                eprintln!(
                    "error: the agent preset cannot run on this host ({} problem{}):",
                    pre.missing.len(),
                    if pre.missing.len() == 1 { "" } else { "s" }
                );
                for m in &pre.missing {
                    eprintln!("  - {m}");
                }
                return ExitCode::from(EXIT_CONFIG);
            }
            ExitCode::from(EXIT_OK)
        }
        Err(errs) => {
            print_errors(&errs);
            ExitCode::from(EXIT_CONFIG)
        }
    }
}

/// Logs the one `final statistics` record and returns the snapshot.
pub fn log_final(report: &RunReport) {
    let s = &report.stats;
    tracing::info!(
        received = s.received,
        invalid = s.get(Outcome::Invalid),
        filtered = s.get(Outcome::Filtered),
        duplicate = s.get(Outcome::Duplicate),
        dropped = s.get(Outcome::Dropped),
        rejected = s.get(Outcome::Rejected),
        plugin_dropped = s.get(Outcome::PluginDropped),
        completed = s.get(Outcome::Completed),
        failed = s.get(Outcome::Failed),
        timed_out = s.get(Outcome::TimedOut),
        abandoned = s.get(Outcome::Abandoned),
        over_budget = s.get(Outcome::OverBudget),
        adds_up = s.adds_up(),
        agent_input_tokens = report.usage.input_tokens,
        agent_output_tokens = report.usage.output_tokens,
        agent_cost_usd = report.usage.cost_usd,
        agent_turns = report.usage.turns,
        killed = report.shutdown.killed,
        "final statistics"
    );
    for st in &report.stages {
        tracing::info!(stage = %st.name, passed = st.passed, modified = st.modified, dropped = st.dropped, "stage statistics");
    }
}

pub fn exit_code(report: &RunReport) -> ExitCode {
    if report.fatal.is_some() {
        ExitCode::from(EXIT_FATAL)
    } else if report.shutdown.killed > 0 {
        ExitCode::from(EXIT_KILLED)
    } else {
        ExitCode::from(EXIT_OK)
    }
}

/// Runs a compiled pipeline until a signal (or a fatal source error).
pub async fn run_compiled(c: Compiled) -> RunReport {
    let (_settings, parts) = c.into_parts();
    let (handle, join) = Pipeline::new(parts).start();
    let h = handle.clone();
    tokio::spawn(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
        let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
        loop {
            let name = tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = int.recv() => "SIGINT",
            };
            // The handle escalates: the first call drains, the second forces.
            if h.is_shutting_down() {
                tracing::warn!(signal = name, "second signal: killing running agents now");
            } else {
                tracing::info!(
                    signal = name,
                    "shutdown requested: draining (send again to force)"
                );
            }
            h.shutdown();
        }
    });
    join.await.expect("pipeline task")
}

async fn run(path: &Path, ov: &Overrides, harden_errors: &[String]) -> ExitCode {
    let c = match compile::compile_file(path, ov, false) {
        Ok(c) => c,
        Err(errs) => {
            print_errors(&errs);
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    init_logging(&c.settings.log_level, &c.settings.log_format);
    tracing::info!(config = %path.display(), version = env!("CARGO_PKG_VERSION"), "event runner starting");
    log_effective(&c.effective);
    for e in harden_errors {
        tracing::error!(error = %e, "cannot harden the runner process");
    }
    let agent = c.agent.clone();
    if let Some(a) = &agent {
        crate::sinks::agent::startup(a);
        let pre = a.preflight(&|k| std::env::var(k).ok());
        for i in &pre.info {
            tracing::info!(agent = %i, "agent CLI");
        }
        for m in &pre.missing {
            tracing::error!(problem = %m, "agent preset cannot run on this host: its incidents will fail (run `runner validate`)");
        }
    }
    let report = run_compiled(c).await;
    // Every agent was swept by its sink call; this catches what a crash of
    // that path could have left.
    if let Some(a) = &agent {
        crate::sinks::agent::reap_previous_run(a);
    }
    if let Some(f) = &report.fatal {
        tracing::error!(source = %f.source_name, error = %f.message, "fatal source error");
        eprintln!("error: {f}");
    }
    log_final(&report);
    exit_code(&report)
}

/// `runner replay`: recorded payloads through the configured stages, no agents.
async fn replay(file: &Path, config: &Path, ov: &Overrides) -> ExitCode {
    let c = match compile::compile_file(config, ov, true) {
        Ok(c) => c,
        Err(errs) => {
            print_errors(&errs);
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    init_logging("warn", &c.settings.log_format);
    let f = match std::fs::File::open(file) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("error: cannot open {}: {e}", file.display());
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let stages: Arc<[Box<dyn Stage>]> = c.stages.into();
    let recorder = Arc::new(Recorder::new(stages));
    let chain = StageChain::new(recorder.clone());
    let source: Arc<str> = Arc::from("replay");
    let out = std::io::stdout();
    let mut out = out.lock();
    let mut passed = 0u64;
    for (n, line) in std::io::BufReader::new(f).lines().enumerate() {
        let line = match line {
            Ok(l) => l,
            Err(e) => {
                eprintln!("error: reading {}: {e}", file.display());
                return ExitCode::from(EXIT_FATAL);
            }
        };
        if line.trim().is_empty() {
            continue;
        }
        recorder.received();
        let data =
            serde_json::from_str(&line).unwrap_or_else(|_| serde_json::Value::String(line.clone()));
        let raw = RawPayload {
            data,
            source: source.clone(),
            cluster_fill: None,
            received_at: tokio::time::Instant::now(),
        };
        let (verdict, ident) = match chain.process(raw).await {
            ChainResult::Passed(env) => {
                passed += 1;
                // Replay stops before the router: no outcome is recorded for
                // these; the summary reports them as "would run agent".
                ("would-run-agent".to_string(), env.event.to_string())
            }
            ChainResult::Stopped(o, reason) => (o.as_str().to_string(), format!("({reason})")),
        };
        let _ = writeln!(out, "line {:>5}: {:<16} {}", n + 1, verdict, ident);
    }
    let s: StatsSnapshot = recorder.snapshot();
    let _ = writeln!(
        out,
        "\nsummary: received {} | would run agent {}",
        s.received, passed
    );
    for o in [
        Outcome::Invalid,
        Outcome::Filtered,
        Outcome::Duplicate,
        Outcome::PluginDropped,
    ] {
        let _ = writeln!(out, "  {:<15} {}", o.as_str(), s.get(o));
    }
    for st in recorder.stage_stats() {
        let _ = writeln!(
            out,
            "  stage {:<20} passed {} modified {} dropped {}",
            st.name, st.passed, st.modified, st.dropped
        );
    }
    ExitCode::from(EXIT_OK)
}
