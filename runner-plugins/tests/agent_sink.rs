//! The agent sink in-process with real subprocesses (fake agents are small
//! sh scripts): workspace layout, outcomes, timeouts, process-group kills,
//! shutdown, path sanitization, config validation.

mod agent_support;

use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use agent_support::*;
use runner_core::config::{ConfigErrors, Overrides, TableReader};
use runner_core::{CancellationToken, Outcome, Sink};
use runner_plugins::component::{BuildContext, ComponentConfig, ReadContext};
use runner_plugins::sinks::agent::{AgentCommand, AgentSink, AgentSinkConfig, Preset, sandbox};

fn mode(p: &std::path::Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[tokio::test]
async fn completed_incident_has_full_workspace() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("incidents");
    let script = fake_agent(tmp.path(), "agent.sh", GOOD);
    let sink = AgentSink::new(config_shell(&root, &script));
    let env = envelope(42);
    let res = sink.handle(&env, CancellationToken::new()).await;
    assert_eq!(res.outcome, Outcome::Completed, "{res:?}");

    let dir = only_incident(&root);
    let id = dir.file_name().unwrap().to_str().unwrap().to_string();
    // 20261127T121500Z-000042-9f3a1c2e
    assert_eq!(id.len(), 32, "{id}");
    assert_eq!(&id[8..9], "T");
    assert_eq!(&id[15..17], "Z-");
    assert_eq!(&id[17..24], "000042-");
    assert!(id[24..].chars().all(|c| c.is_ascii_hexdigit()), "{id}");
    assert_eq!(mode(&dir), 0o700);
    for sub in ["output", "logs"] {
        assert!(dir.join(sub).is_dir(), "{sub}");
    }

    let event: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("event.json")).unwrap()).unwrap();
    assert_eq!(&event, env.event.raw.as_ref());

    let prompt = std::fs::read_to_string(dir.join("prompt.md")).unwrap();
    assert!(
        prompt.starts_with("# Kubernetes fault triage (read-only)"),
        "{prompt}"
    );
    assert!(prompt.contains(&format!("- Incident ID: {id}")));
    assert!(prompt.contains("- Resource: Pod/payments-api-7d9f8b6c5-x2k4q"));
    assert!(prompt.contains("Container entered CrashLoopBackOff state"));

    let inc = incident_json(&dir);
    assert_eq!(inc["id"], id.as_str());
    assert_eq!(inc["faultId"], "f00d");
    assert_eq!(inc["cluster"], "prod-us-east-1");
    assert_eq!(inc["namespace"], "payments");
    assert_eq!(inc["resource"]["kind"], "Pod");
    assert_eq!(inc["resource"]["name"], "payments-api-7d9f8b6c5-x2k4q");
    assert_eq!(inc["faultType"], "CrashLoop");
    assert_eq!(inc["severity"], "CRITICAL");
    assert_eq!(inc["status"], "completed");
    assert_eq!(inc["exitCode"], 0);
    assert!(inc["failureReason"].is_null());
    assert!(inc["durationMs"].as_u64().is_some());
    for k in ["createdAt", "startedAt", "completedAt"] {
        let t = inc[k].as_str().unwrap_or_else(|| panic!("{k}"));
        assert!(t.ends_with('Z') && t.len() == 24, "{k}: {t}");
    }
    assert!(inc["createdAt"].as_str() <= inc["startedAt"].as_str());
    assert!(inc["startedAt"].as_str() <= inc["completedAt"].as_str());

    let stdout = std::fs::read_to_string(dir.join("logs/agent-stdout.log")).unwrap();
    assert_eq!(stdout.trim(), "agent-stdout-marker");
    assert!(dir.join("logs/agent-stderr.log").exists());

    let md = std::fs::read_to_string(dir.join("report.md")).unwrap();
    assert!(
        md.contains("## Fault") && md.contains("## Timeline") && md.contains("## Agent findings")
    );
    assert!(md.contains("lacks the DATABASE_URL default"));
    assert!(md.contains("agent finished: **completed**"));
    let html = std::fs::read_to_string(dir.join("report.html")).unwrap();
    assert!(html.starts_with("<!DOCTYPE html>"));
    // The agent's headings nest under the report's "Agent findings".
    assert!(html.contains("<h2>Agent findings</h2>"), "{html}");
    assert!(html.contains("<h3>Root Cause</h3>"), "{html}");
    // Atomic writes leave no temp files behind; written files are private.
    for e in std::fs::read_dir(&dir).unwrap() {
        let name = e.unwrap().file_name().into_string().unwrap();
        assert!(!name.starts_with('.'), "leftover {name}");
    }
    for f in ["incident.json", "event.json", "prompt.md", "kubeconfig"] {
        assert_eq!(mode(&dir.join(f)), 0o600, "{f}");
    }
    assert_eq!(mode(&dir.join("logs/agent-stdout.log")), 0o600);
}

