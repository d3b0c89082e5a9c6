//! WASM stage host. Placeholder until the WASM issue lands.
// FIXME(issue 6): replaced by the wasmtime component host.

use std::path::{Path, PathBuf};

use runner_core::Stage;
use runner_core::config::TableReader;

#[derive(Debug, Clone)]
pub struct WasmStageConfig {
    pub path: PathBuf,
}

impl WasmStageConfig {
    pub fn read(r: &mut TableReader<'_>, base_dir: &Path) -> Option<WasmStageConfig> {
        let path: String = r.req("path")?;
        Some(WasmStageConfig {
            path: base_dir.join(path),
        })
    }
    pub fn build(&self) -> Result<Box<dyn Stage>, String> {
        Err("WASM stages are not available in this build yet".into())
    }
}
