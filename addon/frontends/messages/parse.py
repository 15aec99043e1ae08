"""A Messages API request -> the canonical ChatRequest (and what rendering the answer needs).

Claude Code's requests shape several rules here (captured from Claude Code 2.1): `system` is a
list of text blocks whose first one is an attribution line (`x-anthropic-billing-header: …`,
different on every request: dropped, so a conversation keeps one key for sticky accounts and
Cloud Code sessions); `role: "system"` turns appear mid-conversation; assistant turns come back
exactly as answered (thinking blocks with their `signature`, `tool_use` with our `toolu_` ids);
tool results are `tool_result` blocks at the start of the next user turn; it offers only client
tools (with `input_schema`) and asks for thinking as `{"type": "adaptive"}` with
`output_config.effort`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from ...protocol import canonical as c
from ...protocol.anthropic.messages import (
    Base64Source,
    ContentSource,
    CountTokensRequest,
    DocumentBlock,
    ImageBlock,
    MessagesRequest,
    OtherBlock,
    RedactedThinkingBlock,
    TextBlock,
    TextSource,
    ThinkingBlock,
    Tool,
    ToolResultBlock,
    ToolUseBlock,
    URLSource,
)
from ...protocol.errors import bad_request
from ..common import media_from_url
from .ids import tool_id_in

_BILLING_LINE = "x-anthropic-billing-header:"
_CONTEXT_SUFFIX = re.compile(r"\[\d+[km]\]$")  # Claude Code's "claude-opus-4-8[1m]": the 1M-context variant
MAX_STOP_SEQUENCES = 5  # Gemini's limit for stopSequences
# Anthropic's effort levels -> the canonical reasoning_effort; "max" has no Gemini level above xhigh
_EFFORT = {"low": "low", "medium": "medium", "high": "high", "xhigh": "xhigh", "max": "xhigh"}


@dataclass(slots=True)
class Context:
    """What rendering the answer needs from the request."""

    model: str  # the name the client asked for, echoed in every answer
    thinking: bool = False  # the client asked to see thinking blocks
    web_search: str | None = None  # the name of the client's web_search server tool, if it offered one


# ---- content -----------------------------------------------------------------------------------

def _no_files(param: str) -> Exception:
    return bad_request("Files API file ids are not supported by this gateway; send the content inline "
                       "(base64) or by http(s) URL.", param)


def _image(block: ImageBlock, param: str) -> c.MediaPart:
    src = block.source
    if isinstance(src, Base64Source):
        return c.MediaPart(mime_type=src.media_type, data=src.data, kind="image")
    if isinstance(src, URLSource):
        return media_from_url(src.url, param + ".source.url")
    raise _no_files(param + ".source")


def _document(block: DocumentBlock, param: str) -> list[c.Part]:
    src = block.source
    title = f"{block.title}\n\n" if block.title else ""
    if isinstance(src, Base64Source):
        return [c.MediaPart(mime_type=src.media_type, data=src.data, kind="file", filename=block.title)]
    if isinstance(src, URLSource):
        part = media_from_url(src.url, param + ".source.url", "file", block.title)
        part.mime_type = "application/pdf"  # Anthropic takes PDFs by URL
        return [part]
    if isinstance(src, TextSource):
        return [c.TextPart(title + src.data)]
    if isinstance(src, ContentSource):
        if isinstance(src.content, str):
            return [c.TextPart(title + src.content)]
        return ([c.TextPart(title)] if title else []) + _blocks(src.content, param + ".source.content")
    raise _no_files(param + ".source")


def _blocks(raw: list[dict[str, Any]], param: str) -> list[c.Part]:
    """Text, image and document blocks inside a tool result or a content document."""
    out: list[c.Part] = []
    for j, item in enumerate(raw):
        where = f"{param}.{j}"
        kind = item.get("type") if isinstance(item, dict) else None
        if kind == "text" and isinstance(item.get("text"), str):
            out.append(c.TextPart(item["text"]))
        elif kind == "image":
            out.append(_image(ImageBlock.model_validate(item), where))
        elif kind == "document":
            out += _document(DocumentBlock.model_validate(item), where)
        else:
            raise bad_request(f"{where}.type: '{kind}' blocks are not supported here by this gateway "
                              "(text, image and document are).", where + ".type")
    return out


def _tool_result(block: ToolResultBlock, param: str) -> c.Message:
    content = block.content
    if content is None:
        parts: list[c.Part] = []
    elif isinstance(content, str):
        parts = [c.TextPart(content)] if content else []
    else:
        parts = _blocks(content, param + ".content")
    if block.is_error:
        # Gemini's convention for a failed call is a functionResponse {"error": ...}
        text = "".join(p.text for p in parts if isinstance(p, c.TextPart))
        parts = [c.TextPart(json.dumps({"error": text or "The tool failed."}, ensure_ascii=False)),
                 *(p for p in parts if not isinstance(p, c.TextPart))]
    return c.Message("tool", parts, tool_call_id=tool_id_in(block.tool_use_id))


def _user_turn(blocks: list[Any], where: str) -> list[c.Message]:
    """Tool results first (they answer the previous assistant turn), then the user's own content."""
    results: list[c.Message] = []
    parts: list[c.Part] = []
    for j, block in enumerate(blocks):
        param = f"{where}.content.{j}"
        if isinstance(block, ToolResultBlock):
            results.append(_tool_result(block, param))
        elif isinstance(block, TextBlock):
            parts.append(c.TextPart(block.text))
        elif isinstance(block, ImageBlock):
            parts.append(_image(block, param))
        elif isinstance(block, DocumentBlock):
            parts += _document(block, param)
        elif isinstance(block, (ThinkingBlock, RedactedThinkingBlock, ToolUseBlock)):
            raise bad_request(f"{param}.type: '{block.type}' blocks belong in assistant turns.", param + ".type")
        else:
            raise bad_request(f"{param}.type: '{block.type}' blocks are not supported by this gateway.",
                              param + ".type")
    return results + ([c.Message("user", parts)] if parts else [])


