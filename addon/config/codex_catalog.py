"""The Codex CLI model catalog the gateway serves next to the OpenAI model list.

Codex decides per model which tools to offer from its model metadata (`ModelInfo`). A model name
it does not know (every gateway name) gets fallback metadata *without* `apply_patch`, so the model
can only edit files through the shell. A custom provider with
`model_catalog_url = "http://127.0.0.1:8045/v1/models"` makes Codex fetch
`/v1/models?client_version=...` and read a `{"models": [ModelInfo, ...]}` catalog from it; the
gateway then adds that array for the names it lists (checked with Codex CLI 0.169).

With a catalog entry Codex uses the entry's `base_instructions` as its system prompt (an empty one
leaves the model without any), so the entry carries the gateway's own short agent prompt
(codex_instructions.md). Codex's `model_instructions_file` setting replaces it.

Sub-agents: `multi_agent_version: "v1"` gives Codex's `multi_agent_v1` tools (spawn_agent, ...),
which hand the task to the sub-agent as plain input; "v2" passes it in OpenAI-only encrypted
content that no other upstream can read. MCP tools: `supports_search_tool: false` makes Codex offer
every MCP server's tools at once (a `namespace` tool per server) instead of behind its
`tool_search` tool; the gateway serves both, but the direct way costs no extra model round trip.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

BASE_INSTRUCTIONS = (Path(__file__).with_name("codex_instructions.md")).read_text(encoding="utf-8")

# Gemini models take 1,048,576 input tokens (ai.google.dev model cards); Codex compacts history
# against this. Unknown upstreams get no number and Codex keeps its own default.
_CONTEXT_WINDOWS = (("gemini-", 1_048_576),)


def _context_window(upstream: str) -> int | None:
    return next((size for prefix, size in _CONTEXT_WINDOWS if upstream.startswith(prefix)), None)


def model_info(name: str, upstream: str, priority: int) -> dict[str, Any]:
    """One Codex `ModelInfo`: freeform apply_patch, the unified exec shell tool Codex uses by default,
    reasoning efforts the gateway maps to Gemini thinking, text and image input."""
    info: dict[str, Any] = {
        "slug": name,
        "display_name": name,
        "description": f"{name} via the gateway ({upstream})" if upstream != name else f"{name} via the gateway",
        "supported_reasoning_levels": [
            {"effort": effort, "description": text} for effort, text in (
                ("low", "Little thinking"), ("medium", "Balanced thinking"), ("high", "Deep thinking"))],
        "shell_type": "unified_exec",
        "visibility": "list",
        "supported_in_api": True,
        "priority": priority,
        "upgrade": None,
        "base_instructions": BASE_INSTRUCTIONS,
        "support_verbosity": False,
        "default_verbosity": None,
        "apply_patch_tool_type": "freeform",
        "truncation_policy": {"mode": "bytes", "limit": 10_000},
        "supports_parallel_tool_calls": True,
        "experimental_supported_tools": [],
        "input_modalities": ["text", "image"],
        "multi_agent_version": "v1",
        "supports_search_tool": False,
    }
    window = _context_window(upstream)
    if window:
        info["context_window"] = window
    return info


def codex_catalog(names: list[str], resolve: Callable[[str], str]) -> list[dict[str, Any]]:
    """Chat models only: an embedding model (text-embedding-3-small -> gemini-embedding-001) is no
    agent for Codex's picker."""
    chat = [(name, upstream) for name in names if "embedding" not in (upstream := resolve(name))]
    return [model_info(name, upstream, priority) for priority, (name, upstream) in enumerate(chat, start=1)]
