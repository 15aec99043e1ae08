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

import json
import logging
import re
import time
from dataclasses import dataclass, field
from typing import Any

from ..protocol import canonical as c
from ..protocol.errors import GatewayError, bad_request
from ..protocol.ids import new_id
from ..protocol.limits import MAX_TOOLS
from ..protocol.openai.common import check_metadata
from ..protocol.openai.responses import (
    CustomToolCallItem,
    FunctionCallItem,
    FunctionCallOutputItem,
    InputFile,
    InputImage,
    InputText,
    MessageItem,
    OutputText,
    ReasoningItem,
    RefusalPart,
    ResponsesRequest,
    TextConfig,
    ToolSearchCallItem,
    ToolSearchOutputItem,
    validate_request,
)
from ..stores.response_store import ResponseStore
from ..stores.sealing import Sealer
from ..routes import Incoming, Outcome, Route, RouteCall, json_outcome, openai_error
from .base import Frontend
from .common import check_json_args, custom_arguments, media_from_url
from .responses_items import ResponseContext, assistant_turn, output_items, signature_ref
from .responses_state import open_step, wants_sealing
from .responses_stream import ResponsesStreamEncoder
from .responses_tools import ToolPlan, loaded_summary

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


@dataclass(slots=True)
class _Reader:
    """Input items -> canonical messages, with what the request's tools and seals say."""

    plan: ToolPlan
    sealer: Sealer | None = None
    sealed_calls: dict[str, c.Signature] = field(default_factory=dict)  # call id -> signature from a sealed item

    def reasoning(self, item: ReasoningItem) -> c.ReasoningPart | None:
        text = "".join(s.text for s in item.summary) or "".join(p.text for p in item.content or [])
        token = item.encrypted_content
        if Sealer.is_sealed(token):
            step = open_step(self.sealer, token) if self.sealer is not None else None
            if step is None:  # not ours, or altered: carries nothing
                return c.ReasoningPart(text) if text else None
            self.sealed_calls.update(step.calls)
            return c.ReasoningPart(text, step.reasoning) if text or step.reasoning else None
        if not text and not token:
            return None
        return c.ReasoningPart(text, signature_ref(token))

    def messages(self, items: str | list[Any] | None) -> list[c.Message]:
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
                name = self.plan.canonical(item.name, item.namespace)
                _assistant_turn(out).tool_calls.append(c.ToolCall(item.call_id, name, args))
            elif isinstance(item, CustomToolCallItem):
                # upstream, a freeform tool is a function taking its raw text as `input`
                name = self.plan.canonical(item.name, item.namespace)
                _assistant_turn(out).tool_calls.append(c.ToolCall(item.call_id, name, custom_arguments(item.input)))
            elif isinstance(item, FunctionCallOutputItem):  # custom_tool_call_output included
                out.append(c.Message("tool", _parts(item.output, where + ".output", media=True),
                                     tool_call_id=item.call_id))
            elif isinstance(item, ToolSearchCallItem):
                if item.call_id and item.execution != "server":  # a server-side search has no result to pair
                    args = json.dumps(item.arguments if item.arguments is not None else {}, ensure_ascii=False)
                    _assistant_turn(out).tool_calls.append(
                        c.ToolCall(item.call_id, self.plan.canonical("tool_search"), args))
            elif isinstance(item, ToolSearchOutputItem):
                names = self.plan.add_loaded(item.tools)  # offered upstream from now on
                if item.call_id and item.execution != "server":
                    out.append(c.Message("tool", [c.TextPart(loaded_summary(names))], tool_call_id=item.call_id))
            elif isinstance(item, ReasoningItem):
                part = self.reasoning(item)
                if part is not None:
                    _assistant_turn(out).content.append(part)
            # anything else (OtherItem) carries nothing an upstream here could use
        if self.sealed_calls:
            for m in out:
                for tc in m.tool_calls:
                    if tc.signature is None and tc.id in self.sealed_calls:
                        tc.signature = self.sealed_calls[tc.id]
        return out


def _assistant_turn(out: list[c.Message]) -> c.Message:
    """Consecutive reasoning / assistant message / function_call items form ONE assistant turn:
    Gemini pairs all calls of a turn with the function responses of the next one."""
    if not out or out[-1].role != "assistant":
        out.append(c.Message("assistant"))
    return out[-1]


def input_messages(items: str | list[Any] | None, plan: ToolPlan | None = None,
                   sealer: Sealer | None = None) -> list[c.Message]:
    return _Reader(plan or ToolPlan(), sealer).messages(items)


def _tool_choice(choice: Any, plan: ToolPlan) -> c.ToolChoice | None:
    if choice is None:
        return None
    if isinstance(choice, str):
        if choice == "required" and not plan.upstream:
            raise bad_request("tool_choice 'required' needs at least one function tool.", "tool_choice")
        return c.ToolChoice(choice)
    if choice.type in ("function", "custom"):
        if not choice.name:
            raise bad_request("Missing required parameter: 'tool_choice.name'.", "tool_choice.name")
        return c.ToolChoice("required", (plan.choice(choice.name, choice.namespace),))
    if choice.type == "allowed_tools":
        entries = choice.tools or []
        if not entries or any(e.get("type") not in ("function", "custom") or not e.get("name") for e in entries):
            raise bad_request("allowed_tools must list function tools as {type: 'function', name}.",
                              "tool_choice.tools")
        names = tuple(plan.choice(e["name"], e.get("namespace")) for e in entries)
        return c.ToolChoice(choice.mode or "auto", names)
    if plan.web_search and choice.type.startswith("web_search"):
        return c.ToolChoice("auto")  # Google Search cannot be forced: the model decides whether to search
    # {type: "mcp", ...}, {type: "file_search"}: tools that were skipped
    raise bad_request(f"tool_choice names '{choice.name or choice.type}', a {choice.type} tool this gateway does "
                      "not forward (only function, custom and namespace tools reach the upstream).", "tool_choice")


