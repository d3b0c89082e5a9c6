//! `kind = "agent"`: one read-only AI agent subprocess per incident, in its
//! own workspace, with a report afterwards, told to the notifier sinks
//! (Slack).
//! The contract with the agent is documented in `docs/agents.md`.

pub(crate) mod book;
mod breaker;
mod cmdline;
pub(crate) mod config;
pub(crate) mod contain;
pub(crate) mod group;
pub mod presets;
pub(crate) mod process;
pub(crate) mod prompt;
pub(crate) mod redact;
pub(crate) mod report;
pub(crate) mod retention;
pub mod sandbox;
pub(crate) mod usage;
pub(crate) mod workspace;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::cluster::{self, Access};

use async_trait::async_trait;
use runner_core::{CancellationToken, Envelope, Outcome, Sink, SinkResult, UsageTotals};
use tokio::time::Instant;

use breaker::{Breaker, BreakerSignal};
use config::BASE_ENV;
pub use config::{AgentCommand, AgentSinkConfig, INCIDENT_VARS};
pub use presets::Preset;
use presets::PresetOptions;
use process::{Exit, Finished, Launch};
use redact::Redactor;
use report::Findings;
use runner_core::text::clean_line;
use sandbox::Mode;
use workspace::{IncidentDoc, LeftoverProcess, Status, Timings, Workspace, rfc3339_now};

use crate::component::BuildContext;
use crate::sinks::notice::{Notice, Notices};
use runner_core::config::Environment;

/// The agent's report is read at most this far (it is shown, not parsed).
const MAX_INVESTIGATION_BYTES: u64 = 1024 * 1024;
/// The agent's kubeconfig in its workspace (proxy token, or no cluster).
pub(crate) const KUBECONFIG_FILE: &str = "kubeconfig";
/// Lines of the agent's stderr and stdout quoted in the report of a failure.
const STDERR_TAIL_LINES: usize = 20;
/// A quoted log line is cut here (stream-JSON lines can be huge).
const TAIL_LINE_CHARS: usize = 400;

/// One cluster's use of its daily budget.
#[derive(Debug, Default)]
struct DayUse {
    /// Days since 1970-01-01 (UTC) this entry counts.
    day: u64,
    runs: u32,
    cost_usd: f64,
    /// The "budget exhausted" warning was logged for this day.
    warned: bool,
}

/// Drops an event's note entry when its `handle` ends, whatever the path.
struct ForgetNotes<'a>(&'a Mutex<HashMap<u64, Vec<workspace::NoteDoc>>>, u64);

impl Drop for ForgetNotes<'_> {
    fn drop(&mut self) {
        if let Ok(mut n) = self.0.lock() {
            n.remove(&self.1);
        }
    }
}

fn utc_day() -> u64 {
    runner_core::date::unix_day(std::time::SystemTime::now())
}

pub struct AgentSink {
    cfg: AgentSinkConfig,
    /// PATH, HOME, LANG and `env_allow`, captured from the runner's
    /// environment once; secrets were refused by the config.
    passthrough: Vec<(String, String)>,
    /// Told about finished incidents and the breaker's signals.
    notices: Notices,
    breaker: Mutex<Breaker>,
    /// The runner's secret values, kept out of reports and Slack.
    redactor: Redactor,
    /// Recent incidents for the admin server's page.
    book: std::sync::Arc<book::IncidentBook>,
    /// Daily budget use per cluster name.
    budget: Mutex<HashMap<String, DayUse>>,
    totals: Mutex<UsageTotals>,
    /// The runner's HOME: its credential directories stay hidden from agents.
    runner_home: Option<PathBuf>,
    /// Notes for the incidents being handled, by event sequence number:
    /// an entry exists from the start of `handle` until `finish` takes it.
    notes: Mutex<HashMap<u64, Vec<workspace::NoteDoc>>>,
    /// Where the daily budgets are kept across restarts (state store).
    budget_store: std::sync::OnceLock<runner_core::state::StateScope>,
    /// "What we found last time", by group key.
    history: std::sync::Arc<dyn runner_core::group::GroupHistory>,
    /// Grouped incidents whose call is in progress, by event seq.
    group_runs: Mutex<HashMap<u64, GroupRun>>,
    /// Tasks that keep grouped incidents' files current; stopped by `close`.
    followers: Mutex<tokio::task::JoinSet<()>>,
    stop_followers: CancellationToken,
}

/// A day's use as stored: `{"day":…, "runs":…, "cost_usd":…}`.
#[derive(serde::Serialize, serde::Deserialize)]
struct StoredDay {
    day: u64,
    runs: u32,
    cost_usd: f64,
}

/// A grouped incident while its sink call runs (see `group.rs`).
struct GroupRun {
    incident: std::sync::Arc<runner_core::group::Incident>,
    file: std::sync::Arc<Mutex<group::EventsFile>>,
    previous: Option<String>,
    rerender: group::Rerender,
    /// Tells the follower the call returned (see [`group::Follow`]).
    sink_done: CancellationToken,
}

/// Ends a grouped incident's call, however `handle` returns.
struct GroupRunGuard<'a> {
    sink: &'a AgentSink,
    seq: u64,
}

impl Drop for GroupRunGuard<'_> {
    fn drop(&mut self) {
        let run = self
            .sink
            .group_runs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.seq);
        if let Some(run) = run {
            run.sink_done.cancel();
        }
    }
}

impl GroupRun {
    fn doc(&self) -> group::GroupDoc {
        let file = self.file.lock().unwrap_or_else(|p| p.into_inner());
        group::group_doc(&self.incident, &file, self.previous.as_deref())
    }
}

impl AgentSink {
    /// Builds the sink without notifiers, passing agents the allow-listed
    /// part of this process's environment (tests, embedding).
    pub fn new(cfg: AgentSinkConfig) -> AgentSink {
        AgentSink::with_notices(cfg, Notices::default())
    }

