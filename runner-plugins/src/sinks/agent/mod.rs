//! `kind = "agent"`: placeholder until the agent sink issue lands.
// FIXME(issue 5): replaced by the real agent sink.

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use runner_core::config::TableReader;
use runner_core::{CancellationToken, Envelope, Sink, SinkResult};

#[derive(Debug, Clone)]
pub struct AgentSinkConfig {}

impl AgentSinkConfig {
    pub fn read(r: &mut TableReader<'_>, _base_dir: &Path) -> Option<AgentSinkConfig> {
        let _: Option<String> = r.opt("preset");
        Some(AgentSinkConfig {})
    }
    pub fn build(&self) -> Result<Arc<dyn Sink>, String> {
        Ok(Arc::new(AgentSink))
    }
}

pub struct AgentSink;

#[async_trait]
impl Sink for AgentSink {
    fn name(&self) -> &str {
        "agent"
    }
    async fn handle(&self, _envelope: &Envelope, _kill: CancellationToken) -> SinkResult {
        SinkResult::failed("agent sink not implemented yet")
    }
}