#[tokio::test]
async fn demo_preset_writes_an_investigation() {
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = AgentSinkConfig::new(AgentCommand::Preset(Preset::Demo), tmp.path());
    cfg.timeout = Duration::from_secs(20);
    let sink = AgentSink::new(cfg);
    let res = sink.handle(&envelope(1), CancellationToken::new()).await;
    assert_eq!(res.outcome, Outcome::Completed, "{res:?}");
    let dir = only_incident(tmp.path());
    let inv = std::fs::read_to_string(dir.join("output/investigation.md")).unwrap();
    assert!(inv.contains("## Root Cause"), "{inv}");
    assert!(inv.contains("crash") || inv.contains("exiting"), "{inv}");
    assert!(inv.contains("payments-api-7d9f8b6c5-x2k4q"));
    assert!(
        inv.contains("\"faultId\": \"f00d\""),
        "event.json embedded: {inv}"
    );
}

#[tokio::test]
async fn failures_are_detected() {
    let tmp = tempfile::tempdir().unwrap();
    let cases = [
        (
            "exit3",
            format!("{GOOD}\nexit 3"),
            "agent exited with code 3",
            Some(3),
        ),
        (
            "missing",
            "echo did nothing".to_string(),
            "without writing output/investigation.md",
            Some(0),
        ),
        (
            "tiny",
            "mkdir -p output; printf 'ok' > output/investigation.md".to_string(),
            "too small (2 bytes, minimum 100)",
            Some(0),
        ),
        (
            "symlink",
            "mkdir -p output; ln -s /etc/passwd output/investigation.md".to_string(),
            "not a regular file",
            Some(0),
        ),
        (
            "signal",
            "kill -9 $$".to_string(),
            "killed by signal 9",
            None,
        ),
    ];
    for (name, body, why, code) in cases {
        let root = tmp.path().join(name);
        let script = fake_agent(tmp.path(), &format!("{name}.sh"), &body);
        let sink = AgentSink::new(config(&root, &script));
        let res = sink.handle(&envelope(1), CancellationToken::new()).await;
        assert_eq!(res.outcome, Outcome::Failed, "{name}: {res:?}");
        let reason = res.reason.unwrap();
        assert!(reason.contains(why), "{name}: {reason}");
        let inc = incident_json(&only_incident(&root));
        assert_eq!(inc["status"], "failed", "{name}");
        assert_eq!(inc["failureReason"], reason.as_str());
        assert_eq!(inc["exitCode"].as_i64(), code.map(i64::from), "{name}");
    }
    // A program that does not exist: spawn error, still one incident, failed.
    let root = tmp.path().join("spawn");
    let mut cfg = AgentSinkConfig::new(
        AgentCommand::Argv(vec![
            "/nonexistent/agent-cli".into(),
            "{prompt_file}".into(),
        ]),
        &root,
    );
    cfg.timeout = Duration::from_secs(5);
    let res = AgentSink::new(cfg)
        .handle(&envelope(2), CancellationToken::new())
        .await;
    assert_eq!(res.outcome, Outcome::Failed);
    assert!(
        res.reason
            .as_deref()
            .unwrap()
            .contains("cannot start agent"),
        "{res:?}"
    );
    let dir = only_incident(&root);
    assert_eq!(incident_json(&dir)["status"], "failed");
    assert!(dir.join("report.md").exists());

    // The workspace root cannot be created (a file is in the way).
    let blocker = tmp.path().join("not-a-dir");
    std::fs::write(&blocker, "x").unwrap();
    let script = fake_agent(tmp.path(), "never.sh", "touch \"$INCIDENT_DIR/../../RAN\"");
    let res = AgentSink::new(config(&blocker.join("root"), &script))
        .handle(&envelope(3), CancellationToken::new())
        .await;
    assert_eq!(res.outcome, Outcome::Failed);
    assert!(
        res.reason
            .as_deref()
            .unwrap()
            .contains("cannot create incident workspace"),
        "{res:?}"
    );
    assert!(!tmp.path().join("RAN").exists());
}

