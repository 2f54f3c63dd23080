-- wrk script: POST the chat of bench/chat.lua in Anthropic's Messages shape (for `weir sim`'s
-- /v1/messages, or weir's), model in WEIR_MODEL.
local model = os.getenv("WEIR_MODEL") or "demo"
wrk.method = "POST"
wrk.headers["content-type"] = "application/json"
wrk.headers["anthropic-version"] = "2023-06-01"
wrk.body = '{"model":"' .. model .. '","max_tokens":4096,"messages":[{"role":"user","content":"Hello, my email is jane@example.com. What is a weir?"}]}'
