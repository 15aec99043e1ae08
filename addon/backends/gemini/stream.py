"""The stream state machine: Gemini SSE events in, canonical stream events out."""

from __future__ import annotations

from typing import Any

from ...protocol import canonical as c
from ...protocol import jsonfast
from ...protocol.errors import UnusableAnswer, UpstreamError
from .errors import error_from
from .finish import blocked, finish_reason, usage_from
from .grounding import grounding_from
from .limit import answer_chars, cut_text
from .reply import Reply
from .response import reasoning_part, unwrap


class GeminiStreamDecoder:
    """Gemini SSE payloads (each a partial GenerateContentResponse) -> canonical stream events."""

    def __init__(self, n: int = 1, reply: Reply | None = None) -> None:
        self._n = n
        self._reply = reply or Reply()
        self._calls: dict[int, int] = {}  # candidate -> tool calls emitted so far
        self._output: set[int] = set()  # candidates that produced text or calls
        self._finished: set[int] = set()
        self._usage: dict[str, Any] | None = None
        self._model_version: str | None = None  # who answered (differs from the name when re-routed)
        self.blocked = False
        self._failure: UnusableAnswer | None = None  # raised once the text before it was delivered
        self._texts: dict[int, list[str]] = {}  # candidate -> visible text so far (grounding offsets)
        self._grounding: dict[int, Any] = {}  # candidate -> latest groundingMetadata not yet sent
        self._chars: dict[int, int] = {}  # candidate -> visible characters so far (with a visible limit)
        self._chars_total = 0

    def feed(self, payload: str) -> list[c.StreamEvent]:
        if self._failure is not None:
            raise self._failure
        try:
            data = jsonfast.loads(payload)
        except ValueError:
            raise UpstreamError(502, "Upstream sent an SSE event that is not JSON.") from None
        if isinstance(data, list) or (isinstance(data, dict) and "error" in data):
            raise error_from(500, payload.encode(), {})
        return self.feed_response(unwrap(data))

    def feed_response(self, data: dict[str, Any]) -> list[c.StreamEvent]:
        events: list[c.StreamEvent] = []
        if data.get("usageMetadata"):
            self._usage = data["usageMetadata"]  # cumulative: the last one is the total
        if self._model_version is None and isinstance(data.get("modelVersion"), str):
            self._model_version = data["modelVersion"]
        candidates = data.get("candidates") or []
        if not candidates and blocked(data):
            self.blocked = True
        limit = self._reply.visible_limit
        if limit is not None:
            self._chars_total += sum(answer_chars((cand.get("content") or {}).get("parts") or [])
                                     for cand in candidates)
        for pos, cand in enumerate(candidates):
            idx = cand.get("index", pos)
            for part in (cand.get("content") or {}).get("parts") or []:
                if idx in self._finished:
                    break  # cut at the client's limit: nothing more for this choice
                thought = reasoning_part(part)
                if "functionCall" in part:
                    call = self._reply.call(part)
                    k = self._calls.get(idx, 0)
                    self._calls[idx] = k + 1
                    self._output.add(idx)
                    # Header first, then the arguments: clients see a real incremental call.
                    events.append(c.ToolCallDelta(idx, k, "", id=call.id, name=call.name, signature=call.signature))
                    events.append(c.ToolCallDelta(idx, k, call.arguments))
                elif thought is not None:
                    if thought[0] or thought[1]:
                        events.append(c.ReasoningDelta(idx, thought[0], self._reply.reasoning(thought[1])))
                elif part.get("text"):
                    text, over = part["text"], False
                    if limit is not None:
                        text, over = self._within_limit(idx, text, limit)
                    if text:
                        self._output.add(idx)
                        self._texts.setdefault(idx, []).append(text)
                        events.append(c.TextDelta(idx, text))
                    if over:
                        self._finished.add(idx)
                        events.append(c.Finish(idx, "length"))
            if cand.get("groundingMetadata"):
                # Usually on the last event; sent just before the finish, when all text is known.
                self._grounding[idx] = cand["groundingMetadata"]
            if (cand.get("finishReason") or idx in self._finished) and idx in self._grounding:
                events += self._grounding_event(idx)
            if cand.get("finishReason") and idx not in self._finished:
                self._finished.add(idx)
                try:
                    reason = finish_reason(cand["finishReason"], self._calls.get(idx, 0) > 0, idx in self._output,
                                           cand.get("finishMessage"))
                except UnusableAnswer as err:
                    self._failure = err
                    break
                events.append(c.Finish(idx, reason))
        return events

    def _grounding_event(self, idx: int) -> list[c.StreamEvent]:
        grounding = grounding_from(self._grounding.pop(idx), "".join(self._texts.get(idx, [])))
        return [c.GroundingUpdate(idx, grounding)] if grounding else []

    def _within_limit(self, idx: int, text: str, limit: int) -> tuple[str, bool]:
        """The part of `text` within the client's visible limit, and whether the limit was hit."""
        tokens = (self._usage or {}).get("candidatesTokenCount") or 0
        have = self._chars.get(idx, 0)
        if tokens and self._chars_total:
            per_token = self._chars_total / tokens
            if (have + len(text)) / per_token > limit + 0.5:
                text = cut_text(text, int(limit * per_token) - have)
                self._chars[idx] = have + len(text)
                return text, True
        self._chars[idx] = have + len(text)
        return text, False

    @property
    def complete(self) -> bool:
        """True once every candidate finished (or the prompt was blocked): a clean end."""
        return self.blocked or len(self._finished) >= self._n

    def finish(self) -> list[c.StreamEvent]:
        if self._failure is not None:
            raise self._failure
        if not self.complete:
            raise UpstreamError(502, "Upstream stream ended before the answer was complete.")
        events: list[c.StreamEvent] = []
        for idx in list(self._grounding):
            events += self._grounding_event(idx)
        if self.blocked:
            events += [c.Finish(i, "content_filter") for i in range(self._n) if i not in self._finished]
        usage = usage_from(self._usage)
        usage.model = self._model_version
        events.append(c.UsageUpdate(usage))
        return events