#[tokio::test]
async fn argv_command_gets_placeholders_expanded() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    let script = fake_agent(
        tmp.path(),
        "argv.sh",
        &format!("printf '%s\\n' \"$@\" > args.txt\n{GOOD}"),
    );
    let mut cfg = AgentSinkConfig::new(
        AgentCommand::Argv(vec![
            "sh".into(),
            script.display().to_string(),
            "--model={model}".into(),
            "{prompt_file}".into(),
            "{workspace}".into(),
        ]),
        &root,
    );
    cfg.model = "opus".into();
    cfg.sandbox.read_paths.push(tmp.path().to_path_buf());
    let res = AgentSink::new(cfg)
        .handle(&envelope(3), CancellationToken::new())
        .await;
    assert_eq!(res.outcome, Outcome::Completed, "{res:?}");
    let dir = only_incident(&root);
    let args = std::fs::read_to_string(dir.join("args.txt")).unwrap();
    let canon = dir.canonicalize().unwrap();
    assert_eq!(
        args,
        format!(
            "--model=opus\n{}\n{}\n",
            canon.join("prompt.md").display(),
            canon.display()
        )
    );
}

/// The fake agent ignores SIGTERM (so does its grandchild, inheriting the
/// disposition): only SIGKILL after the grace ends them.
#[tokio::test]
async fn timeout_kills_the_whole_process_group() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    let script = fake_agent(
        tmp.path(),
        "stubborn.sh",
        "trap '' TERM\nsleep 300 &\necho $! > child.pid\necho $$ > leader.pid\nwhile :; do sleep 1; done",
    );
    let mut cfg = config(&root, &script);
    cfg.timeout = Duration::from_millis(700);
    cfg.kill_grace = Duration::from_millis(500);
    let t0 = Instant::now();
    let res = AgentSink::new(cfg)
        .handle(&envelope(1), CancellationToken::new())
        .await;
    let took = t0.elapsed();
    assert_eq!(res.outcome, Outcome::TimedOut, "{res:?}");
    assert!(
        res.reason
            .as_deref()
            .unwrap()
            .contains("SIGKILL after grace"),
        "{res:?}"
    );
    assert!(took >= Duration::from_millis(1200), "{took:?}");
    assert!(took < Duration::from_secs(10), "{took:?}");
    let dir = only_incident(&root);
    let (child, leader) = (
        read_pid(&dir.join("child.pid")),
        read_pid(&dir.join("leader.pid")),
    );
    assert!(pid_dead(child), "grandchild {child} survived");
    assert!(pid_dead(leader), "agent {leader} survived");
    let inc = incident_json(&dir);
    assert_eq!(inc["status"], "timed_out");
    assert!(inc["exitCode"].is_null());
}

/// A well-behaved agent ends on SIGTERM: no need to wait for the grace.
#[tokio::test]
async fn timeout_sigterm_suffices_for_a_polite_agent() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    let script = fake_agent(
        tmp.path(),
        "polite.sh",
        "sleep 300 &\necho $! > child.pid\nwait",
    );
    let mut cfg = config(&root, &script);
    cfg.timeout = Duration::from_millis(500);
    cfg.kill_grace = Duration::from_secs(30);
    let t0 = Instant::now();
    let res = AgentSink::new(cfg)
        .handle(&envelope(1), CancellationToken::new())
        .await;
    assert_eq!(res.outcome, Outcome::TimedOut, "{res:?}");
    assert!(
        !res.reason.as_deref().unwrap().contains("SIGKILL"),
        "{res:?}"
    );
    assert!(t0.elapsed() < Duration::from_secs(10), "{:?}", t0.elapsed());
    let dir = only_incident(&root);
    assert!(pid_dead(read_pid(&dir.join("child.pid"))));
}

