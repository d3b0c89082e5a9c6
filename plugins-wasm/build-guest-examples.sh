#!/usr/bin/env bash
# Builds the TypeScript and Python example plugins with their toolchains'
# default settings and copies the components to plugins-wasm/examples/dist/
# (next to the Rust examples, which build-examples.sh builds).
#
# Toolchains (installed by .ci/run; pinned versions in docs/plugins.md):
#   NODE_BIN          directory with tsc and componentize-js
#                     [default: <repo>/.ci/node/node_modules/.bin]
#   COMPONENTIZE_PY   the componentize-py executable
#                     [default: <repo>/.ci/venv/bin/componentize-py]
#
# Exit status: 0 built; 2 a toolchain is missing (the message says which
# and how to install it); any other non-zero: a build failed.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"
examples="$here/examples"
dist="$examples/dist"
wit="$here/wit"
node_bin="${NODE_BIN:-$repo/.ci/node/node_modules/.bin}"
componentize_py="${COMPONENTIZE_PY:-$repo/.ci/venv/bin/componentize-py}"

missing=0
for tool in "$node_bin/tsc" "$node_bin/componentize-js"; do
    if [ ! -x "$tool" ]; then
        echo "build-guest-examples: $tool not found; install: npm install --prefix .ci/node typescript@7.0.2 @bytecodealliance/componentize-js@0.23.0 @bytecodealliance/preview2-shim@0.25.0" >&2
        missing=1
    fi
done
if [ ! -x "$componentize_py" ]; then
    echo "build-guest-examples: $componentize_py not found; install: python3 -m venv .ci/venv && .ci/venv/bin/pip install componentize-py==0.25.1" >&2
    missing=1
fi
[ "$missing" = 0 ] || exit 2

mkdir -p "$dist"

# These toolchains do not build reproducibly (the snapshot of the
# initialized interpreter differs run to run), and every new build misses
# the runner's compile cache: rebuild only when the inputs' content (not
# their timestamps, which a checkout or rebase renews) changed. The digest
# of the inputs is kept next to the component.
digest() { # INPUT...
    find "$@" -type f | LC_ALL=C sort | xargs sha256sum | sha256sum | cut -d' ' -f1
}
fresh() { # OUT INPUT...
    local out="$1"
    shift
    [ -f "$out" ] && [ -f "$out.inputs" ] && [ "$(cat "$out.inputs")" = "$(digest "$@")" ]
}
stamp() { # OUT INPUT...
    local out="$1"
    shift
    digest "$@" > "$out.inputs"
}

# TypeScript: tsc to JavaScript, then componentize-js (defaults: WASI and
# fetch enabled, no AOT). componentize-js reads the WIT relative to its
# working directory.
ts="$examples/typescript/namespace-deny"
fresh "$dist/ts-namespace-deny.wasm" "$ts"/*.ts "$ts/tsconfig.json" "$wit" || (
    cd "$ts"
    "$node_bin/tsc" -p tsconfig.json
    rm -rf wit && cp -r "$wit" wit
    "$node_bin/componentize-js" build/plugin.js --wit wit --world-name plugin -o "$dist/ts-namespace-deny.wasm"
    rm -rf wit
    stamp "$dist/ts-namespace-deny.wasm" "$ts"/*.ts "$ts/tsconfig.json" "$wit"
)

# Python: componentize-py with its defaults (the app module is app.py).
py="$examples/python/escalate"
fresh "$dist/python-escalate.wasm" "$py/app.py" "$wit" || (
    cd "$py"
    "$componentize_py" -d "$wit" -w plugin componentize app -o "$dist/python-escalate.wasm"
    stamp "$dist/python-escalate.wasm" "$py/app.py" "$wit"
)
# The sandbox tests' Python guest (plugins-wasm/tests/guests).
fresh "$dist/python-sandbox-probe.wasm" "$here/tests/guests/sandbox_probe.py" "$wit" || (
    cd "$here/tests/guests"
    "$componentize_py" -d "$wit" -w plugin componentize sandbox_probe -o "$dist/python-sandbox-probe.wasm"
    stamp "$dist/python-sandbox-probe.wasm" "$here/tests/guests/sandbox_probe.py" "$wit"
)
echo "build-guest-examples: ts-namespace-deny.wasm python-escalate.wasm python-sandbox-probe.wasm in $dist"
