"""OpenAI-compatible LLM gateway, packaged as a mitmproxy addon.

The folders follow the data's path (docs/architecture.md says which file to change for what):
  protocol/    wire models of the client requests, the canonical request/response/events, errors
  frontends/   client surfaces (chat, responses, completions) <-> canonical; the registry of surfaces
  backends/    canonical <-> upstream wire formats (gemini/ package, OpenAI-compatible), schema conversion
  config/      configuration files: model mapping, hot reloading, Gemini safety settings, Codex catalog
  pool/        the accounts file, the account pool, the retry policy, credentials, the state file
  upstream/    providers: HTTP calls per account kind (Gemini API, Vertex AI, Cloud Code + OAuth, OpenAI-compatible)
  stores/      state kept between requests: Responses, thought signatures, shared/ (local or Redis)
  ops/         what operators see and run: a request's story, metrics, redaction, the login command
  mitm/        the mitmproxy side beside gateway.py: the loopback relay for streams
  engine       routes, auth, one completion through the policy; no mitmproxy inside
  wiring       builds the object graph from options
  gateway.py   the thin mitmproxy adapter (options, hooks, commands)
"""

__version__ = "0.1.0"
