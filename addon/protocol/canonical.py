"""The canonical request, response and stream events every translator meets at.

Front ends (Chat Completions, Responses, legacy Completions) parse into these and
render from them; back ends (Gemini, Cloud Code, OpenAI-compatible) translate
them to and from their wire formats. N + M translators instead of N x M.
Plain slotted dataclasses: they are built on every request, so they stay cheap.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass, field
from typing import Literal

Role = Literal["system", "user", "assistant", "tool"]
FinishReason = Literal["stop", "length", "tool_calls", "content_filter"]


# ---- content parts -------------------------------------------------------------------------

@dataclass(slots=True)
class TextPart:
    text: str


MediaKind = Literal["image", "audio", "file"]


@dataclass(slots=True)
class MediaPart:
    """An image/audio/file given inline (base64 `data`) or by remote `url` (http/https only).

    `kind` is what the client called it (an OpenAI-compatible upstream needs the matching part
    type back: image_url, input_audio or file); `filename` travels with files."""

    mime_type: str | None = None
    data: str | None = None
    url: str | None = None
    kind: MediaKind = "image"
    filename: str | None = None


@dataclass(slots=True)
class Signature:
    """Opaque upstream reasoning state (Gemini's `thoughtSignature`) and who issued it.

    Gemini refuses a signature issued to another credential, so each one remembers its `origin`
    (provider and credential fingerprint; None = unknown, e.g. sent back by the client itself) and
    `model`. `key` is how the client refers to it (a tool-call id, or a Responses reasoning item's
    `encrypted_content`): the signature store's key. An empty `value` means "not looked up yet".
    """

    value: str
    origin: str | None = None
    model: str | None = None
    key: str | None = None


# The key a back end gives a reasoning signature that has no tool-call id to ride on (a Responses
# reasoning item echoes it as `encrypted_content`): minted by `new_signature_key`, recognised by
# `signature_ref`, so that front ends never parse an id a back end made.
_SIGNATURE_KEY = re.compile(r"sig_[0-9a-f]{24}")


def new_signature_key() -> str:
    return "sig_" + os.urandom(12).hex()


def signature_ref(echoed: str | None) -> Signature | None:
    """What a client echoed for a reasoning signature: the key of a stored one (looked up before
    the request goes upstream), or, from before the store existed, the signature itself."""
    if not echoed:
        return None
    if _SIGNATURE_KEY.fullmatch(echoed):
        return Signature("", key=echoed)
    return Signature(echoed)


@dataclass(slots=True)
class ReasoningPart:
    """Model reasoning carried back in a later turn, with its upstream signature if any."""

    text: str = ""
    signature: Signature | None = None


Part = TextPart | MediaPart | ReasoningPart


@dataclass(slots=True)
class ToolCall:
    id: str
    name: str
    arguments: str  # JSON text, as OpenAI carries it
    signature: Signature | None = None  # the upstream's thought signature for this call


@dataclass(slots=True)
class Message:
    role: Role
    content: list[Part] = field(default_factory=list)
    tool_calls: list[ToolCall] = field(default_factory=list)
    tool_call_id: str | None = None  # role == "tool": which call this answers
    name: str | None = None

    def text(self) -> str:
        return "".join(p.text for p in self.content if isinstance(p, TextPart))


# ---- request -------------------------------------------------------------------------------

@dataclass(slots=True)
class Tool:
    name: str
    description: str | None = None
    parameters: dict | None = None
    strict: bool | None = None


@dataclass(slots=True)
class ToolChoice:
    mode: Literal["auto", "none", "required"] = "auto"
    names: tuple[str, ...] = ()  # with mode "required": only these functions


@dataclass(slots=True)
class ResponseFormat:
    type: Literal["text", "json_object", "json_schema"] = "text"
    schema: dict | None = None
    name: str | None = None
    strict: bool | None = None


@dataclass(slots=True)
class ChatRequest:
    model: str  # the name the client asked for; the mapped name travels separately
    messages: list[Message]
    stream: bool = False
    include_usage: bool = False
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None  # Anthropic's top_k -> Gemini topK; OpenAI-compatible upstreams have none
    max_tokens: int | None = None
    stop: list[str] = field(default_factory=list)
    n: int = 1
    seed: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    tools: list[Tool] = field(default_factory=list)
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: bool | None = None
    response_format: ResponseFormat | None = None
    reasoning_effort: str | None = None  # none|minimal|low|medium|high
    thinking_level: str | None = None  # minimal|low|medium|high, implied by the model mapping's target
    thinking_budget: int | None = None  # an explicit thinking budget in tokens (Anthropic's budget_tokens)
    show_reasoning: bool | None = None  # show thoughts whatever the effort (Anthropic's thinking); None: if an effort is asked
    user: str | None = None
    web_search: bool = False  # the client offered a hosted web search tool (Responses) / web_search_options (chat)
    left_out: list[str] = field(default_factory=list)  # what the front end could not forward (told in the story)
    # The client can send reasoning signatures back (a Responses reasoning item can, a chat message
    # cannot): only then are they worth keeping (see stores/signature_store.py).
    returns_reasoning_state: bool = False


def conversation_key(req: ChatRequest) -> str:
    """One conversation, recognised across its requests: the client's `user` field, else its system
    prompt and first user message (what stays the same as a chat grows), hashed. Keeps a conversation
    on one account (sticky pools) and gives Cloud Code its session id."""
    if req.user:
        basis = "user\x00" + req.user
    else:
        first = next((m.text() for m in req.messages if m.role == "user"), "")
        system = next((m.text() for m in req.messages if m.role == "system"), "")
        basis = f"{system}\x00{first}"
    return hashlib.blake2b(basis.encode(), digest_size=16).hexdigest()


# ---- response ------------------------------------------------------------------------------

@dataclass(slots=True)
class Citation:
    """A span of the answer text backed by a web source; offsets are characters, end exclusive."""

    start: int
    end: int
    url: str
    title: str


@dataclass(slots=True)
class Grounding:
    """What a hosted web search did for one answer: its queries, the pages, and the cited spans."""

    queries: list[str] = field(default_factory=list)
    sources: list[tuple[str, str]] = field(default_factory=list)  # (url, title)
    citations: list[Citation] = field(default_factory=list)


@dataclass(slots=True)
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0  # includes reasoning tokens, as OpenAI counts them
    reasoning_tokens: int = 0
    cached_tokens: int = 0
    # The model that answered, when the upstream says (Gemini's modelVersion): it differs from the
    # model asked for when Google re-routes a deprecated name -- and the bill is the answering model's.
    model: str | None = None

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens


@dataclass(slots=True)
class Choice:
    index: int = 0
    text: str = ""
    reasoning: str = ""
    reasoning_signature: Signature | None = None
    tool_calls: list[ToolCall] = field(default_factory=list)
    finish_reason: FinishReason = "stop"
    grounding: Grounding | None = None


@dataclass(slots=True)
class Completion:
    choices: list[Choice]
    usage: Usage = field(default_factory=Usage)
    upstream_model: str | None = None


# ---- stream events (upstream decoder -> front-end encoder) ---------------------------------

@dataclass(slots=True)
class TextDelta:
    choice: int
    text: str


@dataclass(slots=True)
class ReasoningDelta:
    choice: int
    text: str
    signature: Signature | None = None


@dataclass(slots=True)
class ToolCallDelta:
    """Part of one tool call. The first delta of a (choice, call_index) carries id and name."""

    choice: int
    call_index: int
    arguments: str = ""
    id: str | None = None
    name: str | None = None
    signature: Signature | None = None  # on the first delta of a call, like id and name


@dataclass(slots=True)
class Finish:
    choice: int
    reason: FinishReason


@dataclass(slots=True)
class UsageUpdate:
    usage: Usage


@dataclass(slots=True)
class GroundingUpdate:
    """The web search behind a choice; citations index the choice's text streamed so far."""

    choice: int
    grounding: Grounding


StreamEvent = TextDelta | ReasoningDelta | ToolCallDelta | Finish | UsageUpdate | GroundingUpdate


# ---- embeddings ----------------------------------------------------------------------------

# Gemini's embedding TaskType values (ai.google.dev/api/embeddings#tasktype)
TASK_TYPES = ("TASK_TYPE_UNSPECIFIED", "RETRIEVAL_QUERY", "RETRIEVAL_DOCUMENT", "SEMANTIC_SIMILARITY", "CLASSIFICATION",
              "CLUSTERING", "QUESTION_ANSWERING", "FACT_VERIFICATION", "CODE_RETRIEVAL_QUERY")


@dataclass(slots=True)
class EmbedRequest:
    """Texts to embed, one vector each, answered in the same order."""

    model: str  # the name the client asked for; the mapped name travels separately
    inputs: list[str]
    dimensions: int | None = None  # Gemini's outputDimensionality (the vector is truncated to it)
    task_type: str | None = None  # Gemini's TaskType: RETRIEVAL_QUERY, RETRIEVAL_DOCUMENT, SEMANTIC_SIMILARITY, ...
    title: str | None = None  # Gemini's title of the document, for every input (RETRIEVAL_DOCUMENT only)


@dataclass(slots=True)
class Embeddings:
    vectors: list[list[float]]  # one per input, in the request's order
    input_tokens: int | None = None  # what the upstream reported; None when it does not say
