//! The application: the `runner` binary's commands, the config compiler, the
//! embedded demo and the admin server. Components (`sources`, `stages`,
//! `sinks`, `cluster`) never import from here.

pub(crate) mod admin;
mod cases;
mod changes;
pub(crate) mod cli;
pub mod compile;
pub(crate) mod demo;
pub(crate) mod incidents;
pub(crate) mod logfmt;
mod record;
mod scaffold;

use std::io::{BufRead, Write};
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use runner_core::config::{ConfigErrors, Effective, Environment, Overrides};
use runner_core::pipeline::{ChainResult, Pipeline, RunReport, StageChain};
use runner_core::{Outcome, RawPayload, Recorder, Stage, StatsSnapshot};

use crate::cluster::{Check, OnUnsafe};
use compile::Compiled;

/// Exit codes (documented in README).
pub(crate) const EXIT_OK: u8 = 0;
pub(crate) const EXIT_FATAL: u8 = 1;
pub(crate) const EXIT_CONFIG: u8 = 2;
pub(crate) const EXIT_KILLED: u8 = 3;

pub fn main() -> ExitCode {
    // First, before any secret is read or any thread started: a same-uid
    // agent must not be able to read this process's environment or memory,
    // and orphans of agents must come back to it (see sinks::agent::contain).
    let harden_errors = crate::sinks::agent::contain::harden_runner_process();
    let m = cli::command().get_matches();
    let (name, sub) = m.subcommand().expect("subcommand required");
    // The one read of the process environment; everything below gets it
    // injected (through the overrides).
    let environment = Environment::capture();
    let ov = cli::overrides(sub, |k| environment.get(k).map(str::to_string))
        .with_environment(environment.clone());
    match name {
        "config-reference" => {
            print_stdout(&crate::settings::reference_table());
            ExitCode::SUCCESS
        }
        "validate" => validate(&cli::config_path(sub), &ov),
        "incidents" => incidents::run(sub, &cli::config_path(sub), &ov),
        "status" => {
            let rt = runtime();
            rt.block_on(status(sub, &environment))
        }
        "run" => {
            let rt = runtime();
            rt.block_on(run(&cli::config_path(sub), &ov, &harden_errors))
        }
        "replay" => {
            let file = sub.get_one::<String>("file").expect("required");
            let rt = runtime();
            let show_changes = sub.get_flag("show-changes");
            rt.block_on(replay(
                Path::new(file),
                &cli::config_path(sub),
                &ov,
                show_changes,
            ))
        }
        "plugin" => {
            let (_, new) = sub.subcommand().expect("subcommand required");
            let get = |k: &str| new.get_one::<String>(k).expect("required").as_str();
            scaffold::run(get("lang"), get("name"), Path::new(get("dir")))
        }
        "record" => {
            let out = sub.get_one::<String>("out").expect("required");
            let opts = record::RecordOptions {
                out: Path::new(out),
                max_bytes: *sub.get_one::<u64>("max-bytes").expect("default"),
                max_events: sub.get_one::<u64>("max-events").copied(),
                append: sub.get_flag("append"),
            };
            let rt = runtime();
            rt.block_on(record::run(&cli::config_path(sub), &ov, opts))
        }
        "test" => {
            let file = sub.get_one::<String>("file").expect("required");
            let rt = runtime();
            rt.block_on(cases::run(Path::new(file), &ov))
        }
        "demo" => {
            let dir = sub
                .get_one::<String>("workspace")
                .map(std::path::PathBuf::from);
            let rt = runtime();
            rt.block_on(demo::run(dir, &ov))
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

/// Initializes tracing once; `level` and `format` come from the compiled
/// config, `RUST_LOG` from `environment`.
pub(crate) fn init_logging(level: &str, format: &str, environment: &Environment) {
    use tracing_subscriber::EnvFilter;
    // RUST_LOG, when set, refines LOG_LEVEL for debugging a single module.
    // rmcp is silenced by default: it logs handled reconnects as errors, and
    // the MCP source already logs every loss with its cause
    // (RUST_LOG=info,rmcp=debug shows it).
    let filter = environment
        .get("RUST_LOG")
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
        // Event fields are untrusted: quote them so none can forge another.
        b.fmt_fields(logfmt::QuotedFields).try_init()
    };
}

/// Writes to stdout; a closed pipe (`runner validate | head`) is not an error.
pub(crate) fn print_stdout(text: &str) {
    let _ = std::io::stdout().lock().write_all(text.as_bytes());
}

fn print_errors(errs: &ConfigErrors) {
    eprint!("error: {errs}");
}

pub(crate) fn log_effective(effective: &[Effective]) {
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
                .map(|a| a.preflight(&|k| ov.environment().get(k).map(str::to_string)))
                .unwrap_or_default();
            for i in &pre.info {
                out += &format!("  agent:   {i}\n");
            }
            if let Some(a) = &c.agent {
                out += &format!(
                    "  sandbox: {}\n",
                    crate::sinks::agent::sandbox::describe(&a.sandbox)
                );
            }
            let mut refused = false;
            if let Some(g) = &c.clusters {
                out += "clusters (agent credentials, checked now):\n";
                let checks = runtime().block_on(g.verify_all());
                for (name, policy, check) in &checks {
                    out += &format!("  {name}: {}\n", describe_check(policy, check));
                    refused |= matches!(check, Check::Unsafe(_)) && *policy == OnUnsafe::Refuse;
                }
            }
            out += "effective configuration:\n";
            for e in &c.effective {
                out += &format!("  {} = {} ({})\n", e.key, e.value, e.origin.as_str());
            }
            print_stdout(&out);
            let mut failed = false;
            if refused {
                eprintln!(
                    "error: a [[cluster]] credential can write or read Secrets (on_unsafe_credential = \"refuse\"); give the agent credential a read-only role without Secrets"
                );
                failed = true;
            }
            if !pre.missing.is_empty() {
                eprintln!(
                    "error: the agent preset cannot run on this host ({} problem{}):",
                    pre.missing.len(),
                    if pre.missing.len() == 1 { "" } else { "s" }
                );
                for m in &pre.missing {
                    eprintln!("  - {m}");
                }
                failed = true;
            }
            if failed {
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

/// One line of `runner validate` about a cluster credential.
fn describe_check(policy: &OnUnsafe, check: &Check) -> String {
    match check {
        Check::Safe { incomplete: None } => {
            "read-only, no Secrets: agents get proxied access".into()
        }
        Check::Safe {
            incomplete: Some(why),
        } => format!(
            "read-only as far as the API server could tell (rules incomplete: {why}); the proxy refuses writes and Secrets anyway"
        ),
        Check::Unsafe(problems) => format!(
            "{}: {}",
            match policy {
                OnUnsafe::Refuse => "REFUSED",
                OnUnsafe::Disable => "ERROR, triage for this cluster disabled",
            },
            problems.join("; ")
        ),
        Check::Unreachable(e) => format!(
            "WARNING unreachable ({e}); the runner retries at the cluster's next incident, agents get no access until a check succeeds"
        ),
    }
}

/// Logs the one `final statistics` record and returns the snapshot.
pub(crate) fn log_final(report: &RunReport) {
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
        cancelled = s.get(Outcome::Cancelled),
        merged = s.get(Outcome::Merged),
        adds_up = s.adds_up(),
        agent_input_tokens = report.usage.input_tokens,
        agent_output_tokens = report.usage.output_tokens,
        agent_cost_usd = report.usage.cost_usd,
        agent_turns = report.usage.turns,
        killed = report.shutdown.killed,
        recovered = s.recovered,
        deferred = s.deferred,
        interrupted = report.shutdown.interrupted,
        "final statistics"
    );
    if let Some(c) = &report.carried {
        // This run's counts are above; here what earlier runs left, and
        // the totals over every run that used this state directory.
        let carried_pending = c.counters.received - c.counters.terminal().min(c.counters.received);
        let total_received = c.counters.received + s.received;
        let total_terminal = c.counters.terminal() + s.terminal();
        let mut totals = c.counters.outcomes;
        for (t, n) in totals.iter_mut().zip(s.outcomes) {
            *t += n;
        }
        let g = |o: Outcome| totals[o as usize];
        tracing::info!(
            carried_over_received = c.counters.received,
            carried_over_terminal = c.counters.terminal(),
            carried_over_pending = carried_pending,
            reruns = c.reruns,
            gave_up = c.gave_up,
            total_received,
            total_invalid = g(Outcome::Invalid),
            total_filtered = g(Outcome::Filtered),
            total_duplicate = g(Outcome::Duplicate),
            total_dropped = g(Outcome::Dropped),
            total_rejected = g(Outcome::Rejected),
            total_plugin_dropped = g(Outcome::PluginDropped),
            total_completed = g(Outcome::Completed),
            total_failed = g(Outcome::Failed),
            total_timed_out = g(Outcome::TimedOut),
            total_abandoned = g(Outcome::Abandoned),
            total_over_budget = g(Outcome::OverBudget),
            total_cancelled = g(Outcome::Cancelled),
            total_merged = g(Outcome::Merged),
            total_terminal,
            total_pending = s.deferred,
            total_adds_up = total_received == total_terminal + s.deferred,
            "cumulative statistics"
        );
    }
    for st in &report.stages {
        tracing::info!(stage = %st.name, passed = st.passed, modified = st.modified, dropped = st.dropped, "stage statistics");
    }
    for (name, h) in report.stage_health.iter().filter(|(_, h)| h.plugin) {
        tracing::info!(
            stage = %name,
            calls = h.calls,
            failures = h.errors,
            disabled = h.disabled,
            mean_call_us = (h.call_nanos / h.calls.max(1)) / 1000,
            max_call_us = h.max_call_nanos / 1000,
            "plugin statistics"
        );
    }
}

pub(crate) fn exit_code(report: &RunReport) -> ExitCode {
    if report.fatal.is_some() {
        ExitCode::from(EXIT_FATAL)
    } else if report.shutdown.killed > 0 {
        ExitCode::from(EXIT_KILLED)
    } else {
        ExitCode::from(EXIT_OK)
    }
}

/// Runs a compiled pipeline until a signal (or a fatal source error).
/// `Err` when the admin server's address cannot be bound (nothing started).
pub(crate) async fn run_compiled(c: Compiled) -> Result<RunReport, String> {
    let server = c.server.clone();
    let max_concurrent = c.limits.max_concurrent;
    let listener = match server.listen {
        Some(addr) => Some(
            admin::AdminServer::bind(addr)
                .await
                .map_err(|e| format!("server.listen: cannot listen on {addr}: {e}"))?,
        ),
        None => None,
    };
    let (_settings, parts) = c.into_parts();
    let (handle, join) = Pipeline::new(parts).start();
    let admin = match listener {
        Some(l) => {
            match admin::AdminServer::serve(l, server.clone(), handle.clone(), max_concurrent) {
                Ok(a) => {
                    tracing::info!(
                        listen = %a.addr,
                        token = %server.token_origin,
                        public_url = server.public_url.as_deref().unwrap_or("unset"),
                        "admin server listening"
                    );
                    Some(a)
                }
                Err(e) => {
                    tracing::error!(error = %e, "admin server failed to start");
                    None
                }
            }
        }
        None => {
            tracing::info!("admin server off (server.listen = off)");
            None
        }
    };
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
    let report = join.await.expect("pipeline task");
    if let Some(a) = admin {
        a.stop().await;
    }
    Ok(report)
}

async fn run(path: &Path, ov: &Overrides, harden_errors: &[String]) -> ExitCode {
    let c = match compile::compile_file(path, ov, false) {
        Ok(c) => c,
        Err(errs) => {
            print_errors(&errs);
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    init_logging(
        &c.settings.log_level,
        &c.settings.log_format,
        ov.environment(),
    );
    tracing::info!(config = %path.display(), version = env!("CARGO_PKG_VERSION"), "event runner starting");
    log_effective(&c.effective);
    for e in harden_errors {
        tracing::error!(error = %e, "cannot harden the runner process");
    }
    let agent = c.agent.clone();
    if let Some(a) = &agent {
        crate::sinks::agent::startup(a);
        let pre = a.preflight(&|k| ov.environment().get(k).map(str::to_string));
        for i in &pre.info {
            tracing::info!(agent = %i, "agent CLI");
        }
        for m in &pre.missing {
            tracing::error!(problem = %m, "agent preset cannot run on this host: its incidents will fail (run `runner validate`)");
        }
    }
    // After the leftovers of a killed previous run were reaped (above): its
    // interrupted incidents are run again, never next to their old agent.
    let mut c = c;
    match &c.settings.state_dir {
        Some(dir) => match crate::state::open(dir, &c.settings.state) {
            Ok(ds) => {
                let r = &ds.recovered;
                tracing::info!(
                    state_dir = %dir.display(),
                    pending = r.pending.len(),
                    carried_over_received = r.counters.received,
                    carried_over_terminal = r.counters.terminal(),
                    "state store opened"
                );
                c.state = Some(ds);
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot open the state store");
                eprintln!("error: {e}");
                return ExitCode::from(EXIT_CONFIG);
            }
        },
        None => tracing::warn!(
            "state store off (STATE_DIR=off): a restart forgets dedup keys, queued events and incident history"
        ),
    }
    if let Some(a) = &agent {
        crate::sinks::agent::retention::spawn(a, c.state.as_ref().map(crate::state::journal));
    }
    if let Some(g) = &c.clusters {
        let mut refused = Vec::new();
        for (name, policy, check) in g.verify_all().await {
            if matches!(check, Check::Unsafe(_)) && policy == OnUnsafe::Refuse {
                refused.push(name);
            }
        }
        if !refused.is_empty() {
            let msg = format!(
                "refusing to start: the agent credential of cluster(s) {} can write or read Secrets (on_unsafe_credential = \"refuse\")",
                refused.join(", ")
            );
            tracing::error!("{msg}");
            eprintln!("error: {msg}");
            return ExitCode::from(EXIT_CONFIG);
        }
    }
    let report = match run_compiled(c).await {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "cannot start");
            eprintln!("error: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
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

/// `runner status`: the admin server's view of a running instance, as tables.
async fn status(m: &clap::ArgMatches, environment: &Environment) -> ExitCode {
    let base = m.get_one::<String>("url").cloned().unwrap_or_else(|| {
        let listen = environment
            .get(crate::settings::ADMIN_LISTEN.env)
            .filter(|v| !v.is_empty() && *v != "off")
            .unwrap_or(admin::DEFAULT_LISTEN);
        // A wildcard bind is reached on loopback.
        let listen = listen
            .replace("0.0.0.0:", "127.0.0.1:")
            .replace("[::]:", "[::1]:");
        format!("http://{listen}")
    });
    let token = match environment.get(crate::settings::ADMIN_TOKEN_FILE.env) {
        Some(path) if !path.is_empty() => match std::fs::read_to_string(path) {
            Ok(t) => Some(t.trim().to_string()),
            Err(e) => {
                eprintln!("error: ADMIN_TOKEN_FILE {path:?}: {e}");
                return ExitCode::from(EXIT_CONFIG);
            }
        },
        _ => environment
            .get(crate::settings::ADMIN_TOKEN.env)
            .filter(|t| !t.trim().is_empty())
            .map(|t| t.trim().to_string()),
    };
    match admin::table::fetch(&base, token.as_deref()).await {
        Ok((st, inc)) => {
            if m.get_flag("json") {
                print_stdout(&format!(
                    "{}
",
                    serde_json::json!({"status": st, "incidents": inc})
                ));
            } else {
                print_stdout(&admin::table::render(&st, &inc));
            }
            ExitCode::from(EXIT_OK)
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(EXIT_FATAL)
        }
    }
}

/// `runner replay`: recorded payloads through the configured stages, no agents.
async fn replay(file: &Path, config: &Path, ov: &Overrides, show_changes: bool) -> ExitCode {
    // Before compiling: what a plugin logs from `init` (it runs while the
    // stage is built) is shown, as is everything it logs per event.
    let format = ov
        .get(crate::settings::LOG_FORMAT.env)
        .map_or("text", |(v, _)| v)
        .to_string();
    init_logging("warn,plugin=debug", &format, ov.environment());
    let c = match compile::compile_file(config, ov, true) {
        Ok(c) => c,
        Err(errs) => {
            print_errors(&errs);
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let f = match std::fs::File::open(file) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("error: cannot open {}: {e}", file.display());
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let changes = changes::ChangeLog::default();
    let stages: Arc<[Box<dyn Stage>]> = if show_changes {
        changes::ShowChanges::wrap(c.stages, &changes).into()
    } else {
        c.stages.into()
    };
    let recorder = Arc::new(Recorder::new(stages));
    let chain = StageChain::new(recorder.clone());
    let source: Arc<str> = Arc::from("replay");
    let out = std::io::stdout();
    let mut out = out.lock();
    let mut passed = 0u64;
    let mut reader = std::io::BufReader::new(f);
    let mut buf = Vec::new();
    for n in 0.. {
        buf.clear();
        match reader.read_until(b'\n', &mut buf) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) => {
                eprintln!("error: reading {}: {e}", file.display());
                return ExitCode::from(EXIT_FATAL);
            }
        }
        // A recorded line that is not UTF-8 (a corrupted capture) is one
        // bad payload, not a reason to give up on the rest of the file.
        let line = match std::str::from_utf8(&buf) {
            Ok(l) => l,
            Err(e) => {
                recorder.received();
                let reason = format!(
                    "line is not valid UTF-8 (invalid byte at offset {})",
                    e.valid_up_to()
                );
                recorder.finish_raw(None, &source, Outcome::Invalid, "replay", &reason);
                let _ = writeln!(out, "line {:>5}: {:<16} ({reason})", n + 1, "invalid");
                continue;
            }
        };
        let line = line.trim_end_matches(['\n', '\r']);
        if line.trim().is_empty() {
            continue;
        }
        recorder.received();
        let max = runner_core::event::max_payload_bytes();
        if line.len() > max {
            let reason = format!(
                "payload too large: {} bytes (maximum {max}, MAX_PAYLOAD_BYTES)",
                line.len()
            );
            recorder.finish_raw(None, &source, Outcome::Invalid, "replay", &reason);
            let _ = writeln!(out, "line {:>5}: {:<16} ({reason})", n + 1, "invalid");
            continue;
        }
        let data = serde_json::from_str(line)
            .unwrap_or_else(|_| serde_json::Value::String(line.to_string()));
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
        for c in changes.lock().unwrap_or_else(|p| p.into_inner()).drain(..) {
            let _ = writeln!(out, "            {c}");
        }
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
    let health = recorder.stages().iter().map(|s| s.health());
    let mut plugin_failures = 0;
    for (st, h) in recorder.stage_stats().iter().zip(health) {
        let mut line = format!(
            "  stage {:<20} passed {} modified {} dropped {}",
            st.name, st.passed, st.modified, st.dropped
        );
        if h.plugin {
            plugin_failures += h.errors;
            line += &format!(
                " | plugin calls {} failed {}{}",
                h.calls,
                h.errors,
                if h.disabled { " (disabled)" } else { "" }
            );
        }
        let _ = writeln!(out, "{line}");
    }
    if plugin_failures > 0 {
        // A replay is a plugin author's test: calls that trapped, timed out
        // or returned an error must not look like a clean run.
        let _ = writeln!(out, "  plugin failures {plugin_failures}");
        drop(out);
        eprintln!(
            "error: {plugin_failures} plugin call(s) failed (the warnings above say how); each event still got its on_error outcome"
        );
        return ExitCode::from(EXIT_FATAL);
    }
    ExitCode::from(EXIT_OK)
}
