"""The countTokens request for a canonical request: what the same request would send, counted.

Google's three ways to count (the prompt only: no generation settings matter):
  * Gemini API `models/{m}:countTokens` takes `{"generateContentRequest": {"model": "models/{m}",
    contents, systemInstruction, tools, toolConfig}}`, so the system prompt and the tool
    declarations are counted as the model sees them;
  * Vertex AI `...:countTokens` takes the same fields at the top level (the provider unwraps them);
  * Cloud Code `v1internal:countTokens` takes `{"request": {"model", "contents"}}` only (gemini-cli's
    code_assist converter): there the system text and the tool declarations go in as a leading
    user turn of text, so they are still counted (`contents_only`).
"""

from __future__ import annotations

import json
from typing import Any

from ...protocol import canonical as c
from .request import prepare

_COUNTED = ("contents", "systemInstruction", "tools", "toolConfig")


def count_request(req: c.ChatRequest, model: str, origin: str | None = None, *,
                  contents_only: bool = False) -> dict[str, Any]:
    body, _ = prepare(req, model, origin)
    inner = {k: body[k] for k in _COUNTED if k in body}
    if contents_only:
        extra = [{"text": p["text"]} for p in (inner.pop("systemInstruction", None) or {}).get("parts", [])
                 if p.get("text")]
        decls = [d for t in inner.pop("tools", []) for d in t.get("functionDeclarations", [])]
        inner.pop("toolConfig", None)
        if decls:
            extra.append({"text": json.dumps(decls, ensure_ascii=False)})
        contents = inner["contents"]
        if extra and contents and contents[0]["role"] == "user":
            inner["contents"] = [{"role": "user", "parts": extra + contents[0]["parts"]}, *contents[1:]]
        elif extra:
            inner["contents"] = [{"role": "user", "parts": extra}, *contents]
    return {"generateContentRequest": {"model": f"models/{model}", **inner}}


def total_tokens(answer: Any) -> int:
    """A CountTokensResponse's `totalTokens` (Cloud Code's is unwrapped by the provider)."""
    total = answer.get("totalTokens") if isinstance(answer, dict) else None
    return total if isinstance(total, int) and total >= 0 else 0
