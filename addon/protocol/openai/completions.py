"""Wire model of a legacy Completions request (`POST /v1/completions`)."""

from __future__ import annotations

from pydantic import Field

from .common import StreamOptions, Wire


class CompletionRequest(Wire):
    model: str = Field(min_length=1)
    # token arrays are accepted here only to be refused with a clear message below
    prompt: str | list[str] | list[int] | list[list[int]]
    suffix: str | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    n: int | None = Field(default=None, ge=1, le=8)
    best_of: int | None = Field(default=None, ge=1, le=20)
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    logprobs: int | None = Field(default=None, ge=0, le=5)
    echo: bool | None = False
    stop: str | list[str] | None = None
    presence_penalty: float | None = Field(default=None, ge=-2, le=2)
    frequency_penalty: float | None = Field(default=None, ge=-2, le=2)
    seed: int | None = None
    user: str | None = None
