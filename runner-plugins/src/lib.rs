//! Event Runner built-in plugins and the `runner` CLI's library side.
//!
//! Dependencies flow plugins → core: `runner-core` never names anything here.

pub mod admin;
pub mod app;
pub mod cli;
pub mod cluster;
pub mod compile;
pub mod component;
pub mod demo;
pub mod logfmt;
pub mod settings;
pub mod sinks;
pub mod sources;
pub mod stages;
pub mod testserver;

/// `docs/components.md`: its example stage is compiled and run as a doctest.
#[cfg(doctest)]
#[doc = include_str!("../../docs/components.md")]
pub struct ComponentsGuide;
