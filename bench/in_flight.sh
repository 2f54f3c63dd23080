#!/usr/bin/env bash
# Requests in flight against a slow model, bounded by memory and not by the stage instance
# pool: the demo pipeline (prompt-guard, pii-redact, system-prompt; weir:stage@0.2, so no
# instance waits on the model once the pool is half in use) with `pool_size = 64`, an upstream
# that answers each request after 2 s, and IN_FLIGHT requests sent in one second by
# `weir bench` (open loop). Prints the statuses (any 503 `pool_exhausted` would show), the
# peak RSS and the RSS per request in flight over the idle figure. Release build.
#
#   bench/in_flight.sh            (IN_FLIGHT=2000 by default; 10000 is the issue's goal)
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/build.sh
IN_FLIGHT=${IN_FLIGHT:-2000}
trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$work"' EXIT

rss_kib() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }
RUST_LOG=warn "$weir" sim --listen 127.0.0.1:9321 --latency-ms 2000 >/dev/null 2>&1 &
cat > "$work/weir.toml" <<TOML
[server]
listen = "127.0.0.1:9322"
[sandbox]
pool_size = 64
[targets.slow]
base_url = "http://127.0.0.1:9321/v1"
max_concurrency = 20000
timeout_ms = 60000
[[routes]]
model = "demo"
targets = ["slow"]
$(demo_stages)
TOML
RUST_LOG=warn "$weir" serve --config "$work/weir.toml" >"$work/weir.log" 2>&1 & pid=$!
for _ in $(seq 100); do
    curl -sf http://127.0.0.1:9322/healthz >/dev/null 2>&1 && break
    sleep 0.1
done
# Warm the connections and the stages.
"$weir" bench --url http://127.0.0.1:9322/v1/chat/completions --rate 50 --duration 1 --max-in-flight 100 >/dev/null
sleep 2.5
idle=$(rss_kib $pid)
"$weir" bench --url http://127.0.0.1:9322/v1/chat/completions --rate "$IN_FLIGHT" --duration 1 \
    --max-in-flight "$IN_FLIGHT" > "$work/out.txt" &
bench=$!
peak=$idle
while kill -0 $bench 2>/dev/null; do
    now=$(rss_kib $pid); [ "$now" -gt "$peak" ] && peak=$now; sleep 0.1
done
echo "$IN_FLIGHT requests in one second, 2 s upstream, pool_size 64: $(cat "$work/out.txt")"
python3 -c "i,p,n=$idle,$peak,$IN_FLIGHT; print(f'RSS idle {i/1024:.1f} MiB, peak {p/1024:.1f} MiB: {(p-i)/n:.1f} KiB per request in flight')"
grep -c pool_exhausted "$work/weir.log" | sed 's/^/pool_exhausted in the log: /' || true