    /// Like [`new`](Self::new); `notices` (Slack) hear about every incident
    /// that finished and about the circuit breaker.
    pub fn with_notices(cfg: AgentSinkConfig, notices: Notices) -> AgentSink {
        AgentSink::with_context(
            cfg,
            &BuildContext {
                notices,
                environment: Environment::capture(),
                ..BuildContext::default()
            },
        )
    }

    /// Builds the sink with the notifiers and the environment of `cx`.
    pub fn with_context(mut cfg: AgentSinkConfig, cx: &BuildContext) -> AgentSink {
        let notices = cx.notices.clone();
        let passthrough = BASE_ENV
            .iter()
            .map(|s| s.to_string())
            .chain(cfg.env_allow.iter().cloned())
            .filter(|n| !config::is_secret_name(n, &cfg.slack_webhook_env))
            .filter_map(|n| cx.environment.get(&n).map(|v| (n.clone(), v.to_string())))
            .collect();
        let mut extra_envs = cfg.secret_envs.clone();
        extra_envs.push(cfg.slack_webhook_env.clone());
        extra_envs.extend(
            crate::settings::SETTINGS
                .iter()
                .filter(|s| s.secret)
                .map(|s| s.env.to_string()),
        );
        let token_files: Vec<String> = cx
            .environment
            .get(crate::settings::MCP_TOKEN_FILE.env)
            .map(str::to_string)
            .into_iter()
            .collect();
        let redactor = Redactor::from_runner(
            &cx.environment,
            &extra_envs,
            &token_files,
            cfg.slack_webhook.clone(),
        );
        cfg.sandbox
            .deny_paths
            .extend(sandbox::runner_secret_files(&cx.environment));
        let history = std::sync::Arc::new(group::WorkspaceHistory::new(&cfg.workspace_root));
        AgentSink {
            runner_home: cx.environment.get("HOME").map(PathBuf::from),
            cfg,
            passthrough,
            notices,
            breaker: Mutex::new(Breaker::default()),
            redactor,
            book: std::sync::Arc::default(),
            budget: Mutex::new(HashMap::new()),
            totals: Mutex::new(UsageTotals::default()),
            notes: Mutex::new(HashMap::new()),
            budget_store: std::sync::OnceLock::new(),
            history,
            group_runs: Mutex::new(HashMap::new()),
            followers: Mutex::new(tokio::task::JoinSet::new()),
            stop_followers: CancellationToken::new(),
        }
    }

    /// Counts one run against `cluster`'s daily budget, or says why the
    /// budget is used up (then nothing is counted).
    fn reserve_run(&self, cluster: &str) -> Result<(), String> {
        let (runs_cap, usd_cap) = (self.cfg.daily_budget.runs, self.cfg.daily_budget.usd);
        if runs_cap.is_none() && usd_cap.is_none() {
            return Ok(());
        }
        let today = utc_day();
        let mut b = self.budget.lock().expect("budget lock");
        let e = b.entry(cluster.to_string()).or_default();
        if e.day != today {
            *e = DayUse {
                day: today,
                ..DayUse::default()
            };
        }
        let why = match (runs_cap, usd_cap) {
            (Some(cap), _) if e.runs >= cap => Some(format!(
                "daily agent budget of cluster used up: {} of {cap} runs today (UTC)",
                e.runs
            )),
            (_, Some(cap)) if e.cost_usd >= cap => Some(format!(
                "daily agent budget of cluster used up: ${:.4} of ${cap} today (UTC)",
                e.cost_usd
            )),
            _ => None,
        };
        match why {
            Some(why) => {
                if !e.warned {
                    e.warned = true;
                    tracing::warn!(cluster = %clean_line(cluster, 253), reason = %why, "daily agent budget exhausted: no more agents for this cluster until 00:00 UTC");
                }
                Err(why)
            }
            None => {
                e.runs += 1;
                self.store_day(cluster, e);
                Ok(())
            }
        }
    }

    /// Writes a cluster's day to the state store: the budget outlives a
    /// restart (key: the cluster name; expires after the day is over).
    fn store_day(&self, cluster: &str, e: &DayUse) {
        if let Some(scope) = self.budget_store.get()
            && let Ok(v) = serde_json::to_vec(&StoredDay {
                day: e.day,
                runs: e.runs,
                cost_usd: e.cost_usd,
            })
        {
            let expires = ((e.day + 1) * 86_400 * 1000) as i64;
            scope.put(cluster.as_bytes(), v, Some(expires));
        }
    }

    /// Adds a finished run's usage to the day's cost and the run totals.
    fn account(&self, cluster: &str, usage: &usage::Usage) {
        if let Some(c) = usage.cost_usd {
            let mut b = self.budget.lock().expect("budget lock");
            if let Some(e) = b.get_mut(cluster).filter(|e| e.day == utc_day()) {
                e.cost_usd += c;
                self.store_day(cluster, e);
            }
        }
        self.totals.lock().expect("totals lock").add(
            usage.input_tokens,
            usage.output_tokens,
            usage.cost_usd,
            usage.turns,
        );
    }

