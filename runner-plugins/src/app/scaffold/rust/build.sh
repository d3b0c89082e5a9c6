#!/usr/bin/env bash
# Builds {{name}}.wasm (a WebAssembly component) with cargo for
# wasm32-wasip2; rust-toolchain.toml makes rustup install the target.
# CARGO_FLAGS (e.g. --offline) is passed to cargo.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
cargo test --quiet ${CARGO_FLAGS:-}
cargo build --release --target wasm32-wasip2 ${CARGO_FLAGS:-}
cp "${CARGO_TARGET_DIR:-target}/wasm32-wasip2/release/{{crate}}.wasm" {{name}}.wasm
echo "built {{name}}.wasm"
