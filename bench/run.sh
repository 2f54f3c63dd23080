#!/usr/bin/env bash
# The request-path benchmark: requests through weir (prompt-guard -> pii-redact ->
# system-prompt in front of one `weir sim`) versus the same requests straight to `weir sim`,
# at the same concurrency, on loopback only.
#
#   bench/run.sh            # installs wrk (apt-get) when missing
#
# Prints, per round and as medians of ROUNDS rounds (default 3): latency p50/p99 at c=1 (wrk)
# for sim alone, weir with no stages and with the 3 stages (also on requests that all differ,
# bench/distinct.lua, so no stage output comes from a cache); p50/p99 at an evenly spaced
# 1,000 req/s (`weir bench`, open loop: latency from each request's scheduled start) and
# the CPU weir and the sim spent per request there; cache hits at c=1; the same c=1 figures
# with every process on CPU 0 (no cross-core wakeups, see bench/floor.sh); the highest
# throughput (wrk, 2 threads, 64 connections; the 3 stages with both scripts). Then, once:
# resident memory (idle with one route, idle with the demo's four stages, under 1,000
# concurrent slow requests), idle wake-ups per second, tails against a primary that hangs on
# 10% of requests (plain and hedged), and telemetry on/off/OTLP (bench/telemetry.sh;
# TELEMETRY=0 skips it). Each measure is bounded (DURATION seconds). The per-stage cost in
# process: `cargo bench -p weir --bench stage_call`.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-10}
ROUNDS=${ROUNDS:-3}
SIM=127.0.0.1:9201
WEIR=127.0.0.1:9280
ADMIN=127.0.0.1:9281

source bench/build.sh
# The demo pipeline, used by the `demo` and `cached` routes.
stages=$(demo_stages)
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
need taskset util-linux
RUST_LOG=warn "$weir" sim --listen "$SIM" >/dev/null & sim_pid=$!; pids+=($sim_pid)
RUST_LOG=warn "$weir" serve --config "$work/bench.toml" >/dev/null & weir_pid=$!; pids+=($weir_pid)
all_cpus="0-$(($(nproc) - 1))"
for _ in $(seq 1 100); do curl -fs "http://$WEIR/readyz" >/dev/null 2>&1 && break; sleep 0.1; done

# wrk --latency prints "50.000%  1.23ms" style lines with -U? plain wrk prints 50% 75% 90% 99%.
wrk_pct() { awk -v p="$2" '$1 == p { print $2 }' "$1"; }

# One row of a round's figures: `name value value ...`, appended to $work/rows; medians at the end.
row() { echo "$*" >> "$work/rows"; }
ms_of() { to_ms "$(wrk_pct "$1" "$2")"; }
rps_of() { awk '/Requests\/sec/ {print $2}' "$1"; }
bench_pct() { sed -E "s/.* $2 ([0-9.]+).*/\1/" <<<"$1"; }

