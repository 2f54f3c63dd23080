#!/usr/bin/env bash
# Two weir binaries on the same request path, rounds alternating so machine noise hits both
# alike: the same config (the 3-stage demo pipeline and a bare route in front of one
# `weir sim`) served by each binary, c=1 p50/p99 latency and c=64 throughput (wrk) per route.
#
#   bench/ab.sh OLD_WEIR NEW_WEIR      # release binaries; installs wrk (apt-get) when missing
#
# Build the old one from a worktree of the commit to compare with, e.g.
#   git worktree add /tmp/weir-old <commit> && (cd /tmp/weir-old && cargo build --release -p weir)
# Prints each round and the medians with the ratio NEW/OLD. The stages are this checkout's.
# ROUTES="demo" measures one route; SCRIPT=bench/distinct.lua sends distinct requests (every
# stage runs on every request) instead of bench/chat.lua's one body.
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -eq 2 ] || { echo "usage: $0 OLD_WEIR NEW_WEIR" >&2; exit 2; }
old=$(realpath "$1")
new=$(realpath "$2")
DURATION=${DURATION:-5}
ROUNDS=${ROUNDS:-5}
SIM=127.0.0.1:9401

source bench/build.sh
pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT INT TERM
RUST_LOG=warn "$weir" sim --listen "$SIM" >/dev/null & pids+=($!)

declare -A addr
port=9410
for variant in old new; do
    port=$((port + 2))
    addr[$variant]="127.0.0.1:$port"
    cat > "$work/$variant.toml" <<TOML
[server]
listen = "127.0.0.1:$port"
admin_listen = "127.0.0.1:$((port + 1))"
[sandbox]
pool_size = 1024
$(sim_routes "$SIM")
TOML
    bin=$old; [ "$variant" = new ] && bin=$new
    RUST_LOG=warn "$bin" serve --config "$work/$variant.toml" >/dev/null 2>"$work/$variant.log" & pids+=($!)
done
for variant in old new; do
    for _ in $(seq 1 100); do curl -fs "http://${addr[$variant]}/readyz" >/dev/null 2>&1 && break; sleep 0.1; done
done

: > "$work/results"
for round in $(seq 1 "$ROUNDS"); do
    for route in ${ROUTES:-bare demo}; do
        for variant in old new; do
            url="http://${addr[$variant]}/v1/chat/completions"
            WEIR_MODEL=$route wrk -t1 -c1 -d"${DURATION}s" --latency -s "${SCRIPT:-bench/chat.lua}" "$url" > "$work/c1.txt"
            WEIR_MODEL=$route wrk -t2 -c64 -d"${DURATION}s" -s "${SCRIPT:-bench/chat.lua}" "$url" > "$work/c64.txt"
            p50=$(to_ms "$(awk '$1 == "50%" { print $2 }' "$work/c1.txt")")
            p99=$(to_ms "$(awk '$1 == "99%" { print $2 }' "$work/c1.txt")")
            rps=$(awk '/Requests\/sec/ {print $2}' "$work/c64.txt")
            errors=$(grep -E 'Non-2xx|Socket errors' "$work/c1.txt" "$work/c64.txt" | tr '\n' ' ' || true)
            echo "round $round $route $variant: c=1 p50 $p50 ms p99 $p99 ms, c=64 $rps req/s ${errors}"
            echo "$route $variant $p50 $p99 $rps" >> "$work/results"
        done
    done
done
python3 - "$work/results" <<'PY'
import sys, statistics
rows = [l.split() for l in open(sys.argv[1])]
print("== medians (new vs old)")
for route in sorted({r[0] for r in rows}):
    med = {}
    for v in ("old", "new"):
        sel = [r for r in rows if r[0] == route and r[1] == v]
        med[v] = [statistics.median(float(r[i]) for r in sel) for i in (2, 3, 4)]
    o, n = med["old"], med["new"]
    print(f"{route:5}: c=1 p50 {o[0]:.4f} -> {n[0]:.4f} ms ({(n[0] / o[0] - 1) * 100:+.1f}%), "
          f"p99 {o[1]:.4f} -> {n[1]:.4f} ms ({(n[1] / o[1] - 1) * 100:+.1f}%), "
          f"c=64 {o[2]:.0f} -> {n[2]:.0f} req/s ({(n[2] / o[2] - 1) * 100:+.1f}%)")
PY