#[tokio::test]
async fn kill_token_abandons_and_kills_the_group() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    let script = fake_agent(
        tmp.path(),
        "long.sh",
        "sleep 300 &\necho $! > child.pid\necho $$ > leader.pid\nwait",
    );
    let sink = Arc::new(AgentSink::new(config(&root, &script)));
    let kill = CancellationToken::new();
    let task = {
        let (sink, kill) = (sink.clone(), kill.clone());
        tokio::spawn(async move { sink.handle(&envelope(9), kill).await })
    };
    // Wait until the agent (and its grandchild) run.
    let dir = wait_for_incident_dir(&root).await;
    wait_for_file(&dir.join("leader.pid")).await;
    assert_eq!(incident_json(&dir)["status"], "running");
    let t0 = Instant::now();
    kill.cancel();
    let res = task.await.unwrap();
    assert_eq!(res.outcome, Outcome::Abandoned, "{res:?}");
    // At once: far below the agent's 20 s timeout (a loaded machine is slow).
    assert!(t0.elapsed() < Duration::from_secs(10), "{:?}", t0.elapsed());
    assert!(pid_dead(read_pid(&dir.join("child.pid"))));
    assert!(pid_dead(read_pid(&dir.join("leader.pid"))));
    assert_eq!(incident_json(&dir)["status"], "abandoned");
    // Cancelled before starting: abandoned without spawning anything.
    let root2 = tmp.path().join("root2");
    let sink = AgentSink::new(config(&root2, &script));
    let kill = CancellationToken::new();
    kill.cancel();
    let res = sink.handle(&envelope(10), kill).await;
    assert_eq!(res.outcome, Outcome::Abandoned);
    assert!(!only_incident(&root2).join("leader.pid").exists());
}

#[tokio::test]
async fn hostile_event_strings_stay_inside_the_root() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    let script = fake_agent(
        tmp.path(),
        "agent.sh",
        &format!(
            "cat \"$PROMPT_FILE\" > prompt-copy.md\nprintf '%s' \"$RESOURCE_NAME\" > name.txt\n{GOOD}"
        ),
    );
    let mut raw = payload("../../etc", "../..", "../Pod", "placeholder");
    raw["context"] =
        serde_json::json!("'; touch PWNED4; echo ' $(touch PWNED5) ``` <script>alert(1)</script>");
    let mut env = envelope_of(raw, 5);
    // The parser refuses control characters in names; the sink must stay
    // safe even if one gets through (defense in depth), so set it directly.
    env.event.resource.name =
        "../../etc/passwd$(touch PWNED1)`touch PWNED2`;touch PWNED3\u{0}x\nnext".to_string();
    let res = AgentSink::new(config_shell(&root, &script))
        .handle(&env, CancellationToken::new())
        .await;
    assert_eq!(res.outcome, Outcome::Completed, "{res:?}");
    // Nothing was created beside the root or outside the incident directory.
    let top: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    let mut top_sorted = top.clone();
    top_sorted.sort();
    assert_eq!(top_sorted, vec!["agent.sh", "root"]);
    let dir = only_incident(&root);
    assert!(!dir.file_name().unwrap().to_str().unwrap().contains(".."));
    let walk = |d: &std::path::Path| -> Vec<String> {
        let mut out = Vec::new();
        let mut stack = vec![d.to_path_buf()];
        while let Some(p) = stack.pop() {
            for e in std::fs::read_dir(&p).unwrap() {
                let e = e.unwrap();
                out.push(e.file_name().into_string().unwrap());
                if e.file_type().unwrap().is_dir() {
                    stack.push(e.path());
                }
            }
        }
        out
    };
    let names = walk(tmp.path());
    assert!(!names.iter().any(|n| n.contains("PWNED")), "{names:?}");
    // The prompt reached the agent as a file, byte for byte.
    assert_eq!(
        std::fs::read(dir.join("prompt-copy.md")).unwrap(),
        std::fs::read(dir.join("prompt.md")).unwrap()
    );
    // Environment values are the event's text minus control characters.
    let name = std::fs::read_to_string(dir.join("name.txt")).unwrap();
    assert_eq!(
        name,
        "../../etc/passwd$(touch PWNED1)`touch PWNED2`;touch PWNED3 x next"
    );
    // The report shows hostile HTML as text.
    let html = std::fs::read_to_string(dir.join("report.html")).unwrap();
    assert!(!html.contains("<script>"), "{html}");
    // incident.json keeps the original values (JSON-escaped).
    assert_eq!(incident_json(&dir)["cluster"], "../../etc");
}

