#!/usr/bin/env bash
# The floor under weir's bare-route latency: what one more loopback hop costs here through
# nginx (a proxy in C, one event loop per core), through `floor_proxy` (weir's own stack,
# tokio + hyper + hyper-util's pooled client, and nothing else: runtime/examples/floor_proxy.rs)
# and through `weir serve` on a route with no stages, each with tokio's default workers and
# with one (`TOKIO_WORKER_THREADS=1`); then `weir serve` on the demo's 3 stages (prompt-guard ->
# pii-redact -> system-prompt). One `weir sim` is the upstream of all.
#
#   bench/floor.sh          # installs wrk and nginx (apt-get) when missing
#   PIN=1 bench/floor.sh    # every process (wrk, sim, proxies) on CPU 0 (taskset)
#
# PIN=1 takes cross-core wakeups out of the figures. At c=1 the client, the proxy and the
# sim run one after another anyway, so on one core the added latency is the proxy's own work
# on the request's path. Unpinned, each of a proxied request's four hops (client -> proxy ->
# sim -> proxy -> client) may wake a process on the other core. On this 2-vCPU VM that costs
# about as much as the work itself (an inter-processor interrupt, a VM exit, an idle exit).
#
# Per proxy and round: c=1 p50 and p99 (wrk, DURATION seconds) and the proxy's CPU per request
# (utime + stime from /proc, all of its processes, divided by the requests wrk made). Rounds
# rotate the order; prints the medians and the latency each adds to the sim's own p50.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-5}
ROUNDS=${ROUNDS:-3}
SIM=127.0.0.1:9641
NGINX=127.0.0.1:9642
FLOOR=127.0.0.1:9643
FLOOR1=127.0.0.1:9644
WEIR=127.0.0.1:9645
WEIR1=127.0.0.1:9647

source bench/build.sh
if [ "${PIN:-0}" = 1 ]; then
    need taskset util-linux
    pin=(taskset -c 0)
fi
cargo build --release -p weir --example floor_proxy --quiet
floor="$target_dir/release/examples/floor_proxy"

pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT INT TERM

RUST_LOG=warn "${pin[@]}" "$weir" sim --listen "$SIM" >/dev/null & pids+=($!)
declare -A pid_of
"${pin[@]}" "$floor" "$FLOOR" "http://$SIM" & pids+=($!); pid_of[floor-hyper]=$!
TOKIO_WORKER_THREADS=1 "${pin[@]}" "$floor" "$FLOOR1" "http://$SIM" & pids+=($!); pid_of[floor-hyper-1w]=$!
for port in 9645 9647; do
    cat > "$work/weir-$port.toml" <<TOML
[server]
listen = "127.0.0.1:$port"
admin_listen = "127.0.0.1:$((port + 1))"
data_dir = "$work/data-$port"
[sandbox]
pool_size = 1024
$(sim_routes "$SIM")
TOML
done
RUST_LOG=warn "${pin[@]}" "$weir" serve --config "$work/weir-9645.toml" >/dev/null 2>&1 & pids+=($!); pid_of[weir-bare]=$!
TOKIO_WORKER_THREADS=1 RUST_LOG=warn "${pin[@]}" "$weir" serve --config "$work/weir-9647.toml" >/dev/null 2>&1 & pids+=($!); pid_of[weir-bare-1w]=$!
# The 3-stage route, on the first weir.
pid_of[weir-3-stages]=${pid_of[weir-bare]}
start_nginx "$NGINX" "$SIM"; pid_of[nginx]=$nginx_pid

