#!/usr/bin/env bash
# The request-path benchmark: requests through weir (prompt-guard -> pii-redact ->
# system-prompt in front of one `weir sim`) versus the same requests straight to `weir sim`,
# at the same concurrency, on loopback only.
#
#   bench/run.sh            # needs wrk (apt-get install -y wrk)
#
# Prints: added latency p50/p99 at c=1 (wrk), p50/p99 at an evenly spaced 1,000 req/s
# (`weir bench`, open loop: latency from each request's scheduled start), and the highest
# throughput (wrk, 2 threads, 64 connections). Each run is bounded (DURATION seconds).
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-10}
SIM=127.0.0.1:9201
WEIR=127.0.0.1:9280
ADMIN=127.0.0.1:9281

source bench/build.sh
# The demo pipeline, used by the `demo` and `cached` routes.
stages='[[routes.stages]]
name = "prompt-guard"
path = "'"$plugins"'/prompt_guard.wasm"
[[routes.stages]]
name = "pii-redact"
path = "'"$plugins"'/pii_redact.wasm"
[[routes.stages]]
name = "system-prompt"
path = "'"$plugins"'/system_prompt.wasm"
config = { prompt = "You serve the {{team}} team." }'
cat > "$work/bench.toml" <<TOML
[server]
listen = "$WEIR"
admin_listen = "$ADMIN"
[sandbox]
pool_size = 1024
[targets.sim]
base_url = "http://$SIM/v1"
[[routes]]
model = "demo"
targets = ["sim"]
$stages
[[routes]]
model = "bare"
targets = ["sim"]
# The same pipeline with its answers cached: every request after the first is a hit.
[[routes]]
model = "cached"
targets = ["sim"]
cache = { ttl_ms = 600000, cache_nonzero_temperature = true }
$stages
TOML

pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT INT TERM
RUST_LOG=warn "$weir" sim --listen "$SIM" >/dev/null & pids+=($!)
RUST_LOG=warn "$weir" serve --config "$work/bench.toml" >/dev/null & pids+=($!)
for _ in $(seq 1 100); do curl -fs "http://$WEIR/readyz" >/dev/null 2>&1 && break; sleep 0.1; done

# wrk --latency prints "50.000%  1.23ms" style lines with -U? plain wrk prints 50% 75% 90% 99%.
wrk_pct() { awk -v p="$2" '$1 == p { print $2 }' "$1"; }

echo "== c=1, ${DURATION}s each (wrk)"
wrk -t1 -c1 -d"${DURATION}s" --latency -s bench/chat.lua "http://$SIM/v1/chat/completions" > "$work/sim_c1.txt"
wrk -t1 -c1 -d"${DURATION}s" --latency -s bench/chat.lua "http://$WEIR/v1/chat/completions" > "$work/weir_c1.txt"
for f in sim_c1 weir_c1; do
    echo "$f: p50 $(to_ms "$(wrk_pct "$work/$f.txt" 50%)") ms  p99 $(to_ms "$(wrk_pct "$work/$f.txt" 99%)") ms  $(awk '/Requests\/sec/ {print $2}' "$work/$f.txt") req/s"
done

echo "== 1000 req/s, open loop, evenly spaced, ${DURATION}s each (weir bench)"
for target in "sim http://$SIM" "weir http://$WEIR"; do
    set -- $target
    echo "$1: $("$weir" bench --url "$2/v1/chat/completions" --rate 1000 --duration "$DURATION")"
done

echo "== cache hits through full HTTP (3-stage pipeline, answer from the cache), c=1 (wrk)"
WEIR_MODEL=cached wrk -t1 -c1 -d"${DURATION}s" --latency -s bench/chat.lua "http://$WEIR/v1/chat/completions" > "$work/hit_c1.txt"
echo "weir hit: p50 $(to_ms "$(wrk_pct "$work/hit_c1.txt" 50%)") ms  p99 $(to_ms "$(wrk_pct "$work/hit_c1.txt" 99%)") ms  $(awk '/Requests\/sec/ {print $2}' "$work/hit_c1.txt") req/s"

echo "== max throughput, ${DURATION}s each (wrk -t2 -c64)"
for target in "sim http://$SIM" "weir http://$WEIR"; do
    set -- $target
    wrk -t2 -c64 -d"${DURATION}s" --latency -s bench/chat.lua "$2/v1/chat/completions" > "$work/$1_max.txt"
    echo "$1: $(awk '/Requests\/sec/ {print $2}' "$work/$1_max.txt") req/s  p50 $(to_ms "$(wrk_pct "$work/$1_max.txt" 50%)") ms  p99 $(to_ms "$(wrk_pct "$work/$1_max.txt" 99%)") ms  errors: $(grep -E 'Non-2xx|Socket errors' "$work/$1_max.txt" | tr '\n' ' ')"
done
curl -s "http://$SIM/sim/stats"; echo