    /// The Landlock ruleset for one agent, or why it cannot run.
    fn sandbox_for(&self, launch: &Launch) -> Result<Option<sandbox::ChildRestrictions>, String> {
        if self.cfg.sandbox.mode == Mode::Off {
            return Ok(None);
        }
        if let Some(why) = sandbox::unsupported_reason() {
            return Err(format!(
                "kernel sandbox unavailable ({why}); agents are refused unless `sandbox = \"off\"` (AGENT_SANDBOX=off)"
            ));
        }
        let get = |k: &str| {
            launch
                .env
                .iter()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.as_str())
        };
        let runner_home = self.runner_home.as_deref();
        let agent_home = get("HOME").map(Path::new);
        let private_home = agent_home.filter(|h| Some(*h) != runner_home);
        // The files of the real cluster credentials stay unreadable.
        let mut cfg = self.cfg.sandbox.clone();
        if let Some(g) = &self.cfg.clusters {
            cfg.deny_paths.extend(g.credential_paths());
        }
        let mut policy = sandbox::Policy::build(
            &cfg,
            &sandbox::Inputs {
                workspace: &launch.cwd,
                private_home,
                program: launch.argv.first().map(String::as_str).unwrap_or(""),
                path_env: get("PATH"),
                runner_home,
                agent_kubeconfig: get("KUBECONFIG"),
            },
        );
        // The cluster proxy listens on an ephemeral loopback port: the agent's
        // only way to its cluster, so it must be reachable through the sandbox.
        if let Some(addr) = self.cfg.clusters.as_ref().and_then(|g| g.proxy_address())
            && !policy.ports.contains(&addr.port())
        {
            policy.ports.push(addr.port());
        }
        tracing::debug!(read = ?policy.read, write = ?policy.write, ports = ?policy.ports, udp = self.cfg.sandbox.allow_udp, "agent sandbox policy");
        Ok(Some(sandbox::ChildRestrictions {
            ruleset: policy.ruleset()?,
            filter: sandbox::socket_filter(self.cfg.sandbox.allow_udp)?,
        }))
    }

    fn launch(
        &self,
        ws: &Workspace,
        doc: &IncidentDoc,
        kubeconfig: &Path,
    ) -> Result<Launch, String> {
        let dir = ws.dir.display().to_string();
        let prompt = ws.prompt_file().display().to_string();
        let o = &PresetOptions {
            kernel_sandbox: self.cfg.sandbox.mode == Mode::Enforce,
            ..(*self.cfg.preset_options).clone()
        };
        let argv = match &self.cfg.command {
            AgentCommand::Shell(line) => vec!["sh".into(), "-c".into(), line.clone()],
            AgentCommand::Argv(t) => presets::expand(t, &self.cfg.model, &prompt, &dir),
            AgentCommand::Preset(p) => {
                presets::expand(&p.template(o), &self.cfg.model, &prompt, &dir)
            }
        };
        // CLI presets get a private HOME holding only what their CLI needs:
        // never the operator's dotfiles, credentials or other sessions.
        let private_home = match &self.cfg.command {
            AgentCommand::Preset(p) if p.is_cli() => Some(
                blocking(|| ws.write_home(&p.home_files(o)))
                    .map_err(|e| format!("cannot prepare the agent's HOME: {e}"))?,
            ),
            _ => None,
        };
        // Event text becomes environment values only, cleaned of control
        // characters (a NUL would make the spawn fail).
        let v = |s: &str| clean_line(s, 1024);
        let r = &doc.resource;
        let mut env = self.passthrough.clone();
        if let Some(home) = &private_home {
            env.retain(|(k, _)| k != "HOME");
            env.push(("HOME".into(), home.display().to_string()));
        }
        if let (AgentCommand::Preset(p), Some(url)) = (&self.cfg.command, &o.base_url)
            && let Some(var) = p.endpoint_var()
        {
            env.retain(|(k, _)| k != var);
            env.push((var.to_string(), url.clone()));
        }
        env.extend([
            ("INCIDENT_ID".to_string(), doc.id.clone()),
            ("INCIDENT_DIR".into(), dir.clone()),
            ("EVENT_FILE".into(), ws.event_file().display().to_string()),
            ("PROMPT_FILE".into(), prompt),
            ("AGENT_MODEL".into(), self.cfg.model.clone()),
            ("CLUSTER".into(), v(&doc.cluster)),
            ("NAMESPACE".into(), v(&doc.namespace)),
            ("RESOURCE_KIND".into(), v(&r.kind)),
            ("RESOURCE_NAME".into(), v(&r.name)),
            ("FAULT_ID".into(), v(doc.fault_id.as_deref().unwrap_or(""))),
            ("SEVERITY".into(), doc.severity.clone()),
            ("TMPDIR".into(), ws.tmp_dir().display().to_string()),
            ("KUBECONFIG".into(), kubeconfig.display().to_string()),
        ]);
        // Without UDP, glibc's resolver still works over TCP when told to
        // (the DNS server's port must be in sandbox_connect_ports).
        if self.cfg.sandbox.mode == Mode::Enforce && !self.cfg.sandbox.allow_udp {
            env.retain(|(k, _)| k != "RES_OPTIONS");
            env.push(("RES_OPTIONS".into(), "use-vc".into()));
        }
        let argv = match &self.cfg.command {
            AgentCommand::Shell(line) => {
                let path = env.iter().rev().find(|(k, _)| k == "PATH");
                cmdline::direct_argv(line, path.map_or("", |(_, v)| v.as_str())).unwrap_or(argv)
            }
            _ => argv,
        };
        Ok(Launch {
            argv,
            cwd: ws.dir.clone(),
            env,
            stdout: ws.stdout_log(),
            stderr: ws.stderr_log(),
            log_max_bytes: self.cfg.retention.log_max_bytes,
        })
    }

    fn output_format(&self) -> presets::OutputFormat {
        match &self.cfg.command {
            AgentCommand::Preset(p) => p.output_format(),
            _ => presets::OutputFormat::Text,
        }
    }

    /// Registers a grouped incident's call and starts the task that writes
    /// its events; returns the previous incident of the group, if any.
    /// The incident's group section as it stands (events attached so far).
    fn group_doc(&self, seq: u64) -> Option<group::GroupDoc> {
        self.group_runs
            .lock()
            .expect("group runs lock")
            .get(&seq)
            .map(GroupRun::doc)
    }

    fn start_group(
        &self,
        seq: u64,
        incident: &std::sync::Arc<runner_core::group::Incident>,
        ws: &Workspace,
    ) -> Option<runner_core::group::PastIncident> {
        incident.set_incident_id(&ws.id);
        let past = blocking(|| self.history.last(&incident.key));
        let file = std::sync::Arc::new(Mutex::new(group::EventsFile::new(ws)));
        let run = GroupRun {
            incident: incident.clone(),
            file: file.clone(),
            previous: past.as_ref().map(|p| p.id.clone()),
            rerender: std::sync::Arc::default(),
            sink_done: CancellationToken::new(),
        };
        let follow = group::Follow {
            incident: incident.clone(),
            ws: ws.clone(),
            file,
            previous: run.previous.clone(),
            sink_done: run.sink_done.clone(),
            stop: self.stop_followers.clone(),
            rerender: run.rerender.clone(),
        };
        self.group_runs
            .lock()
            .expect("group runs lock")
            .insert(seq, run);
        let mut followers = self.followers.lock().expect("followers lock");
        while followers.try_join_next().is_some() {}
        followers.spawn(group::follow(follow));
        past
    }

    /// Outcome of an agent that ran, judged by its exit and its report.
    fn judge(
        &self,
        exit: &Exit,
        ws: &Workspace,
        usage: Option<&usage::Usage>,
    ) -> (Status, SinkResult) {
        let (status, mut result) = self.judge_exit(exit, ws);
        let Some(u) = usage else {
            return (status, result);
        };
        if status == Status::Completed && u.no_cluster_data() {
            return (
                Status::NoClusterData,
                SinkResult::failed(format!(
                    "every kubectl call failed ({} of {}): the investigation holds no cluster data",
                    u.kubectl_failed, u.kubectl_calls
                )),
            );
        }
        // The CLI's own message (claude prints auth errors on stdout) says
        // more than an exit code.
        if status == Status::Failed
            && let (Some(reason), Some(err)) = (&mut result.reason, &u.error)
        {
            reason.push_str(": ");
            reason.push_str(&clean_line(err, 300));
        }
        (status, result)
    }

    fn judge_exit(&self, exit: &Exit, ws: &Workspace) -> (Status, SinkResult) {
        match exit {
            Exit::Killed => (
                Status::Abandoned,
                SinkResult::abandoned("killed at shutdown: grace period over"),
            ),
            Exit::TimedOut { forced } => (
                Status::TimedOut,
                SinkResult::timed_out(format!(
                    "agent exceeded its timeout of {}s{}",
                    self.cfg.timeout.as_secs_f64(),
                    if *forced {
                        " (SIGKILL after grace)"
                    } else {
                        ""
                    }
                )),
            ),
            Exit::Exited { code: Some(0), .. } => {
                let min = self.cfg.min_investigation_bytes;
                // symlink_metadata: a link planted by the agent is not a report.
                match std::fs::symlink_metadata(ws.investigation()) {
                    Ok(m) if m.is_file() && m.len() >= min => {
                        (Status::Completed, SinkResult::completed())
                    }
                    Ok(m) if m.is_file() => (
                        Status::Failed,
                        SinkResult::failed(format!(
                            "output/investigation.md too small ({} bytes, minimum {min})",
                            m.len()
                        )),
                    ),
                    Ok(_) => (
                        Status::Failed,
                        SinkResult::failed("output/investigation.md is not a regular file"),
                    ),
                    Err(_) => (
                        Status::Failed,
                        SinkResult::failed(
                            "agent exited 0 without writing output/investigation.md",
                        ),
                    ),
                }
            }
            Exit::Exited { code: Some(c), .. } => (
                Status::Failed,
                SinkResult::failed(format!("agent exited with code {c}")),
            ),
            Exit::Exited {
                signal: Some(sig), ..
            } => (
                Status::Failed,
                SinkResult::failed(format!("agent killed by signal {sig}")),
            ),
            Exit::Exited { .. } => (
                Status::Failed,
                SinkResult::failed("agent's exit status could not be read"),
            ),
        }
    }

    /// Records the final state: reports, then `incident.json` (so a reader
    /// that sees a terminal status finds the report), Slack, breaker.
    #[allow(clippy::too_many_arguments)]
    fn finish(
        &self,
        seq: u64,
        ws: &Workspace,
        doc: &mut IncidentDoc,
        status: Status,
        result: SinkResult,
        started: Option<Instant>,
        exit_code: Option<i32>,
    ) -> SinkResult {
        doc.notes.extend(
            self.notes
                .lock()
                .expect("notes lock")
                .remove(&seq)
                .unwrap_or_default(),
        );
        doc.status = status;
        doc.completed_at = Some(rfc3339_now());
        doc.duration_ms = started.map(|s| s.elapsed().as_millis() as u64);
        doc.exit_code = exit_code;
        doc.failure_reason = result.reason.clone();

        // Everything the agent wrote is redacted before any use of it.
        let investigation = read_capped(&ws.investigation()).map(|s| self.redactor.redact(&s));
        let tail = |p: &Path| {
            (status != Status::Completed)
                .then(|| read_tail(p))
                .flatten()
                .map(|s| self.redactor.redact(&tail_lines(&s, STDERR_TAIL_LINES)))
        };
        let stderr_tail = tail(&ws.stderr_log());
        let stdout_tail = tail(&ws.stdout_log());
        let run = self
            .group_runs
            .lock()
            .expect("group runs lock")
            .get(&seq)
            .map(|g| (g.doc(), g.incident.clone(), g.rerender.clone()));
        if let Some((g, _, _)) = &run {
            doc.group = Some(g.clone());
        }
        write_reports(
            &self.redactor,
            ws,
            doc,
            investigation.as_deref(),
            stderr_tail.as_deref(),
            stdout_tail.as_deref(),
        );
        if let Some((_, incident, rerender)) = run {
            // Events that attach from now on (recurrences) update the
            // counts in the reports: the follower re-renders them.
            let (redactor, ws2, base) = (self.redactor.clone(), ws.clone(), doc.clone());
            let (investigation, stderr_tail, stdout_tail) = (
                investigation.clone(),
                stderr_tail.clone(),
                stdout_tail.clone(),
            );
            *rerender.lock().expect("rerender lock") =
                Some(Box::new(move |g: &group::GroupDoc| {
                    let mut d = base.clone();
                    d.group = Some(g.clone());
                    write_reports(
                        &redactor,
                        &ws2,
                        &d,
                        investigation.as_deref(),
                        stderr_tail.as_deref(),
                        stdout_tail.as_deref(),
                    );
                }));
            if status == Status::Completed {
                self.history.record(
                    &incident.key,
                    runner_core::group::PastIncident {
                        id: doc.id.clone(),
                        dir: ws.dir.clone(),
                        status: "completed".into(),
                        ended_at: doc.completed_at.clone(),
                    },
                );
            }
        }
        if let Err(e) = ws.write_incident(doc) {
            tracing::error!(incident = %doc.id, error = %e, "cannot write incident.json");
        }
        self.book.update(doc, seq, &ws.dir);

        let result = result.with_incident(runner_core::state::IncidentMeta {
            id: doc.id.clone(),
            workspace: ws.dir.display().to_string(),
            cost_micro_usd: doc
                .usage
                .as_ref()
                .and_then(|u| u.cost_usd)
                .map(|c| (c.max(0.0) * 1e6).round() as u64),
            input_tokens: doc.usage.as_ref().and_then(|u| u.input_tokens),
            output_tokens: doc.usage.as_ref().and_then(|u| u.output_tokens),
        });
        let outcome = result.outcome;
        let reason = result.reason.as_deref().unwrap_or("");
        if outcome == Outcome::Completed {
            tracing::info!(incident = %doc.id, outcome = %outcome, duration_ms = doc.duration_ms, report = %ws.report_md().display(), "agent finished");
        } else {
            tracing::warn!(incident = %doc.id, outcome = %outcome, reason = %reason, duration_ms = doc.duration_ms, workspace = %ws.dir.display(), "agent finished");
        }

        if matches!(outcome, Outcome::Abandoned | Outcome::OverBudget) {
            return result;
        }
        if !self.notices.is_empty() {
            let rc = investigation.as_deref().and_then(report::root_cause);
            // With a public URL the notice links to the incident's page;
            // otherwise it names the report's path on this host.
            let report = match &self.cfg.public_url {
                Some(u) => std::path::PathBuf::from(runner_core::status::incident_url(u, &doc.id)),
                None => ws.report_md(),
            };
            self.notices.send(&Notice::Incident {
                doc,
                root_cause: rc.as_ref(),
                report: &report,
            });
        }
        self.breaker_record(&result);
        result
    }

    /// Records an incident whose agent never started (no duration, no exit).
    fn not_started(
        &self,
        seq: u64,
        ws: &Workspace,
        doc: &mut IncidentDoc,
        status: Status,
        result: SinkResult,
    ) -> SinkResult {
        self.finish_blocking(seq, ws, doc, status, result, None, None)
    }

    #[allow(clippy::too_many_arguments)]
    fn finish_blocking(
        &self,
        seq: u64,
        ws: &Workspace,
        doc: &mut IncidentDoc,
        status: Status,
        result: SinkResult,
        started: Option<Instant>,
        exit_code: Option<i32>,
    ) -> SinkResult {
        blocking(|| self.finish(seq, ws, doc, status, result, started, exit_code))
    }

    /// Feeds the circuit breaker; logs and posts its degraded/recovered signals.
    fn breaker_record(&self, result: &SinkResult) {
        let signal = {
            let mut b = self.breaker.lock().expect("breaker lock");
            match result.outcome {
                Outcome::Completed => b.success(),
                Outcome::Abandoned => None,
                _ => b.failure(self.cfg.failure_alert_threshold),
            }
        };
        let reason = result.reason.as_deref().unwrap_or("");
        let notice = match signal {
            None => return,
            Some(BreakerSignal::Degraded(n)) => {
                tracing::error!(consecutive_failures = n, last_reason = %reason, "agents degraded");
                Notice::Degraded {
                    consecutive: n,
                    last_reason: reason,
                }
            }
            Some(BreakerSignal::Recovered(n)) => {
                tracing::info!(after_failures = n, "agents recovered");
                Notice::Recovered { failures: n }
            }
        };
        self.notices.send(&notice);
    }
}

