#!/usr/bin/env bash
# Where weir's CPU goes on the request path: `perf` samples of a release `weir serve` while wrk
# drives one route in front of one `weir sim`, on loopback.
#
#   bench/profile.sh [bare|demo|streamed]   # default bare; installs wrk and perf (linux-perf) when missing
#
# Routes: `bare` (no stages), `demo` (prompt-guard -> pii-redact -> system-prompt), `streamed`
# (no stages; the target has a TTFT timeout, so JSON requests go upstream as streams).
# DISTINCT=1 sends requests that all differ (bench/distinct.lua). OTLP=1 exports every span
# to a local collector stand-in (RUST_LOG=info, as in production).
# Prints the hottest symbols (self time) and writes $OUT/perf.data; with `inferno` installed
# (`cargo install inferno`), also $OUT/flamegraph.svg. Call stacks need frame pointers:
# FRAME_POINTERS=1 builds a separate release (its own target directory, a full build) with
# `-C force-frame-pointers=yes` and records with `-g`; CALLGRAPH=dwarf records call stacks of
# the normal release build by unwinding with DWARF instead (no second build; 999 samples/s, as
# each sample copies 16 KiB of stack). Stages' compiled code is named too: `WEIR_PERFMAP=1` makes
# wasmtime write /tmp/perf-PID.map, which perf reads. With call stacks it also prints the share
# of the instance lifecycle, the stages' calls, the guest code, the caches, the allocator and the
# kernel (bench/inclusive.py).
set -euo pipefail
cd "$(dirname "$0")/.."
ROUTE=${1:-bare}
DURATION=${DURATION:-5}
OUT=${OUT:-/tmp/weir-profile}
SIM=127.0.0.1:9701
WEIR=127.0.0.1:9702
source bench/tools.sh
need perf linux-perf

if [ "${FRAME_POINTERS:-0}" = 1 ]; then
    base=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
    export CARGO_TARGET_DIR="$base/frame-pointers"
    export RUSTFLAGS="-C force-frame-pointers=yes"
    graph=(-g)
    freq=4000
elif [ "${CALLGRAPH:-}" = dwarf ]; then
    graph=(--call-graph dwarf,16384)
    freq=999
else
    graph=()
    freq=4000
fi
source bench/build.sh
mkdir -p "$OUT"
pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT INT TERM

log=error
telemetry=""
if [ "${OTLP:-0}" = 1 ]; then
    otlp_collector 9704
    telemetry='[telemetry]
otlp_endpoint = "http://127.0.0.1:9704"'
    log=info
fi
cat > "$work/profile.toml" <<TOML
[server]
listen = "$WEIR"
admin_listen = "127.0.0.1:9703"
$telemetry
[targets.sim]
base_url = "http://$SIM/v1"
[targets.streamed]
base_url = "http://$SIM/v1"
ttft_timeout_ms = 5000
[[routes]]
model = "bare"
targets = ["sim"]
[[routes]]
model = "streamed"
targets = ["streamed"]
[[routes]]
model = "demo"
targets = ["sim"]
$(demo_stages)
TOML
RUST_LOG=error "$weir" sim --listen "$SIM" >/dev/null 2>&1 & pids+=($!)
WEIR_PERFMAP=1 RUST_LOG=$log "$weir" serve --config "$work/profile.toml" >/dev/null 2>&1 & serve=$!; pids+=($serve)
ready "$WEIR"
# DISTINCT=1: every request different (bench/distinct.lua), so the demo's deterministic stages
# run instead of answering from the stage-output cache.
script=bench/chat.lua
[ "${DISTINCT:-0}" = 1 ] && script=bench/distinct.lua
WEIR_MODEL=$ROUTE wrk -t1 -c4 -d"$((DURATION + 2))s" -s "$script" "http://$WEIR/v1/chat/completions" > "$work/wrk.txt" &
pids+=($!)
sleep 1
perf record -F "$freq" "${graph[@]}" -p "$serve" -o "$OUT/perf.data" -- sleep "$DURATION" 2>/dev/null
wait "${pids[-1]}" || true
echo "== $ROUTE: $(awk '/Requests\/sec/ {print $2}' "$work/wrk.txt") req/s under the profiler (wrk -c4)"
perf report -i "$OUT/perf.data" --no-children --percent-limit 0.7 --stdio -g none 2>/dev/null \
    | grep -v '^#' | grep -v '^$' | head -40
if [ ${#graph[@]} -gt 0 ]; then
    perf script -i "$OUT/perf.data" --no-inline 2>/dev/null | python3 bench/inclusive.py
fi
if command -v inferno-collapse-perf >/dev/null && command -v inferno-flamegraph >/dev/null; then
    perf script -i "$OUT/perf.data" 2>/dev/null | inferno-collapse-perf | inferno-flamegraph > "$OUT/flamegraph.svg"
    echo "flamegraph: $OUT/flamegraph.svg"
else
    echo "no flamegraph: cargo install inferno for $OUT/flamegraph.svg (perf.data is in $OUT)"
fi
