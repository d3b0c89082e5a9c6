#!/usr/bin/env bash
# Builds the example guest plugins (plugins-wasm/examples) for wasm32-wasip2
# and copies the components to plugins-wasm/examples/dist/, where the tests
# and docs/plugins.md look for them.
#
# Exit status: 0 built; 2 the wasm32-wasip2 target is not installed (the
# caller decides whether that is fatal); any other non-zero: build failed.
# Uses its own small target dir (plugins-wasm/examples/target): guests share
# no artifacts with the host workspace, and the host's target-dir lock is
# not held while they build.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
examples="$here/examples"
dist="$examples/dist"

sysroot="$(rustc --print sysroot)"
if [ ! -d "$sysroot/lib/rustlib/wasm32-wasip2" ]; then
    echo "build-examples: the wasm32-wasip2 target is not installed (rustup target add wasm32-wasip2)" >&2
    exit 2
fi

# CARGO_TARGET_DIR from the environment would send guests into the host's
# target dir; --target-dir wins over it.
cargo build --release --locked --target wasm32-wasip2 \
    --manifest-path "$examples/Cargo.toml" --target-dir "$examples/target"

# The guests' plain-Rust unit tests (glob matching, redaction) run on the
# host: they are not in the main workspace, so nothing else runs them.
cargo test --locked --quiet --manifest-path "$examples/Cargo.toml" --target-dir "$examples/target"

mkdir -p "$dist"
count=0
for crate in namespace-filter noise-suppressor redactor; do
    file="${crate//-/_}.wasm"
    src="$examples/target/wasm32-wasip2/release/$file"
    if [ ! -f "$src" ]; then
        echo "build-examples: $src was not produced" >&2
        exit 1
    fi
    cp "$src" "$dist/$crate.wasm"
    count=$((count + 1))
done
echo "build-examples: $count components in $dist"
