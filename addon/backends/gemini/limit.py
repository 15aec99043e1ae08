"""The client's visible limit, when thinking headroom was added (see thinking.output_plan)."""

from __future__ import annotations

import json
from typing import Any

from ...protocol import canonical as c

# Gemini reports candidatesTokenCount (all candidates, thoughts excluded), not a per-character
# count, so text is cut at the client's limit by the characters-per-token ratio of the answer.

def cut_text(text: str, chars: int) -> str:
    if chars >= len(text):
        return text
    if chars <= 0:
        return ""
    space = text.rfind(" ", 0, chars + 1)
    return text[:space].rstrip() if space > chars // 2 else text[:chars]


def answer_chars(parts: list[dict[str, Any]]) -> int:
    """Characters of what candidatesTokenCount counts: visible text and function calls."""
    n = 0
    for part in parts:
        if "functionCall" in part:
            n += len(json.dumps(part["functionCall"].get("args") or {}))
        elif not part.get("thought") and isinstance(part.get("text"), str):
            n += len(part["text"])
    return n


def enforce_limit(choices: list[c.Choice], meta: dict[str, Any] | None, limit: int) -> None:
    tokens = (meta or {}).get("candidatesTokenCount") or 0
    chars = sum(len(ch.text) + sum(len(tc.arguments) for tc in ch.tool_calls) for ch in choices)
    if not tokens or not chars:
        return
    per_token = chars / tokens
    for ch in choices:
        if ch.text and not ch.tool_calls and len(ch.text) / per_token > limit + 0.5:
            ch.text = cut_text(ch.text, int(limit * per_token))
            ch.finish_reason = "length"
            if ch.grounding is not None:  # citations of the text that was cut go with it
                ch.grounding.citations = [x for x in ch.grounding.citations if x.end <= len(ch.text)]
