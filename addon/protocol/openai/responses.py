"""Wire models of an OpenAI Responses API request (`POST /v1/responses`).

Tagged unions pick their branch with a callable so that unknown item types can fall through to a
tolerant model; tags are capitalised because validation_error() drops such names from `param`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, Literal, Union

from pydantic import Discriminator, Field, Tag

from .common import Wire, validate_body


class InputText(Wire):
    type: Literal["input_text"]
    text: str


class OutputText(Wire):
    type: Literal["output_text"]
    text: str


class RefusalPart(Wire):
    type: Literal["refusal"]
    refusal: str


class InputImage(Wire):
    type: Literal["input_image"]
    image_url: str | None = None
    file_id: str | None = None
    detail: str | None = None


class InputFile(Wire):
    type: Literal["input_file"]
    file_data: str | None = None
    file_url: str | None = None
    file_id: str | None = None
    filename: str | None = None


def _type_of(value: Any) -> Any:
    return value.get("type") if isinstance(value, dict) else getattr(value, "type", None)


def _tagger(tags: dict[str | None, str], default: str | None) -> Callable[[Any], str | None]:
    def tag(value: Any) -> str | None:
        kind = _type_of(value)
        # a non-string `type` ({"type": []}) must fail validation, not crash the lookup
        return tags.get(kind, default) if kind is None or isinstance(kind, str) else default
    return tag


_PART_TAGS: dict[str | None, str] = {"input_text": "InputText", "output_text": "OutputText", "refusal": "Refusal",
                                     "input_image": "InputImage", "input_file": "InputFile"}
ContentPart = Annotated[
    Union[Annotated[InputText, Tag("InputText")], Annotated[OutputText, Tag("OutputText")],
          Annotated[RefusalPart, Tag("Refusal")], Annotated[InputImage, Tag("InputImage")],
          Annotated[InputFile, Tag("InputFile")]],
    Discriminator(_tagger(_PART_TAGS, None), custom_error_type="invalid_value",
                  custom_error_message="unsupported content part type (expected input_text, input_image, "
                                       "input_file, output_text or refusal)"),
]


class MessageItem(Wire):
    type: Literal["message"] | None = None  # "easy" input messages come without a type
    role: Literal["user", "assistant", "system", "developer"]
    content: str | list[ContentPart]


class FunctionCallItem(Wire):
    type: Literal["function_call"]
    call_id: str = Field(min_length=1)
    name: str = Field(min_length=1)
    arguments: str
    namespace: str | None = None  # a tool of a `namespace` tool (Codex: MCP servers, sub-agents)


class FunctionCallOutputItem(Wire):
    type: Literal["function_call_output"]
    call_id: str = Field(min_length=1)
    output: str | list[ContentPart]


class CustomToolCallItem(Wire):
    """A freeform tool call replayed by the client (Codex sends it back without `id`)."""

    type: Literal["custom_tool_call"]
    call_id: str = Field(min_length=1)
    name: str = Field(min_length=1)
    input: str
    namespace: str | None = None


class CustomToolCallOutputItem(FunctionCallOutputItem):
    """The result of a freeform tool call: the same fields as a function call's output."""

    type: Literal["custom_tool_call_output"]  # type: ignore[assignment]


class SummaryText(Wire):
    type: Literal["summary_text"] = "summary_text"
    text: str


class ReasoningText(Wire):
    type: Literal["reasoning_text"] = "reasoning_text"
    text: str


class ReasoningItem(Wire):
    type: Literal["reasoning"]
    summary: list[SummaryText] = Field(default_factory=list)
    content: list[ReasoningText] | None = None
    encrypted_content: str | None = None


class ToolSearchCallItem(Wire):
    """The model asked to load deferred tools (Codex's `tool_search`, run by the client)."""

    type: Literal["tool_search_call"]
    call_id: str | None = None
    execution: str | None = None  # "client" (the client searched) or "server"
    arguments: Any = None  # {"query", "limit"}


class ToolSearchOutputItem(Wire):
    """What a tool search loaded: tool definitions (functions, namespaces) the model may call from now on."""

    type: Literal["tool_search_output"]
    call_id: str | None = None
    execution: str | None = None
    tools: list[dict[str, Any]] = Field(default_factory=list)


class OtherItem(Wire):
    """Item types with nothing to forward upstream (web_search_call, local_shell_call, ...): skipped."""

    type: str


_ITEM_TAGS: dict[str | None, str] = {None: "Message", "message": "Message", "function_call": "FunctionCall",
                                     "function_call_output": "FunctionCallOutput", "reasoning": "Reasoning",
                                     "custom_tool_call": "CustomToolCall",
                                     "custom_tool_call_output": "CustomToolCallOutput",
                                     "tool_search_call": "ToolSearchCall", "tool_search_output": "ToolSearchOutput"}
