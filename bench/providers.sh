#!/usr/bin/env bash
# Translation overhead through the whole process: the same chat through weir to one `weir sim`
# as an OpenAI target (passthrough) and as an Anthropic target (weir translates the request
# to the Messages API and the answer back), at c=1 (wrk) and at an evenly spaced 1,000 req/s
# (`weir bench`), medians of ROUNDS rounds (default 3), loopback only. The sim translates
# too (its /v1/messages runs its OpenAI path), so the same pair is measured against the sim
# alone (/v1/chat/completions vs /v1/messages), at c=1 and at 1,000 req/s, and weir's share is
# the difference of the two differences at the same load. The in-process cost of
# the translation alone: `cargo bench -p weir --bench translate`.
#
#   bench/providers.sh
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-10}
ROUNDS=${ROUNDS:-3}
SIM=127.0.0.1:9211
WEIR=127.0.0.1:9290
ADMIN=127.0.0.1:9291

source bench/build.sh
cat > "$work/providers.toml" <<TOML
[server]
listen = "$WEIR"
admin_listen = "$ADMIN"
[targets.openai]
base_url = "http://$SIM/v1"
[targets.anthropic]
base_url = "http://$SIM/v1"
kind = "anthropic"
[[routes]]
model = "openai"
targets = ["openai"]
[[routes]]
model = "anthropic"
targets = ["anthropic"]
TOML

pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT INT TERM
RUST_LOG=warn "$weir" sim --listen "$SIM" >/dev/null & pids+=($!)
sim_pid=$!
RUST_LOG=warn "$weir" serve --config "$work/providers.toml" >/dev/null & pids+=($!)
weir_pid=$!
ready "$WEIR"
# CPU time (user + system, in clock ticks) a process has used so far.
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

wrk_pct() { awk -v p="$2" '$1 == p { print $2 }' "$1"; }
ms_of() { to_ms "$(wrk_pct "$1" "$2")"; }
bench_pct() { sed -E "s/.* $2 ([0-9.]+).*/\1/" <<<"$1"; }
row() { echo "$*" >> "$work/rows"; }

: > "$work/rows"
# The bodies of bench/chat.lua and bench/messages.lua, for `weir bench --body` on the sim alone.
cat > "$work/chat.json" <<'JSON'
{"model":"openai","messages":[{"role":"user","content":"Hello, my email is jane@example.com. What is a weir?"}]}
JSON
cat > "$work/messages.json" <<'JSON'
{"model":"anthropic","max_tokens":4096,"messages":[{"role":"user","content":"Hello, my email is jane@example.com. What is a weir?"}]}
JSON
for round in $(seq 1 "$ROUNDS"); do
    echo "== round $round of $ROUNDS, ${DURATION}s per measure"
    # Each round starts with the other route, so neither always runs first.
    order="openai anthropic"
    [ $((round % 2)) -eq 0 ] && order="anthropic openai"
    # The sim alone, in both shapes.
    wrk -t1 -c1 -d"${DURATION}s" --latency -s bench/chat.lua "http://$SIM/v1/chat/completions" > "$work/c1.txt"
    row sim_openai_c1 "$(ms_of "$work/c1.txt" 50%)" "$(ms_of "$work/c1.txt" 99%)"
    wrk -t1 -c1 -d"${DURATION}s" --latency -s bench/messages.lua "http://$SIM/v1/messages" > "$work/c1.txt"
    row sim_anthropic_c1 "$(ms_of "$work/c1.txt" 50%)" "$(ms_of "$work/c1.txt" 99%)"
    out=$("$weir" bench --url "http://$SIM/v1/chat/completions" --body "$work/chat.json" --rate 1000 --duration "$DURATION")
    row sim_openai_1000 "$(bench_pct "$out" p50)" "$(bench_pct "$out" p99)"
    out=$("$weir" bench --url "http://$SIM/v1/messages" --body "$work/messages.json" --header "anthropic-version: 2023-06-01" --rate 1000 --duration "$DURATION")
    row sim_anthropic_1000 "$(bench_pct "$out" p50)" "$(bench_pct "$out" p99)"
    for model in $order; do
        WEIR_MODEL=$model wrk -t1 -c1 -d"${DURATION}s" --latency -s bench/chat.lua "http://$WEIR/v1/chat/completions" > "$work/c1.txt"
        row "${model}_c1" "$(ms_of "$work/c1.txt" 50%)" "$(ms_of "$work/c1.txt" 99%)"
        out=$("$weir" bench --url "http://$WEIR/v1/chat/completions" --model "$model" --rate 1000 --duration "$DURATION")
        echo "  $model at 1000 req/s: $out"
        row "${model}_1000" "$(bench_pct "$out" p50)" "$(bench_pct "$out" p99)"
        # CPU per request (wrk -c4): weir's and the sim's, each process's own work, far
        # steadier than a latency difference on a shared machine.
        w0=$(ticks "$weir_pid"); s0=$(ticks "$sim_pid")
        WEIR_MODEL=$model wrk -t1 -c4 -d"${DURATION}s" -s bench/chat.lua "http://$WEIR/v1/chat/completions" > "$work/cpu.txt"
        w1=$(ticks "$weir_pid"); s1=$(ticks "$sim_pid")
        n=$(awk '/requests in/ {print $1}' "$work/cpu.txt")
        tick_us=$((1000000 / $(getconf CLK_TCK)))
        row "${model}_cpu" "$(python3 -c "print(($w1 - $w0) * $tick_us / $n)")" "$(python3 -c "print(($s1 - $s0) * $tick_us / $n)")"
    done
    tail -n 10 "$work/rows" | sed 's/^/  /'
done
echo "== medians of $ROUNDS rounds (ms)"
python3 - "$work/rows" <<'PY'
import statistics, sys
rows = {}
for line in open(sys.argv[1]):
    name, *values = line.split()
    rows.setdefault(name, []).append([float(v) for v in values])
med = {name: [statistics.median(col) for col in zip(*vals)] for name, vals in rows.items()}
for load in ["c1", "1000"]:
    label = "c=1" if load == "c1" else "1000 req/s"
    so, sa = med[f"sim_openai_{load}"], med[f"sim_anthropic_{load}"]
    sim_added = (sa[0] - so[0]) * 1000
    print(f"sim alone {label}: /v1/chat/completions p50 {so[0]:.3f}; /v1/messages p50 {sa[0]:.3f} (the sim's own translation +{sim_added:.0f} us)")
    o, a = med[f"openai_{load}"], med[f"anthropic_{load}"]
    both = (a[0] - o[0]) * 1000
    print(f"{label}: openai p50 {o[0]:.3f} p99 {o[1]:.3f}; anthropic p50 {a[0]:.3f} p99 {a[1]:.3f}; "
          f"added p50 +{both:.0f} us with the sim's, weir's share about +{both - sim_added:.0f} us")
o, a = med["openai_cpu"], med["anthropic_cpu"]
print(f"CPU per request (c=4): weir openai {o[0]:.1f} us, anthropic {a[0]:.1f} us (+{a[0]-o[0]:.1f} us: weir's translation); "
      f"sim {o[1]:.1f} vs {a[1]:.1f} us (+{a[1]-o[1]:.1f} us: the sim's)")
PY
