-- POST a Gemini generateContent body (bare pass-through and the upstream itself); the URL's path
-- chooses :generateContent or :streamGenerateContent?alt=sse.
local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(here .. "report.lua")
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["x-goog-api-key"] = "bench-key"
wrk.body = '{"contents": [{"role": "user", "parts": [{"text": "benchmark the gateway please"}]}]}'
