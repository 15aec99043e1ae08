"""OpenAI-compatible LLM gateway, packaged as a mitmproxy addon.

Pipeline (one module per stage):
  protocol/   wire models of the OpenAI front ends and the canonical request/response
  translate/  pure translators: front ends <-> canonical <-> upstream formats, one stream state machine per direction
  mapping     client model name -> upstream model (exact > wildcard > default), hot-reloaded
  accounts    the account pool: selection, cooldowns, persisted state
  upstream/   HTTP clients for each provider (Gemini API, Cloud Code, OpenAI-compatible)
  engine      routes, auth and the retry policy, with no knowledge of mitmproxy
  relay       loopback listener that lets mitmproxy stream a response the engine produces
  gateway.py  the thin mitmproxy adapter (options, hooks, commands)
"""

__version__ = "0.1.0"
