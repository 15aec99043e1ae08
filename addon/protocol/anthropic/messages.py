"""Wire models of a Messages API request: `POST /v1/messages` and `/v1/messages/count_tokens`.

Validation lives here so a bad request becomes a 400 in Anthropic's words ("max_tokens: Field
required"). Unknown fields are tolerated (Claude Code sends beta fields such as
`context_management`, and SDKs add more with every release); unknown *block* types are kept as
`OtherBlock` so the translator can decide, per place, to skip or refuse them.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, ValidationError

from ..errors import GatewayError


class Wire(BaseModel):
    model_config = ConfigDict(extra="allow")


# ---- content blocks ----------------------------------------------------------------------------

class Base64Source(Wire):
    type: Literal["base64"]
    media_type: str
    data: str


class URLSource(Wire):
    type: Literal["url"]
    url: str


class TextSource(Wire):  # a document given as plain text
    type: Literal["text"]
    media_type: str = "text/plain"
    data: str


class ContentSource(Wire):  # a document given as content blocks (text and images)
    type: Literal["content"]
    content: str | list[dict[str, Any]]


class FileSource(Wire):  # an upload to Anthropic's Files API: nothing this gateway can read
    type: Literal["file"]
    file_id: str


ImageSource = Annotated[Union[Base64Source, URLSource, FileSource], Field(discriminator="type")]
DocumentSource = Annotated[Union[Base64Source, URLSource, TextSource, ContentSource, FileSource],
                           Field(discriminator="type")]


class TextBlock(Wire):
    type: Literal["text"]
    text: str


class ImageBlock(Wire):
    type: Literal["image"]
    source: ImageSource


class DocumentBlock(Wire):
    type: Literal["document"]
    source: DocumentSource
    title: str | None = None
    context: str | None = None


class ToolUseBlock(Wire):
    type: Literal["tool_use"]
    id: str
    name: str
    input: dict[str, Any] = Field(default_factory=dict)


class ToolResultBlock(Wire):
    type: Literal["tool_result"]
    tool_use_id: str
    content: str | list[dict[str, Any]] | None = None
    is_error: bool | None = None


class ThinkingBlock(Wire):
    type: Literal["thinking"]
    thinking: str
    signature: str | None = None


class RedactedThinkingBlock(Wire):
    type: Literal["redacted_thinking"]
    data: str


class OtherBlock(Wire):
    """A block type this gateway does not translate (server tool results, search results, ...)."""

    type: str


_KNOWN = frozenset({"text", "image", "document", "tool_use", "tool_result", "thinking", "redacted_thinking"})


def _block_tag(value: Any) -> str:
    kind = value.get("type") if isinstance(value, dict) else getattr(value, "type", None)
    return kind if kind in _KNOWN else "other"


Block = Annotated[Union[
    Annotated[TextBlock, Tag("text")], Annotated[ImageBlock, Tag("image")],
    Annotated[DocumentBlock, Tag("document")], Annotated[ToolUseBlock, Tag("tool_use")],
    Annotated[ToolResultBlock, Tag("tool_result")], Annotated[ThinkingBlock, Tag("thinking")],
    Annotated[RedactedThinkingBlock, Tag("redacted_thinking")], Annotated[OtherBlock, Tag("other")],
], Discriminator(_block_tag)]

ToolResultPart = Annotated[Union[
    Annotated[TextBlock, Tag("text")], Annotated[ImageBlock, Tag("image")],
    Annotated[DocumentBlock, Tag("document")], Annotated[OtherBlock, Tag("other")],
], Discriminator(lambda v: t if (t := _block_tag(v)) in ("text", "image", "document") else "other")]


class SystemText(Wire):
    type: Literal["text"]
    text: str


class Message(Wire):
    # "system" turns in the middle of a conversation: Claude Code's mid-conversation-system beta
    role: Literal["user", "assistant", "system"]
    content: str | list[Block]


# ---- tools -------------------------------------------------------------------------------------

class Tool(Wire):
    """A client tool (`type` absent or "custom") or a server tool (`type` like web_search_20250305)."""

    name: str
    type: str | None = None
    description: str | None = None
    input_schema: dict[str, Any] | None = None


class ToolChoice(Wire):
    type: Literal["auto", "any", "tool", "none"]
    name: str | None = None
    disable_parallel_tool_use: bool | None = None


class Thinking(Wire):
    type: Literal["enabled", "disabled", "adaptive"]
    budget_tokens: int | None = None
    display: Literal["summarized", "omitted"] | None = None


class OutputFormat(Wire):
    type: Literal["json_schema"]
    schema_: dict[str, Any] = Field(alias="schema")


class OutputConfig(Wire):
    effort: Literal["low", "medium", "high", "xhigh", "max"] | None = None
    format: OutputFormat | None = None


class Metadata(Wire):
    user_id: str | None = None


class CountTokensRequest(Wire):
    model: str
    messages: list[Message]
    system: str | list[SystemText] | None = None
    tools: list[Tool] | None = None
    tool_choice: ToolChoice | None = None
    thinking: Thinking | None = None
    output_config: OutputConfig | None = None


class MessagesRequest(CountTokensRequest):
    max_tokens: int = Field(ge=1)
    stream: bool | None = None
    stop_sequences: list[str] | None = None
    temperature: float | None = Field(default=None, ge=0, le=1)
    top_p: float | None = Field(default=None, ge=0, le=1)
    top_k: int | None = Field(default=None, ge=0)
    metadata: Metadata | None = None


# ---- validation --------------------------------------------------------------------------------

_SOURCES = frozenset({"base64", "url", "text", "content", "file"})


def _where(loc: tuple[Any, ...]) -> str:
    """pydantic's error location as Anthropic names fields: messages.0.content.1.source.data.
    Union tags and members pydantic inserts ('text' after a block index, 'base64' after 'source',
    'list[...]', 'str') are not fields."""
    fields: list[str] = []
    prev: Any = None
    for x in loc:
        text = str(x)
        tag = (isinstance(prev, int) and (text in _KNOWN or text == "other")) or (prev == "source" and text in _SOURCES)
        if not (tag or "[" in text or text in ("str", "int", "float", "bool", "function-after")):
            fields.append(text)
        prev = x
    return ".".join(fields)


def validate(model: type[BaseModel], body: Any) -> Any:
    """The body as `model`, or a 400 worded as Anthropic words them ("messages.0.role: ...")."""
    if not isinstance(body, dict):
        raise GatewayError(400, "The request body must be a JSON object.", code="invalid_request")
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        first = max(errors, key=lambda e: (e["type"] == "missing", len(e.get("loc", ()))))
        where = _where(tuple(first.get("loc", ())))
        msg = "Field required" if first["type"] == "missing" else first.get("msg", "invalid value")
        raise GatewayError(400, f"{where}: {msg}" if where else msg, param=where or None,
                           code="invalid_request") from None
