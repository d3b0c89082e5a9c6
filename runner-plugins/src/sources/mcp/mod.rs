//! `kind = "mcp"`: placeholder until the MCP source issue lands.
// FIXME(issue 3): replaced by the real MCP source.

use async_trait::async_trait;
use runner_core::config::TableReader;
use runner_core::{Source, SourceContext, SourceError};

#[derive(Debug, Clone)]
pub struct McpSourceConfig {
    pub name: String,
    pub endpoint: String,
}

impl McpSourceConfig {
    pub fn read(r: &mut TableReader<'_>, index: usize) -> Option<McpSourceConfig> {
        let name: String = r.opt("name").unwrap_or_else(|| format!("mcp-{index}"));
        let endpoint: Option<String> =
            r.layered_opt("endpoint", crate::settings::K8S_CLUSTER_MCP_ENDPOINT, false);
        let Some(endpoint) = endpoint else {
            r.error(
                "endpoint",
                "(missing)",
                "an http(s) URL such as http://127.0.0.1:8080/mcp (or K8S_CLUSTER_MCP_ENDPOINT)",
            );
            return None;
        };
        Some(McpSourceConfig { name, endpoint })
    }
    pub fn build(&self) -> Box<dyn Source> {
        Box::new(McpSource {
            name: self.name.clone(),
        })
    }
}

pub struct McpSource {
    name: String,
}

#[async_trait]
impl Source for McpSource {
    fn name(&self) -> &str {
        &self.name
    }
    async fn run(self: Box<Self>, ctx: SourceContext) -> Result<(), SourceError> {
        ctx.shutdown.cancelled().await;
        Ok(())
    }
}
