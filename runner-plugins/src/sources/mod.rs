//! Built-in sources, one folder per source.

pub mod mcp;
