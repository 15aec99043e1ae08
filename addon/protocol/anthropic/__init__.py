"""Wire models of Anthropic's Messages API requests (what Claude Code and the `anthropic` SDKs send)."""
