//! Built-in sources, one folder per kind, and the `[[source]]` family.

pub(crate) mod alertmanager;
pub mod mcp;

use runner_core::Source;

crate::component_family! {
    /// A `[[source]]` table, by `kind`. Every source feeds the same intake.
    pub(crate) enum SourceConfig -> Box<dyn Source> {
        Mcp(mcp::McpSourceConfig),
        Alertmanager(alertmanager::AlertmanagerSourceConfig),
    }
}
