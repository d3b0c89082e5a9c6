//! Built-in stages, one file per kind, and the `[[stage]]` family.
//!
//! A new native stage: a file here with its config (implementing
//! [`ComponentConfig`](crate::component::ComponentConfig)) and its
//! [`Stage`], plus one arm below. See `docs/components.md`.

pub mod dedup;
pub(crate) mod group;
pub mod severity;
pub(crate) mod wasm;

use runner_core::Stage;

crate::component_family! {
    /// A `[[stage]]` table, by `kind`. Stages run in file order.
    pub(crate) enum StageConfig -> Box<dyn Stage> {
        Severity(severity::SeverityConfig),
        Dedup(dedup::DedupConfig),
        Group(group::GroupConfig),
        Wasm(plugins_wasm::WasmStageConfig),
    }
}
