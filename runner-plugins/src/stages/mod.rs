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

/// Reads the `key` list of a keyed stage (dedup, group): `default` when
/// absent; otherwise a non-empty list of known field names, repeats dropped.
/// Every bad name is recorded on `r`; `None` if there was any.
pub(crate) fn read_key<F: Copy + PartialEq>(
    r: &mut runner_core::config::TableReader<'_>,
    default: &[F],
    allowed: &str,
    parse: fn(&str) -> Option<F>,
) -> Option<Vec<F>> {
    let Some(names) = r.opt::<Vec<String>>("key") else {
        return Some(default.to_vec());
    };
    let mut ok = true;
    if names.is_empty() {
        r.error("key", "[]", format!("a non-empty list of: {allowed}"));
        ok = false;
    }
    let mut key = Vec::new();
    for n in &names {
        match parse(n) {
            Some(f) if !key.contains(&f) => key.push(f),
            Some(_) => {}
            None => {
                r.error("key", format!("{n:?}"), format!("fields among: {allowed}"));
                ok = false;
            }
        }
    }
    ok.then_some(key)
}
