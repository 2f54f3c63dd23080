-- wrk script: POST one small chat completion for the `demo` route (or the model in WEIR_MODEL).
local model = os.getenv("WEIR_MODEL") or "demo"
wrk.method = "POST"
wrk.headers["content-type"] = "application/json"
wrk.body = '{"model":"' .. model .. '","metadata":{"team":"bench"},"messages":[{"role":"user","content":"Hello, my email is jane@example.com. What is a weir?"}]}'