: > "$work/rows"
for round in $(seq 1 "$ROUNDS"); do
    echo "== round $round of $ROUNDS, ${DURATION}s per measure"
    # c=1 (wrk): sim alone, weir bare (no stages), weir with the demo's 3 stages.
    wrk -t1 -c1 -d"${DURATION}s" --latency -s bench/chat.lua "http://$SIM/v1/chat/completions" > "$work/c1.txt"
    row sim_c1 "$(ms_of "$work/c1.txt" 50%)" "$(ms_of "$work/c1.txt" 99%)"
    for model in bare demo; do
        WEIR_MODEL=$model wrk -t1 -c1 -d"${DURATION}s" --latency -s bench/chat.lua "http://$WEIR/v1/chat/completions" > "$work/c1.txt"
        row "weir_${model}_c1" "$(ms_of "$work/c1.txt" 50%)" "$(ms_of "$work/c1.txt" 99%)"
    done
    # The 3 stages on requests that all differ (bench/distinct.lua): with chat.lua's one body,
    # prompt-guard's and system-prompt's outputs come from the stage-output cache.
    wrk -t1 -c1 -d"${DURATION}s" --latency -s bench/distinct.lua "http://$WEIR/v1/chat/completions" > "$work/c1.txt"
    row weir_distinct_c1 "$(ms_of "$work/c1.txt" 50%)" "$(ms_of "$work/c1.txt" 99%)"
    # 1,000 req/s, open loop, evenly spaced (weir bench): latency from each request's
    # scheduled start.
    # Also the CPU the process spent per request (user + system, all its threads, /proc): on
    # this shared machine a steadier A/B figure than the latency, and what throughput costs.
    for target in "sim http://$SIM $sim_pid" "weir http://$WEIR $weir_pid"; do
        set -- $target
        before=$(proc_cpu "$3")
        out=$("$weir" bench --url "$2/v1/chat/completions" --rate 1000 --duration "$DURATION")
        after=$(proc_cpu "$3")
        echo "  $1 at 1000 req/s: $out"
        sent=$(sed -E 's/.*: ([0-9]+) ok, ([0-9]+) failed.*/\1 + \2/' <<<"$out")
        row "${1}_1000" "$(bench_pct "$out" p50)" "$(bench_pct "$out" p99)" "$(per_request_us "$before" "$after" $((sent)))"
    done
    # Cache hits through full HTTP (3-stage pipeline, answer from the cache), c=1 (wrk).
    WEIR_MODEL=cached wrk -t1 -c1 -d"${DURATION}s" --latency -s bench/chat.lua "http://$WEIR/v1/chat/completions" > "$work/hit.txt"
    row weir_hit_c1 "$(ms_of "$work/hit.txt" 50%)" "$(ms_of "$work/hit.txt" 99%)"
    # The c=1 figures again with the sim, weir (every thread) and wrk on CPU 0, then back.
    taskset -a -p -c 0 "$sim_pid" >/dev/null; taskset -a -p -c 0 "$weir_pid" >/dev/null
    for run in "sim $SIM bare" "weir_bare $WEIR bare" "weir_demo $WEIR demo" "weir_hit $WEIR cached"; do
        set -- $run
        WEIR_MODEL=$3 taskset -c 0 wrk -t1 -c1 -d"${DURATION}s" --latency -s bench/chat.lua "http://$2/v1/chat/completions" > "$work/pin.txt"
        row "${1}_c1_pinned" "$(ms_of "$work/pin.txt" 50%)" "$(ms_of "$work/pin.txt" 99%)"
    done
    taskset -a -p -c "$all_cpus" "$sim_pid" >/dev/null; taskset -a -p -c "$all_cpus" "$weir_pid" >/dev/null
    # Max throughput (wrk -t2 -c64).
    for target in "sim http://$SIM chat" "weir http://$WEIR chat" "weir_distinct http://$WEIR distinct"; do
        set -- $target
        wrk -t2 -c64 -d"${DURATION}s" --latency -s "bench/$3.lua" "$2/v1/chat/completions" > "$work/max.txt"
        errors=$(grep -E 'Non-2xx|Socket errors' "$work/max.txt" | tr '\n' ' ' || true)
        [ -z "$errors" ] || echo "  $1 max: $errors"
        row "${1}_max" "$(rps_of "$work/max.txt")" "$(ms_of "$work/max.txt" 50%)" "$(ms_of "$work/max.txt" 99%)"
    done
    tail -n 14 "$work/rows" | sed 's/^/  /'
done
echo "== medians of $ROUNDS rounds (ms; throughput in req/s)"
python3 - "$work/rows" <<'PY'
import statistics, sys
rows = {}
for line in open(sys.argv[1]):
    name, *values = line.split()
    rows.setdefault(name, []).append([float(v) for v in values])
med = {name: [statistics.median(col) for col in zip(*vals)] for name, vals in rows.items()}
sim, sim1000 = med["sim_c1"], med["sim_1000"]
for model, label in [("bare", "no stages"), ("demo", "3 stages")]:
    w = med[f"weir_{model}_c1"]
    print(f"c=1 weir {label}: p50 {w[0]:.3f} p99 {w[1]:.3f} (added p50 +{w[0]-sim[0]:.3f}, sim alone p50 {sim[0]:.3f} p99 {sim[1]:.3f})")
w = med["weir_distinct_c1"]
print(f"c=1 weir 3 stages, distinct requests: p50 {w[0]:.3f} p99 {w[1]:.3f} (added p50 +{w[0]-sim[0]:.3f})")
w = med["weir_1000"]
print(f"1000 req/s weir 3 stages: p50 {w[0]:.3f} p99 {w[1]:.3f} (added p50 +{w[0]-sim1000[0]:.3f} p99 +{w[1]-sim1000[1]:.3f}; sim alone p50 {sim1000[0]:.3f} p99 {sim1000[1]:.3f}); CPU per request: weir {w[2]:.0f} us, sim {sim1000[2]:.0f} us")
w = med["weir_hit_c1"]
print(f"cache hit c=1, 3 stages: p50 {w[0]:.3f} p99 {w[1]:.3f}")
simp = med["sim_c1_pinned"]
for name, label in [("weir_bare", "no stages"), ("weir_demo", "3 stages"), ("weir_hit", "cache hit, 3 stages")]:
    w = med[f"{name}_c1_pinned"]
    added = f"added p50 +{w[0]-simp[0]:.3f}, " if name != "weir_hit" else ""
    print(f"c=1 on CPU 0, weir {label}: p50 {w[0]:.3f} p99 {w[1]:.3f} ({added}sim alone p50 {simp[0]:.3f} p99 {simp[1]:.3f})")
s, w = med["sim_max"], med["weir_max"]
d = med["weir_distinct_max"]
print(f"max throughput c=64: weir 3 stages {w[0]:.0f} req/s (p50 {w[1]:.3f} p99 {w[2]:.3f}), on distinct requests {d[0]:.0f} req/s (p50 {d[1]:.3f} p99 {d[2]:.3f}), sim alone {s[0]:.0f} req/s")
PY
curl -s "http://$SIM/sim/stats"; echo

