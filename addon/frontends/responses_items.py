"""Responses API output items and the Response object, shared by whole answers and streams;
and our own output items read back into the canonical assistant turn (`previous_response_id`)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from ..protocol import canonical as c
from ..protocol.ids import new_id
from ..stores.sealing import Sealer
from .common import custom_arguments
from .responses_state import StepState, open_step, seal_step
from .responses_tools import ToolPlan, new_call_item

signature_ref = c.signature_ref  # the key format is the canonical layer's (back ends mint it)


# ---- response objects --------------------------------------------------------------------------


def usage_json(u: c.Usage) -> dict[str, Any]:
    return {
        "input_tokens": u.input_tokens,
        "input_tokens_details": {"cached_tokens": u.cached_tokens, "cache_write_tokens": 0},
        "output_tokens": u.output_tokens,
        "output_tokens_details": {"reasoning_tokens": u.reasoning_tokens},
        "total_tokens": u.total_tokens,
    }


def text_part(text: str, annotations: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": annotations or [], "logprobs": []}


def annotations(grounding: c.Grounding | None) -> list[dict[str, Any]]:
    """Cited spans as Responses url_citation annotations (flat, character offsets into the text)."""
    if grounding is None:
        return []
    return [{"type": "url_citation", "start_index": x.start, "end_index": x.end, "url": x.url, "title": x.title}
            for x in grounding.citations]


def web_search_item(item_id: str, grounding: c.Grounding) -> dict[str, Any]:
    action: dict[str, Any] = {"type": "search", "queries": grounding.queries,
                              "sources": [{"type": "url", "url": url} for url, _ in grounding.sources]}
    if grounding.queries:
        action["query"] = grounding.queries[0]  # the older single-query field
    return {"id": item_id, "type": "web_search_call", "status": "completed", "action": action}


def reasoning_item(item_id: str, text: str, signature: c.Signature | None,
                   sealed: str | None = None) -> dict[str, Any]:
    """Gemini's thoughts are already summaries. encrypted_content carries what the next turn needs:
    the step's sealed signatures (`sealed`), or else the key of its stored signature."""
    item: dict[str, Any] = {"id": item_id, "type": "reasoning",
                            "summary": [{"type": "summary_text", "text": text}] if text else []}
    if sealed is not None:
        item["encrypted_content"] = sealed
    elif signature is not None:
        item["encrypted_content"] = signature.key or signature.value
    return item


def message_item(item_id: str, text: str, notes: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {"id": item_id, "type": "message", "status": "completed", "role": "assistant",
            "content": [text_part(text, notes)]}


def output_items(choice: c.Choice, ctx: ResponseContext) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    step = StepState(choice.reasoning_signature,
                     {tc.id: tc.signature for tc in choice.tool_calls if tc.signature is not None})
    sealed = ctx.seal(step)
    if choice.reasoning or choice.reasoning_signature or sealed is not None:
        items.append(reasoning_item(new_id("rs_"), choice.reasoning, choice.reasoning_signature, sealed))
    if choice.grounding is not None:
        items.append(web_search_item(new_id("ws_"), choice.grounding))
    if choice.text:
        items.append(message_item(new_id("msg_"), choice.text, annotations(choice.grounding)))
    items += [new_call_item(tc, ctx.plan.client_tool(tc.name)) for tc in choice.tool_calls]
    return items


def status_of(finish: c.FinishReason) -> tuple[str, dict[str, str] | None]:
    if finish == "length":
        return "incomplete", {"reason": "max_output_tokens"}
    if finish == "content_filter":
        return "incomplete", {"reason": "content_filter"}
    return "completed", None


def assistant_turn(items: list[dict[str, Any]], plan: ToolPlan | None = None,
                   sealer: Sealer | None = None) -> c.Message:
    """Our own output items back into the canonical assistant turn (what the next request continues)."""
    plan = plan or ToolPlan()
    turn = c.Message("assistant")
    sealed: dict[str, c.Signature] = {}
    for item in items:
        kind = item["type"]
        if kind == "reasoning":
            text = "".join(s["text"] for s in item["summary"])
            token = item.get("encrypted_content")
            if Sealer.is_sealed(token):
                step = open_step(sealer, token) if sealer is not None else None
                sealed.update(step.calls if step else {})
                turn.content.append(c.ReasoningPart(text, step.reasoning if step else None))
            else:
                turn.content.append(c.ReasoningPart(text, signature_ref(token)))
        elif kind == "message":
            turn.content += [c.TextPart(p["text"]) for p in item["content"]]
        elif kind == "function_call":
            name = plan.canonical(item["name"], item.get("namespace"))
            turn.tool_calls.append(c.ToolCall(item["call_id"], name, item["arguments"]))
        elif kind == "custom_tool_call":
            name = plan.canonical(item["name"], item.get("namespace"))
            turn.tool_calls.append(c.ToolCall(item["call_id"], name, custom_arguments(item["input"])))
        elif kind == "tool_search_call":
            args = json.dumps(item.get("arguments") or {}, ensure_ascii=False)
            turn.tool_calls.append(c.ToolCall(item["call_id"], plan.canonical("tool_search"), args))
    for tc in turn.tool_calls:
        tc.signature = tc.signature or sealed.get(tc.id)
    return turn


@dataclass(slots=True)
class ResponseContext:
    """What parse() learned that render()/the encoder need: the id, the echoed request fields,
    the tools (how each call goes back), and the conversation to store."""

    id: str
    created_at: int
    echo: dict[str, Any]  # request fields every Response object repeats (model, tools, ...)
    conversation: list[c.Message]  # history + new input, without `instructions` (not carried over)
    store: bool  # False when the client sent store: false
    plan: ToolPlan = field(default_factory=ToolPlan)  # the request's tools and their upstream names
    sealer: Sealer | None = None  # set when the client asked for encrypted reasoning content
    final: dict[str, Any] | None = None  # the finished Response object, once there is one
    output: list[dict[str, Any]] = field(default_factory=list)

    def seal(self, step: StepState) -> str | None:
        """The encrypted_content for a step's signatures, when this request gets sealed ones."""
        return seal_step(self.sealer, step) if self.sealer is not None and step else None

    def response(self, status: str, output: list[dict[str, Any]], usage: c.Usage | None, *,
                 error: dict[str, Any] | None = None,
                 incomplete: dict[str, str] | None = None) -> dict[str, Any]:
        return {"id": self.id, "object": "response", "created_at": self.created_at, "status": status,
                "error": error, "incomplete_details": incomplete, **self.echo, "output": output,
                "usage": usage_json(usage) if usage is not None else None}

    def finish(self, output: list[dict[str, Any]], usage: c.Usage, finish: c.FinishReason) -> dict[str, Any]:
        """The final Response object; the front end's settle() stores it (unless store: false)."""
        status, incomplete = status_of(finish)
        self.final = self.response(status, output, usage, incomplete=incomplete)
        self.output = output
        return self.final


