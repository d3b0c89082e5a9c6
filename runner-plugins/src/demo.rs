//! `runner demo`: placeholder until the demo lands with the agent sink.

use std::path::PathBuf;
use std::process::ExitCode;

use runner_core::config::Overrides;

pub async fn run(_dir: Option<PathBuf>, _ov: &Overrides) -> ExitCode {
    eprintln!(
        "the embedded demo is not available yet; try `runner validate --config pipeline.toml`"
    );
    ExitCode::from(1)
}
