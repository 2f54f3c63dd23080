#!/usr/bin/env bash
# weir against its peers, from one run on this machine: LiteLLM's proxy and Portkey's gateway
# in front of the same `weir sim` upstream as weir (bare, and with the demo's 3 stages), and
# nginx as a plain reverse proxy (keep-alive to the upstream, no logging): the floor, what
# one more loopback hop through a proxy in C costs here, whatever the proxy does.
#
#   bench/peers.sh          # needs python3 (venv), node and npm; installs wrk and nginx (apt)
#                           # when missing, and the peers once
#
# The peers go into a scratch directory that is kept between runs ($PEERS_DIR, default
# target/peers): LiteLLM from PyPI (`litellm[proxy]`, in a virtualenv), Portkey's gateway from
# npm (`@portkey-ai/gateway`, with `@hono/node-server` pinned to 1.13.8 through an npm
# `overrides` entry: the version npm resolves by default answers streams with 500). Only the
# installs use the network; the measurements are loopback only (LiteLLM reads its bundled
# model cost map: LITELLM_LOCAL_MODEL_COST_MAP=True).
#
# Prints one table: for each proxy, p50/p99 at c=1 and the latency it adds to the upstream's
# own p50 (wrk, DURATION seconds), and throughput at c=32 (wrk -t2 -c32) with its ratio to
# each peer's. The peers run no plugins; weir is shown bare and with prompt-guard ->
# pii-redact -> system-prompt, twice: with the one request body every row sends (two of the
# three stages are deterministic, so their output then comes from weir's stage-output cache
# and only pii-redact runs), and with every request's message different (`weir-3-distinct`,
# bench/distinct.lua, the same body with a tag: every stage runs on every request, what
# distinct user traffic costs).
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-10}
SIM=127.0.0.1:9601
WEIR=127.0.0.1:9602
LITELLM=127.0.0.1:9604
PORTKEY=127.0.0.1:9605
NGINX=127.0.0.1:9606

source bench/build.sh
source bench/peers_lib.sh

pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT INT TERM

RUST_LOG=warn "$weir" sim --listen "$SIM" >/dev/null & pids+=($!)
cat > "$work/weir.toml" <<TOML
[server]
listen = "$WEIR"
admin_listen = "127.0.0.1:9603"
[sandbox]
pool_size = 1024
$(sim_routes "$SIM")
TOML
RUST_LOG=warn "$weir" serve --config "$work/weir.toml" >/dev/null 2>&1 & pids+=($!)

start_peers "$SIM" "$LITELLM" "$PORTKEY"
start_nginx "$NGINX" "$SIM"

ready "$WEIR"
for _ in $(seq 1 100); do curl -s -o /dev/null "http://$NGINX/" && break; sleep 0.1; done
wait_peers "$LITELLM" "$PORTKEY"

# One wrk script for all: the model, an Authorization and Portkey's routing headers from the
# environment.
cat > "$work/peer.lua" <<'LUA'
wrk.method = "POST"
wrk.headers["content-type"] = "application/json"
local auth = os.getenv("AUTH")
if auth and auth ~= "" then wrk.headers["authorization"] = "Bearer " .. auth end
local host = os.getenv("PORTKEY_HOST")
if host and host ~= "" then
    wrk.headers["x-portkey-provider"] = "openai"
    wrk.headers["x-portkey-custom-host"] = host
end
wrk.body = '{"model":"' .. os.getenv("MODEL") .. '","metadata":{"team":"bench"},"messages":[{"role":"user","content":"Hello, my email is jane@example.com. What is a weir?"}]}'
LUA

# name url model auth portkey-host distinct
proxies=(
    "sim|http://$SIM|bare|||"
    "nginx|http://$NGINX|bare|||"
    "weir-bare|http://$WEIR|bare|||"
    "weir-3-stages|http://$WEIR|demo|||"
    "weir-3-distinct|http://$WEIR|demo|||1"
    "portkey|http://$PORTKEY|bare|sk-sim|http://$SIM/v1|"
    "litellm|http://$LITELLM|bare|sk-bench||"
)
# A smoke request through each, so a misconfigured peer fails loudly rather than measuring 4xx.
for entry in "${proxies[@]}"; do
    IFS='|' read -r name url model auth host distinct <<<"$entry"
    headers=(-H 'content-type: application/json')
    [ -n "$auth" ] && headers+=(-H "authorization: Bearer $auth")
    [ -n "$host" ] && headers+=(-H 'x-portkey-provider: openai' -H "x-portkey-custom-host: $host")
    code=$(curl -s -o "$work/smoke.json" -w '%{http_code}' "${headers[@]}" "$url/v1/chat/completions" \
        -d "{\"model\":\"$model\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}")
    if [ "$code" != 200 ]; then echo "$name answered $code: $(head -c 400 "$work/smoke.json")"; exit 1; fi
done

wrk_pct() { awk -v p="$2" '$1 == p { print $2 }' "$1"; }
declare -A p50 p99 rps errs
for entry in "${proxies[@]}"; do
    IFS='|' read -r name url model auth host distinct <<<"$entry"
    script="$work/peer.lua"
    [ -n "$distinct" ] && script=bench/distinct.lua
    MODEL=$model WEIR_MODEL=$model AUTH=$auth PORTKEY_HOST=$host wrk -t1 -c1 -d"${DURATION}s" --latency -s "$script" \
        "$url/v1/chat/completions" > "$work/$name.c1"
    MODEL=$model WEIR_MODEL=$model AUTH=$auth PORTKEY_HOST=$host wrk -t2 -c32 -d"${DURATION}s" -s "$script" \
        "$url/v1/chat/completions" > "$work/$name.c32"
    p50[$name]=$(to_ms "$(wrk_pct "$work/$name.c1" 50%)")
    p99[$name]=$(to_ms "$(wrk_pct "$work/$name.c1" 99%)")
    rps[$name]=$(awk '/Requests\/sec/ {print $2}' "$work/$name.c32")
    errs[$name]=$(cat "$work/$name.c1" "$work/$name.c32" | awk '/Non-2xx|Socket errors/ {printf "%s ", $0}')
done

echo "== peers against one weir sim, DURATION=${DURATION}s per measure, $(nproc) cores"
printf '%-15s %10s %10s %12s %12s %12s %12s %12s  %s\n' proxy "c=1 p50" "c=1 p99" "added p50" "c=32 req/s" "weir-3 is ×" "weir-3-dist ×" "weir-bare ×" errors
for entry in "${proxies[@]}"; do
    name=${entry%%|*}
    python3 - "$name" "${p50[$name]}" "${p99[$name]}" "${p50[sim]}" "${rps[$name]}" "${rps[weir-3-stages]}" "${rps[weir-3-distinct]}" "${rps[weir-bare]}" "${errs[$name]}" <<'PY'
import sys
name, p50, p99, sim, rps, w3, w3d, wb, errs = sys.argv[1:10]
p50, p99, sim, rps, w3, w3d, wb = map(float, (p50, p99, sim, rps, w3, w3d, wb))
added = "-" if name == "sim" else f"{p50 - sim:.3f} ms"
ratio = lambda w: "-" if name in ("sim", "nginx") or name.startswith("weir") else f"{w / rps:.1f}"
print(f"{name:<15} {p50:>7.3f} ms {p99:>7.3f} ms {added:>12} {rps:>12.0f} {ratio(w3):>12} {ratio(w3d):>12} {ratio(wb):>12}  {errs}")
PY
done
