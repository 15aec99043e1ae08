"""Responses API front end (`POST /v1/responses`): request -> canonical, canonical -> Response JSON and SSE.

`previous_response_id` continues the conversation of an earlier answer, kept in a
`ResponseStore`; `GET`/`DELETE /v1/responses/{id}` read the same store.

Wire rules the clients enforce (openai-python's stream accumulation; Codex CLI records items and
runs tools only on `response.output_item.done`): output items are opened and closed strictly one
after another with contiguous `output_index`; `sequence_number` counts every event from 0;
`response.completed` (or `.incomplete` / `.failed`) ends the stream and carries the full output,
which is what openai-python builds its final object from and what Codex CLI requires.
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass, field
from typing import Any, Literal

from ..protocol import canonical as c
from ..protocol import jsonfast
from ..protocol.errors import GatewayError, bad_request
from ..protocol.ids import new_id
from ..protocol.openai.common import check_metadata
from ..protocol.openai.responses import (
    CustomToolCallItem,
    CustomToolDef,
    FunctionCallItem,
    FunctionCallOutputItem,
    FunctionToolDef,
    InputFile,
    InputImage,
    InputText,
    MessageItem,
    OutputText,
    ReasoningItem,
    RefusalPart,
    ResponsesRequest,
    TextConfig,
    WebSearchToolDef,
    validate_request,
)
from ..stores.response_store import ResponseStore
from .base import Frontend, Route
from .common import check_json_args, custom_arguments, custom_input, custom_tool, media_from_url

log = logging.getLogger(__name__)

# ---- request -> canonical ----------------------------------------------------------------------


def _image(part: InputImage, param: str) -> c.MediaPart:
    if part.file_id:
        raise bad_request("Uploaded file ids are not supported by this gateway; send the image as a "
                          "data: or http(s) URL in 'image_url'.", param + ".file_id")
    if not part.image_url:
        raise bad_request("An input_image needs an 'image_url'.", param + ".image_url")
    return media_from_url(part.image_url, param + ".image_url")


def _file(part: InputFile, param: str) -> c.MediaPart:
    if part.file_data:
        if part.file_data.startswith("data:"):
            return media_from_url(part.file_data, param + ".file_data", "file", part.filename)
        # bare base64: OpenAI takes PDFs
        return c.MediaPart(mime_type="application/pdf", data=part.file_data, kind="file", filename=part.filename)
    if part.file_url:
        return media_from_url(part.file_url, param + ".file_url", "file", part.filename)
    raise bad_request("Uploaded file ids are not supported by this gateway; send the file inline as "
                      "'file_data' or by 'file_url'.", param + (".file_id" if part.file_id else ""))


def _parts(content: str | list[Any], where: str, *, media: bool) -> list[c.Part]:
    """Content parts -> canonical parts; `media` says whether images/files may appear here."""
    if isinstance(content, str):
        return [c.TextPart(content)] if content else []
    out: list[c.Part] = []
    for j, part in enumerate(content):
        param = f"{where}[{j}]"
        if isinstance(part, (InputText, OutputText)):
            out.append(c.TextPart(part.text))
        elif isinstance(part, RefusalPart):
            out.append(c.TextPart(part.refusal))
        elif not media:
            raise bad_request("Images and files are only accepted in user messages and tool outputs.", param)
        elif isinstance(part, InputImage):
            out.append(_image(part, param))
        else:
            out.append(_file(part, param))
    return out


_SIGNATURE_KEY = re.compile(r"sig_[0-9a-f]{24}")


def signature_ref(encrypted_content: str | None) -> c.Signature | None:
    """A reasoning item's encrypted_content: the key of a stored signature (looked up before the
    request goes upstream), or, from before the store existed, the signature itself."""
    if not encrypted_content:
        return None
    if _SIGNATURE_KEY.fullmatch(encrypted_content):
        return c.Signature("", key=encrypted_content)
    return c.Signature(encrypted_content)


def _reasoning(item: ReasoningItem) -> c.ReasoningPart | None:
    text = "".join(s.text for s in item.summary) or "".join(p.text for p in item.content or [])
    if not text and not item.encrypted_content:
        return None
    return c.ReasoningPart(text, signature_ref(item.encrypted_content))


def _assistant_turn(out: list[c.Message]) -> c.Message:
    """Consecutive reasoning / assistant message / function_call items form ONE assistant turn:
    Gemini pairs all calls of a turn with the function responses of the next one."""
    if not out or out[-1].role != "assistant":
        out.append(c.Message("assistant"))
    return out[-1]


def input_messages(items: str | list[Any] | None) -> list[c.Message]:
    if items is None:
        return []
    if isinstance(items, str):
        return [c.Message("user", [c.TextPart(items)])]
    out: list[c.Message] = []
    for i, item in enumerate(items):
        where = f"input[{i}]"
        if isinstance(item, MessageItem):
            if item.role == "assistant":
                _assistant_turn(out).content.extend(_parts(item.content, where + ".content", media=False))
            elif item.role == "user":
                out.append(c.Message("user", _parts(item.content, where + ".content", media=True)))
            else:
                out.append(c.Message("system", _parts(item.content, where + ".content", media=False)))
        elif isinstance(item, FunctionCallItem):
            args = check_json_args(item.arguments, where + ".arguments")
            # The client's call_id is the canonical id: the engine finds the call's thought
            # signature in its store by it.
            _assistant_turn(out).tool_calls.append(c.ToolCall(item.call_id, item.name, args))
        elif isinstance(item, CustomToolCallItem):
            # upstream, a freeform tool is a function taking its raw text as `input`
            _assistant_turn(out).tool_calls.append(c.ToolCall(item.call_id, item.name, custom_arguments(item.input)))
        elif isinstance(item, FunctionCallOutputItem):  # custom_tool_call_output included
            out.append(c.Message("tool", _parts(item.output, where + ".output", media=True),
                                 tool_call_id=item.call_id))
        elif isinstance(item, ReasoningItem):
            part = _reasoning(item)
            if part is not None:
                _assistant_turn(out).content.append(part)
        # anything else (OtherItem) carries nothing an upstream here could use
    return out


@dataclass(slots=True)
class _Tools:
    upstream: list[c.Tool] = field(default_factory=list)  # function and freeform tools, as functions
    custom: set[str] = field(default_factory=set)  # names of the freeform ones
    skipped: set[str] = field(default_factory=set)  # names/types of hosted tools that stay behind
    web_search: bool = False


def _tools(defs: list[Any] | None) -> _Tools:
    """Function tools and freeform tools (as functions) go upstream, a web search tool becomes the
    upstream's search; other hosted tools are skipped (their names/types are kept for tool_choice)."""
    out = _Tools()
    for t in defs or []:
        if isinstance(t, FunctionToolDef):
            out.upstream.append(c.Tool(t.name, t.description, t.parameters, t.strict))
        elif isinstance(t, CustomToolDef):
            out.upstream.append(custom_tool(t.name, t.description, t.format))
            out.custom.add(t.name)
        elif isinstance(t, WebSearchToolDef) and t.external_web_access is not False:
            out.web_search = True
        else:
            # Includes Codex's default web_search, `external_web_access: false` (its cached index
            # only): Gemini has only live Google Search, which is not what was asked for.
            out.skipped.update(n for n in (getattr(t, "name", None), t.type) if n)
    return out


