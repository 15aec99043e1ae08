-- POST an OpenAI chat completion (the gateway, LiteLLM). STREAM=1 asks for SSE.
local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(here .. "report.lua")
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer bench-key"
local stream = os.getenv("STREAM") == "1"
wrk.body = '{"model": "gpt-4o", "stream": ' .. (stream and "true" or "false") ..
  ', "messages": [{"role": "user", "content": "benchmark the gateway please"}]}'
