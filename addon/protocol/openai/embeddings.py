"""Wire model of an Embeddings request (`POST /v1/embeddings`)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from .common import Wire


class EmbeddingRequest(Wire):
    model: str = Field(min_length=1)
    # token arrays are accepted here only to be refused with a clear message (Gemini takes text)
    input: str | list[str] | list[int] | list[list[int]]
    encoding_format: Literal["float", "base64"] | None = None  # OpenAI's default is float
    dimensions: int | None = None
    user: str | None = None  # OpenAI's end-user id: nothing upstream takes it
    # The gateway's own (Gemini) fields, e.g. through the openai SDK's `extra_body`:
    task_type: str | None = None
    title: str | None = None
