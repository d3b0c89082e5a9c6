#!/usr/bin/env bash
# Builds {{name}}.wasm with componentize-py (default settings).
# Toolchain: `pip install -r requirements.txt` (in a venv), or point
# COMPONENTIZE_PY at the componentize-py executable.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
cpy="${COMPONENTIZE_PY:-componentize-py}"
if ! command -v "$cpy" > /dev/null; then
    echo "build.sh: $cpy not found; pip install -r requirements.txt or set COMPONENTIZE_PY" >&2
    exit 2
fi
"$cpy" -d wit -w plugin componentize app -o {{name}}.wasm
echo "built {{name}}.wasm"
