#!/usr/bin/env bash
# Builds {{name}}.wasm with tsc and componentize-js (default settings).
# Toolchain: `npm install` here (package.json pins the versions), or point
# NODE_BIN at a directory holding tsc and componentize-js.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
bin="${NODE_BIN:-node_modules/.bin}"
for tool in tsc componentize-js; do
    if [ ! -x "$bin/$tool" ]; then
        echo "build.sh: $bin/$tool not found; run \`npm install\` here or set NODE_BIN" >&2
        exit 2
    fi
done
"$bin/tsc" -p tsconfig.json
# componentize-js reads the WIT below its working directory.
"$bin/componentize-js" build/plugin.js --wit wit --world-name plugin -o {{name}}.wasm
echo "built {{name}}.wasm"