#[tokio::test]
async fn concurrent_incidents_get_distinct_workspaces() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    let script = fake_agent(tmp.path(), "agent.sh", GOOD);
    let sink = Arc::new(AgentSink::new(config(&root, &script)));
    let mut tasks = Vec::new();
    for i in 0..4 {
        let sink = sink.clone();
        tasks.push(tokio::spawn(async move {
            sink.handle(&envelope(i), CancellationToken::new()).await
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap().outcome, Outcome::Completed);
    }
    let mut ids: Vec<String> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| !n.starts_with('.'))
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 4, "{ids:?}");
}

fn read(
    toml_text: &str,
    ov: &Overrides,
    base: &std::path::Path,
) -> (Option<AgentSinkConfig>, ConfigErrors) {
    let mut errs = ConfigErrors::default();
    let mut eff = Vec::new();
    let mut r = TableReader::new("sink", toml_text.parse().unwrap(), ov, &mut errs, &mut eff);
    let c = AgentSinkConfig::read(&mut r, &ReadContext::single(base, ov));
    r.finish();
    (c, errs)
}

#[test]
fn config_reports_every_error() {
    let tmp = tempfile::tempdir().unwrap();
    let (c, errs) = read(
        r#"
preset = "claude"
command = ["x", "{promptfile}"]
model = "a b"
timeout_seconds = 0
kill_grace_seconds = 99999
prompt_file = "missing.md"
env_allow = ["SLACK_WEBHOOK_URL", "MCP_TOKEN", "bad-name", "INCIDENT_ID", "OK_NAME"]
failure_alert_threshold = 0
typo = 1
"#,
        &Overrides::new(),
        tmp.path(),
    );
    assert!(c.is_none());
    let text = errs.to_string();
    for want in [
        "sink.command: invalid value (set together with preset)",
        "sink.model: invalid value \"a b\"",
        "sink.timeout_seconds: invalid value 0",
        "sink.kill_grace_seconds: invalid value 99999",
        "sink.prompt_file: invalid value \"missing.md\"",
        "sink.env_allow: invalid value \"SLACK_WEBHOOK_URL\"; allowed: a name that does not hold a runner secret",
        "sink.env_allow: invalid value \"MCP_TOKEN\"",
        "sink.env_allow: invalid value \"bad-name\"",
        "sink.env_allow: invalid value \"INCIDENT_ID\"",
        "sink.failure_alert_threshold: invalid value 0",
        "sink.typo: unknown key",
    ] {
        assert!(text.contains(want), "missing {want:?} in:\n{text}");
    }
    assert_eq!(errs.len(), 11, "{text}");

    let (c, errs) = read(
        "preset = \"bash\"\nslack_webhook_env = \"MY_HOOK\"\nenv_allow = [\"MY_HOOK\"]",
        &Overrides::new(),
        tmp.path(),
    );
    assert!(c.is_none());
    let text = errs.to_string();
    assert!(text.contains("sink.preset: invalid value \"bash\"; allowed: one of claude, codex, gemini, goose, demo"), "{text}");
    assert!(
        text.contains("sink.env_allow: invalid value \"MY_HOOK\""),
        "{text}"
    );

    let (_, errs) = read(
        "command = [\"agent\", \"{prompt}\"]",
        &Overrides::new(),
        tmp.path(),
    );
    assert!(
        errs.to_string()
            .contains("sink.command: invalid value \"{prompt}\""),
        "{errs}"
    );
    let (_, errs) = read("model = \"x\"", &Overrides::new(), tmp.path());
    assert!(errs.to_string().contains("sink.preset: missing"), "{errs}");

    // codex needs the explicit unsafe opt-in; budgets and the endpoint are checked.
    let (c, errs) = read(
        "preset = \"codex\"\nmax_budget_usd = 0\nmax_turns = 0\nmodel_base_url = \"ftp://x\"\ndaily_runs_per_cluster = 0",
        &Overrides::new(),
        tmp.path(),
    );
    assert!(c.is_none());
    let text = errs.to_string();
    for want in [
        "sink.preset: invalid value \"codex\"; allowed: another preset, or `unsafe_codex_network = true`",
        "sink.max_budget_usd: invalid value 0; allowed: a number of dollars > 0",
        "sink.max_turns: invalid value 0;",
        "sink.model_base_url: invalid value \"ftp://x\"; allowed: an http(s) URL",
        "sink.daily_runs_per_cluster: invalid value 0;",
    ] {
        assert!(text.contains(want), "{want}\n{text}");
    }
}

