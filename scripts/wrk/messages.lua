-- POST an Anthropic Messages request (the gateway's /v1/messages, as Claude Code sends it). STREAM=1 asks for SSE.
local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(here .. "report.lua")
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["x-api-key"] = "bench-key"
wrk.headers["anthropic-version"] = "2023-06-01"
local stream = os.getenv("STREAM") == "1"
wrk.body = '{"model": "gpt-4o", "max_tokens": 1024, "stream": ' .. (stream and "true" or "false") ..
  ', "messages": [{"role": "user", "content": "benchmark the gateway please"}]}'
