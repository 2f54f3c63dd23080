#!/usr/bin/env bash
# What the fleet's shared state costs on the request path: one weir node with the demo
# pipeline, an API key with a budget and RPM/TPM limits, a target RPM and the response cache
# on, in front of one `weir sim`, with `[state] backend = "local"`, then "redis" in `strict`
# and in `lease` budget mode (one redis-server on loopback). Every request is distinct and
# deterministic (`temperature: 0`): a cacheable miss, so budget, limits and the shared cache
# (read-or-lease before the call, the fill after) are all exercised. Variants: `strict`
# (budget reserved per call, one Redis call per rate-limit admission), `strict-leased-limits`
# (the same with `rate_limit_lease_ms = 1000`), `lease` (budget and rate limits leased) and
# `lease-no-shared-cache` (the same without the shared cache: what budgets and limits cost).
# Rounds alternate the variants so machine noise hits all alike.
#
#   bench/fleet.sh            # installs wrk and redis-server (apt-get) when missing
#   VARIANTS="local lease" bench/fleet.sh   # some variants only (`local` first: the others are
#                                           # compared with it)
#   COMMANDSTATS=1 bench/fleet.sh           # also Redis's INFO commandstats of each run
#   PERF=1 bench/fleet.sh                   # also the weir node's hottest symbols (self time,
#                                           # `perf`) during each 1,000 req/s run; PERF_ARGS
#                                           # replaces `-F 999` (e.g. "-F 200 --call-graph dwarf"),
#                                           # PERF_OUT=dir keeps each variant's perf.data there
#
# Prints per variant and round: c=1 p50/p99 (wrk), p50/p99 at an evenly spaced 1,000 req/s
# (`weir bench`, open loop), Redis commands per request, and the CPU time per request of Redis
# and of the weir node (both runs: c=1 and 1,000 req/s), and how busy the whole machine was
# during the 1,000 req/s run (every process here shares its cores); then the medians and the
# added latency against `local`.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-10}
ROUNDS=${ROUNDS:-3}
SIM=127.0.0.1:9461
REDIS_PORT=9460
WEIR=127.0.0.1:9470
ADMIN=127.0.0.1:9471
KEY=sk-weir-bench-fleet

tests/install-redis
source bench/build.sh
[ -n "${PERF:-}" ] && need perf linux-perf
pids=()
node=""
cleanup() { [ -n "$node" ] && kill "$node" 2>/dev/null; for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT INT TERM
redis-server --port $REDIS_PORT --bind 127.0.0.1 --save '' --appendonly no --dir "$work" >/dev/null & pids+=($!)
RUST_LOG=warn "$weir" sim --listen "$SIM" >/dev/null & pids+=($!)
for _ in $(seq 1 100); do redis-cli -p $REDIS_PORT ping >/dev/null 2>&1 && break; sleep 0.1; done
hash=$(printf %s "$KEY" | "$weir" key hash)

config() { # variant
    local state=""
    case $1 in
        strict|strict-leased-limits|lease|lease-no-shared-cache) state="[state]
backend = \"redis\"
url = \"redis://127.0.0.1:$REDIS_PORT\"
key_prefix = \"bench-$1\"
budget_mode = \"${1%%-*}\"" ;;
    esac
    case $1 in
        strict-leased-limits|lease*) state="$state
rate_limit_lease_ms = 1000" ;;
    esac
    [ "$1" = lease-no-shared-cache ] && state="$state
shared_cache = false"
    cat <<TOML
[server]
listen = "$WEIR"
admin_listen = "$ADMIN"
data_dir = "$work/data-$1"
[sandbox]
pool_size = 1024
[prices."sim-large"]
input_per_mtok = 1.0
output_per_mtok = 2.0
[targets.sim]
base_url = "http://$SIM/v1"
model = "sim-large"
rpm = 1000000
tpm = 100000000
[[routes]]
model = "demo"
targets = ["sim"]
cache = { ttl_ms = 600000 }
$(demo_stages)
[[keys]]
name = "bench"
hash = "$hash"
daily_budget_usd = 1000000.0
rpm = 1000000
tpm = 100000000
$state
TOML
}