#[test]
fn sandbox_config_is_validated() {
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().canonicalize().unwrap();
    // Outside the config's directory (which is protected).
    let tools_tmp = tempfile::tempdir().unwrap();
    let tools = tools_tmp.path().canonicalize().unwrap();
    let (c, errs) = read(
        &format!(
            r#"
preset = "claude"
workspace_root = "{root}"
sandbox = "maybe"
sandbox_read_paths = ["relative/dir", "/does/not/exist", "/", "{tools}"]
sandbox_write_paths = ["{base}", "{root}"]
sandbox_connect_ports = [443, 0]
sandbox_udp = "dns"
"#,
            root = base.join("incidents").display(),
            tools = tools.display(),
            base = base.display(),
        ),
        &Overrides::new(),
        &base,
    );
    assert!(c.is_none());
    let text = errs.to_string();
    for want in [
        "sink.sandbox: invalid value \"maybe\"; allowed: \"enforce\" or \"off\"",
        "sink.sandbox_read_paths: invalid value \"relative/dir\"; allowed: an absolute path",
        "sink.sandbox_read_paths: invalid value \"/does/not/exist\"; allowed: an existing file or directory",
        "sink.sandbox_read_paths: invalid value \"/\"",
        // The config's own directory (and so the workspace root in it).
        &format!(
            "sink.sandbox_write_paths: invalid value \"{}\"",
            base.display()
        ),
        "sink.sandbox_connect_ports: invalid value",
        "sink.sandbox_udp: invalid value \"dns\"; allowed: \"deny\" or \"allow\"",
    ] {
        assert!(text.contains(want), "missing {want:?} in:\n{text}");
    }
    assert!(
        !text.contains(&format!("{:?}", tools.display().to_string())),
        "{text}"
    );

    // Defaults, and the environment turns it off.
    let (c, errs) = read("preset = \"claude\"", &Overrides::new(), &base);
    assert!(errs.is_empty(), "{errs}");
    let c = c.unwrap();
    assert_eq!(c.sandbox.mode, sandbox::Mode::Enforce);
    assert_eq!(c.sandbox.connect_ports, vec![443, 6443]);
    assert!(!c.sandbox.allow_udp, "UDP is denied by default");
    assert!(
        c.sandbox.deny_paths.contains(&base),
        "{:?}",
        c.sandbox.deny_paths
    );
    let mut ov = Overrides::new();
    ov.set("AGENT_SANDBOX", "off", runner_core::config::Origin::Env);
    let (c, errs) = read(
        &format!(
            "preset = \"claude\"\nsandbox_read_paths = [\"{}\"]\nsandbox_connect_ports = [8443]",
            tools.display()
        ),
        &ov,
        &base,
    );
    assert!(errs.is_empty(), "{errs}");
    let c = c.unwrap();
    assert_eq!(c.sandbox.mode, sandbox::Mode::Off);
    assert_eq!(c.sandbox.read_paths, vec![tools]);
    assert_eq!(c.sandbox.connect_ports, vec![8443]);
}

