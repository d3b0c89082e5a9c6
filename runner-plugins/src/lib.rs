//! Event Runner built-in plugins and the `runner` CLI's library side.
//!
//! Dependencies flow plugins → core: `runner-core` never names anything here.

// The application: CLI, commands, config compiler, demo, admin server.
// Components never import from it.
pub mod app;

// The components and what they share.
pub mod cluster;
pub mod component;
pub(crate) mod retry;
pub mod settings;
pub mod sinks;
pub mod sources;
pub mod stages;
pub mod state;

/// `docs/components.md`: its example stage is compiled and run as a doctest.
#[cfg(doctest)]
#[doc = include_str!("../../docs/components.md")]
pub struct ComponentsGuide;
