#!/usr/bin/env bash
# One `weir loadtest` scenario against weir (bare, and with the demo's 3 stages), LiteLLM's
# proxy and Portkey's gateway, each in front of the same `weir sim` (which the scenario starts
# drives: 20 ms per answer, a 5-second window where 30% of answers are 503): the same
# open-loop traffic, the same faults, one table.
#
#   bench/loadtest_peers.sh     # RATE=300 DURATION=20 by default; installs the peers as
#                               # bench/peers.sh does (PEERS_DIR, default target/peers)
#
# The reports stay in $OUT (default target/loadtest-peers/<endpoint>/report.html).
# Columns: achieved req/s, p50/p99 latency from the scheduled send time, the p50 added to the
# sim's own (a run straight at the sim), and the client-visible error rate. No peer has a
# fallback configured (there is one upstream), so the fault window's errors reach the client
# through each; weir's retries (max_attempts 3 on the same target) hide most of them.
set -euo pipefail
cd "$(dirname "$0")/.."
RATE=${RATE:-300}
DURATION=${DURATION:-20}
SIM=127.0.0.1:9621
WEIR=127.0.0.1:9622
LITELLM=127.0.0.1:9624
PORTKEY=127.0.0.1:9625

source bench/build.sh
source bench/peers_lib.sh

pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT INT TERM

cat > "$work/weir.toml" <<TOML
[server]
listen = "$WEIR"
admin_listen = "127.0.0.1:9623"
[sandbox]
pool_size = 1024
$(sim_routes "$SIM")
TOML
# One sim for every run (the scenario drives it by URL: zeroes its counters, sets its faults),
# so no proxy's keep-alive connections go stale between runs.
RUST_LOG=warn "$weir" sim --listen "$SIM" >/dev/null & pids+=($!)
RUST_LOG=warn "$weir" serve --config "$work/weir.toml" >"$work/weir.log" 2>&1 & pids+=($!)
start_peers "$SIM" "$LITELLM" "$PORTKEY"
ready "$WEIR"
wait_peers "$LITELLM" "$PORTKEY"

# The reports are kept (report.html per endpoint).
out=${OUT:-$target_dir/loadtest-peers}
mkdir -p "$out"

# The scenario: MODEL is filled in per run.
scenario() {
    cat <<TOML
name = "peers: $1"
about = "The same open-loop load and fault window through $1."
duration_s = $DURATION
seed = 1
[weir]
url = "http://127.0.0.1:1"
[sims.upstream]
url = "http://$SIM"
faults = { latency_ms = 20 }
[traffic]
rate = $RATE
max_in_flight = 256
model = "$2"
prompt_words_min = 10
prompt_words_max = 60
timeout_ms = 10000
[[timeline]]
at_s = $((DURATION / 2))
for_s = 5
sim = "upstream"
faults = { latency_ms = 20, error_rate = 0.3, error_status = 503 }
TOML
}

# name url model headers...
runs=(
    "sim|http://$SIM|bare"
    "weir-bare|http://$WEIR|bare"
    "weir-3-stages|http://$WEIR|demo"
    "litellm|http://$LITELLM|bare|authorization: Bearer sk-bench"
    "portkey|http://$PORTKEY|bare|authorization: Bearer sk-sim|x-portkey-provider: openai|x-portkey-custom-host: http://$SIM/v1"
)
for entry in "${runs[@]}"; do
    IFS='|' read -r -a f <<<"$entry"
    name=${f[0]}; url=${f[1]}; model=${f[2]}
    headers=()
    for h in "${f[@]:3}"; do headers+=(--header "$h"); done
    scenario "$name" "$model" > "$work/$name.toml"
    echo "==> $name"
    "$weir" loadtest "$work/$name.toml" --quiet --url "$url" "${headers[@]}" --out "$out/$name" | head -1 || true
done

echo
echo "== one loadtest scenario ($RATE req/s open loop, ${DURATION}s, a 5 s window of 30% 503s), $(nproc) cores"
python3 - "$out" <<'PY'
import json, sys, os
work = sys.argv[1]
names = ["sim", "weir-bare", "weir-3-stages", "litellm", "portkey"]
reports = {n: json.load(open(os.path.join(work, n, "report.json"))) for n in names}
sim_p50 = reports["sim"]["totals"]["latency_ms"]["p50"]
print(f"{'endpoint':<14} {'req/s':>8} {'p50 ms':>9} {'p99 ms':>9} {'added p50':>10} {'errors':>8}  top error codes")
for n in names:
    t = reports[n]["totals"]
    lat = t["latency_ms"]
    added = "-" if n == "sim" else f"{lat['p50'] - sim_p50:.2f}"
    codes = sorted(t["by_code"].items(), key=lambda kv: -kv[1])[:3]
    codes = ", ".join(f"{c} x{k}" for c, k in codes)
    print(f"{n:<14} {t['achieved_rps']:>8.1f} {lat['p50']:>9.2f} {lat['p99']:>9.2f} {added:>10} {100 * t['error_rate']:>7.2f}%  {codes}")
PY
