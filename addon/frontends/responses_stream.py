"""Responses API stream encoder: canonical stream events -> Responses SSE.

Wire rules the clients enforce (openai-python's stream accumulation; Codex CLI records items and
runs tools only on `response.output_item.done`): output items are opened and closed strictly one
after another with contiguous `output_index`; `sequence_number` counts every event from 0;
`response.completed` (or `.incomplete` / `.failed`) ends the stream and carries the full output.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Literal

from ..protocol import canonical as c
from ..protocol import jsonfast
from ..protocol.errors import GatewayError
from ..protocol.ids import new_id
from .responses_items import ResponseContext, annotations, message_item, reasoning_item, text_part, web_search_item
from .responses_state import StepState
from .responses_tools import ITEM_PREFIX, call_item

log = logging.getLogger(__name__)

def sse_event(kind: str, data: dict[str, Any]) -> bytes:
    return (b"event: " + kind.encode() + b"\ndata: "
            + jsonfast.dumps(data) + b"\n\n")


ItemKind = Literal["reasoning", "message", "function_call", "custom_tool_call", "tool_search_call"]
CALL_KINDS = ("function_call", "custom_tool_call", "tool_search_call")


@dataclass(slots=True)
class _OpenItem:
    kind: ItemKind
    item: dict[str, Any]  # as announced in output_item.added
    index: int  # output_index
    text: str = ""  # reasoning summary / message text / call arguments so far
    part_open: bool = False  # reasoning: summary part announced
    signature: c.Signature | None = None
    calls: dict[str, c.Signature] = field(default_factory=dict)  # reasoning: the step's call signatures
    call_index: int | None = None
    name: str = ""  # a call: the upstream name of its tool
    notes: list[dict[str, Any]] = field(default_factory=list)  # message: url_citation annotations


class ResponsesStreamEncoder:
    """Canonical stream events -> Responses SSE (`event:` + `data:` with type and sequence_number).

    One item is open at a time; an event of another kind (or another tool call) closes it, so
    items arrive strictly in order with contiguous output_index. Only choice 0 exists here.
    """

    def __init__(self, req: c.ChatRequest, ctx: ResponseContext) -> None:
        self._ctx = ctx
        self._seq = 0
        self._done: list[dict[str, Any]] = []  # finished items, in output order
        self._open: _OpenItem | None = None
        self._finish: c.FinishReason = "stop"
        self._usage = c.Usage()
        self._search: c.Grounding | None = None

    def _emit(self, kind: str, **fields: Any) -> bytes:
        data = {"type": kind, "sequence_number": self._seq, **fields}
        self._seq += 1
        return sse_event(kind, data)

    # -- lifecycle
    def start(self) -> bytes:
        resp = self._ctx.response("in_progress", [], None)
        return self._emit("response.created", response=resp) + self._emit("response.in_progress", response=resp)

    def feed(self, ev: c.StreamEvent) -> bytes:
        if isinstance(ev, c.UsageUpdate):
            self._usage = ev.usage
            return b""
        if ev.choice != 0:
            return b""
        if isinstance(ev, c.TextDelta):
            return self._text(ev.text) if ev.text else b""
        if isinstance(ev, c.ReasoningDelta):
            return self._reasoning(ev)
        if isinstance(ev, c.ToolCallDelta):
            return self._call(ev)
        if isinstance(ev, c.GroundingUpdate):
            return self._grounding(ev.grounding)
        self._finish = ev.reason  # Finish
        return b""

    def close(self) -> bytes:
        out = self._close_open()
        if self._search is not None:
            out += self._search_item(self._search)
        response = self._ctx.finish(self._done, self._usage, self._finish)
        kind = "response.completed" if response["status"] == "completed" else "response.incomplete"
        return out + self._emit(kind, response=response)

    def fail(self, err: GatewayError) -> bytes:
        # A half-open item is left as it is: the failure, not a fake completion, is what the client sees.
        code = "rate_limit_exceeded" if err.status == 429 else "server_error"
        response = self._ctx.response("failed", list(self._done), None, error={"code": code, "message": err.message})
        return self._emit("response.failed", response=response)

    # -- items
    def _begin(self, kind: ItemKind, item: dict[str, Any]) -> tuple[bytes, _OpenItem]:
        out = self._close_open()
        self._open = _OpenItem(kind, item, len(self._done))
        return out + self._emit("response.output_item.added", output_index=self._open.index, item=item), self._open

    def _close_open(self) -> bytes:
        it, self._open = self._open, None
        if it is None:
            return b""
        close = self._close_reasoning if it.kind == "reasoning" else (
            self._close_message if it.kind == "message" else self._close_call)
        out, item = close(it)
        self._done.append(item)
        return out + self._emit("response.output_item.done", output_index=it.index, item=item)

    def _text(self, delta: str) -> bytes:
        out = b""
        it = self._open
        if it is None or it.kind != "message":
            item = {"id": new_id("msg_"), "type": "message", "status": "in_progress", "role": "assistant",
                    "content": []}
            out, it = self._begin("message", item)
            out += self._emit("response.content_part.added", item_id=item["id"], output_index=it.index,
                              content_index=0, part=text_part(""))
        it.text += delta
        return out + self._emit("response.output_text.delta", item_id=it.item["id"], output_index=it.index,
                                content_index=0, delta=delta, logprobs=[])

    def _close_message(self, it: _OpenItem) -> tuple[bytes, dict[str, Any]]:
        ids = {"item_id": it.item["id"], "output_index": it.index, "content_index": 0}
        out = self._emit("response.output_text.done", **ids, text=it.text, logprobs=[])
        out += self._emit("response.content_part.done", **ids, part=text_part(it.text, it.notes))
        return out, message_item(it.item["id"], it.text, it.notes)

    def _grounding(self, grounding: c.Grounding) -> bytes:
        """Citations go on the message still open (the grounding arrives with the last text); the
        web_search_call item itself follows once that message is closed."""
        self._search = grounding
        it = self._open
        notes = annotations(grounding)
        if it is None or it.kind != "message" or not notes:
            if notes:
                log.debug("dropping %d citations: no message is open to carry them", len(notes))
            return b""
        out = b""
        for note in notes:
            out += self._emit("response.output_text.annotation.added", item_id=it.item["id"], output_index=it.index,
                              content_index=0, annotation_index=len(it.notes), annotation=note)
            it.notes.append(note)
        return out

    def _search_item(self, grounding: c.Grounding) -> bytes:
        item = web_search_item(new_id("ws_"), grounding)
        ids = {"item_id": item["id"], "output_index": len(self._done)}
        out = self._emit("response.output_item.added", output_index=ids["output_index"],
                         item={**item, "status": "in_progress"})
        for phase in ("in_progress", "searching", "completed"):
            out += self._emit(f"response.web_search_call.{phase}", **ids)
        self._done.append(item)
        return out + self._emit("response.output_item.done", output_index=ids["output_index"], item=item)

    def _reasoning(self, ev: c.ReasoningDelta) -> bytes:
        out = b""
        it = self._open
        if it is None or it.kind != "reasoning":
            out, it = self._begin("reasoning", {"id": new_id("rs_"), "type": "reasoning", "summary": []})
        it.signature = ev.signature or it.signature
        if not ev.text:
            return out
        ids = {"item_id": it.item["id"], "output_index": it.index, "summary_index": 0}
        if not it.part_open:
            it.part_open = True
            out += self._emit("response.reasoning_summary_part.added", **ids,
                              part={"type": "summary_text", "text": ""})
        it.text += ev.text
        return out + self._emit("response.reasoning_summary_text.delta", **ids, delta=ev.text)

    def _close_reasoning(self, it: _OpenItem) -> tuple[bytes, dict[str, Any]]:
        out = b""
        if it.part_open:
            ids = {"item_id": it.item["id"], "output_index": it.index, "summary_index": 0}
            out += self._emit("response.reasoning_summary_text.done", **ids, text=it.text)
            out += self._emit("response.reasoning_summary_part.done", **ids,
                              part={"type": "summary_text", "text": it.text})
        sealed = self._ctx.seal(StepState(it.signature, it.calls))
        return out, reasoning_item(it.item["id"], it.text, it.signature, sealed)

    def _call(self, ev: c.ToolCallDelta) -> bytes:
        out = b""
        it = self._open
        if it is None or it.kind not in CALL_KINDS or it.call_index != ev.call_index:
            if ev.id is None:
                # Upstream decoders deliver each call's deltas contiguously, header first; a stray
                # fragment of an already closed call cannot be placed in a closed item.
                log.warning("dropping arguments for tool call %d that is not open", ev.call_index)
                return b""
            if ev.signature is not None and self._ctx.sealer is not None:
                out += self._seal_call(ev.id, ev.signature)
            tool = self._ctx.plan.client_tool(ev.name or "")
            item = call_item(new_id(ITEM_PREFIX[tool.kind]), c.ToolCall(ev.id, ev.name or "", ""), tool, "in_progress")
            began, it = self._begin(item["type"], item)
            out += began
            it.call_index, it.name = ev.call_index, ev.name or ""
        if ev.arguments:
            it.text += ev.arguments
            if it.kind == "function_call":  # a custom call's input is only known once its JSON is whole
                out += self._emit("response.function_call_arguments.delta", item_id=it.item["id"],
                                  output_index=it.index, delta=ev.arguments)
        return out

    def _seal_call(self, call_id: str, signature: c.Signature) -> bytes:
        """The call's signature goes into the step's reasoning item, sealed: the one still open, or
        one of its own right before the call (a client keeps and returns reasoning items as they are)."""
        it = self._open
        if it is not None and it.kind == "reasoning":
            it.calls[call_id] = signature
            return b""
        out, it = self._begin("reasoning", {"id": new_id("rs_"), "type": "reasoning", "summary": []})
        it.calls[call_id] = signature
        return out + self._close_open()

    def _close_call(self, it: _OpenItem) -> tuple[bytes, dict[str, Any]]:
        ids = {"item_id": it.item["id"], "output_index": it.index}
        tool = self._ctx.plan.client_tool(it.name)
        item = call_item(it.item["id"], c.ToolCall(it.item["call_id"], "", it.text or "{}"), tool)
        if it.kind == "function_call":
            out = self._emit("response.function_call_arguments.done", **ids, name=item["name"],
                             arguments=item["arguments"])
        elif it.kind == "custom_tool_call":
            text = item["input"]
            out = self._emit("response.custom_tool_call_input.delta", **ids, delta=text) if text else b""
            out += self._emit("response.custom_tool_call_input.done", **ids, input=text)
        else:
            out = b""
        return out, item