InputItem = Annotated[
    Union[Annotated[MessageItem, Tag("Message")], Annotated[FunctionCallItem, Tag("FunctionCall")],
          Annotated[FunctionCallOutputItem, Tag("FunctionCallOutput")], Annotated[ReasoningItem, Tag("Reasoning")],
          Annotated[CustomToolCallItem, Tag("CustomToolCall")],
          Annotated[CustomToolCallOutputItem, Tag("CustomToolCallOutput")],
          Annotated[ToolSearchCallItem, Tag("ToolSearchCall")], Annotated[ToolSearchOutputItem, Tag("ToolSearchOutput")],
          Annotated[OtherItem, Tag("Other")]],
    Discriminator(_tagger(_ITEM_TAGS, "Other")),
]


class FunctionToolDef(Wire):
    type: Literal["function"]
    name: str = Field(min_length=1, max_length=128)
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class CustomToolDef(Wire):
    """A freeform tool (Codex's apply_patch): raw text in, constrained by `format` (text or a grammar)."""

    type: Literal["custom"]
    name: str = Field(min_length=1, max_length=128)
    description: str | None = None
    format: dict[str, Any] | None = None


WEB_SEARCH_TYPES = ("web_search", "web_search_2025_08_26", "web_search_preview", "web_search_preview_2025_03_11")


class WebSearchToolDef(Wire):
    """The hosted web search; filters, user_location and search_context_size have no Gemini equivalent."""

    type: Literal[WEB_SEARCH_TYPES]  # type: ignore[valid-type]
    external_web_access: bool | None = None  # Codex: false = its cached index only, no live search


class ToolSearchToolDef(Wire):
    """Deferred tool loading: with `execution: "client"` the client searches its own deferred tools
    (Codex); with "server" the API searches the request's tools marked `defer_loading`."""

    type: Literal["tool_search"]
    execution: str | None = None
    description: str | None = None
    parameters: dict[str, Any] | None = None


class OtherToolDef(Wire):
    """Hosted tools (local_shell, mcp, file_search, image_generation, ...): no upstream equivalent."""

    type: str
    name: str | None = None


_INNER_TAGS: dict[str | None, str] = {"function": "Function", "custom": "Custom"}
InnerToolDef = Annotated[
    Union[Annotated[FunctionToolDef, Tag("Function")], Annotated[CustomToolDef, Tag("Custom")],
          Annotated[OtherToolDef, Tag("Other")]],
    Discriminator(_tagger(_INNER_TAGS, "Other")),
]


class NamespaceToolDef(Wire):
    """A named group of tools (Codex: one per MCP server, `mcp__<server>`, and its sub-agent tools);
    a call to one of them names the tool and its `namespace`."""

    type: Literal["namespace"]
    name: str = Field(min_length=1, max_length=128)
    description: str | None = None
    tools: list[InnerToolDef] = Field(default_factory=list)


_TOOL_TAGS: dict[str | None, str] = {"function": "Function", "custom": "Custom", "namespace": "Namespace",
                                     "tool_search": "ToolSearch", **{t: "WebSearch" for t in WEB_SEARCH_TYPES}}
ToolDef = Annotated[
    Union[Annotated[FunctionToolDef, Tag("Function")], Annotated[CustomToolDef, Tag("Custom")],
          Annotated[NamespaceToolDef, Tag("Namespace")], Annotated[ToolSearchToolDef, Tag("ToolSearch")],
          Annotated[WebSearchToolDef, Tag("WebSearch")], Annotated[OtherToolDef, Tag("Other")]],
    Discriminator(_tagger(_TOOL_TAGS, "Other")),
]


class ToolChoiceObject(Wire):
    type: str
    name: str | None = None
    namespace: str | None = None
    mode: Literal["auto", "required"] | None = None  # allowed_tools
    tools: list[dict[str, Any]] | None = None  # allowed_tools


class TextFormat(Wire):
    type: Literal["text", "json_object", "json_schema"]
    name: str | None = None
    description: str | None = None
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    strict: bool | None = None


class TextConfig(Wire):
    format: TextFormat | None = None
    verbosity: str | None = None


class ReasoningConfig(Wire):
    effort: Literal["none", "minimal", "low", "medium", "high", "xhigh"] | None = None
    summary: str | None = None
    generate_summary: str | None = None  # deprecated spelling of summary


class ResponsesRequest(Wire):
    model: str = Field(min_length=1)
    input: str | list[InputItem] | None = None
    instructions: str | None = None
    tools: list[ToolDef] | None = None
    tool_choice: Literal["auto", "none", "required"] | ToolChoiceObject | None = None
    parallel_tool_calls: bool | None = None
    max_output_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    text: TextConfig | None = None
    reasoning: ReasoningConfig | None = None
    store: bool | None = True
    previous_response_id: str | None = None
    stream: bool | None = False
    background: bool | None = None
    user: str | None = None
    metadata: dict[str, str] | None = None
    include: list[str] | None = None
    truncation: str | None = None  # accepted and ignored: nothing here truncates a conversation
    # Accepted, with no upstream effect (README: "Codex CLI"): prompt_cache_key (Gemini caches
    # implicitly), client_metadata, service_tier, safety_identifier, prompt_cache_retention.
    prompt_cache_key: str | None = None
    client_metadata: dict[str, Any] | None = None
    service_tier: str | None = None


def validate_request(body: Any) -> ResponsesRequest:
    return validate_body(ResponsesRequest, body)
