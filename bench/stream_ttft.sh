#!/usr/bin/env bash
# Time to first token of a stream through pii-redact's chunk hook (weir:stage@0.2
# `on-response-chunk`), against the same stream from the upstream directly and through weir
# with no stage. The upstream is `weir sim` with a 50 ms time to first token and 10 ms between
# tokens; the prompt carries an e-mail address and a phone number, so the answer's
# placeholders are restored chunk by chunk. Prints medians and p90 of N requests per path
# (c=1, alternating), the added time to first token, and the chunks each path delivered (the
# pii-redact path's upstream answers the redacted prompt, a different text: that chunk count
# is its upstream's; tests/all/contract.rs checks it equals what the client gets).
#
#   bench/stream_ttft.sh            (N=200 by default)
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/build.sh
N=${N:-200}
trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$work"' EXIT

"$weir" sim --listen 127.0.0.1:9311 --ttft-ms 50 --inter-token-ms 10 >/dev/null 2>&1 &
cat > "$work/weir.toml" <<TOML
[server]
listen = "127.0.0.1:9312"
[targets.up]
base_url = "http://127.0.0.1:9311/v1"
[[routes]]
model = "plain"
targets = ["up"]
[[routes]]
model = "pii"
targets = ["up"]
[[routes.stages]]
name = "pii-redact"
path = "$plugins/pii_redact.wasm"
TOML
"$weir" serve --config "$work/weir.toml" >"$work/weir.log" 2>&1 &
for _ in $(seq 100); do
    curl -sf http://127.0.0.1:9312/healthz >/dev/null 2>&1 && break
    sleep 0.1
done

python3 - "$N" <<'PY'
import http.client, json, statistics, sys, time
n = int(sys.argv[1])
prompt = "Mail jane.doe@example.com or call +1 415 555 0100 about the order"
def one(port, model):
    body = json.dumps({"model": model, "stream": True,
                       "messages": [{"role": "user", "content": prompt}]})
    conn = http.client.HTTPConnection("127.0.0.1", port)
    start = time.perf_counter()
    conn.request("POST", "/v1/chat/completions", body, {"content-type": "application/json"})
    resp = conn.getresponse()
    first, chunks, buf = None, 0, b""
    while True:
        data = resp.read1(65536)
        if not data:
            break
        buf += data
        while b"\n\n" in buf:
            event, buf = buf.split(b"\n\n", 1)
            payload = event[len(b"data: "):]
            if payload == b"[DONE]":
                continue
            chunks += 1
            delta = json.loads(payload)["choices"][0]["delta"] if json.loads(payload)["choices"] else {}
            if first is None and delta.get("content"):
                first = time.perf_counter() - start
    conn.close()
    return first * 1000, chunks
paths = [("upstream direct", 9311, "plain"), ("weir, no stage", 9312, "plain"),
         ("weir, pii-redact", 9312, "pii")]
for port, model in [(9311, "plain"), (9312, "plain"), (9312, "pii")]:
    for _ in range(10):
        one(port, model)
results = {name: [] for name, _, _ in paths}
chunk_counts = {}
for _ in range(n):
    for name, port, model in paths:
        ttft, chunks = one(port, model)
        results[name].append(ttft)
        chunk_counts[name] = chunks
base = statistics.median(results["upstream direct"])
print(f"{'path':<18} {'ttft p50 ms':>12} {'p90 ms':>8} {'added p50 ms':>13} {'chunks':>7}")
for name, _, _ in paths:
    xs = sorted(results[name])
    p50, p90 = statistics.median(xs), xs[int(len(xs) * 0.9)]
    print(f"{name:<18} {p50:>12.2f} {p90:>8.2f} {p50 - base:>13.2f} {chunk_counts[name]:>7}")
PY
