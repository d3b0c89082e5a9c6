//! Built-in sinks, one folder per sink.

pub mod agent;
