#!/bin/sh
# Idle cost of a subscribed runner: CPU time and wake-ups (context switches)
# over SECONDS with no event arriving, summed over all of the runner's
# threads, from /proc/<pid>/task/*/stat and .../status.
#
#   cargo build --release -p runner-plugins --bins
#   runner-plugins/benches/idle.sh [SECONDS] [PLUGIN.wasm] [CONFIG]
#
# SECONDS defaults to 180 (after a 20 s settling period). With PLUGIN.wasm a
# `wasm` stage runs that component with CONFIG (a TOML inline table, default
# `{ deny_namespaces = "kube-system" }`, for the namespace-filter example). Binaries are taken from
# target/release (TARGET_DIR overrides). Prints CPU-seconds per 10 minutes
# and wake-ups per second.
set -eu
secs=${1:-180}
plugin=${2:-}
plugin_config=${3:-'{ deny_namespaces = "kube-system" }'}
root=$(cd "$(dirname "$0")/../.." && pwd)
bin=${TARGET_DIR:-$root/target/release}
dir=$(mktemp -d)
server_pid=
runner_pid=
cleanup() {
    [ -n "$runner_pid" ] && kill "$runner_pid" 2>/dev/null && wait "$runner_pid" 2>/dev/null
    [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null
    rm -rf "$dir"
}
trap cleanup EXIT INT TERM

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$bin/mcp-test-server" --port "$port" >"$dir/server.log" 2>&1 &
server_pid=$!

stage=""
if [ -n "$plugin" ]; then
    stage="[[stage]]
kind = \"wasm\"
path = \"$plugin\"
config = $plugin_config"
fi
cat >"$dir/pipeline.toml" <<EOF
[settings]
log_level = "info"

[server]
listen = "127.0.0.1:0"

[[source]]
kind = "mcp"
name = "idle"
endpoint = "http://127.0.0.1:$port/mcp"

[[stage]]
kind = "severity"
threshold = "ERROR"

$stage

[[sink]]
kind = "agent"
command = ["true"]
workspace_root = "$dir/incidents"
EOF
"$bin/runner" run --config "$dir/pipeline.toml" >"$dir/runner.log" 2>&1 &
runner_pid=$!
sleep 20
if ! kill -0 "$runner_pid" 2>/dev/null; then
    echo "runner exited; log:" >&2
    cat "$dir/runner.log" >&2
    exit 1
fi

# Sum of utime+stime (clock ticks) and of context switches over all threads.
sample() {
    ticks=0
    switches=0
    for t in /proc/"$runner_pid"/task/*; do
        set -- $(sed 's/.*) //' "$t/stat" 2>/dev/null || echo)
        [ $# -ge 13 ] || continue
        ticks=$((ticks + ${12} + ${13}))
        s=$(awk '/ctxt_switches/ {n += $2} END {print n + 0}' "$t/status" 2>/dev/null || echo 0)
        switches=$((switches + s))
    done
    echo "$ticks $switches"
}
# Per thread (name: context switches), to see who wakes up.
per_thread() {
    for t in /proc/"$runner_pid"/task/*; do
        printf '%s %s %s\n' "${t##*/}" "$(cat "$t/comm" 2>/dev/null)" \
            "$(awk '/ctxt_switches/ {n += $2} END {print n + 0}' "$t/status" 2>/dev/null)"
    done
}
threads0=$(ls /proc/"$runner_pid"/task | wc -l)
per_thread >"$dir/threads0"
set -- $(sample)
t0=$1 s0=$2
sleep "$secs"
set -- $(sample)
t1=$1 s1=$2
per_thread >"$dir/threads1"
echo "context switches per thread over the window (tid name count):"
join "$dir/threads0" "$dir/threads1" | awk '{d = $NF - $(NF-2); if (d > 0) print "  " $1, $2, d}'
hz=$(getconf CLK_TCK)
python3 - "$t0" "$t1" "$s0" "$s1" "$secs" "$hz" "$threads0" "${plugin:-none}" <<'PY'
import sys
t0, t1, s0, s1, secs, hz, threads = map(int, sys.argv[1:8])
cpu = (t1 - t0) / hz
print(f"plugin {sys.argv[8]}: {secs} s idle, {threads} threads: "
      f"CPU {cpu:.2f} s = {cpu * 600 / secs:.3f} CPU-s per 10 min, "
      f"{(s1 - s0) / secs:.2f} context switches/s (all threads, voluntary + involuntary)")
PY