/// Process-level work for `runner run`, after logging is up: says loudly
/// whether agents will be sandboxed, and kills what agents of a previous
/// run (a runner that was SIGKILLed) left alive.
pub(crate) fn startup(cfg: &AgentSinkConfig) {
    if let AgentCommand::Preset(p) = &cfg.command
        && let Some(why) = p.untested()
    {
        tracing::warn!(preset = p.name(), "agent preset {why}");
    }
    match cfg.sandbox.mode {
        Mode::Off => tracing::warn!(
            "agent sandbox is OFF (sandbox = \"off\"): agents can read and write whatever the runner's user can, and connect anywhere"
        ),
        Mode::Enforce => match sandbox::unsupported_reason() {
            Some(why) => tracing::error!(
                reason = %why,
                "agent sandbox unavailable: every agent will be refused (failed) until the kernel supports Landlock ABI >= 4, or the operator sets sandbox = \"off\""
            ),
            None => {
                tracing::info!(
                    landlock_abi = sandbox::kernel_abi(),
                    connect_ports = ?cfg.sandbox.connect_ports,
                    udp = if cfg.sandbox.allow_udp { "allowed" } else { "denied" },
                    "agent sandbox enforced (Landlock, seccomp socket filter)"
                );
                if !cfg.sandbox.allow_udp && !cfg.sandbox.connect_ports.contains(&53) {
                    tracing::warn!(
                        "agent sandbox: UDP denied and TCP port 53 not allowed: agents can resolve only names in /etc/hosts; a model endpoint given by host name needs port 53 in sandbox_connect_ports (a DNS server that answers over TCP), an /etc/hosts entry, or sandbox_udp = \"allow\" (docs/agents.md, DNS)"
                    );
                }
                if cfg.sandbox.allow_udp {
                    tracing::warn!(
                        "agent sandbox: UDP allowed (sandbox_udp = \"allow\"): an agent can send datagrams to any host and port"
                    );
                }
                for f in sandbox::missing_features() {
                    tracing::warn!(
                        feature = f,
                        "agent sandbox: kernel lacks a Landlock feature"
                    );
                }
            }
        },
    }
    reap_previous_run(cfg);
}