# Memory: a weir with one route and no stages, idle; one with the demo's four stages, idle
# and while 1,000 requests wait on an upstream that takes 2 s to answer each.
echo "== memory (RSS)"
SLOW_SIM=127.0.0.1:9202
RUST_LOG=warn "$weir" sim --listen "$SLOW_SIM" --latency-ms 2000 >/dev/null & pids+=($!)
cat > "$work/one.toml" <<TOML
[server]
listen = "127.0.0.1:9282"
admin_listen = "127.0.0.1:9283"
[targets.sim]
base_url = "http://$SIM/v1"
[[routes]]
model = "bare"
targets = ["sim"]
TOML
cat > "$work/four.toml" <<TOML
[server]
listen = "127.0.0.1:9284"
admin_listen = "127.0.0.1:9285"
[sandbox]
pool_size = 1024
[targets.slow]
base_url = "http://$SLOW_SIM/v1"
max_concurrency = 2048
[[routes]]
model = "demo"
targets = ["slow"]
queue_size = 2048
$(demo_stages)
$(context_trim_stage)
TOML
RUST_LOG=warn "$weir" serve --config "$work/one.toml" >/dev/null & one=$!; pids+=($one)
RUST_LOG=warn "$weir" serve --config "$work/four.toml" >/dev/null & four=$!; pids+=($four)
ready 127.0.0.1:9282; ready 127.0.0.1:9284; sleep 1
echo "idle, one route and no stages: $(rss_mb $one) MB"
echo "idle, the demo's 4 stages: $(rss_mb $four) MB"
# Wake-ups of every thread of the idle 4-stage process over 5 s (the epoch ticker sleeps while
# no stage store exists).
wakeups() { cat /proc/"$1"/task/*/status | awk '/^(non)?voluntary_ctxt_switches/ {n += $2} END {print n}'; }
w0=$(wakeups $four); sleep 5; w1=$(wakeups $four)
echo "idle, the demo's 4 stages: $(( (w1 - w0) / 5 )) wake-ups/s (every thread)"
"$weir" bench --url http://127.0.0.1:9284/v1/chat/completions --rate 1000 --duration 1 --max-in-flight 1000 > "$work/slow.txt" &
bench_pid=$!
peak=0
while kill -0 $bench_pid 2>/dev/null; do
    now=$(rss_mb $four); peak=$(python3 -c "print(max($peak, $now))"); sleep 0.2
done
echo "1,000 concurrent slow requests, the demo's 4 stages: peak $peak MB ($(cat "$work/slow.txt"))"

# Tails: the demo's target settings (timeout 30 s, TTFT 5 s) in front of a primary that hangs
# on 10% of requests (no answer at all) and a healthy fallback. JSON requests go upstream as
# streams (stream_json), so a hang costs the 5 s TTFT timeout; a hedged route sends a late
# first attempt to the fallback after 50 ms as well.
echo "== tails: 10% hangs on the primary, 100 req/s for ${DURATION}s (weir bench)"
HANG_SIM=127.0.0.1:9203
FALLBACK_SIM=127.0.0.1:9204
RUST_LOG=warn "$weir" sim --listen "$HANG_SIM" --hang-rate 0.1 >/dev/null & pids+=($!)
RUST_LOG=warn "$weir" sim --listen "$FALLBACK_SIM" >/dev/null & pids+=($!)
cat > "$work/tails.toml" <<TOML
[server]
listen = "127.0.0.1:9286"
admin_listen = "127.0.0.1:9287"
[targets.primary]
base_url = "http://$HANG_SIM/v1"
timeout_ms = 30000
ttft_timeout_ms = 5000
max_concurrency = 1024
breaker = { consecutive_failures = 1000, failure_rate_percent = 100, window = 1000, min_requests = 1000 }
[targets.secondary]
base_url = "http://$FALLBACK_SIM/v1"
timeout_ms = 30000
ttft_timeout_ms = 5000
max_concurrency = 1024
[[routes]]
model = "fallback"
targets = ["secondary"]
[[routes]]
model = "demo"
targets = ["primary", "secondary"]
retry_budget_percent = 20
queue_size = 1024
[[routes]]
model = "hedged"
targets = ["primary", "secondary"]
retry_budget_percent = 20
queue_size = 1024
hedge = { after_ms = 50, max_percent = 15 }
TOML
RUST_LOG=error "$weir" serve --config "$work/tails.toml" >/dev/null 2>&1 & pids+=($!)
ready 127.0.0.1:9286
# A breaker that never trips: every request meets the primary's hangs.
for model in fallback demo hedged; do
    echo "$model: $("$weir" bench --url http://127.0.0.1:9286/v1/chat/completions --model $model --unique --rate 100 --duration "$DURATION" --max-in-flight 2048)"
done
echo "(no request may take longer than ttft_timeout_ms 5000 ms + the fallback's p99; hedged: 50 ms + the fallback's p99)"

if [ "${TELEMETRY:-1}" = 1 ]; then
    echo "== telemetry on/off (bench/telemetry.sh, ROUNDS=3)"
    ROUNDS=3 DURATION=$DURATION bench/telemetry.sh
fi