#[test]
fn config_values_and_overrides() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("mine.md"), "Investigate carefully.").unwrap();
    let text = r#"
preset = "codex"
unsafe_codex_network = true
model = "gpt-5"
timeout_seconds = 60
kill_grace_seconds = 3
workspace_root = "/var/tmp/inc"
prompt_file = "mine.md"
env_allow = ["AWS_REGION"]
min_investigation_bytes = 10
failure_alert_threshold = 5
"#;
    let (c, errs) = read(text, &Overrides::new(), tmp.path());
    assert!(errs.is_empty(), "{errs}");
    let c = c.unwrap();
    assert_eq!(c.command, AgentCommand::Preset(Preset::Codex));
    assert_eq!(c.model, "gpt-5");
    assert_eq!(c.timeout, Duration::from_secs(60));
    assert_eq!(c.kill_grace, Duration::from_secs(3));
    assert_eq!(c.workspace_root, std::path::PathBuf::from("/var/tmp/inc"));
    assert_eq!(c.prompt, "Investigate carefully.");
    assert_eq!(c.env_allow, vec!["AWS_REGION"]);
    assert_eq!(c.min_investigation_bytes, 10);
    assert_eq!(c.failure_alert_threshold, 5);
    assert!(c.build(&BuildContext::default()).is_ok());

    // AGENT_COMMAND wins over the preset; env/flags override the file.
    let mut ov = Overrides::new();
    ov.set(
        "AGENT_COMMAND",
        "./my-wrapper.sh --fast",
        runner_core::config::Origin::Env,
    );
    ov.set("AGENT_TIMEOUT", "7", runner_core::config::Origin::Flag);
    ov.set("AGENT_MODEL", "haiku", runner_core::config::Origin::Env);
    ov.set(
        "WORKSPACE_ROOT",
        "/tmp/elsewhere",
        runner_core::config::Origin::Env,
    );
    let (c, errs) = read(text, &ov, tmp.path());
    assert!(errs.is_empty(), "{errs}");
    let c = c.unwrap();
    assert_eq!(
        c.command,
        AgentCommand::Shell("./my-wrapper.sh --fast".into())
    );
    assert_eq!(c.timeout, Duration::from_secs(7));
    assert_eq!(c.model, "haiku");
    assert_eq!(c.workspace_root, std::path::PathBuf::from("/tmp/elsewhere"));

    // The default prompt is the shipped read-only triage prompt.
    let (c, _) = read("preset = \"demo\"", &Overrides::new(), tmp.path());
    let c = c.unwrap();
    assert!(c.prompt.contains("Read-only"));
    assert_eq!(c.timeout, Duration::from_secs(300));
    assert_eq!(c.workspace_root, std::path::PathBuf::from("./incidents"));
    assert_eq!(c.min_investigation_bytes, 100);
}

#[test]
fn compile_path_builds_the_sink() {
    let text = "[sink]\nkind = \"agent\"\npreset = \"demo\"\ntimeout_seconds = 30\n";
    let c = runner_plugins::app::compile::compile(
        text,
        &Overrides::new(),
        &runner_plugins::app::compile::CompileOptions {
            base_dir: Default::default(),
            skip_sources: true,
        },
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.sink.name(), "agent");
}