wrk_pct() { awk -v p="$2" '$1 == p { print $2 }' "$1"; }
commands() { redis-cli -p $REDIS_PORT info stats | awk -F: '/^total_commands_processed/ {print $2+0}'; }
# CPU seconds Redis used so far (its own count; a process's: `proc_cpu`, bench/build.sh).
redis_cpu() { redis-cli -p $REDIS_PORT info cpu | awk -F: '/^used_cpu_(sys|user):/ {s += $2} END {printf "%.6f", s}'; }
# The machine's CPU time so far: busy and total jiffies of all cores (/proc/stat).
machine_cpu() { awk '/^cpu / {t = 0; for (i = 2; i <= 9; i++) t += $i; print t - $5 - $6, t}' /proc/stat; }
# Context switches of all of a process's threads so far (voluntary + involuntary).
switches() { cat /proc/"$1"/task/*/status 2>/dev/null | awk '/ctxt_switches/ {s += $2} END {print s+0}'; }
declare -A c1_p50 c1_p99 r_p50 r_p99 cmds redis_us weir_us busy
variants=${VARIANTS:-"local strict strict-leased-limits lease lease-no-shared-cache"}
for round in $(seq 1 "$ROUNDS"); do
    for v in $variants; do
        config "$v" > "$work/$v.toml"
        # Every run starts on an empty Redis: no spend, logs or cache entries of earlier runs.
        redis-cli -p $REDIS_PORT flushall >/dev/null
        RUST_LOG=warn "$weir" serve --config "$work/$v.toml" >/dev/null 2>"$work/$v.log" & node=$!
        for _ in $(seq 1 200); do curl -fs "http://$WEIR/readyz" >/dev/null 2>&1 && break; sleep 0.05; done
        curl -fs "http://$WEIR/readyz" >/dev/null 2>&1 || { echo "weir ($v) did not start:"; cat "$work/$v.log"; exit 1; }
        # Warm up (stage instances, connections, Redis scripts).
        WEIR_KEY=$KEY wrk -t1 -c1 -d1s -s bench/fleet.lua "http://$WEIR/v1/chat/completions" >/dev/null
        [ -n "${COMMANDSTATS:-}" ] && redis-cli -p $REDIS_PORT config resetstat >/dev/null
        before=$(commands); redis_before=$(redis_cpu); weir_before=$(proc_cpu "$node"); sw_before=$(switches "$node")
        WEIR_KEY=$KEY wrk -t1 -c1 -d"${DURATION}s" --latency -s bench/fleet.lua "http://$WEIR/v1/chat/completions" > "$work/c1.txt"
        sent=$(awk '/requests in/ {print $1}' "$work/c1.txt")
        printf '{"model":"demo","temperature":0,"messages":[{"role":"user","content":"Hello, my email is jane@example.com. What is a weir? %s-%s-{n}"}]}' "$v" "$round$RANDOM" > "$work/body.json"
        if [ -n "${PERF:-}" ]; then
            perf record -q ${PERF_ARGS:--F 999} -p "$node" -o "$work/perf-$v.data" -- sleep "$DURATION" >/dev/null 2>&1 & perf_pid=$!
        fi
        read -r busy_before all_before < <(machine_cpu)
        line=$("$weir" bench --url "http://$WEIR/v1/chat/completions" --rate 1000 --duration "$DURATION" --unique --body "$work/body.json" --header "authorization: Bearer $KEY")
        read -r busy_after all_after < <(machine_cpu)
        after=$(commands); redis_after=$(redis_cpu); weir_after=$(proc_cpu "$node"); sw_after=$(switches "$node")
        bench_ok=$(echo "$line" | grep -oE '[0-9]+ ok' | grep -oE '[0-9]+' || echo 0)
        total=$((sent + bench_ok))
        c1_p50[$v,$round]=$(to_ms "$(wrk_pct "$work/c1.txt" 50%)")
        c1_p99[$v,$round]=$(to_ms "$(wrk_pct "$work/c1.txt" 99%)")
        r_p50[$v,$round]=$(echo "$line" | grep -oE 'p50 [0-9.]+' | awk '{print $2}')
        r_p99[$v,$round]=$(echo "$line" | grep -oE 'p99 [0-9.]+' | awk '{print $2}')
        # How busy the whole machine (weir, Redis, the sim, the load generator, and perf with
        # PERF=1) was at 1,000 req/s.
        busy[$v,$round]=$(python3 -c "print(round(100 * ($busy_after - $busy_before) / max($all_after - $all_before, 1), 1))")
        cmds[$v,$round]=$(python3 -c "print(round(($after - $before) / max($total, 1), 3))")
        redis_us[$v,$round]=$(per_request_us "$redis_before" "$redis_after" "$total")
        weir_us[$v,$round]=$(per_request_us "$weir_before" "$weir_after" "$total")
        [ "$v" = local ] && { cmds[$v,$round]=0; redis_us[$v,$round]=0; }
        echo "round $round $v: c=1 p50 ${c1_p50[$v,$round]} ms p99 ${c1_p99[$v,$round]} ms | 1000 req/s: $line | Redis commands/request ${cmds[$v,$round]} | CPU/request: Redis ${redis_us[$v,$round]} us, weir ${weir_us[$v,$round]} us, weir context switches $(python3 -c "print(round(($sw_after - $sw_before) / max($total, 1), 2))") | machine busy at 1000 req/s ${busy[$v,$round]}% of $(nproc) cores"
        # weir's own view of its Redis calls (the last 1,024, so the end of the 1,000 req/s run).
        [ "$v" != local ] && echo "  Redis calls as the node saw them: $(curl -fs "http://$ADMIN/admin/state" | python3 -c 'import json,sys; l=json.load(sys.stdin)["latency_ms"]; print("p50 %s ms, p99 %s ms, max %s ms" % (l["p50"], l["p99"], l["max"]))' || echo n/a)"
        # COMMANDSTATS=1: what Redis spent its time on, per command (scripts' own calls too).
        [ -n "${COMMANDSTATS:-}" ] && [ "$v" != local ] && redis-cli -p $REDIS_PORT info commandstats | grep '^cmdstat' | tr ':,' '  '
        if [ -n "${PERF:-}" ]; then
            wait "$perf_pid" || true
            [ -n "${PERF_OUT:-}" ] && mkdir -p "$PERF_OUT" && cp "$work/perf-$v.data" "$PERF_OUT/"
            echo "the weir node ($v, 1000 req/s): CPU by binary, then the hottest symbols"
            { perf report -q -i "$work/perf-$v.data" --no-children --sort dso 2>/dev/null || true; } | head -8 | cut -c1-80 || true
            { perf report -q -i "$work/perf-$v.data" --no-children --sort dso,symbol 2>/dev/null || true; } | head -${PERF_TOP:-40} | cut -c1-160 || true
        fi
        kill "$node"; wait "$node" 2>/dev/null || true; node=""
    done
done

median() { python3 -c "import statistics,sys; print(round(statistics.median(float(x) for x in sys.argv[1:]), 3))" "$@"; }
echo "== medians of $ROUNDS rounds (added = variant - local)"
for v in $variants; do
    a=(); b=(); c=(); d=(); e=(); f=(); g=(); h=()
    for round in $(seq 1 "$ROUNDS"); do a+=("${c1_p50[$v,$round]}"); b+=("${c1_p99[$v,$round]}"); c+=("${r_p50[$v,$round]}"); d+=("${r_p99[$v,$round]}"); e+=("${cmds[$v,$round]}"); f+=("${redis_us[$v,$round]}"); g+=("${weir_us[$v,$round]}"); h+=("${busy[$v,$round]}"); done
    m1=$(median "${a[@]}"); m2=$(median "${b[@]}"); m3=$(median "${c[@]}"); m4=$(median "${d[@]}"); m5=$(median "${e[@]}"); m6=$(median "${f[@]}"); m7=$(median "${g[@]}"); m8=$(median "${h[@]}")
    [ "$v" = local ] && { l1=$m1; l4=$m4; }
    # Added latency only when `local` ran first.
    added() { [ -n "${2:-}" ] && python3 -c "print(round($1 - $2, 3))" || echo "n/a"; }
    echo "$v: c=1 p50 $m1 ms (added $(added "$m1" "${l1:-}")), c=1 p99 $m2 ms | 1000 req/s p50 $m3 ms, p99 $m4 ms (added $(added "$m4" "${l4:-}")) | Redis commands/request $m5 | CPU/request: Redis $m6 us, weir $m7 us | machine busy at 1000 req/s $m8%"
done