def _assistant_turn(blocks: list[Any], where: str) -> c.Message:
    turn = c.Message("assistant")
    for block in blocks:
        if isinstance(block, TextBlock):
            if block.text:
                turn.content.append(c.TextPart(block.text))
        elif isinstance(block, ThinkingBlock):
            # the signature is the key of a stored Gemini signature, or another provider's (a
            # conversation begun at Anthropic): of unknown origin, which Gemini is never sent
            turn.content.append(c.ReasoningPart(block.thinking, c.signature_ref(block.signature)))
        elif isinstance(block, ToolUseBlock):
            turn.tool_calls.append(c.ToolCall(tool_id_in(block.id), block.name,
                                              json.dumps(block.input, ensure_ascii=False)))
        # redacted_thinking (another provider's encrypted reasoning), server_tool_use and
        # web_search_tool_result (the search already shaped the text after them): nothing an
        # upstream here can take back
    return turn


def _messages(req: CountTokensRequest) -> list[c.Message]:
    out: list[c.Message] = []
    system = req.system
    if isinstance(system, str):
        system = [TextBlock(type="text", text=system)] if system else []
    texts = [b.text for b in system or [] if not b.text.startswith(_BILLING_LINE)]
    if texts:
        out.append(c.Message("system", [c.TextPart("\n\n".join(texts))]))
    for i, m in enumerate(req.messages):
        where = f"messages.{i}"
        blocks = [TextBlock(type="text", text=m.content)] if isinstance(m.content, str) else m.content
        if m.role == "system":
            text = "\n\n".join(b.text for b in blocks if isinstance(b, TextBlock))
            if any(not isinstance(b, TextBlock) for b in blocks):
                raise bad_request(f"{where}.content: system turns take text blocks only.", where + ".content")
            out.append(c.Message("system", [c.TextPart(text)]))
        elif m.role == "user":
            out += _user_turn(blocks, where)
        else:
            out.append(_assistant_turn(blocks, where))
    if not req.messages:
        raise bad_request("messages: at least one message is required.", "messages")
    return out


# ---- tools, thinking, the request --------------------------------------------------------------