/// A source withdrawing the event while its agent runs (Alertmanager
/// resolved the alert): the agent goes on, the incident records the note
/// with its time, and the report's timeline shows it.
#[tokio::test]
async fn note_on_a_running_incident_is_recorded() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("incidents");
    // Runs until the test lets it go (or 30 s).
    let body = format!(
        "i=0; while [ ! -e \"$INCIDENT_DIR/go\" ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done\n{GOOD}"
    );
    let script = fake_agent(tmp.path(), "agent.sh", &body);
    let sink = Arc::new(AgentSink::new(config_shell(&root, &script)));
    let task = {
        let sink = sink.clone();
        tokio::spawn(async move { sink.handle(&envelope(7), CancellationToken::new()).await })
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    let dir = loop {
        let running = std::fs::read_dir(&root).ok().and_then(|d| {
            d.filter_map(Result::ok).map(|e| e.path()).find(|p| {
                p.join("incident.json").exists() && incident_json(p)["status"] == "running"
            })
        });
        if let Some(d) = running {
            break d;
        }
        assert!(Instant::now() < deadline, "the agent never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    sink.note(7, "alert resolved by Alertmanager\u{1b}[31m");
    // A note for an event the sink is not handling is ignored.
    sink.note(8, "not ours");
    std::fs::write(dir.join("go"), "").unwrap();
    let res = task.await.unwrap();
    assert_eq!(res.outcome, Outcome::Completed, "{res:?}");

    let inc = incident_json(&dir);
    let notes = inc["notes"].as_array().expect("notes");
    assert_eq!(notes.len(), 1, "{inc}");
    assert_eq!(notes[0]["text"], "alert resolved by Alertmanager [31m");
    let t = notes[0]["time"].as_str().unwrap();
    assert!(inc["startedAt"].as_str().unwrap() <= t, "{inc}");
    assert!(t <= inc["completedAt"].as_str().unwrap(), "{inc}");
    let md = std::fs::read_to_string(dir.join("report.md")).unwrap();
    assert!(
        md.contains("note from the source while the agent ran: alert resolved by Alertmanager"),
        "{md}"
    );
    // Nothing is kept for finished incidents.
    sink.note(7, "late");
    assert_eq!(incident_json(&dir)["notes"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn incident_records_the_phases_of_the_path_to_the_spawn() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("incidents");
    let script = fake_agent(tmp.path(), "agent.sh", GOOD);
    let sink = AgentSink::new(config_shell(&root, &script));
    let mut env = envelope(7);
    // Arrived 30 ms ago, waited 10 ms in the intake, 10 ms in the stages.
    let t0 = tokio::time::Instant::now() - Duration::from_millis(30);
    env.received_at = t0;
    env.chain = Some(runner_core::ChainTimes {
        started: t0 + Duration::from_millis(10),
        passed: t0 + Duration::from_millis(20),
    });
    let wall_before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64;
    let res = sink.handle(&env, CancellationToken::new()).await;
    assert_eq!(res.outcome, Outcome::Completed, "{res:?}");
    let inc = incident_json(&only_incident(&root));
    let t = &inc["timings"];
    let us = |k: &str| t[k].as_u64().unwrap_or_else(|| panic!("{k} in {t}"));
    assert_eq!(us("intakeWaitUs"), 10_000, "{t}");
    assert_eq!(us("stagesUs"), 10_000, "{t}");
    assert!(us("routerUs") >= 10_000, "{t}");
    assert!(t.get("groupUs").is_none(), "no group stage ran: {t}");
    // The phases follow each other: they add up to the total (each is
    // rounded down to a microsecond on its own).
    let phases = [
        "intakeWaitUs",
        "stagesUs",
        "routerUs",
        "workspaceUs",
        "accessPromptUs",
        "inputsUs",
        "prepareUs",
        "spawnUs",
    ];
    let sum: u64 = phases.iter().map(|k| us(k)).sum();
    let total = us("totalUs");
    assert!(
        sum <= total && total - sum <= phases.len() as u64,
        "{sum} vs {t}"
    );
    // Wall clock: arrival 30 ms before the call, the spawn `total` later.
    let received = us("receivedUnixUs");
    assert!(
        received + 30_000 >= wall_before.saturating_sub(2_000)
            && received + 30_000 <= wall_before + 2_000,
        "received {received}, call at {wall_before}"
    );
    let spawned = us("spawnedUnixUs");
    assert!(spawned.abs_diff(received + total) <= 1, "{t}");
}
