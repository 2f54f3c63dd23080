#!/usr/bin/env bash
# Two weir binaries compared by the CPU they spend per request at a fixed offered rate: the
# steadier A/B figure on a shared VM, where closed-loop throughput (bench/ab.sh's c=64) swings
# by more than most changes. Each round starts one binary on the same config (the bare route,
# or ROUTE=demo for the 3-stage pipeline, in front of one `weir sim`), warms it, sends RATE
# distinct requests per second for DURATION seconds (`weir bench --unique`, open loop) and
# reads the process's user + system CPU from /proc; rounds alternate the binaries.
#
#   bench/cpu_ab.sh OLD_WEIR NEW_WEIR     # release binaries (see bench/ab.sh for building one)
#   RATE=2000 DURATION=5 ROUNDS=3 ROUTE=bare bench/cpu_ab.sh OLD NEW   # the defaults
#
# Prints each round (CPU per request, latency percentiles) and the medians with the ratio.
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -eq 2 ] || { echo "usage: $0 OLD_WEIR NEW_WEIR" >&2; exit 2; }
old=$(realpath "$1")
new=$(realpath "$2")
RATE=${RATE:-2000}
DURATION=${DURATION:-5}
ROUNDS=${ROUNDS:-3}
ROUTE=${ROUTE:-bare}
SIM=127.0.0.1:9491
WEIR=127.0.0.1:9492

source bench/build.sh
pids=()
node=""
cleanup() { [ -n "$node" ] && kill "$node" 2>/dev/null; for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT INT TERM
RUST_LOG=warn "$weir" sim --listen "$SIM" >/dev/null & pids+=($!)
cat > "$work/weir.toml" <<TOML
[server]
listen = "$WEIR"
admin_listen = "127.0.0.1:9493"
[sandbox]
pool_size = 1024
$(sim_routes "$SIM" sim-large)
TOML
printf '{"model":"%s","messages":[{"role":"user","content":"Hello, my email is jane@example.com. What is a weir? {n}"}]}' "$ROUTE" > "$work/body.json"
url="http://$WEIR/v1/chat/completions"

: > "$work/results"
for round in $(seq 1 "$ROUNDS"); do
    for variant in old new; do
        bin=$old; [ "$variant" = new ] && bin=$new
        RUST_LOG=warn "$bin" serve --config "$work/weir.toml" >/dev/null 2>"$work/$variant.log" & node=$!
        ready "$WEIR"
        "$weir" bench --url "$url" --rate 500 --duration 1 --unique --body "$work/body.json" >/dev/null
        before=$(proc_cpu "$node")
        line=$("$weir" bench --url "$url" --rate "$RATE" --duration "$DURATION" --unique --body "$work/body.json")
        after=$(proc_cpu "$node")
        ok=$(echo "$line" | grep -oE '[0-9]+ ok' | grep -oE '[0-9]+' || echo 0)
        us=$(per_request_us "$before" "$after" "$ok")
        echo "round $round $variant: $us us CPU/request ($ok ok), $(echo "$line" | grep -oE 'p50 [0-9.]+ p90 [0-9.]+ p99 [0-9.]+')"
        echo "$variant $us" >> "$work/results"
        kill "$node"; wait "$node" 2>/dev/null || true; node=""
    done
done
python3 - "$work/results" "$ROUTE" "$RATE" <<'PY'
import sys, statistics
rows = [l.split() for l in open(sys.argv[1])]
med = {v: statistics.median(float(r[1]) for r in rows if r[0] == v) for v in ("old", "new")}
print(f"== median CPU per request, route {sys.argv[2]} at {sys.argv[3]} req/s: "
      f"old {med['old']} us, new {med['new']} us ({100 * (med['new'] / med['old'] - 1):+.1f}%)")
PY
