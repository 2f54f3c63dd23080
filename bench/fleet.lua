-- wrk script: POST a distinct deterministic chat completion each time (cacheable, never a
-- hit) with the API key in WEIR_KEY, for the `demo` route (or the model in WEIR_MODEL).
local model = os.getenv("WEIR_MODEL") or "demo"
local key = os.getenv("WEIR_KEY")
local n = 0
math.randomseed(os.time())
request = function()
    n = n + 1
    local headers = { ["content-type"] = "application/json" }
    if key then headers["authorization"] = "Bearer " .. key end
    local body = '{"model":"' .. model .. '","temperature":0,"messages":[{"role":"user","content":"Hello, my email is jane@example.com. What is a weir? #' .. n .. '-' .. math.random(1e9) .. '"}]}'
    return wrk.format("POST", nil, headers, body)
end