def _tools(tools: list[Tool] | None) -> tuple[list[c.Tool], str | None]:
    """Client tools go upstream as functions; a web_search server tool becomes the upstream's
    search. Other server tools (code execution, web fetch, Anthropic-defined bash/editor/computer
    tools) have nothing to run them here and are refused by name."""
    out: list[c.Tool] = []
    search: str | None = None
    for i, t in enumerate(tools or []):
        if t.type in (None, "custom"):
            if t.input_schema is None:
                raise bad_request(f"tools.{i}.input_schema: Field required", f"tools.{i}.input_schema")
            out.append(c.Tool(t.name, t.description, t.input_schema))
        elif t.type.startswith("web_search_"):
            search = t.name
        else:
            raise bad_request(f"tools.{i}.type: '{t.type}' is a tool Anthropic runs itself, and this gateway "
                              "cannot run it: offer client tools (with an input_schema) and web_search only.",
                              f"tools.{i}.type")
    return out, search


def _tool_choice(req: CountTokensRequest, tools: list[c.Tool], search: str | None) -> c.ToolChoice | None:
    tc = req.tool_choice
    if tc is None or tc.type == "auto":
        return None if tc is None else c.ToolChoice("auto")
    if tc.type == "none":
        return c.ToolChoice("none")
    if tc.type == "any":
        if not tools:
            return c.ToolChoice("auto") if search else None  # Google Search cannot be forced
        return c.ToolChoice("required")
    if not tc.name:
        raise bad_request("tool_choice.name: Field required", "tool_choice.name")
    if tc.name == search:
        return c.ToolChoice("auto")
    if tc.name not in {t.name for t in tools}:
        raise bad_request(f"tool_choice.name: no tool named '{tc.name}' is offered.", "tool_choice.name")
    return c.ToolChoice("required", (tc.name,))


def _thinking(req: CountTokensRequest) -> tuple[str | None, int | None, bool]:
    """(reasoning_effort, thinking_budget, show thoughts) from `thinking` and `output_config.effort`."""
    th = req.thinking
    effort = _EFFORT.get(req.output_config.effort) if req.output_config and req.output_config.effort else None
    if th is None:
        return effort, None, False
    if th.type == "disabled":
        return "none", None, False
    show = th.display != "omitted"
    if th.type == "enabled":
        if th.budget_tokens is None:
            raise bad_request("thinking.budget_tokens: Field required", "thinking.budget_tokens")
        if th.budget_tokens < 1024:
            raise bad_request("thinking.budget_tokens: Input should be greater than or equal to 1024",
                              "thinking.budget_tokens")
        return effort, th.budget_tokens, show
    return effort, None, show  # adaptive: the model decides how much, at the effort asked for


def to_canonical(req: CountTokensRequest) -> tuple[c.ChatRequest, Context]:
    tools, search = _tools(req.tools)
    effort, budget, show = _thinking(req)
    creq = c.ChatRequest(model=_CONTEXT_SUFFIX.sub("", req.model), messages=_messages(req), tools=tools,
                         tool_choice=_tool_choice(req, tools, search), web_search=search is not None,
                         reasoning_effort=effort, thinking_budget=budget, show_reasoning=show,
                         returns_reasoning_state=True)  # thinking blocks carry the signature's key back
    tc = req.tool_choice
    if tc is not None and tc.disable_parallel_tool_use:
        creq.parallel_tool_calls = False
    fmt = req.output_config.format if req.output_config else None
    if fmt is not None:
        creq.response_format = c.ResponseFormat("json_schema", fmt.schema_, "output")
    if isinstance(req, MessagesRequest):
        if budget is not None and budget >= req.max_tokens:
            raise bad_request("max_tokens must be greater than thinking.budget_tokens.", "max_tokens")
        stop = req.stop_sequences or []
        if len(stop) > MAX_STOP_SEQUENCES:
            raise bad_request(f"stop_sequences: at most {MAX_STOP_SEQUENCES} are accepted by this gateway's "
                              "upstreams.", "stop_sequences")
        creq.stream = bool(req.stream)
        creq.max_tokens = req.max_tokens
        creq.temperature, creq.top_p, creq.top_k = req.temperature, req.top_p, req.top_k
        creq.stop = stop
        creq.user = req.metadata.user_id if req.metadata else None
    return creq, Context(req.model, thinking=show, web_search=search)
