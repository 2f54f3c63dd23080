#!/usr/bin/env python3
"""Hot-reload figures for the release build: start-up time with a cold and a warm artifact
cache (5 stages), and reload latency (plugin file renamed into place -> first response that
names the new version), median of N swaps.

    bench/reload.py            # builds weir and the stages in release first
"""
import hashlib, http.client, json, os, shutil, subprocess, sys, tempfile, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SWAPS = int(os.environ.get("SWAPS", "20"))


def sh(*args):
    subprocess.run(args, cwd=ROOT, check=True)


def target_dir():
    meta = subprocess.run(["cargo", "metadata", "--format-version", "1", "--no-deps"],
                          cwd=ROOT, check=True, capture_output=True).stdout
    return json.loads(meta)["target_directory"]


sh("cargo", "build", "--release", "-p", "weir", "--quiet")
sh("cargo", "build", "--release", "--target", "wasm32-wasip2", "--quiet", "-p", "prompt-guard",
   "-p", "pii-redact", "-p", "system-prompt", "-p", "context-trim", "-p", "hello-stage", "-p", "weir-test-passthrough")
TARGET = target_dir()
WEIR = os.path.join(TARGET, "release", "weir")
PLUGINS = os.path.join(TARGET, "wasm32-wasip2", "release")
work = tempfile.mkdtemp(prefix="weir-reload-bench-")
stages = ["prompt_guard", "pii_redact", "system_prompt", "context_trim", "hello_stage"]
for s in stages:
    shutil.copy(os.path.join(PLUGINS, s + ".wasm"), os.path.join(work, s + ".wasm"))
config = os.path.join(work, "weir.toml")
configs = {"context_trim": "config = { max_tokens = 100000 }\n",
           "system_prompt": "config = { prompt = \"Be brief.\" }\n"}
with open(config, "w") as f:
    f.write(f'[server]\nlisten = "127.0.0.1:9480"\nadmin_listen = "127.0.0.1:9481"\n'
            f'data_dir = "{work}/data"\n[targets.sim]\nbase_url = "http://127.0.0.1:9401/v1"\n'
            '[[routes]]\nmodel = "demo"\ntargets = ["sim"]\n')
    for s in stages:
        f.write(f'[[routes.stages]]\nname = "{s}"\npath = "{work}/{s}.wasm"\n{configs.get(s, "")}')

sim = subprocess.Popen([WEIR, "sim", "--listen", "127.0.0.1:9401"], stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)


def start():
    """Seconds from exec to the listening line."""
    t = time.perf_counter()
    p = subprocess.Popen([WEIR, "serve", "--config", config], stdout=subprocess.PIPE,
                         stderr=open(os.path.join(work, "serve.log"), "a"), text=True)
    p.stdout.readline()
    return p, time.perf_counter() - t


def median(xs):
    xs = sorted(xs)
    return xs[len(xs) // 2]


procs = []
try:
    cold, warm = [], []
    for _ in range(3):
        shutil.rmtree(os.path.join(work, "data"), ignore_errors=True)
        p, t = start(); cold.append(t); p.kill(); p.wait()
        p, t = start(); warm.append(t); p.kill(); p.wait()
    print(f"start-up, 5 stages: cold cache {median(cold)*1e3:.0f} ms, warm cache "
          f"{median(warm)*1e3:.0f} ms (median of 3; exec to listening)")

    p, _ = start()
    procs.append(p)
    conn = http.client.HTTPConnection("127.0.0.1", 9480)
    body = json.dumps({"model": "demo", "messages": [{"role": "user", "content": "hi"}]})

    def stages_header():
        conn.request("POST", "/v1/chat/completions", body, {"content-type": "application/json"})
        r = conn.getresponse(); r.read()
        return r.getheader("x-weir-stages")

    # Two valid versions swapped into the last stage's file in turn.
    versions = [os.path.join(PLUGINS, "hello_stage.wasm"),
                os.path.join(PLUGINS, "weir_test_passthrough.wasm")]
    target = os.path.join(work, "hello_stage.wasm")
    latencies = []
    for i in range(SWAPS):
        before = stages_header()
        src = versions[(i + 1) % 2]
        tmp = target + ".tmp"
        shutil.copy(src, tmp)
        t = time.perf_counter()
        os.rename(tmp, target)
        while stages_header() == before:
            if time.perf_counter() - t > 10:
                print(open(os.path.join(work, "serve.log")).read()[-3000:])
                raise SystemExit(f"the new version never served (still {before})")
        latencies.append(time.perf_counter() - t)
        time.sleep(0.2)
    latencies.sort()
    print(f"reload latency (file renamed -> new version serving), {SWAPS} swaps: "
          f"p50 {median(latencies)*1e3:.0f} ms, max {latencies[-1]*1e3:.0f} ms")
    p.kill(); p.wait()
finally:
    for proc in procs:
        proc.kill()
    sim.kill()
    if os.environ.get("KEEP"):
        print("kept", work)
    else:
        shutil.rmtree(work, ignore_errors=True)