declare -A url_of=(
    [sim]="http://$SIM" [nginx]="http://$NGINX" [floor-hyper]="http://$FLOOR"
    [floor-hyper-1w]="http://$FLOOR1" [weir-bare]="http://$WEIR" [weir-bare-1w]="http://$WEIR1"
    [weir-3-stages]="http://$WEIR"
)
declare -A model_of=([weir-3-stages]=demo)
names=(sim nginx floor-hyper floor-hyper-1w weir-bare weir-bare-1w weir-3-stages)
for name in "${names[@]}"; do
    ok=""
    for _ in $(seq 1 100); do
        code=$(curl -s -o /dev/null -w '%{http_code}' -H 'content-type: application/json' \
            "${url_of[$name]}/v1/chat/completions" -d '{"model":"'"${model_of[$name]:-bare}"'","messages":[{"role":"user","content":"hi"}]}' || true)
        [ "$code" = 200 ] && { ok=1; break; }
        sleep 0.1
    done
    [ -n "$ok" ] || { echo "$name did not answer 200 (last: $code)"; exit 1; }
done

# CPU ticks of a process and its children (nginx's workers), from /proc.
ticks() {
    local total=0 p
    for p in "$1" $(pgrep -P "$1" || true); do
        total=$((total + $(awk '{print $14 + $15}' "/proc/$p/stat")))
    done
    echo "$total"
}
hz=$(getconf CLK_TCK)
wrk_pct() { awk -v p="$2" '$1 == p { print $2 }' "$1"; }
declare -A p50 p99 cpu
for round in $(seq 1 "$ROUNDS"); do
    # Rotate: each round starts one proxy later.
    order=("${names[@]:$(( (round - 1) % ${#names[@]} ))}" "${names[@]:0:$(( (round - 1) % ${#names[@]} ))}")
    for name in "${order[@]}"; do
        pid=${pid_of[$name]:-}
        [ -n "$pid" ] && before=$(ticks "$pid")
        WEIR_MODEL=${model_of[$name]:-bare} "${pin[@]}" wrk -t1 -c1 -d"${DURATION}s" --latency -s bench/chat.lua \
            "${url_of[$name]}/v1/chat/completions" > "$work/$name.txt"
        sent=$(awk '/requests in/ {print $1}' "$work/$name.txt")
        p50[$name,$round]=$(to_ms "$(wrk_pct "$work/$name.txt" 50%)")
        p99[$name,$round]=$(to_ms "$(wrk_pct "$work/$name.txt" 99%)")
        if [ -n "$pid" ]; then
            after=$(ticks "$pid")
            cpu[$name,$round]=$(python3 -c "print(round(($after - $before) / $hz / max($sent, 1) * 1e6, 1))")
        else
            cpu[$name,$round]=0
        fi
        echo "round $round $name: c=1 p50 ${p50[$name,$round]} ms, p99 ${p99[$name,$round]} ms, CPU ${cpu[$name,$round]} us/request ($sent requests)"
    done
done

median() { python3 -c "import statistics,sys; print(round(statistics.median(float(x) for x in sys.argv[1:]), 4))" "$@"; }
echo "== medians of $ROUNDS rounds, DURATION=${DURATION}s, $(nproc) cores$([ "${PIN:-0}" = 1 ] && echo ", every process on CPU 0")"
printf '%-16s %12s %12s %12s %16s\n' proxy "c=1 p50" "c=1 p99" "added p50" "CPU/request"
for name in "${names[@]}"; do
    a=(); b=(); c=()
    for round in $(seq 1 "$ROUNDS"); do
        a+=("${p50[$name,$round]}"); b+=("${p99[$name,$round]}"); c+=("${cpu[$name,$round]}")
    done
    m=$(median "${a[@]}"); m99=$(median "${b[@]}"); mc=$(median "${c[@]}")
    [ "$name" = sim ] && sim=$m
    added=$(python3 -c "print('-' if '$name' == 'sim' else f'{($m - $sim) * 1000:.0f} us')")
    cpu_text=$([ "$name" = sim ] && echo - || echo "$mc us")
    printf '%-16s %9s ms %9s ms %12s %16s\n' "$name" "$m" "$m99" "$added" "$cpu_text"
done
