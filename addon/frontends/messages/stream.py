"""Canonical stream events -> Anthropic's Messages SSE, one explicit state machine.

The event sequence clients enforce (the `anthropic` SDK's accumulator, Claude Code): every event
is `event: <type>` + `data: {"type": <type>, ...}`; `message_start` first (a Message with empty
content); then content blocks strictly one after another, each `content_block_start` (index
counting from 0) → `content_block_delta`s → `content_block_stop`; `message_delta` with
`stop_reason` and the cumulative usage; `message_stop` last. `ping` may come anywhere (the relay
sends one during long upstream silences). A failure after the first byte is `event: error` with
Anthropic's error object.

States: IDLE (no block open) → THINKING | TEXT | TOOL (one block open) → IDLE … → CLOSED.
A delta of another kind closes the open block first; a thinking block's signature goes out as a
`signature_delta` just before its stop. Google Search results are only known at the end of the
answer, so the citations go onto the text block still open (`citations_delta`) and the search's
`server_tool_use` / `web_search_tool_result` blocks follow it.
"""

from __future__ import annotations

from typing import Any, Literal

from ...protocol import canonical as c
from ...protocol import jsonfast
from ...protocol.errors import GatewayError
from .ids import message_id
from .parse import Context
from .render import STOP_REASONS, citations, error_object, search_blocks, thinking_block, tool_use_block, usage_json

PING = b'event: ping\ndata: {"type": "ping"}\n\n'

State = Literal["idle", "thinking", "text", "tool", "closed"]


def event(kind: str, data: dict[str, Any]) -> bytes:
    return b"event: " + kind.encode() + b"\ndata: " + jsonfast.dumps({"type": kind, **data}) + b"\n\n"


class MessagesStreamEncoder:
    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx
        self.state: State = "idle"
        self._index = -1  # index of the open (or last) content block
        self._call: int | None = None  # call_index of the open tool_use block
        self._signature: c.Signature | None = None  # of the open thinking block
        self._text = ""  # all the answer's text so far (citation spans index it)
        self._finish: c.FinishReason = "stop"
        self._usage = c.Usage()
        self._search: c.Grounding | None = None

    # -- lifecycle
    def start(self) -> bytes:
        message = {"id": message_id(), "type": "message", "role": "assistant", "model": self._ctx.model,
                   "content": [], "stop_reason": None, "stop_sequence": None,
                   "usage": {"input_tokens": 0, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0,
                             "output_tokens": 0}}
        return event("message_start", {"message": message}) + PING

    def feed(self, ev: c.StreamEvent) -> bytes:
        if isinstance(ev, c.UsageUpdate):
            self._usage = ev.usage
            return b""
        if ev.choice != 0:
            return b""  # one choice only: the Messages API has no `n`
        if isinstance(ev, c.TextDelta):
            return self._text_delta(ev.text) if ev.text else b""
        if isinstance(ev, c.ReasoningDelta):
            return self._thinking_delta(ev)
        if isinstance(ev, c.ToolCallDelta):
            return self._tool_delta(ev)
        if isinstance(ev, c.GroundingUpdate):
            return self._grounding(ev.grounding)
        self._finish = ev.reason  # Finish
        return b""

    def close(self) -> bytes:
        out = self._close_block()
        if self._search is not None and self._ctx.web_search:
            for block in search_blocks(self._search, self._ctx.web_search):
                out += self._whole_block(block)
        usage = usage_json(self._usage, self._search if self._ctx.web_search else None)
        out += event("message_delta", {"delta": {"stop_reason": STOP_REASONS[self._finish], "stop_sequence": None},
                                       "usage": usage})
        self.state = "closed"
        return out + event("message_stop", {})

    def fail(self, err: GatewayError) -> bytes:
        # An open block stays open: the error, not a made-up ending, is what the client sees.
        self.state = "closed"
        return event("error", {"error": error_object(err)["error"]})

    # -- blocks
    def _open(self, state: State, block: dict[str, Any]) -> bytes:
        out = self._close_block()
        self.state = state
        self._index += 1
        return out + event("content_block_start", {"index": self._index, "content_block": block})

    def _delta(self, delta: dict[str, Any]) -> bytes:
        return event("content_block_delta", {"index": self._index, "delta": delta})

    def _close_block(self) -> bytes:
        if self.state in ("idle", "closed"):
            return b""
        out = b""
        if self.state == "thinking" and self._signature is not None and self._signature.key:
            out = self._delta({"type": "signature_delta", "signature": self._signature.key})
        self.state, self._signature, self._call = "idle", None, None
        return out + event("content_block_stop", {"index": self._index})

    def _whole_block(self, block: dict[str, Any]) -> bytes:
        out = self._open("tool", block)  # a block sent whole: opened and closed at once
        self.state = "idle"
        return out + event("content_block_stop", {"index": self._index})

    def _text_delta(self, text: str) -> bytes:
        out = b"" if self.state == "text" else self._open("text", {"type": "text", "text": ""})
        self._text += text
        return out + self._delta({"type": "text_delta", "text": text})

    def _thinking_delta(self, ev: c.ReasoningDelta) -> bytes:
        if self.state == "thinking":
            self._signature = ev.signature or self._signature
            return self._delta({"type": "thinking_delta", "thinking": ev.text}) if ev.text else b""
        if not ev.text or not self._ctx.thinking:
            return b""  # a signature alone after the text: Gemini never needs those back
        out = self._open("thinking", thinking_block("", None))
        self._signature = ev.signature
        return out + self._delta({"type": "thinking_delta", "thinking": ev.text})

    def _tool_delta(self, ev: c.ToolCallDelta) -> bytes:
        out = b""
        if ev.id is not None:  # a new call: its header comes first, then its arguments
            out = self._open("tool", tool_use_block(c.ToolCall(ev.id, ev.name or "", ""), {}))
            self._call = ev.call_index
        elif self.state != "tool" or self._call != ev.call_index:
            return b""  # arguments of a call that is no longer open cannot be placed
        if ev.arguments:
            out += self._delta({"type": "input_json_delta", "partial_json": ev.arguments})
        return out

    def _grounding(self, grounding: c.Grounding) -> bytes:
        self._search = grounding
        if self.state != "text":
            return b""
        return b"".join(self._delta({"type": "citations_delta", "citation": cite})
                        for cite in citations(self._text, grounding))