/// Kills leftovers of a previous run recorded under the workspace root.
pub(crate) fn reap_previous_run(cfg: &AgentSinkConfig) {
    let Ok(root) = cfg.workspace_root.canonicalize() else {
        return;
    };
    for (incident, killed) in contain::kill_leftovers(&root) {
        tracing::warn!(
            incident = %incident,
            count = killed.len(),
            processes = %process::describe(&killed),
            "killed processes left alive by an agent of a previous run"
        );
    }
}

/// Renders and writes `report.md` and `report.html` of `doc`.
fn write_reports(
    redactor: &Redactor,
    ws: &Workspace,
    doc: &IncidentDoc,
    investigation: Option<&str>,
    stderr_tail: Option<&str>,
    stdout_tail: Option<&str>,
) {
    let md = report::render_markdown(
        doc,
        &Findings {
            investigation,
            stderr_tail,
            stdout_tail,
        },
    );
    // Event fields too can carry a secret (the agent cannot write them,
    // but a hostile event can quote one it learned elsewhere).
    let md = redactor.redact(&md);
    let html = report::render_html(&format!("Incident {}", doc.id), &md);
    for (name, bytes) in [
        ("report.md", md.as_bytes()),
        ("report.html", html.as_bytes()),
    ] {
        if let Err(e) = ws.write_atomic(name, bytes) {
            tracing::error!(incident = %doc.id, error = %e, "cannot write {name}");
        }
    }
}

