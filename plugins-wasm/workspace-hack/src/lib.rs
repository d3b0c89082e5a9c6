//! Empty on purpose: this crate only pins the feature set of shared
//! dependencies (see its Cargo.toml).
