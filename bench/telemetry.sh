#!/usr/bin/env bash
# Telemetry on vs off on the hot path: the same 3-stage pipeline in front of one `weir sim`,
# served by three weir processes that differ only in telemetry:
#
#   off   [telemetry] metrics = false, recent_requests = 0; RUST_LOG=warn (spans disabled)
#   on    the defaults: metrics, the recent-requests ring, spans built (RUST_LOG=info)
#   otlp  as `on`, plus every span exported over OTLP/HTTP to a local collector stand-in
#   otlp10  as `otlp` with `sample_percent = 10`: one new trace in ten exported
#
# Rounds alternate between the four (ROUNDS, DURATION seconds each), each round starting
# with the next variant, so machine noise hits all of them alike; prints each round and the medians of p50 latency at c=1 and of
# throughput at c=64 (wrk), with the ratio to `off`, and for the OTLP variants the ratio to
# `on` too (what exporting adds to building the spans).
#
#   bench/telemetry.sh      # installs wrk (apt-get) when missing
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-5}
ROUNDS=${ROUNDS:-5}
SIM=127.0.0.1:9301
COLLECTOR=127.0.0.1:9309

source bench/build.sh
pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT INT TERM

otlp_collector "${COLLECTOR#*:}"
RUST_LOG=warn "$weir" sim --listen "$SIM" >/dev/null & pids+=($!)

port=9310
declare -A addr
for variant in off on otlp otlp10; do
    port=$((port + 2))
    addr[$variant]="127.0.0.1:$port"
    case $variant in
        off) telemetry=$'metrics = false\nrecent_requests = 0'; log=warn ;;
        on) telemetry=""; log=info ;;
        otlp) telemetry="otlp_endpoint = \"http://$COLLECTOR\""; log=info ;;
        otlp10) telemetry=$'otlp_endpoint = "http://'"$COLLECTOR"$'"\nsample_percent = 10'; log=info ;;
    esac
    cat > "$work/$variant.toml" <<TOML
[server]
listen = "127.0.0.1:$port"
admin_listen = "127.0.0.1:$((port + 1))"
[sandbox]
pool_size = 1024
[telemetry]
$telemetry
[targets.sim]
base_url = "http://$SIM/v1"
[[routes]]
model = "demo"
targets = ["sim"]
$(demo_stages)
TOML
    RUST_LOG=$log "$weir" serve --config "$work/$variant.toml" >/dev/null 2>"$work/$variant.log" & pids+=($!)
done
for variant in off on otlp otlp10; do
    for _ in $(seq 1 100); do curl -fs "http://${addr[$variant]}/readyz" >/dev/null 2>&1 && break; sleep 0.1; done
done


: > "$work/results"
variants=(off on otlp otlp10)
for round in $(seq 1 "$ROUNDS"); do
    # Each round starts with another variant, so no variant always runs first (or after the
    # same neighbour).
    shift_by=$(( (round - 1) % ${#variants[@]} ))
    for variant in "${variants[@]:shift_by}" "${variants[@]:0:shift_by}"; do
        url="http://${addr[$variant]}/v1/chat/completions"
        wrk -t1 -c1 -d"${DURATION}s" --latency -s bench/chat.lua "$url" > "$work/c1.txt"
        wrk -t2 -c64 -d"${DURATION}s" -s bench/chat.lua "$url" > "$work/c64.txt"
        p50=$(to_ms "$(awk '$1 == "50%" { print $2 }' "$work/c1.txt")")
        rps=$(awk '/Requests\/sec/ {print $2}' "$work/c64.txt")
        echo "round $round $variant: c=1 p50 $p50 ms, c=64 $rps req/s"
        echo "$variant $p50 $rps" >> "$work/results"
    done
done
python3 - "$work/results" <<'PY'
import sys, statistics
rows = [l.split() for l in open(sys.argv[1])]
med = {}
for v in ("off", "on", "otlp", "otlp10"):
    p50 = statistics.median(float(r[1]) for r in rows if r[0] == v)
    rps = statistics.median(float(r[2]) for r in rows if r[0] == v)
    med[v] = (p50, rps)
print("== medians")
for v, (p50, rps) in med.items():
    base = med["off"]
    # The export's own cost: an OTLP variant against `on`, which builds the same spans.
    export = ""
    if v.startswith("otlp"):
        on = med["on"]
        export = (f"; the export alone, against on: c=1 p50 {(p50 / on[0] - 1) * 100:+.1f}%, "
                  f"c=64 {(rps / on[1] - 1) * 100:+.1f}%")
    print(f"{v:6}: c=1 p50 {p50:.4f} ms ({(p50 / base[0] - 1) * 100:+.1f}%), "
          f"c=64 {rps:.0f} req/s ({(rps / base[1] - 1) * 100:+.1f}%){export}")
PY
