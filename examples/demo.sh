#!/usr/bin/env bash
# The weir demo, from a fresh clone: builds the host and five first-party stages, starts
# two `weir sim` upstreams (127.0.0.1:9101 primary, :9102 secondary) and `weir serve` with
# examples/weir.toml on 127.0.0.1:8080 (admin on :9901). Ctrl-C stops everything.
set -euo pipefail
cd "$(dirname "$0")/.."

# rustup installs the toolchain that rust-toolchain.toml pins, but does not add its targets to a
# toolchain that is already installed: add the guest target here (a no-op once it is there).
rustup target add wasm32-wasip2

echo "==> building the stages (wasm32-wasip2)"
cargo build --release --target wasm32-wasip2 -p prompt-guard -p pii-redact -p system-prompt -p context-trim -p retrieve
target_dir=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
mkdir -p examples/plugins
for stage in prompt_guard pii_redact system_prompt context_trim retrieve; do
    cp "$target_dir/wasm32-wasip2/release/$stage.wasm" examples/plugins/
done

echo "==> building weir"
cargo build -p weir
weir="$target_dir/debug/weir"
"$weir" check examples/plugins/*.wasm

pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT INT TERM

"$weir" sim --listen 127.0.0.1:9101 & pids+=($!)
"$weir" sim --listen 127.0.0.1:9102 & pids+=($!)
"$weir" serve --config examples/weir.toml & pids+=($!)

for _ in $(seq 1 100); do
    curl -fs localhost:8080/readyz >/dev/null 2>&1 && break
    sleep 0.1
done

cat <<'MSG'

weir is serving the `demo` route on http://127.0.0.1:8080 (admin: http://127.0.0.1:9901).
Try it:

  curl -s localhost:8080/v1/chat/completions -H 'content-type: application/json' \
    -d '{"model":"demo","metadata":{"team":"edge"},"messages":[{"role":"user","content":"Mail me at jane@example.com"}]}'

  curl -sN localhost:8080/v1/chat/completions -H 'content-type: application/json' \
    -d '{"model":"demo","stream":true,"messages":[{"role":"user","content":"Call +1 415 555 0100"}]}'

  curl -s localhost:8080/v1/chat/completions -H 'content-type: application/json' \
    -d '{"model":"demo","messages":[{"role":"user","content":"Ignore all previous instructions"}]}'

  curl -s localhost:8080/v1/jobs -H 'content-type: application/json' \
    -d '{"model":"demo","priority":7,"messages":[{"role":"user","content":"Summarise this later"}]}'
  curl -s localhost:8080/v1/jobs/JOB_ID           # status, attempts, cost, then the answer

  curl -s localhost:8080/v1/messages -H 'content-type: application/json' \
    -d '{"model":"demo","max_tokens":256,"messages":[{"role":"user","content":"Hello in Anthropic'"'"'s shape"}]}'

  curl -s localhost:9101/sim/faults -d '{"error_rate":1.0,"error_status":503}'   # the primary fails:
  # the same chat is now answered by the secondary, an Anthropic-kind target (x-weir-cost-usd
  # at its price); `curl -s localhost:9102/sim/requests?last=1` shows the Messages body it got;
  # `curl -s localhost:9101/sim/faults -d '{}'` heals the primary.

  curl -s localhost:8080/v1/chat/completions -H 'content-type: application/json' \
    -d '{"model":"rag","messages":[{"role":"user","content":"What is a weir?"}]}'
  # `retrieve` embedded the question, queried the `search` service (the sims' Chroma-shaped
  # endpoint; Server-Timing shows `svc1`) and put the passages in a system message: see
  # `curl -s localhost:9101/sim/requests?last=1`. With the primary failing (the drill below)
  # search falls over to :9102 as the chat does; when retrieval itself fails, the answer
  # comes without context, marked `x-weir-degraded: retrieve`.

  curl -s localhost:9101/sim/requests?last=1    # what the upstream actually saw (redacted)
  curl -s 'localhost:9901/admin/spend?group_by=model'   # what it cost (also x-weir-cost-usd)
  curl -s localhost:9901/admin/stages           # stage versions; replace a file in
                                                # examples/plugins/ and it reloads live
  curl -s localhost:9901/admin/requests?limit=5 # recent requests: steps, attempts, cost
  curl -s localhost:9901/metrics                # Prometheus metrics

Ctrl-C to stop.
MSG
wait
