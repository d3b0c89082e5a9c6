//! The agent's environment is an allow-list of the environment the sink is
//! given (injected here; the process's own environment is left alone).

mod agent_support;

use std::collections::BTreeMap;

use agent_support::*;
use runner_core::config::Environment;
use runner_core::{CancellationToken, Outcome, Sink};
use runner_plugins::component::{BuildContext, ComponentConfig};
use runner_plugins::sinks::agent::{AgentSink, INCIDENT_VARS};

#[test]
fn agent_environment_is_allow_listed() {
    let environment = Environment::from_pairs([
        (
            "SLACK_WEBHOOK_URL",
            "https://hooks.slack.com/services/T0/B0/SECRETHOOK".to_string(),
        ),
        ("MCP_TOKEN", "secret-mcp-token".into()),
        ("MCP_TOKEN_FILE", "/run/secrets/mcp".into()),
        ("RUNNER_TEST_ALLOWED", "yes".into()),
        ("RUNNER_TEST_NOT_ALLOWED", "no".into()),
        ("LANG", "C.UTF-8".into()),
        ("HOME", "/nonexistent-home".into()),
        // The agent's shell is found through PATH.
        ("PATH", std::env::var("PATH").unwrap()),
    ]);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("root");
        let script = fake_agent(tmp.path(), "env.sh", &format!("env > env.txt\n{GOOD}"));
        let mut cfg = config_shell(&root, &script);
        cfg.model = "haiku".into();
        // Even listed, the runner's secrets are not passed (the config
        // reader refuses them; the sink filters them again).
        cfg.env_allow = vec![
            "RUNNER_TEST_ALLOWED".into(),
            "SLACK_WEBHOOK_URL".into(),
            "MCP_TOKEN".into(),
        ];
        assert!(
            ComponentConfig::build(&cfg, &BuildContext::default()).is_err(),
            "build refuses secret names"
        );
        let sink = AgentSink::with_context(
            cfg,
            &BuildContext {
                environment,
                ..BuildContext::default()
            },
        );
        let res = sink.handle(&envelope(7), CancellationToken::new()).await;
        assert_eq!(res.outcome, Outcome::Completed, "{res:?}");

        let dir = only_incident(&root);
        let text = std::fs::read_to_string(dir.join("env.txt")).unwrap();
        let env: BTreeMap<&str, &str> = text.lines().filter_map(|l| l.split_once('=')).collect();
        for secret in [
            "SLACK_WEBHOOK_URL",
            "MCP_TOKEN",
            "MCP_TOKEN_FILE",
            "RUNNER_TEST_NOT_ALLOWED",
        ] {
            assert!(!env.contains_key(secret), "{secret} leaked: {text}");
        }
        assert!(
            !text.contains("SECRETHOOK") && !text.contains("secret-mcp-token"),
            "{text}"
        );
        assert_eq!(env["RUNNER_TEST_ALLOWED"], "yes");
        assert_eq!(env["LANG"], "C.UTF-8");
        assert_eq!(env["HOME"], "/nonexistent-home");
        assert!(env.contains_key("PATH"));
        let canon = dir.canonicalize().unwrap();
        let id = canon.file_name().unwrap().to_str().unwrap();
        assert_eq!(env["INCIDENT_ID"], id);
        assert_eq!(env["INCIDENT_DIR"], canon.to_str().unwrap());
        assert_eq!(
            env["EVENT_FILE"],
            canon.join("event.json").to_str().unwrap()
        );
        assert_eq!(
            env["PROMPT_FILE"],
            canon.join("prompt.md").to_str().unwrap()
        );
        assert_eq!(env["AGENT_MODEL"], "haiku");
        assert_eq!(env["CLUSTER"], "prod-us-east-1");
        assert_eq!(env["NAMESPACE"], "payments");
        assert_eq!(env["RESOURCE_KIND"], "Pod");
        assert_eq!(env["RESOURCE_NAME"], "payments-api-7d9f8b6c5-x2k4q");
        assert_eq!(env["FAULT_ID"], "f00d");
        assert_eq!(env["SEVERITY"], "CRITICAL");
        // Nothing else, except what the shells add themselves.
        let mut allowed: Vec<&str> = vec![
            "PATH",
            "HOME",
            "LANG",
            "RUNNER_TEST_ALLOWED",
            // Set by the runner itself when the sandbox denies UDP: name
            // lookups go over TCP (checked below).
            "RES_OPTIONS",
            "PWD",
            "OLDPWD",
            "SHLVL",
            "_",
        ];
        allowed.extend(INCIDENT_VARS);
        if let Some(v) = env.get("RES_OPTIONS") {
            assert_eq!(*v, "use-vc", "RES_OPTIONS is the runner's, never inherited");
        }
        for k in env.keys() {
            assert!(
                allowed.contains(k),
                "unexpected variable {k} in the agent's environment"
            );
        }
    });
}