def _check_names(names: tuple[str, ...], tools: _Tools) -> None:
    known = {t.name for t in tools.upstream}
    for name in names:
        if name in tools.skipped:
            raise bad_request(f"tool_choice names '{name}', a tool this gateway does not forward (only function "
                              "and custom tools reach the upstream).", "tool_choice")
        if name not in known:
            raise bad_request(f"tool_choice names unknown tool '{name}'.", "tool_choice")


def _tool_choice(choice: Any, tools: _Tools) -> c.ToolChoice | None:
    if choice is None:
        return None
    if isinstance(choice, str):
        if choice == "required" and not tools.upstream:
            raise bad_request("tool_choice 'required' needs at least one function tool.", "tool_choice")
        return c.ToolChoice(choice)
    if choice.type in ("function", "custom"):
        if not choice.name:
            raise bad_request("Missing required parameter: 'tool_choice.name'.", "tool_choice.name")
        _check_names((choice.name,), tools)
        return c.ToolChoice("required", (choice.name,))
    if choice.type == "allowed_tools":
        entries = choice.tools or []
        if not entries or any(e.get("type") not in ("function", "custom") or not e.get("name") for e in entries):
            raise bad_request("allowed_tools must list function tools as {type: 'function', name}.",
                              "tool_choice.tools")
        names = tuple(e["name"] for e in entries)
        _check_names(names, tools)
        return c.ToolChoice(choice.mode or "auto", names)
    if tools.web_search and choice.type.startswith("web_search"):
        return c.ToolChoice("auto")  # Google Search cannot be forced: the model decides whether to search
    # {type: "mcp", ...}, {type: "file_search"}: tools that were skipped
    raise bad_request(f"tool_choice names '{choice.name or choice.type}', a {choice.type} tool this gateway does "
                      "not forward (only function and custom tools reach the upstream).", "tool_choice")


