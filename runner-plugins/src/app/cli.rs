//! Command-line surface: flags are generated from the settings registry so
//! they cannot drift from the environment variables they mirror.

use std::path::PathBuf;

use clap::{Arg, ArgAction, ArgMatches, Command};
use runner_core::config::{Origin, Overrides};

use crate::settings::SETTINGS;

pub(crate) const EXAMPLES: &str = "\
Examples:
  runner demo                                  # embedded simulated cluster, harmless agent
  runner validate --config pipeline.toml       # check a pipeline, list every error
  K8S_CLUSTER_MCP_ENDPOINT=http://127.0.0.1:8080/mcp runner run
  runner run --severity-threshold WARNING --max-concurrent-agents 2
  runner record --out recorded.jsonl --max-events 500   # capture live payloads
  runner replay recorded.jsonl --config pipeline.toml
  runner test plugin-tests.toml                # declarative cases for stages and plugins
  runner plugin new --lang python drop-noise   # scaffold a plugin that builds and passes its test
  runner status                                # a running instance's state (admin server)
  runner incidents --since 1d --status failed  # incident history (state store)
";

fn config_arg() -> Arg {
    Arg::new("config")
        .long("config")
        .short('c')
        .value_name("PATH")
        .default_value("pipeline.toml")
        .help("pipeline.toml to load")
}

fn with_setting_flags(mut cmd: Command) -> Command {
    for s in SETTINGS.iter().filter(|s| !s.flag.is_empty()) {
        cmd = cmd.arg(
            Arg::new(s.env)
                .long(s.flag)
                .value_name("VALUE")
                .action(ArgAction::Set)
                .help(format!(
                    "{} [env: {}] [default: {}]",
                    s.doc,
                    s.env,
                    s.default_text()
                )),
        );
    }
    cmd
}

pub(crate) fn command() -> Command {
    Command::new("runner")
        .version(env!("CARGO_PKG_VERSION"))
        .about("Event Runner: turns Kubernetes faults from an events-enabled kubernetes-mcp-server into read-only AI triage")
        .after_help(EXAMPLES)
        .subcommand_required(true)
        .arg_required_else_help(true)
        .subcommand(with_setting_flags(
            Command::new("run")
                .about("Run the pipeline until SIGTERM/SIGINT")
                .arg(config_arg()),
        ))
        .subcommand(with_setting_flags(
            Command::new("validate")
                .about("Compile the pipeline (including WASM stages) and report every error; exit 0 when valid")
                .arg(config_arg()),
        ))
        .subcommand(with_setting_flags(
            Command::new("replay")
                .about("Run recorded payloads (JSON lines) through the configured stages without launching agents")
                .arg(Arg::new("file").required(true).value_name("FILE.jsonl"))
                .arg(
                    Arg::new("show-changes")
                        .long("show-changes")
                        .action(ArgAction::SetTrue)
                        .help("After each line, print what each stage changed in the event (field by field)"),
                )
                .arg(config_arg()),
        ))
        .subcommand(with_setting_flags(
            Command::new("test")
                .about("Run declarative test cases (payload, expected outcome and stage, field values) through a pipeline's stages; exit 0 all pass, 1 a case failed, 2 bad test file")
                .arg(Arg::new("file").required(true).value_name("FILE.toml")),
        ))
        .subcommand(with_setting_flags(
            Command::new("record")
                .about("Run only the pipeline's sources and write every payload they receive to a JSON-lines file (for `replay` and `test`); stops at SIGINT/SIGTERM, --max-events or the size cap")
                .arg(Arg::new("out").long("out").short('o').required(true).value_name("FILE.jsonl").help("Where to write (mode 0600; refused if it exists, unless --append)"))
                .arg(
                    Arg::new("max-bytes")
                        .long("max-bytes")
                        .value_name("BYTES")
                        .value_parser(clap::value_parser!(u64).range(1..))
                        // 64 MiB
                        .default_value("67108864")
                        .help("Size cap of the file: the payload that would pass it is not written and recording stops (one warning)"),
                )
                .arg(Arg::new("max-events").long("max-events").value_name("N").value_parser(clap::value_parser!(u64).range(1..)).help("Stop after N payloads"))
                .arg(Arg::new("append").long("append").action(ArgAction::SetTrue).help("Append to an existing file (its size counts toward the cap)"))
                .arg(config_arg()),
        ))
        .subcommand(with_setting_flags(
            Command::new("demo")
                .about("Run the whole product against an embedded simulated cluster with a harmless agent, then print a summary")
                .arg(Arg::new("workspace").long("demo-dir").value_name("DIR").help("Where the demo writes incidents [default: a fresh temp dir]")),
        ))
        .subcommand(
            Command::new("status")
                .about("Show a running instance's health, sources, running/queued/recent incidents (from its admin server)")
                .arg(
                    Arg::new("url")
                        .long("url")
                        .value_name("URL")
                        .help("Admin server base URL [default: http://<ADMIN_LISTEN>, else http://127.0.0.1:9469]; the token comes from ADMIN_TOKEN or ADMIN_TOKEN_FILE"),
                )
                .arg(Arg::new("json").long("json").action(ArgAction::SetTrue).help("Print the raw JSON documents")),
        )
        .subcommand(
            Command::new("incidents")
                .about("List incidents from the state store (STATE_DIR), newest first; `incidents show ID` prints one with its events and report path")
                .arg(config_arg())
                .arg(Arg::new("STATE_DIR").long("state-dir").value_name("DIR").help("State directory [env: STATE_DIR] [default: from the config file, else <WORKSPACE_ROOT>/../state]"))
                .arg(Arg::new("WORKSPACE_ROOT").long("workspace-root").value_name("DIR").help("Workspace root, to find the default state directory [env: WORKSPACE_ROOT]"))
                .arg(Arg::new("cluster").long("cluster").value_name("NAME").help("Only this cluster"))
                .arg(Arg::new("status").long("status").value_name("STATUS").help("Only this status: running, interrupted, completed, failed, timed_out, abandoned, over_budget"))
                .arg(Arg::new("since").long("since").value_name("WHEN").help("Only incidents started since: a duration (90s, 30m, 12h, 7d) or a date (2026-11-29, UTC)"))
                .arg(Arg::new("limit").long("limit").value_name("N").value_parser(clap::value_parser!(usize)).default_value("50").help("At most N incidents"))
                .arg(Arg::new("json").long("json").action(ArgAction::SetTrue).help("Print JSON"))
                .subcommand(
                    Command::new("show")
                        .about("One incident: its fields, events and report path")
                        .arg(Arg::new("id").required(true).value_name("ID").help("The incident id (workspace name) or its number"))
                        .arg(Arg::new("json").long("json").action(ArgAction::SetTrue).help("Print JSON")),
                ),
        )
        .subcommand(
            Command::new("plugin")
                .about("WASM plugin authoring")
                .subcommand_required(true)
                .subcommand(
                    Command::new("new")
                        .about("Scaffold a plugin folder (source, WIT, build script, runner test cases) that builds and passes its own test")
                        .arg(Arg::new("lang").long("lang").required(true).value_name("LANG").help("rust, ts or python"))
                        .arg(Arg::new("name").required(true).value_name("NAME").help("Plugin name: a-z 0-9 -, starting with a letter"))
                        .arg(Arg::new("dir").long("dir").value_name("DIR").default_value(".").help("Where to create the NAME folder")),
                ),
        )
        .subcommand(Command::new("config-reference").about("Print the configuration reference table (docs/configuration.md)"))
}

