#!/usr/bin/env bash
# A three-node weir fleet on one machine: redis-server on 127.0.0.1:6390 (no persistence),
# one `weir sim` upstream on :9101, and three `weir serve` nodes from examples/fleet/weir.toml
# on :8081, :8082, :8083 (admin :9911, :9912, :9913), each with its own data_dir. Ctrl-C stops
# everything.
set -euo pipefail
cd "$(dirname "$0")"
root=$(cd ../.. && pwd)

"$root/tests/install-redis"
rustup target add wasm32-wasip2
echo "==> building weir"
(cd "$root" && cargo build -p weir)
target_dir=$(cd "$root" && cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
weir="$target_dir/debug/weir"

run=$(mktemp -d /tmp/weir-fleet.XXXXXX)
pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$run"; }
trap cleanup EXIT INT TERM

redis-server --port 6390 --bind 127.0.0.1 --save '' --appendonly no --dir "$run" >"$run/redis.log" & pids+=($!)
"$weir" sim --listen 127.0.0.1:9101 >/dev/null & pids+=($!)
for _ in $(seq 1 100); do redis-cli -p 6390 ping >/dev/null 2>&1 && break; sleep 0.1; done

for i in 1 2 3; do
    mkdir -p "$run/node-$i"
    sed "s|data/NODE|$run/node-$i/data|; s|\.\./prices.toml|$PWD/../prices.toml|" weir.toml >"$run/node-$i/weir.toml"
    RUST_LOG=${RUST_LOG:-info} "$weir" serve --config "$run/node-$i/weir.toml" \
        --listen "127.0.0.1:808$i" --admin-listen "127.0.0.1:991$i" 2>"$run/node-$i/weir.log" & pids+=($!)
done
for i in 1 2 3; do
    for _ in $(seq 1 200); do curl -fs "localhost:808$i/readyz" >/dev/null 2>&1 && break; sleep 0.1; done
done

cat <<'MSG'

Three weir nodes share one Redis: :8081, :8082, :8083 (admin :9911, :9912, :9913).

  key='authorization: Bearer sk-weir-fleet-demo-CHANGE-ME'
  body='{"model":"demo","messages":[{"role":"user","content":"hello fleet"}]}'
  # A miss on node 1 ...
  curl -si localhost:8081/v1/chat/completions -H "$key" -H 'content-type: application/json' -d "$body" | grep -i x-weir-cache
  # ... is a hit on node 2.
  curl -si localhost:8082/v1/chat/completions -H "$key" -H 'content-type: application/json' -d "$body" | grep -i x-weir-cache
  # The fleet's spend from any node, and one node's share.
  curl -s localhost:9913/admin/spend
  # The shared state as this node sees it (Redis latency, breaker, errors).
  curl -s localhost:9911/admin/state

Stop Redis (kill -STOP $(pgrep -f 'redis-server.*6390')) and the nodes keep serving on their
local shares; kill -CONT it and they re-sync. Ctrl-C stops everything.
MSG
wait
