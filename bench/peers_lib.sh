# Sourced by the scripts that measure weir against its peers (bench/peers.sh,
# bench/loadtest_peers.sh), after bench/build.sh: installs LiteLLM's proxy and Portkey's
# gateway once, and starts them in front of one upstream.
#
# The peers go into a directory kept between runs ($PEERS_DIR, default target/peers): LiteLLM
# from PyPI (`litellm[proxy]`, in a virtualenv), Portkey's gateway from npm
# (`@portkey-ai/gateway`, with `@hono/node-server` pinned to 1.13.8 through an npm `overrides`
# entry: the version npm resolves by default answers streams with 500). Only the installs use
# the network.

peers=${PEERS_DIR:-$target_dir/peers}
mkdir -p "$peers"
if [ ! -x "$peers/venv/bin/litellm" ]; then
    echo "installing litellm[proxy] into $peers/venv"
    python3 -m venv "$peers/venv"
    "$peers/venv/bin/pip" install --quiet --upgrade pip
    "$peers/venv/bin/pip" install --quiet 'litellm[proxy]'
fi
if [ ! -d "$peers/portkey/node_modules/@portkey-ai/gateway" ]; then
    echo "installing @portkey-ai/gateway into $peers/portkey"
    mkdir -p "$peers/portkey"
    cat > "$peers/portkey/package.json" <<'JSON'
{
  "name": "weir-bench-peers",
  "private": true,
  "dependencies": { "@portkey-ai/gateway": "*" },
  "overrides": { "@hono/node-server": "1.13.8" }
}
JSON
    (cd "$peers/portkey" && npm install --silent --no-audit --no-fund)
fi

# start_peers SIM LITELLM PORTKEY (host:port each): LiteLLM serving model `bare` from
# http://SIM/v1 (master key sk-bench; it reads its bundled cost map, no network) and
# Portkey's gateway (routed per request by x-portkey-* headers), logs in $work, pids in $pids.
start_peers() {
    cat > "$work/litellm.yaml" <<YAML
model_list:
  - model_name: bare
    litellm_params:
      model: openai/bare
      api_base: http://$1/v1
      api_key: sk-sim
general_settings:
  master_key: sk-bench
litellm_settings:
  telemetry: false
YAML
    LITELLM_LOCAL_MODEL_COST_MAP=True LITELLM_LOG=ERROR \
        "$peers/venv/bin/litellm" --config "$work/litellm.yaml" --host 127.0.0.1 --port "${2##*:}" \
        >"$work/litellm.log" 2>&1 & pids+=($!)
    (cd "$peers/portkey" && exec node node_modules/@portkey-ai/gateway/build/start-server.js \
        --port="${3##*:}" --headless) >"$work/portkey.log" 2>&1 & pids+=($!)
}

# wait_peers LITELLM PORTKEY: until both answer (LiteLLM takes a while to import).
wait_peers() {
    for _ in $(seq 1 600); do curl -fs -o /dev/null "http://$1/health/liveliness" 2>/dev/null && break; sleep 0.1; done
    curl -fs -o /dev/null "http://$1/health/liveliness" || { echo "litellm did not start; its log:"; tail -20 "$work/litellm.log"; exit 1; }
    # Portkey answers 404 on /, which curl -f counts as failure: any answer will do.
    for _ in $(seq 1 300); do
        code=$(curl -s -o /dev/null -w '%{http_code}' "http://$2/v1/models" || true)
        [ "$code" != "000" ] && return 0; sleep 0.1
    done
    echo "portkey did not start; its log:"; tail -20 "$work/portkey.log"; exit 1
}
