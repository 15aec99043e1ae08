"""A whole GenerateContentResponse -> canonical Completion."""

from __future__ import annotations

from typing import Any

from ...protocol import canonical as c
from ...protocol import jsonfast
from ...protocol.errors import UnusableAnswer, UpstreamError
from .finish import blocked, finish_reason, usage_from
from .grounding import grounding_from
from .limit import enforce_limit
from .reply import Reply


def reasoning_part(part: dict[str, Any]) -> tuple[str, str | None] | None:
    """(thought text, signature) of a thought part or of a signature-only part (an empty text part
    that carries the signature, as streams deliver it after the text); None for other parts.
    A signature on a non-empty answer text is not kept: Gemini does not validate those."""
    sig = part.get("thoughtSignature")
    if part.get("thought"):
        return part.get("text", ""), sig
    if sig and not part.get("text") and "functionCall" not in part:
        return "", sig
    return None


def completion_from(data: dict[str, Any], n: int = 1, reply: Reply | None = None) -> c.Completion:
    """A whole GenerateContentResponse; its signatures are stamped with `reply`'s origin."""
    reply = reply or Reply()
    choices: list[c.Choice] = []
    for pos, cand in enumerate(data.get("candidates") or []):
        ch = c.Choice(index=cand.get("index", pos))
        bases: dict[int, int] = {}  # part index -> byte offset of that part in ch.text
        for k, part in enumerate((cand.get("content") or {}).get("parts") or []):
            thought = reasoning_part(part)
            if "functionCall" in part:
                ch.tool_calls.append(reply.call(part))
            elif thought is not None:
                ch.reasoning += thought[0]
                ch.reasoning_signature = reply.reasoning(thought[1]) or ch.reasoning_signature
            elif "text" in part:
                bases[k] = len(ch.text.encode())
                ch.text += part["text"]
        ch.finish_reason = finish_reason(cand.get("finishReason"), bool(ch.tool_calls), bool(ch.text),
                                         cand.get("finishMessage"))
        ch.grounding = grounding_from(cand.get("groundingMetadata"), ch.text, bases)
        choices.append(ch)
    if not choices:
        if not blocked(data):
            raise UnusableAnswer("The upstream answered without any candidate.", reason="EMPTY_RESPONSE")
        choices = [c.Choice(index=i, finish_reason="content_filter") for i in range(n)]
    elif reply.visible_limit is not None:
        enforce_limit(choices, data.get("usageMetadata"), reply.visible_limit)
    version = data.get("modelVersion") if isinstance(data.get("modelVersion"), str) else None
    usage = usage_from(data.get("usageMetadata"))
    usage.model = version
    return c.Completion(choices, usage, version)


def unwrap(data: Any) -> Any:
    """Cloud Code wraps each GenerateContentResponse as {"response": ...}; the Gemini API does not."""
    if isinstance(data, dict) and isinstance(data.get("response"), dict):
        return data["response"]
    return data


def completion_from_body(body: bytes, n: int, reply: Reply | None = None) -> c.Completion:
    """A whole (possibly Cloud Code-wrapped) generateContent answer."""
    try:
        data = unwrap(jsonfast.loads(body))
        if not isinstance(data, dict):
            raise TypeError
        return completion_from(data, n, reply)
    except (ValueError, KeyError, TypeError, AttributeError):
        raise UpstreamError(502, "Upstream returned a body that is not a GenerateContentResponse.") from None
