//! `kind = "wasm"`: a sandboxed WebAssembly component stage. The stage
//! itself lives in the `plugins-wasm` crate (see `docs/plugins.md`); this is
//! its place in the `[[stage]]` family.

use plugins_wasm::WasmStageConfig;
use runner_core::Stage;
use runner_core::config::TableReader;

use crate::component::{BuildContext, ComponentConfig, KeyError, ReadContext};

impl ComponentConfig for WasmStageConfig {
    const KIND: &'static str = "wasm";
    type Built = Box<dyn Stage>;

    fn read(r: &mut TableReader<'_>, cx: &ReadContext<'_>) -> Option<Self> {
        WasmStageConfig::read(r, cx.base_dir)
    }

    /// Loading the module (compile, instantiate, `init`) happens here, so a
    /// broken plugin is a config error against its `path`.
    fn build(&self, cx: &BuildContext) -> Result<Box<dyn Stage>, KeyError> {
        let mut cfg = self.clone();
        cfg.cache_dir.clone_from(&cx.wasm_cache_dir);
        WasmStageConfig::build(&cfg)
            .map_err(|e| KeyError::new("path", format!("{:?}", self.path.display().to_string()), e))
    }
}