/// Stamps the phases of an event's path to its agent ([`Timings`]): one
/// clock read per phase, on the sink's path only.
struct PhaseClock {
    received: Instant,
    last: Instant,
    timings: Timings,
}

impl PhaseClock {
    fn start(envelope: &Envelope) -> PhaseClock {
        let now = Instant::now();
        let us = |d: std::time::Duration| d.as_micros() as u64;
        let mut timings = Timings::default();
        let queued_since = match &envelope.chain {
            Some(c) => {
                timings.intake_wait_us = Some(us(c
                    .started
                    .saturating_duration_since(envelope.received_at)));
                timings.stages_us = Some(us(c.passed.saturating_duration_since(c.started)));
                c.passed
            }
            None => envelope.received_at,
        };
        timings.router_us = us(now.saturating_duration_since(queued_since));
        PhaseClock {
            received: envelope.received_at,
            last: now,
            timings,
        }
    }

    /// Microseconds since the previous lap.
    fn lap(&mut self) -> u64 {
        let now = Instant::now();
        let d = now.saturating_duration_since(self.last);
        self.last = now;
        d.as_micros() as u64
    }

    fn finish(mut self) -> Timings {
        let total = self.last.saturating_duration_since(self.received);
        // Wall clock of the spawn, and of the arrival by going back the
        // monotonic time in between.
        let wall = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let spawned = wall.saturating_sub(Instant::now().saturating_duration_since(self.last));
        self.timings.spawned_unix_us = spawned.as_micros() as u64;
        self.timings.received_unix_us = spawned.saturating_sub(total).as_micros() as u64;
        self.timings.total_us = total.as_micros() as u64;
        self.timings
    }
}

/// Runs filesystem work (fsyncs included) without stalling the other tasks
/// of a multi-thread runtime's worker; inline on a current-thread runtime
/// (tests), where `block_in_place` is not available.
fn blocking<R>(f: impl FnOnce() -> R) -> R {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        _ => f(),
    }
}

fn read_capped(path: &Path) -> Option<String> {
    use std::io::Read;
    let meta = std::fs::symlink_metadata(path).ok()?;
    if !meta.is_file() {
        return None;
    }
    let mut buf = Vec::new();
    std::fs::File::open(path)
        .ok()?
        .take(MAX_INVESTIGATION_BYTES)
        .read_to_end(&mut buf)
        .ok()?;
    Some(String::from_utf8_lossy(&buf).into_owned())
}

/// The last `MAX_INVESTIGATION_BYTES` of a log (its end is what matters).
fn read_tail(path: &Path) -> Option<String> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(path).ok()?;
    let len = f.metadata().ok()?.len();
    f.seek(SeekFrom::Start(len.saturating_sub(MAX_INVESTIGATION_BYTES)))
        .ok()?;
    let mut buf = Vec::new();
    f.read_to_end(&mut buf).ok()?;
    Some(String::from_utf8_lossy(&buf).into_owned())
}

