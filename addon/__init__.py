"""OpenAI-compatible LLM gateway, packaged as a mitmproxy addon.

The folders follow the data's path (docs/architecture.md says which file to change for what):
  protocol/    wire models of the OpenAI requests, the canonical request/response/events, errors
  frontends/   OpenAI surfaces (chat, responses, completions) <-> canonical; the registry of surfaces
  backends/    canonical <-> upstream wire formats (Gemini, OpenAI-compatible), schema conversion
  mapping      client model name -> upstream model (exact > wildcard > default), hot-reloaded
  accounts     the accounts file and the pool (selection, cooldowns, persisted state)
  upstream/    providers: HTTP calls per account kind (Gemini API, Cloud Code + OAuth, OpenAI-compatible)
  policy       retry and rotation: what an upstream error means for the account
  engine       routes, auth, one completion through the policy; no mitmproxy inside
  wiring       builds the object graph from options
  relay        loopback listener that lets mitmproxy stream a response the engine produces
  gateway.py   the thin mitmproxy adapter (options, hooks, commands)
"""

__version__ = "0.1.0"
