//! Built-in native stages, one module per stage.

pub mod dedup;
pub mod severity;