fn tail_lines(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..]
        .iter()
        .map(|l| {
            if l.chars().count() > TAIL_LINE_CHARS {
                let cut: String = l.chars().take(TAIL_LINE_CHARS).collect();
                format!("{cut} …")
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[async_trait]
impl Sink for AgentSink {
    fn name(&self) -> &str {
        "agent"
    }

    /// Kept for the incident's record (`notes` in incident.json, a line in
    /// the report's timeline); the agent goes on. Never blocks on I/O.
    fn note(&self, seq: u64, note: &str) {
        let text = clean_line(note, 1024);
        let mut notes = self.notes.lock().expect("notes lock");
        match notes.get_mut(&seq) {
            Some(list) => {
                tracing::info!(seq, note = %text, "note on a running incident");
                list.push(workspace::NoteDoc {
                    time: rfc3339_now(),
                    text,
                });
            }
            None => tracing::debug!(seq, "note for an event this sink is not handling"),
        }
    }

    async fn handle(&self, envelope: &Envelope, kill: CancellationToken) -> SinkResult {
        let mut clock = PhaseClock::start(envelope);
        let ev = &envelope.event;
        self.notes
            .lock()
            .expect("notes lock")
            .insert(envelope.seq, Vec::new());
        // Every return below goes through `finish`, which takes the entry;
        // this guard drops it on the early return before the workspace.
        let _forget = ForgetNotes(&self.notes, envelope.seq);
        let ws = match blocking(|| Workspace::create(&self.cfg.workspace_root, envelope.seq)) {
            Ok(ws) => ws,
            Err(e) => {
                tracing::error!(root = %self.cfg.workspace_root.display(), error = %e, "cannot create incident workspace");
                let result = SinkResult::failed(format!("cannot create incident workspace: {e}"));
                self.breaker_record(&result);
                return result;
            }
        };
        clock.timings.workspace_us = clock.lap();
        let mut doc = IncidentDoc::new(&ws.id, ev);
        let _group_guard = GroupRunGuard {
            sink: self,
            seq: envelope.seq,
        };
        let mut group_prompt = String::new();
        if let Some(incident) = &ev.group {
            let past = self.start_group(envelope.seq, incident, &ws);
            if let Some(g) = self.group_doc(envelope.seq) {
                doc.group = Some(g);
            }
            blocking(|| ws.write_incident(&doc)).ok();
            self.book.update(&doc, envelope.seq, &ws.dir);
            // `group_wait`: the burst that opened the incident is collected
            // before the agent starts (already over if it waited in a queue).
            tokio::select! {
                _ = tokio::time::sleep_until(incident.wait_until) => {}
                _ = kill.cancelled() => {
                    return self.not_started(envelope.seq, &ws, &mut doc, Status::Abandoned, SinkResult::abandoned("shutdown before the agent started"));
                }
            }
            if let Some(run) = self
                .group_runs
                .lock()
                .expect("group runs lock")
                .get(&envelope.seq)
            {
                group::flush(incident, &run.file);
                let file = run.file.lock().expect("events file lock");
                group_prompt = group::prompt_events(incident, &file);
                drop(file);
                doc.group = Some(run.doc());
            }
            if let Some(p) = &past {
                group_prompt.push_str(&blocking(|| {
                    group::prompt_last_time(p, |t| self.redactor.redact(t))
                }));
            }
            clock.timings.group_us = Some(clock.lap());
        }
        // Held until the agent is gone: dropping a grant revokes its token.
        let access = match &self.cfg.clusters {
            // A credential check can take a while; shutdown must not wait for it.
            Some(g) => tokio::select! {
                a = g.access(&ev.cluster, &ws.id) => a,
                _ = kill.cancelled() => {
                    return self.not_started(envelope.seq, &ws, &mut doc, Status::Abandoned, SinkResult::abandoned("shutdown before the agent started"));
                }
            },
            None => Access::None(
                "no [[cluster]] is configured: by design the agent cannot reach any cluster".into(),
            ),
        };
        let (access_note, kubeconfig) = match &access {
            Access::Granted(g) => (
                format!(
                    "Read-only, through the runner's proxy: `kubectl` uses `$KUBECONFIG` (cluster {} only). Writes, Secrets, exec/attach/port-forward, proxies and watches are refused.",
                    clean_line(g.cluster(), 253)
                ),
                g.kubeconfig(),
            ),
            Access::None(why) | Access::Disabled(why) => (
                format!(
                    "None: {why}. Do not try to reach the cluster; investigate from the incident data below and state in your report that the cluster was not reachable."
                ),
                cluster::NO_ACCESS_KUBECONFIG.to_string(),
            ),
        };
        doc.cluster_access = Some(match &access {
            Access::Granted(_) => "read-only through the runner's proxy".to_string(),
            Access::None(why) => format!("none: {why}"),
            Access::Disabled(why) => format!("disabled: {why}"),
        });
        // The agent's inputs are written without fsync and synced once it
        // runs (a crash before that leaves an incident that never started).
        let mut prompt = prompt::render(&self.cfg.prompt, &doc, &ws, &access_note);
        prompt.push_str(&group_prompt);
        clock.timings.access_prompt_us = clock.lap();
        let prepared = blocking(|| {
            let event = serde_json::to_vec_pretty(&*ev.raw).map_err(std::io::Error::other)?;
            let incident = serde_json::to_vec_pretty(&doc).map_err(std::io::Error::other)?;
            ws.write_inputs_unsynced(&[
                ("event.json", &event),
                ("prompt.md", prompt.as_bytes()),
                (KUBECONFIG_FILE, kubeconfig.as_bytes()),
                ("incident.json", &incident),
            ])
        });
        clock.timings.inputs_us = clock.lap();
        self.book.update(&doc, envelope.seq, &ws.dir);
        let unsynced = match prepared {
            Ok(paths) => paths,
            Err(e) => {
                return self.not_started(
                    envelope.seq,
                    &ws,
                    &mut doc,
                    Status::Failed,
                    SinkResult::failed(format!("cannot prepare workspace: {e}")),
                );
            }
        };
        if let Access::Disabled(why) = &access {
            return self.not_started(
                envelope.seq,
                &ws,
                &mut doc,
                Status::Failed,
                SinkResult::failed(format!("triage disabled: {why}")),
            );
        }
        if kill.is_cancelled() {
            return self.not_started(
                envelope.seq,
                &ws,
                &mut doc,
                Status::Abandoned,
                SinkResult::abandoned("shutdown before the agent started"),
            );
        }

        if let Err(why) = self.reserve_run(&ev.cluster) {
            return self.not_started(
                envelope.seq,
                &ws,
                &mut doc,
                Status::OverBudget,
                SinkResult::over_budget(why),
            );
        }
        let launch = match self.launch(&ws, &doc, &ws.dir.join(KUBECONFIG_FILE)) {
            Ok(l) => l,
            Err(e) => {
                return self.not_started(
                    envelope.seq,
                    &ws,
                    &mut doc,
                    Status::Failed,
                    SinkResult::failed(e),
                );
            }
        };
        if let AgentCommand::Preset(p) = &self.cfg.command {
            let path = launch
                .env
                .iter()
                .find(|(k, _)| k == "PATH")
                .map(|(_, v)| v.as_str())
                .unwrap_or("");
            if presets::which(p.program(), path).is_none() {
                return self.finish_blocking(
                envelope.seq,
                    &ws,
                    &mut doc,
                    Status::Failed,
                    SinkResult::failed(format!(
                        "the {} CLI (`{}`) is not installed on the runner's PATH; see docs/agents.md",
                        p.name(),
                        p.program()
                    )),
                    None,
                    None,
                );
            }
        }
        let started = Instant::now();
        doc.sandbox = Some(self.cfg.sandbox.mode.as_str().to_string());
        let ruleset = match blocking(|| self.sandbox_for(&launch)) {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(incident = %doc.id, error = %e, "agent not started");
                return self.not_started(
                    envelope.seq,
                    &ws,
                    &mut doc,
                    Status::Failed,
                    SinkResult::failed(format!("cannot start agent: {e}")),
                );
            }
        };
        doc.started_at = Some(rfc3339_now());
        doc.status = Status::Running;
        if let Some(g) = self.group_doc(envelope.seq) {
            doc.group = Some(g);
        }
        let records = ws.dir.parent().map(contain::records_dir);
        clock.timings.prepare_us = clock.lap();
        // The fork happens on the spawner thread; waiting for it must not
        // hold up the other tasks of this worker.
        let running =
            match blocking(|| process::spawn(&launch, &ws.id, ruleset, records.as_deref())) {
                Ok(r) => r,
                Err(e) => {
                    return self.finish_blocking(
                        envelope.seq,
                        &ws,
                        &mut doc,
                        Status::Failed,
                        SinkResult::failed(format!("cannot start agent: {e}")),
                        Some(started),
                        None,
                    );
                }
            };
        clock.timings.spawn_us = clock.lap();
        doc.timings = Some(clock.finish());
        // incident.json (the last input) is replaced, with fsync, just below.
        if let Err(e) = blocking(|| workspace::sync_files(&unsynced[..unsynced.len() - 1])) {
            tracing::error!(incident = %doc.id, error = %e, "cannot sync the agent's input files");
        }
        if let Err(e) = blocking(|| ws.write_incident(&doc)) {
            tracing::error!(incident = %doc.id, error = %e, "cannot write incident.json");
        }
        self.book.update(&doc, envelope.seq, &ws.dir);
        tracing::info!(
            incident = %doc.id,
            pid = running.pid,
            cluster = %clean_line(&ev.cluster, 253),
            namespace = %clean_line(&ev.resource.namespace, 253),
            resource = %format!("{}/{}", clean_line(&ev.resource.kind, 253), clean_line(&ev.resource.name, 253)),
            fault_type = %clean_line(&ev.fault_type, 253),
            severity = %ev.severity,
            workspace = %ws.dir.display(),
            "agent started"
        );
        let Finished { exit, leftovers } = running
            .wait(self.cfg.timeout, self.cfg.kill_grace, &kill)
            .await;
        doc.leftover_processes = leftovers
            .iter()
            .map(|p| LeftoverProcess {
                pid: p.pid,
                name: clean_line(&p.comm, 32),
            })
            .collect();
        let exit_code = match &exit {
            Exit::Exited { code, .. } => *code,
            _ => None,
        };
        // The agent is gone: its token ends now, before the report is written.
        drop(access);
        let usage = blocking(|| usage::parse_file(self.output_format(), &ws.stdout_log()));
        if let Some(u) = &usage {
            self.account(&ev.cluster, u);
            tracing::info!(incident = %doc.id, usage = %u.summary(), "agent usage");
        }
        let (status, result) = self.judge(&exit, &ws, usage.as_ref());
        doc.usage = usage;
        self.finish_blocking(
            envelope.seq,
            &ws,
            &mut doc,
            status,
            result,
            Some(started),
            exit_code,
        )
    }

    async fn close(&self) {
        if let Some(g) = &self.cfg.clusters {
            g.close();
        }
        self.stop_followers.cancel();
        let mut followers = std::mem::take(&mut *self.followers.lock().expect("followers lock"));
        // Each does one last flush; a stuck disk must not hold shutdown.
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), async {
            while followers.join_next().await.is_some() {}
        })
        .await;
        followers.abort_all();
        self.notices.close().await;
    }

    fn incident_log(&self) -> Option<std::sync::Arc<dyn runner_core::status::IncidentLog>> {
        Some(self.book.clone())
    }

    /// Restores today's budget use per cluster (older days are ignored).
    fn attach_state(
        &self,
        scope: runner_core::state::StateScope,
        entries: Vec<(Vec<u8>, Vec<u8>)>,
    ) {
        let today = utc_day();
        let mut b = self.budget.lock().expect("budget lock");
        for (k, v) in entries {
            let (Ok(cluster), Ok(d)) = (
                String::from_utf8(k),
                serde_json::from_slice::<StoredDay>(&v),
            ) else {
                continue;
            };
            if d.day == today {
                tracing::info!(cluster = %clean_line(&cluster, 253), runs = d.runs, cost_usd = d.cost_usd, "daily agent budget use restored from the state store");
                b.insert(
                    cluster,
                    DayUse {
                        day: d.day,
                        runs: d.runs,
                        cost_usd: d.cost_usd,
                        warned: false,
                    },
                );
            }
        }
        drop(b);
        let _ = self.budget_store.set(scope);
    }

    fn usage_totals(&self) -> UsageTotals {
        *self.totals.lock().expect("totals lock")
    }
}
