"""What the emulated model says, independent of wire format: echo, tool-call directives,
tool-result summaries or a rule's scripted reply, then stop sequences and token limits."""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from typing import Any

from .wire import compact

TRUNCATE = 200  # chars of user text echoed back


def words(text: str) -> int:
    """Token-count approximation: whitespace-separated words (cheap and deterministic)."""
    return len(text.split())


def _split_words(text: str, n: int = 4) -> list[str]:
    """Split text into ~n chunks on word boundaries; ''.join(result) == text."""
    tokens = re.findall(r"\s*\S+", text)
    if not tokens:
        return [text] if text else []
    tokens[-1] += text[sum(map(len, tokens)):]  # trailing whitespace stays with the last word
    size = math.ceil(len(tokens) / n)
    return ["".join(tokens[i : i + size]) for i in range(0, len(tokens), size)]


TOOL_DIRECTIVE = re.compile(r"\[\[tool:([A-Za-z_][\w.:-]*)\s*(.*?)\]\]", re.DOTALL)
OPENAI_TO_GEMINI_FINISH = {"stop": "STOP", "length": "MAX_TOKENS", "content_filter": "SAFETY", "tool_calls": "STOP"}
GEMINI_TO_OPENAI_FINISH = {"STOP": "stop", "MAX_TOKENS": "length", "SAFETY": "content_filter",
                           "RECITATION": "content_filter", "PROHIBITED_CONTENT": "content_filter",
                           "BLOCKLIST": "content_filter", "SPII": "content_filter"}


@dataclass
class Answer:
    """Flavour-neutral model output; finish uses Gemini vocabulary."""

    text: str = ""
    function_calls: list[dict[str, Any]] = field(default_factory=list)
    finish: str = "STOP"
    thought: str | None = None
    chunks: list[str] | None = None  # exact stream chunking (from a reply rule)
    exact: bool = False  # from a reply rule: limits (max tokens, stop) don't apply
    grounding: dict[str, Any] | None = None  # a Google Search "done" for this answer (see grounding_metadata)
    thought_tokens: int = 0  # thinking spent before answering; counts against the output limit

    def text_chunks(self) -> list[str]:
        return self.chunks if self.chunks is not None else _split_words(self.text)


def _parse_directives(text: str, declared: set[str]) -> list[dict[str, Any]]:
    calls = []
    for name, raw_args in TOOL_DIRECTIVE.findall(text):
        if name not in declared:
            continue
        try:
            args = json.loads(raw_args) if raw_args.strip() else {}
        except ValueError:
            args = {}
        calls.append({"name": name, "args": args if isinstance(args, dict) else {"value": args}})
    return calls


def compose_answer(model: str, last_text: str, tool_results: list[tuple[str, Any]], declared: set[str],
                   json_mode: bool, reply: dict[str, Any] | None) -> Answer:
    """The deterministic 'model': echo, tool-call directives, tool-result summaries, or a rule's reply."""
    if reply is not None:
        chunks = reply.get("chunks")
        text = reply.get("text", "".join(chunks) if chunks else "")
        finish = reply.get("finish_reason") or "STOP"
        return Answer(text=text, chunks=chunks, function_calls=list(reply.get("function_calls") or []),
                      finish=OPENAI_TO_GEMINI_FINISH.get(finish, finish), thought=reply.get("thought"), exact=True,
                      grounding=reply.get("grounding"))
    if tool_results:
        text = "; ".join(f"Tool {name} returned: {compact(resp)}" for name, resp in tool_results)
        return Answer(text=text[:TRUNCATE])
    calls = _parse_directives(last_text, declared)
    if calls:
        return Answer(function_calls=calls)
    if json_mode or "[[json]]" in last_text:
        return Answer(text=json.dumps({"echo": last_text[:TRUNCATE]}))
    return Answer(text=f"Echo({model}): {last_text[:TRUNCATE]}")


def apply_limits(ans: Answer, max_tokens: int | None, stops: list[str]) -> Answer:
    """Emulate stop sequences (finish STOP) and output-token limits (finish MAX_TOKENS)."""
    if ans.exact:
        return ans
    if max_tokens is not None and ans.thought_tokens:
        # Thought tokens count against maxOutputTokens (python-genai#2062, ha-llmvision#609): a small
        # limit on a thinking model ends MAX_TOKENS with no content at all.
        if ans.thought_tokens >= max_tokens:
            ans.thought_tokens, ans.text, ans.function_calls, ans.thought = max_tokens, "", [], None
            ans.finish = "MAX_TOKENS"
            return ans
        max_tokens -= ans.thought_tokens
    text = ans.text
    cuts = [i for i in (text.find(s) for s in stops if s) if i >= 0]
    if cuts:
        text = text[: min(cuts)]
    if max_tokens is not None and words(text) > max_tokens:
        text = "".join(re.findall(r"\s*\S+", text)[: max(max_tokens, 0)]).strip()
        ans.finish = "MAX_TOKENS"
    ans.text = text
    return ans


def n_answers(base: Answer, n: int) -> list[Answer]:
    """candidateCount / n: N copies, later ones slightly different so tests can tell them apart."""
    out = [base]
    for i in range(1, max(n, 1)):
        suffix = f" (candidate {i})" if base.text else ""
        out.append(Answer(text=base.text + suffix, function_calls=base.function_calls, finish=base.finish,
                          thought=base.thought, grounding=base.grounding,
                          chunks=None if base.chunks is None else [*base.chunks, suffix] if suffix else base.chunks,
                          exact=base.exact, thought_tokens=base.thought_tokens))
    return out