def _response_format(text: TextConfig | None) -> c.ResponseFormat | None:
    fmt = text.format if text is not None else None
    if fmt is None or fmt.type == "text":
        return None
    if fmt.type == "json_object":
        return c.ResponseFormat("json_object")
    if fmt.schema_ is None:
        raise bad_request("Missing required parameter: 'text.format.schema'.", "text.format.schema")
    return c.ResponseFormat("json_schema", fmt.schema_, fmt.name, fmt.strict)


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


# ---- the front end -----------------------------------------------------------------------------


class ResponsesFrontend(Frontend[ResponseContext]):
    """`POST /v1/responses` (also `/responses`) and `GET`/`DELETE /v1/responses/{id}`."""

    name = "responses"

    def __init__(self, store: ResponseStore, sealer: Sealer | None = None) -> None:
        self.store = store
        self.sealer = sealer  # seals reasoning state for clients that ask for encrypted content

    def routes(self) -> list[Route]:
        one = r"/(?:v1/)?responses/([^/]+)"
        return [Route("POST", r"/(?:v1/)?responses", "/v1/responses"),
                Route("GET", one, "/v1/responses/{id}", self._retrieve),
                Route("DELETE", one, "/v1/responses/{id}", self._delete)]

    def error(self, err: GatewayError) -> Outcome:
        return openai_error(err)

    async def parse(self, body: Any, match: re.Match[str] | None = None,
                    incoming: Incoming | None = None) -> tuple[c.ChatRequest, ResponseContext]:
        req = validate_request(body)
        check_metadata(req.metadata)
        if req.background:
            raise bad_request("Background responses are not supported by this gateway; use stream: true "
                              "for long requests.", "background")
        if req.input is None and req.previous_response_id is None:
            raise bad_request("Missing required parameter: 'input'.", "input", code="missing_required_parameter")
        plan = ToolPlan()
        plan.add_defs(req.tools)
        sealer = self.sealer if wants_sealing(req.include) else None
        conversation = await self._history(req.previous_response_id) + input_messages(req.input, plan, self.sealer)
        if len(plan.upstream) > MAX_TOOLS:  # namespaces and searched tools count one per inner tool
            raise bad_request(f"'tools' hold {len(plan.upstream)} callable tools (namespaces and tools loaded by "
                              f"a tool search included); this gateway accepts at most {MAX_TOOLS}.", "tools",
                              code="array_too_long")
        if not conversation and not req.instructions:
            raise bad_request("'input' must contain at least one item.", "input")
        system = [c.Message("system", [c.TextPart(req.instructions)])] if req.instructions else []
        creq = c.ChatRequest(
            model=req.model,
            messages=system + conversation,
            stream=bool(req.stream),
            temperature=req.temperature,
            top_p=req.top_p,
            max_tokens=req.max_output_tokens,
            tools=plan.upstream,
            tool_choice=_tool_choice(req.tool_choice, plan),
            parallel_tool_calls=req.parallel_tool_calls,
            response_format=_response_format(req.text),
            reasoning_effort=req.reasoning.effort if req.reasoning else None,
            user=req.user,
            web_search=plan.web_search,
            left_out=plan.left_out,
            returns_reasoning_state=True,  # reasoning items' encrypted_content
        )
        ctx = ResponseContext(new_id("resp_"), int(time.time()), _echo(req, body), conversation,
                              store=req.store is not False, plan=plan, sealer=sealer)
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
        return ctx.finish(output_items(choice, ctx), completion.usage, choice.finish_reason)

    def encoder(self, req: c.ChatRequest, ctx: ResponseContext) -> ResponsesStreamEncoder:
        return ResponsesStreamEncoder(req, ctx)

    async def settle(self, ctx: ResponseContext) -> None:
        if ctx.store and ctx.final is not None:
            turn = [assistant_turn(ctx.output, ctx.plan, self.sealer)] if ctx.output else []
            await self.store.put(ctx.final, ctx.conversation + turn)

    async def _retrieve(self, call: RouteCall) -> Outcome:
        response_id = call.match.group(1)
        stored = await self.store.get(response_id)
        if stored is None:
            raise GatewayError(404, f"Response with id '{response_id}' not found.", code="response_not_found")
        return json_outcome(200, stored.response)

    async def _delete(self, call: RouteCall) -> Outcome:
        response_id = call.match.group(1)
        if not await self.store.delete(response_id):
            raise GatewayError(404, f"Response with id '{response_id}' not found.", code="response_not_found")
        return json_outcome(200, {"id": response_id, "object": "response.deleted", "deleted": True})
