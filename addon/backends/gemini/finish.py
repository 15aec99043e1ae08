"""finishReason and usageMetadata -> canonical finish reasons and usage."""

from __future__ import annotations

from typing import Any

from ...protocol import canonical as c
from ...protocol.errors import UnusableAnswer

# What each finishReason (google-genai's FinishReason, promptFeedback.blockReason) becomes. None is
# ever a silent empty "stop":
#
#   STOP, FINISH_REASON_UNSPECIFIED, none   stop (tool_calls when the candidate called functions);
#                                           no text and no call (thoughts only) -> "empty answer" below
#   MAX_TOKENS, CONTINUATION                length (Responses: incomplete, max_output_tokens)
#   SAFETY, RECITATION, LANGUAGE, OTHER,    content_filter (Responses: incomplete, content_filter),
#   BLOCKLIST, PROHIBITED_CONTENT, SPII,    with whatever text came before; a prompt blocked by
#   IMAGE_*, NO_IMAGE, ESCALATION,          promptFeedback.blockReason (no candidates) likewise
#   MODEL_ARMOR, PUP_LIMITED_DISABLED
#   MALFORMED_FUNCTION_CALL,                the attempt failed (UnusableAnswer): retried once (next
#   UNEXPECTED_TOOL_CALL,                   account, or the same one), as gemini-cli retries these;
#   MALFORMED_RESPONSE, empty answer        then a 502 with code "malformed_function_call", ...
#   MISSING_THOUGHT_SIGNATURE               resent once to the same account with dummy signatures
#                                           (the provider), then as above
#   TOO_MANY_TOOL_CALLS                     502 "too_many_tool_calls", not retried (it would loop again)
#
# A candidate that produced valid function calls ends in tool_calls whatever the reason (gemini-cli
# only fails MALFORMED_FUNCTION_CALL when no call came). In a stream, a failure after the first
# byte ends the stream with the protocol's error event.

_LENGTH = frozenset({"MAX_TOKENS", "CONTINUATION"})
_FILTERED = frozenset({
    "SAFETY", "RECITATION", "LANGUAGE", "OTHER", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII", "IMAGE_SAFETY",
    "IMAGE_PROHIBITED_CONTENT", "IMAGE_RECITATION", "IMAGE_OTHER", "NO_IMAGE", "ESCALATION", "MODEL_ARMOR",
    "PUP_LIMITED_DISABLED",
})
_FAILED = {
    "MALFORMED_FUNCTION_CALL": "The model produced a function call that could not be parsed",
    "UNEXPECTED_TOOL_CALL": "The model called a function that was not offered",
    "MALFORMED_RESPONSE": "The model produced a malformed response",
    "MISSING_THOUGHT_SIGNATURE": "The upstream found a thought signature missing in the request",
    "TOO_MANY_TOOL_CALLS": "The upstream's built-in tool loop hit its limit",
}
_NOT_RETRIED = frozenset({"TOO_MANY_TOOL_CALLS"})


def finish_reason(raw: str | None, had_tool_calls: bool, had_output: bool = True,
                  message: str | None = None) -> c.FinishReason:
    """A candidate's finishReason as OpenAI's; raises UnusableAnswer for an answer a client cannot
    use (see the table above). `had_output`: the candidate produced text or function calls."""
    # Gemini says STOP even when the turn ends in function calls; OpenAI clients key on tool_calls.
    if had_tool_calls:
        return "tool_calls"
    raw = raw or "STOP"
    if raw in _LENGTH:
        return "length"
    if raw in _FILTERED:
        return "content_filter"
    why = f" ({message})" if message else ""
    if raw in _FAILED:
        raise UnusableAnswer(f"{_FAILED[raw]}: finishReason {raw}{why}.", reason=raw, retry=raw not in _NOT_RETRIED)
    if not had_output:
        raise UnusableAnswer(f"The model returned an empty answer (finishReason {raw}{why}).",
                             reason="EMPTY_RESPONSE")
    return "stop"


def blocked(data: dict[str, Any]) -> bool:
    return bool((data.get("promptFeedback") or {}).get("blockReason"))


def usage_from(meta: dict[str, Any] | None) -> c.Usage:
    if not meta:
        return c.Usage()
    thoughts = meta.get("thoughtsTokenCount", 0) or 0
    return c.Usage(
        input_tokens=(meta.get("promptTokenCount", 0) or 0) + (meta.get("toolUsePromptTokenCount", 0) or 0),
        output_tokens=(meta.get("candidatesTokenCount", 0) or 0) + thoughts,
        reasoning_tokens=thoughts,
        cached_tokens=meta.get("cachedContentTokenCount", 0) or 0,
    )