/// Builds the override layers: environment, then flags on top.
pub(crate) fn overrides(m: &ArgMatches, env: impl Fn(&str) -> Option<String>) -> Overrides {
    let mut ov = Overrides::new();
    for s in SETTINGS {
        if let Some(v) = env(s.env).filter(|v| !v.is_empty()) {
            ov.set(s.env, v, Origin::Env);
        }
        if !s.flag.is_empty()
            && let Ok(Some(v)) = m.try_get_one::<String>(s.env)
        {
            ov.set(s.env, v.clone(), Origin::Flag);
        }
    }
    ov
}

pub(crate) fn config_path(m: &ArgMatches) -> PathBuf {
    m.get_one::<String>("config")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("pipeline.toml"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_setting_with_a_flag_parses_and_flags_beat_env() {
        for s in SETTINGS.iter().filter(|s| !s.flag.is_empty()) {
            let m = command()
                .try_get_matches_from(["runner", "validate", &format!("--{}", s.flag), "flagval"])
                .unwrap();
            let (_, sub) = m.subcommand().unwrap();
            let ov = overrides(sub, |k| (k == s.env).then(|| "envval".to_string()));
            assert_eq!(ov.get(s.env), Some(("flagval", Origin::Flag)), "{}", s.env);
            let m = command()
                .try_get_matches_from(["runner", "validate"])
                .unwrap();
            let (_, sub) = m.subcommand().unwrap();
            let ov = overrides(sub, |k| (k == s.env).then(|| "envval".to_string()));
            assert_eq!(ov.get(s.env), Some(("envval", Origin::Env)), "{}", s.env);
        }
    }

    #[test]
    fn secrets_have_no_flags() {
        for s in SETTINGS.iter().filter(|s| s.secret) {
            assert!(s.flag.is_empty(), "{} must not be a flag", s.env);
        }
        command().debug_assert();
    }
}