def _response_format(text: TextConfig | None) -> c.ResponseFormat | None:
    fmt = text.format if text is not None else None
    if fmt is None or fmt.type == "text":
        return None
    if fmt.type == "json_object":
        return c.ResponseFormat("json_object")
    if fmt.schema_ is None:
        raise bad_request("Missing required parameter: 'text.format.schema'.", "text.format.schema")
    return c.ResponseFormat("json_schema", fmt.schema_, fmt.name, fmt.strict)


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


def reasoning_item(item_id: str, text: str, signature: c.Signature | None) -> dict[str, Any]:
    # Gemini's thoughts are already summaries; the key of its stored signature rides as
    # encrypted_content so a client that sends the item back returns it to the model.
    item: dict[str, Any] = {"id": item_id, "type": "reasoning",
                            "summary": [{"type": "summary_text", "text": text}] if text else []}
    if signature is not None:
        item["encrypted_content"] = signature.key or signature.value
    return item


def message_item(item_id: str, text: str, notes: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {"id": item_id, "type": "message", "status": "completed", "role": "assistant",
            "content": [text_part(text, notes)]}


def call_item(item_id: str, call: c.ToolCall, status: str = "completed") -> dict[str, Any]:
    return {"id": item_id, "type": "function_call", "status": status, "arguments": call.arguments,
            "call_id": call.id, "name": call.name}


def custom_call_item(item_id: str, call: c.ToolCall, text: str, status: str = "completed") -> dict[str, Any]:
    return {"id": item_id, "type": "custom_tool_call", "status": status, "call_id": call.id, "name": call.name,
            "input": text}


def tool_call_item(call: c.ToolCall, custom: frozenset[str]) -> dict[str, Any]:
    if call.name in custom:
        return custom_call_item(new_id("ctc_"), call, custom_input(call.arguments))
    return call_item(new_id("fc_"), call)


def output_items(choice: c.Choice, custom: frozenset[str] = frozenset()) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    if choice.reasoning or choice.reasoning_signature:
        items.append(reasoning_item(new_id("rs_"), choice.reasoning, choice.reasoning_signature))
    if choice.grounding is not None:
        items.append(web_search_item(new_id("ws_"), choice.grounding))
    if choice.text:
        items.append(message_item(new_id("msg_"), choice.text, annotations(choice.grounding)))
    items += [tool_call_item(tc, custom) for tc in choice.tool_calls]
    return items


def status_of(finish: c.FinishReason) -> tuple[str, dict[str, str] | None]:
    if finish == "length":
        return "incomplete", {"reason": "max_output_tokens"}
    if finish == "content_filter":
        return "incomplete", {"reason": "content_filter"}
    return "completed", None


def assistant_turn(items: list[dict[str, Any]]) -> c.Message:
    """Our own output items back into the canonical assistant turn (what the next request continues)."""
    turn = c.Message("assistant")
    for item in items:
        if item["type"] == "reasoning":
            text = "".join(s["text"] for s in item["summary"])
            turn.content.append(c.ReasoningPart(text, signature_ref(item.get("encrypted_content"))))
        elif item["type"] == "message":
            turn.content += [c.TextPart(p["text"]) for p in item["content"]]
        elif item["type"] == "function_call":
            turn.tool_calls.append(c.ToolCall(item["call_id"], item["name"], item["arguments"]))
        elif item["type"] == "custom_tool_call":
            turn.tool_calls.append(c.ToolCall(item["call_id"], item["name"], custom_arguments(item["input"])))
    return turn


@dataclass(slots=True)
class ResponseContext:
    """What parse() learned that render()/the encoder need: the id, the echoed request fields,
    and the conversation to store."""

    id: str
    created_at: int
    echo: dict[str, Any]  # request fields every Response object repeats (model, tools, ...)
    conversation: list[c.Message]  # history + new input, without `instructions` (not carried over)
    store: bool  # False when the client sent store: false
    custom: frozenset[str] = frozenset()  # freeform tools: their calls become custom_tool_call items
    final: dict[str, Any] | None = None  # the finished Response object, once there is one
    output: list[dict[str, Any]] = field(default_factory=list)

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


def _echo(req: ResponsesRequest, body: dict[str, Any]) -> dict[str, Any]:
    """Request fields a Response object repeats, as the client sent them (raw, so nothing is reshaped)."""
    return {
        "model": req.model,
        "instructions": req.instructions,
        "tools": body.get("tools") or [],
        "tool_choice": body.get("tool_choice") or "auto",
        "parallel_tool_calls": req.parallel_tool_calls if req.parallel_tool_calls is not None else True,
        "temperature": req.temperature,
        "top_p": req.top_p,
        "max_output_tokens": req.max_output_tokens,
        "previous_response_id": req.previous_response_id,
        "store": req.store is not False,
        "text": body.get("text") or {"format": {"type": "text"}},
        "reasoning": body.get("reasoning") or {"effort": None, "summary": None},
        "truncation": req.truncation or "disabled",
        "user": req.user,
        "metadata": req.metadata or {},
    }


# ---- stream ------------------------------------------------------------------------------------


def sse_event(kind: str, data: dict[str, Any]) -> bytes:
    return (b"event: " + kind.encode() + b"\ndata: "
            + jsonfast.dumps(data) + b"\n\n")


ItemKind = Literal["reasoning", "message", "function_call", "custom_tool_call"]


@dataclass(slots=True)
class _OpenItem:
    kind: ItemKind
    item: dict[str, Any]  # as announced in output_item.added
    index: int  # output_index
    text: str = ""  # reasoning summary / message text / call arguments so far
    part_open: bool = False  # reasoning: summary part announced
    signature: c.Signature | None = None
    call_index: int | None = None
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
        close = {"reasoning": self._close_reasoning, "message": self._close_message,
                 "function_call": self._close_call, "custom_tool_call": self._close_custom}[it.kind]
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
        return out, reasoning_item(it.item["id"], it.text, it.signature)

    def _call(self, ev: c.ToolCallDelta) -> bytes:
        out = b""
        it = self._open
        if it is None or it.kind not in ("function_call", "custom_tool_call") or it.call_index != ev.call_index:
            if ev.id is None:
                # Upstream decoders deliver each call's deltas contiguously, header first; a stray
                # fragment of an already closed call cannot be placed in a closed item.
                log.warning("dropping arguments for tool call %d that is not open", ev.call_index)
                return b""
            call = c.ToolCall(ev.id, ev.name or "", "")
            if call.name in self._ctx.custom:
                out, it = self._begin("custom_tool_call", custom_call_item(new_id("ctc_"), call, "", "in_progress"))
            else:
                out, it = self._begin("function_call", call_item(new_id("fc_"), call, status="in_progress"))
            it.call_index = ev.call_index
        if ev.arguments:
            it.text += ev.arguments
            if it.kind == "function_call":  # a custom call's input is only known once its JSON is whole
                out += self._emit("response.function_call_arguments.delta", item_id=it.item["id"],
                                  output_index=it.index, delta=ev.arguments)
        return out

    def _close_call(self, it: _OpenItem) -> tuple[bytes, dict[str, Any]]:
        args = it.text or "{}"
        out = self._emit("response.function_call_arguments.done", item_id=it.item["id"], output_index=it.index,
                         name=it.item["name"], arguments=args)
        return out, call_item(it.item["id"], c.ToolCall(it.item["call_id"], it.item["name"], args))

    def _close_custom(self, it: _OpenItem) -> tuple[bytes, dict[str, Any]]:
        text = custom_input(it.text)
        ids = {"item_id": it.item["id"], "output_index": it.index}
        out = self._emit("response.custom_tool_call_input.delta", **ids, delta=text) if text else b""
        out += self._emit("response.custom_tool_call_input.done", **ids, input=text)
        return out, custom_call_item(it.item["id"], c.ToolCall(it.item["call_id"], it.item["name"], ""), text)


# ---- the front end -----------------------------------------------------------------------------


class ResponsesFrontend(Frontend):
    """`POST /v1/responses` (also `/responses`) and `GET`/`DELETE /v1/responses/{id}`."""

    path = "/v1/responses"
    returns_reasoning_state = True  # reasoning items' encrypted_content

    def __init__(self, store: ResponseStore) -> None:
        self.store = store

    async def parse(self, body: Any) -> tuple[c.ChatRequest, ResponseContext]:
        req = validate_request(body)
        check_metadata(req.metadata)
        if req.background:
            raise bad_request("Background responses are not supported by this gateway; use stream: true "
                              "for long requests.", "background")
        if req.input is None and req.previous_response_id is None:
            raise bad_request("Missing required parameter: 'input'.", "input", code="missing_required_parameter")
        conversation = await self._history(req.previous_response_id) + input_messages(req.input)
        if not conversation and not req.instructions:
            raise bad_request("'input' must contain at least one item.", "input")
        system = [c.Message("system", [c.TextPart(req.instructions)])] if req.instructions else []
        tools = _tools(req.tools)
        creq = c.ChatRequest(
            model=req.model,
            messages=system + conversation,
            stream=bool(req.stream),
            temperature=req.temperature,
            top_p=req.top_p,
            max_tokens=req.max_output_tokens,
            tools=tools.upstream,
            tool_choice=_tool_choice(req.tool_choice, tools),
            parallel_tool_calls=req.parallel_tool_calls,
            response_format=_response_format(req.text),
            reasoning_effort=req.reasoning.effort if req.reasoning else None,
            user=req.user,
            web_search=tools.web_search,
        )
        ctx = ResponseContext(new_id("resp_"), int(time.time()), _echo(req, body), conversation,
                              store=req.store is not False, custom=frozenset(tools.custom))
        return creq, ctx

    async def _history(self, previous_id: str | None) -> list[c.Message]:
        if previous_id is None:
            return []
        stored = await self.store.get(previous_id)
        if stored is None:
            raise GatewayError(404, f"Previous response with id '{previous_id}' not found.",
                               param="previous_response_id", code="previous_response_not_found")
        return list(stored.conversation)

    def render(self, completion: c.Completion, req: c.ChatRequest, ctx: ResponseContext) -> dict[str, Any]:
        choice = completion.choices[0] if completion.choices else c.Choice()
        return ctx.finish(output_items(choice, ctx.custom), completion.usage, choice.finish_reason)

    def encoder(self, req: c.ChatRequest, ctx: ResponseContext) -> ResponsesStreamEncoder:
        return ResponsesStreamEncoder(req, ctx)

    async def settle(self, ctx: ResponseContext) -> None:
        if ctx.store and ctx.final is not None:
            turn = [assistant_turn(ctx.output)] if ctx.output else []
            await self.store.put(ctx.final, ctx.conversation + turn)

    def routes(self) -> list[Route]:
        path = r"/(?:v1/)?responses/([^/]+)"
        return [("GET", path, self._retrieve), ("DELETE", path, self._delete)]

    async def _retrieve(self, match: Any) -> tuple[int, dict[str, Any]]:
        stored = await self.store.get(match.group(1))
        if stored is None:
            raise GatewayError(404, f"Response with id '{match.group(1)}' not found.", code="response_not_found")
        return 200, stored.response

    async def _delete(self, match: Any) -> tuple[int, dict[str, Any]]:
        if not await self.store.delete(match.group(1)):
            raise GatewayError(404, f"Response with id '{match.group(1)}' not found.", code="response_not_found")
        return 200, {"id": match.group(1), "object": "response.deleted", "deleted": True}
