-- wrk script: like chat.lua, but every request's user message is different (a per-run random
-- tag, the thread's number and a counter), so no answer and no deterministic stage's output
-- comes from a cache, even across runs against the same weir: each request runs every stage.
-- For the `demo` route (or the model in WEIR_MODEL).
local model = os.getenv("WEIR_MODEL") or "demo"
math.randomseed(os.time())
local tag = tostring(math.random(1, 1e9))
local threads = 0
function setup(thread)
    threads = threads + 1
    thread:set("id", tag .. "-" .. threads)
end
local n = 0
function request()
    n = n + 1
    local body = '{"model":"' .. model .. '","metadata":{"team":"bench"},"messages":[{"role":"user","content":"Hello, my email is jane@example.com. What is a weir? (request '
        .. tostring(id) .. '-' .. n .. ')"}]}'
    return wrk.format("POST", nil, { ["content-type"] = "application/json" }, body)
end
