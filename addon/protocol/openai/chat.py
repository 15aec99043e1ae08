"""Wire models of an OpenAI Chat Completions request (what clients send us).

Validation lives here so a bad request becomes a 400 naming the offending `param`.
Unknown fields are tolerated: clients and SDK versions add vendor extras freely.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import Field

from .common import StreamOptions, Wire, validate_body


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
# OpenAI documents text-only tool results; tools that return screenshots send image parts anyway.
ToolPart = Annotated[Union[TextContent, ImageContent], Field(discriminator="type")]


class FunctionCallBody(Wire):
    name: str
    arguments: str = ""


class ToolCallIn(Wire):
    id: str
    type: Literal["function"] = "function"
    function: FunctionCallBody
    # Google's OpenAI-compatible API returns {"google": {"thought_signature": ...}} here and wants
    # it back (ai.google.dev/gemini-api/docs/openai); clients written for it echo it to us.
    extra_content: dict[str, Any] | None = None

    def thought_signature(self) -> str | None:
        google = (self.extra_content or {}).get("google")
        sig = google.get("thought_signature") if isinstance(google, dict) else None
        return sig if isinstance(sig, str) and sig else None


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
    content: str | list[ToolPart]
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
    # search_context_size / user_location have no Gemini equivalent: only the presence counts
    web_search_options: dict[str, Any] | None = None


def parse_chat_request(body: Any) -> ChatCompletionRequest:
    return validate_body(ChatCompletionRequest, body)

