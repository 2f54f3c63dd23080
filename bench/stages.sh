#!/usr/bin/env bash
# Per-request cost of the same stage (examples/stages: a rewrite + a response phase) written in
# Rust, JavaScript (jco's QuickJS, and componentize-js's StarlingMonkey) and Python
# (componentize-py), with and without copy-on-write memory images: `weir test-stage --repeat N`
# (release build) instantiates a fresh instance per request and runs both phases in the real
# sandbox; the figure is the median per request over N, and the fuel of each phase.
# `--large-stage-mib 0` puts the stage in the copy-on-write lane, 4096 keeps it out.
#
#   bench/stages.sh            (REPEAT=300 by default)
set -euo pipefail
cd "$(dirname "$0")/.."
REPEAT=${REPEAT:-300}

cargo build --release -p weir --quiet
cargo build --release --target wasm32-wasip2 -p example-stage --quiet
target_dir=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
weir="$target_dir/release/weir"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

"$weir" build examples/stages/python -o "$work/python.wasm" 2>/dev/null >/dev/null
"$weir" build examples/stages/js -o "$work/quickjs.wasm" 2>/dev/null >/dev/null
cp "$target_dir/wasm32-wasip2/release/example_stage.wasm" "$work/rust.wasm"

# StarlingMonkey: componentize-js, pinned, into the same tools directory `weir build` uses.
tools="${WEIR_TOOLS:-$HOME/.cache/weir-tools}"
sm="$tools/componentize-js-0.23.0"
if [ ! -x "$sm/node_modules/.bin/componentize-js" ]; then
    npm install --silent --no-audit --no-fund --prefix "$sm" @bytecodealliance/componentize-js@0.23.0 rolldown@1.3.4
fi
"$sm/node_modules/.bin/rolldown" -c examples/stages/js/rolldown.config.js --file "$work/sm.js" >/dev/null 2>&1
repo=$(pwd)
(cd "$work" && "$sm/node_modules/.bin/componentize-js" sm.js --wit "$repo/wit" -n weir:stage/stage@0.2.0 -d http fetch-event -o "$work/starlingmonkey.wasm" >/dev/null)

cat > "$work/req.json" <<'JSON'
{"model":"demo","messages":[{"role":"user","content":"hello there, mail me at jane@example.com"}]}
JSON

printf '%-14s %9s  %-22s %12s %12s %12s\n' stage size lane instantiate per-request fuel
for stage in rust quickjs starlingmonkey python; do
    size=$(stat -c %s "$work/$stage.wasm")
    for mib in 4096 0; do
        lane=$([ "$mib" = 0 ] && echo "copy-on-write images" || echo "copied data segments")
        out=$("$weir" test-stage "$work/$stage.wasm" --request "$work/req.json" --repeat "$REPEAT" \
            --large-stage-mib "$mib" 2>/dev/null)
        inst=$(grep '^instantiate:' <<<"$out" | awk '{print $2}')
        median=$(grep 'runs: median' <<<"$out" | awk '{print $4}')
        fuel=$(grep -o 'fuel [0-9]*' <<<"$out" | awk '{s+=$2} END {print s}')
        printf '%-14s %8.2fM  %-22s %9s ms %9s ms %12s\n' "$stage" "$(echo "$size/1048576" | bc -l)" \
            "$lane" "$inst" "$median" "$fuel"
    done
done
