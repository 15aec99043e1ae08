"""Wire models of an OpenAI Chat Completions request (what clients send us).

Validation lives here so a bad request becomes a 400 naming the offending `param`.
Unknown fields are tolerated: clients and SDK versions add vendor extras freely.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, TypeVar, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .errors import GatewayError


class Wire(BaseModel):
    """Base of every OpenAI request model here: unknown fields pass (SDKs add extras freely)."""

    model_config = ConfigDict(extra="allow")


W = TypeVar("W", bound=BaseModel)


class ImageURL(Wire):
    url: str
    detail: str | None = None


class TextContent(Wire):
    type: Literal["text"]
    text: str


class ImageContent(Wire):
    type: Literal["image_url"]
    image_url: ImageURL | str


class InputAudio(Wire):
    data: str
    format: str


class AudioContent(Wire):
    type: Literal["input_audio"]
    input_audio: InputAudio


class FileRef(Wire):
    file_data: str | None = None
    file_id: str | None = None
    filename: str | None = None


class FileContent(Wire):
    type: Literal["file"]
    file: FileRef


class RefusalContent(Wire):
    type: Literal["refusal"]
    refusal: str


UserPart = Annotated[Union[TextContent, ImageContent, AudioContent, FileContent], Field(discriminator="type")]
AssistantPart = Annotated[Union[TextContent, RefusalContent], Field(discriminator="type")]


class FunctionCallBody(Wire):
    name: str
    arguments: str = ""


class ToolCallIn(Wire):
    id: str
    type: Literal["function"] = "function"
    function: FunctionCallBody


class SystemMessage(Wire):
    role: Literal["system", "developer"]
    content: str | list[TextContent]
    name: str | None = None


class UserMessage(Wire):
    role: Literal["user"]
    content: str | list[UserPart]
    name: str | None = None


class AssistantMessage(Wire):
    role: Literal["assistant"]
    content: str | list[AssistantPart] | None = None
    tool_calls: list[ToolCallIn] | None = None
    function_call: FunctionCallBody | None = None  # deprecated single-call form
    reasoning_content: str | None = None
    name: str | None = None


class ToolMessage(Wire):
    role: Literal["tool"]
    content: str | list[TextContent]
    tool_call_id: str


class FunctionMessage(Wire):
    role: Literal["function"]  # deprecated: result of `function_call`
    content: str | None = None
    name: str


ChatMessage = Annotated[
    Union[SystemMessage, UserMessage, AssistantMessage, ToolMessage, FunctionMessage],
    Field(discriminator="role"),
]


class FunctionDef(Wire):
    name: str = Field(min_length=1, max_length=128)
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class ToolDef(Wire):
    type: Literal["function"]
    function: FunctionDef


class NamedFunction(Wire):
    name: str


class NamedToolChoice(Wire):
    type: Literal["function"]
    function: NamedFunction


class AllowedTools(Wire):
    mode: Literal["auto", "required"]
    tools: list[NamedToolChoice]


class AllowedToolsChoice(Wire):
    type: Literal["allowed_tools"]
    allowed_tools: AllowedTools


class JsonSchemaFormat(Wire):
    name: str = "response"
    description: str | None = None
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    strict: bool | None = None


class ResponseFormatIn(Wire):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None


class StreamOptions(Wire):
    include_usage: bool | None = None


class ChatCompletionRequest(Wire):
    model: str = Field(min_length=1)
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    stop: str | list[str] | None = None
    n: int | None = Field(default=None, ge=1, le=8)
    seed: int | None = None
    presence_penalty: float | None = Field(default=None, ge=-2, le=2)
    frequency_penalty: float | None = Field(default=None, ge=-2, le=2)
    tools: list[ToolDef] | None = None
    functions: list[FunctionDef] | None = None  # deprecated form of tools
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | AllowedToolsChoice | None = None
    function_call: Literal["none", "auto"] | NamedFunction | None = None  # deprecated form of tool_choice
    parallel_tool_calls: bool | None = None
    response_format: ResponseFormatIn | None = None
    reasoning_effort: Literal["none", "minimal", "low", "medium", "high", "xhigh"] | None = None
    user: str | None = None


# Discriminator tags pydantic puts into error locations right after an index into
# `messages` or `content` (the tagged unions); they name the branch, not a field.
_UNION_TAGS = {
    "system", "developer", "user", "assistant", "tool", "function",
    "text", "image_url", "input_audio", "file", "refusal",
}


def param_from_loc(loc: tuple[Any, ...]) -> str:
    """('messages', 0, 'user', 'content') -> 'messages[0].content'."""
    out = ""
    last_field: str | None = None
    after_index = False
    for pos, item in enumerate(loc):
        if isinstance(item, int):
            out += f"[{item}]"
            after_index = True
            continue
        text = str(item)
        # a tag always precedes the field that failed, so a last element named like a tag ('text') is a field
        is_tag = (after_index and last_field in ("messages", "content") and text in _UNION_TAGS
                  and pos < len(loc) - 1)
        # union members show up as 'str', 'list[...]', 'literal[...]', 'NamedToolChoice', ...
        is_member = text in ("str", "int", "float", "bool") or "[" in text or text[:1].isupper()
        if not (is_tag or is_member):
            out += f".{text}" if out else text
            last_field = text
        after_index = after_index and is_member
    return out


def validation_error(exc: ValidationError, what: str = "request") -> GatewayError:
    """Turn pydantic's first (most relevant) error into one clear 400."""
    errors = exc.errors(include_url=False)
    # Union branches each report an error; the one that got deepest is the one the client meant.
    first = max(errors, key=lambda e: len(e.get("loc", ())))
    if any(e["type"] == "missing" for e in errors):
        missing = [e for e in errors if e["type"] == "missing"]
        first = max(missing, key=lambda e: len(e.get("loc", ())))
    param = param_from_loc(tuple(first.get("loc", ()))) or None
    msg = first.get("msg", "invalid value")
    missing = first["type"] in ("missing", "union_tag_not_found")
    if first["type"] in ("union_tag_invalid", "union_tag_not_found"):
        # The tag field itself is what is wrong or absent: name it, as OpenAI does (messages[0].role).
        tag = str((first.get("ctx") or {}).get("discriminator", "")).strip("'\"")
        if tag:
            param = f"{param}.{tag}" if param else tag
    if missing:
        text = f"Missing required parameter: '{param}'."
    elif first["type"] == "union_tag_invalid":
        text = f"Invalid value for '{param}': {msg}."
    else:
        text = f"Invalid {what} parameter '{param}': {msg}." if param else f"Invalid {what}: {msg}."
    code = "missing_required_parameter" if missing else "invalid_value"
    return GatewayError(400, text, param=param, code=code)


def validate_body(model: type[W], body: Any) -> W:
    """A request body as `model`, or the 400 a client can act on."""
    if not isinstance(body, dict):
        raise GatewayError(400, "The request body must be a JSON object.", code="invalid_json")
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        raise validation_error(exc) from None


def parse_chat_request(body: Any) -> ChatCompletionRequest:
    return validate_body(ChatCompletionRequest, body)
