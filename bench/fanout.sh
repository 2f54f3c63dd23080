#!/usr/bin/env bash
# Fan-out of three completions (`complete-all`) against the slowest of the three alone: three
# `weir sim`s answering after 60, 120 and 180 ms, a route whose one stage (the outbound test
# program, `mode = "fanout"`) asks all three at once, and the 180 ms one as a route of its
# own. The fan-out should take max(latencies) plus a little, not their sum (360 ms): the
# figure is p50(fan-out) - p50(slowest alone), medians over ROUNDS rounds, wrk -c1, loopback.
#
#   bench/fanout.sh
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-10}
ROUNDS=${ROUNDS:-3}
WEIR=127.0.0.1:9390

source bench/build.sh
cargo build --release --target wasm32-wasip2 -p weir-test-outbound --quiet
probe="$plugins/weir_test_outbound.wasm"
cat > "$work/fanout.toml" <<TOML
[server]
listen = "$WEIR"
admin_listen = "127.0.0.1:9391"
[targets.a]
base_url = "http://127.0.0.1:9311/v1"
[targets.b]
base_url = "http://127.0.0.1:9312/v1"
[targets.c]
base_url = "http://127.0.0.1:9313/v1"
[[routes]]
model = "model-a"
targets = ["a"]
[[routes]]
model = "model-b"
targets = ["b"]
[[routes]]
model = "model-c"
targets = ["c"]
[[routes]]
model = "vote"
targets = ["a"]
[[routes.stages]]
name = "vote"
path = "$probe"
deadline_ms = 5000
[routes.stages.config]
mode = "fanout"
models = ["model-a", "model-b", "model-c"]
TOML

pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT INT TERM
RUST_LOG=warn "$weir" sim --listen 127.0.0.1:9311 --latency-ms 60 >/dev/null & pids+=($!)
RUST_LOG=warn "$weir" sim --listen 127.0.0.1:9312 --latency-ms 120 >/dev/null & pids+=($!)
RUST_LOG=warn "$weir" sim --listen 127.0.0.1:9313 --latency-ms 180 >/dev/null & pids+=($!)
RUST_LOG=warn "$weir" serve --config "$work/fanout.toml" >/dev/null & pids+=($!)
ready "$WEIR"

wrk_pct() { awk -v p="$2" '$1 == p { print $2 }' "$1"; }
: > "$work/rows"
for round in $(seq 1 "$ROUNDS"); do
    for model in vote model-c; do
        WEIR_MODEL=$model wrk -t1 -c1 -d"${DURATION}s" --latency -s bench/chat.lua "http://$WEIR/v1/chat/completions" > "$work/c1.txt"
        echo "$model $(to_ms "$(wrk_pct "$work/c1.txt" 50%)") $(to_ms "$(wrk_pct "$work/c1.txt" 99%)")" >> "$work/rows"
    done
    tail -n 2 "$work/rows" | sed "s/^/  round $round: /"
done
python3 - "$work/rows" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
med = lambda m, i: statistics.median(float(r[i]) for r in rows if r[0] == m)
fan, alone = med("vote", 1), med("model-c", 1)
print(f"fan-out of 3 (60/120/180 ms) p50 {fan:.2f} ms, p99 {med('vote', 2):.2f} ms")
print(f"slowest alone               p50 {alone:.2f} ms, p99 {med('model-c', 2):.2f} ms")
print(f"fan-out over max(latencies): {fan - alone:+.2f} ms (their sum would be +180 ms)")
PY
