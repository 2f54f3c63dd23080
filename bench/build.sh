# Sourced by the bench scripts: installs wrk when it is missing, builds the release host and the demo
# pipeline's stages, and sets $weir (the binary), $plugins (the .wasm directory) and $work
# (a scratch directory).
source "$(dirname "${BASH_SOURCE[0]}")/tools.sh"
need wrk wrk
rustup target add wasm32-wasip2 >/dev/null 2>&1 || rustup target add wasm32-wasip2

cargo build --release -p weir --quiet
cargo build --release --target wasm32-wasip2 -p prompt-guard -p context-trim -p pii-redact -p system-prompt --quiet
target_dir=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
# WEIR_BIN=/path/to/weir measures another build of the host (an A/B against a copy of an
# earlier commit's binary); the stages are always this tree's.
weir="${WEIR_BIN:-$target_dir/release/weir}"
plugins="$target_dir/wasm32-wasip2/release"

work=$(mktemp -d)

# wrk's latency (`123.45us`, `1.23ms`, `1.2s`) in milliseconds.
to_ms() { python3 -c "import sys,re
v=sys.argv[1]; m=re.match(r'([0-9.]+)(us|ms|s)',v)
n=float(m.group(1)); u=m.group(2)
print(round(n/1000 if u=='us' else n*1000 if u=='s' else n, 4))" "$1"; }

# The target `sim` (the `weir sim` at $1, serving model $2 when given) and the two routes
# every bench measures: `bare` (no stage) and `demo` (the demo pipeline's three stages).
sim_routes() {
    printf '[targets.sim]\nbase_url = "http://%s/v1"\n' "$1"
    [ -n "${2:-}" ] && printf 'model = "%s"\n' "$2"
    cat <<TOML
[[routes]]
model = "bare"
targets = ["sim"]
[[routes]]
model = "demo"
targets = ["sim"]
$(demo_stages)
TOML
}

# The demo pipeline's three stages as `[[routes.stages]]` tables, for the route above them.
demo_stages() {
    cat <<TOML
[[routes.stages]]
name = "prompt-guard"
path = "$plugins/prompt_guard.wasm"
[[routes.stages]]
name = "pii-redact"
path = "$plugins/pii_redact.wasm"
[[routes.stages]]
name = "system-prompt"
path = "$plugins/system_prompt.wasm"
config = { prompt = "You serve the {{team}} team." }
TOML
}

# The demo's fourth stage (examples/weir.toml), for the memory figures.
context_trim_stage() {
    cat <<TOML
[[routes.stages]]
name = "context-trim"
path = "$plugins/context_trim.wasm"
config = { max_tokens = 8000, keep_last_turns = 6 }
TOML
}

# Resident memory of process $1 in MB.
rss_mb() { awk '/VmRSS/ {printf "%.1f", $2 / 1024}' "/proc/$1/status"; }

# CPU seconds process $1 used so far (user + system, every thread; /proc).
proc_cpu() { awk -v hz="$(getconf CLK_TCK)" '{printf "%.6f", ($14 + $15) / hz}' "/proc/$1/stat"; }

# Microseconds per request between two CPU readings in seconds ($1, $2) over $3 requests.
per_request_us() { python3 -c "print(round(($2 - $1) * 1e6 / max($3, 1), 1))"; }

# Waits until http://$1/readyz answers (10 s at most).
ready() { for _ in $(seq 1 100); do curl -fs "http://$1/readyz" >/dev/null 2>&1 && return 0; sleep 0.1; done; echo "weir at $1 never became ready"; return 1; }

# A local OTLP/HTTP collector stand-in on 127.0.0.1:$1: accepts posts and answers 200
# (python's http.server); its pid is added to $pids.
otlp_collector() {
    cat > "$work/collector.py" <<'PY'
import http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length", 0)))
        self.send_response(200); self.send_header("content-length", "0"); self.end_headers()
    def log_message(self, *a): pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
PY
    python3 "$work/collector.py" "$1" & pids+=($!)
}

# A command prefix for every process a bench starts (`taskset -c 0` under PIN=1 in
# bench/floor.sh); empty by default.
pin=()

# Starts nginx as a plain reverse proxy on LISTEN in front of UPSTREAM (host:port): keep-alive
# to the upstream, no logging, no buffering, one worker per core (the floor of one more
# loopback hop through a proxy in C). Appends its pid to `pids` and sets `nginx_pid`; installs
# nginx (apt-get) when missing.
start_nginx() { # listen upstream
    need nginx nginx
    mkdir -p "$work/nginx"
    cat > "$work/nginx/nginx.conf" <<NGINX
daemon off;
worker_processes auto;
pid $work/nginx/nginx.pid;
error_log $work/nginx/error.log warn;
events { worker_connections 1024; }
http {
    access_log off;
    client_body_temp_path $work/nginx;
    proxy_temp_path $work/nginx;
    upstream backend { server $2; keepalive 64; }
    server {
        listen $1;
        location / {
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
        }
    }
}
NGINX
    "${pin[@]}" nginx -c "$work/nginx/nginx.conf" -p "$work/nginx" >"$work/nginx.log" 2>&1 &
    nginx_pid=$!
    pids+=("$nginx_pid")
}
