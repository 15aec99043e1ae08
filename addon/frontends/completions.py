"""Legacy Completions front end (`POST /v1/completions`): prompt -> canonical, canonical -> text_completion.

The upstreams here are chat models, so a prompt becomes one user message and the answer's text is
the completion. Choices that cannot be honoured are refused with a 400 naming the parameter rather
than silently ignored:
  * `prompt` must be one string (or a list holding exactly one); token arrays are refused;
  * `suffix` (insertion) is refused;
  * `logprobs` > 0 is refused; `logprobs: 0` or null is accepted and answered with `logprobs: null`;
  * `best_of` must equal `n` (the upstream has no server-side best-of ranking).
"""

from __future__ import annotations

import re
import time
from typing import Any

from ..protocol import canonical as c
from ..protocol.errors import GatewayError, bad_request
from ..protocol.ids import new_id
from ..protocol.openai.common import validate_body
from ..protocol.openai.completions import CompletionRequest
from ..routes import Incoming, Outcome, Route, openai_error
from .base import Frontend
from .common import DONE, check_stream_options, sse_data, stop_sequences, usage_json

DEFAULT_MAX_TOKENS = 16  # the legacy API's documented default


def _prompt(prompt: str | list[Any]) -> str:
    if isinstance(prompt, list):
        if len(prompt) != 1 or not isinstance(prompt[0], str):
            if prompt and not isinstance(prompt[0], str):
                raise bad_request("Token-array prompts are not supported by this gateway; send the prompt as text.",
                                  "prompt")
            raise bad_request("Exactly one prompt per request is supported; send a string or a list of one "
                              "string.", "prompt")
        prompt = prompt[0]
    if not prompt:
        raise bad_request("'prompt' must not be empty.", "prompt")
    return prompt


def _check_supported(req: CompletionRequest) -> None:
    if req.suffix:
        raise bad_request("'suffix' is not supported by this gateway.", "suffix", code="unsupported_parameter")
    if req.logprobs:
        raise bad_request("'logprobs' is not supported by this gateway (the upstream returns no token "
                          "probabilities).", "logprobs", code="unsupported_parameter")
    if req.best_of is not None and req.best_of != (req.n or 1):
        raise bad_request("'best_of' must equal 'n': this gateway cannot rank server-side candidates.", "best_of",
                          code="unsupported_parameter")
    check_stream_options(req.stream, req.stream_options)


def parse(body: Any) -> tuple[c.ChatRequest, str]:
    """The canonical request and the prompt text (kept for `echo`)."""
    req = validate_body(CompletionRequest, body)
    prompt = _prompt(req.prompt)
    _check_supported(req)
    stop = stop_sequences(req.stop)
    creq = c.ChatRequest(
        model=req.model,
        messages=[c.Message("user", [c.TextPart(prompt)])],
        stream=bool(req.stream),
        include_usage=bool(req.stream and req.stream_options and req.stream_options.include_usage),
        temperature=req.temperature,
        top_p=req.top_p,
        max_tokens=req.max_tokens or DEFAULT_MAX_TOKENS,
        stop=stop,
        n=req.n or 1,
        seed=req.seed,
        presence_penalty=req.presence_penalty,
        frequency_penalty=req.frequency_penalty,
        user=req.user,
    )
    return creq, prompt if req.echo else ""


def _finish(reason: c.FinishReason | None) -> str | None:
    # No tools are declared on this surface, so a "tool_calls" finish can only be an upstream quirk.
    return "stop" if reason == "tool_calls" else reason


def _choice(index: int, text: str, finish: str | None) -> dict[str, Any]:
    return {"text": text, "index": index, "logprobs": None, "finish_reason": finish}


def render(completion: c.Completion, req: c.ChatRequest, echo: str) -> dict[str, Any]:
    return {
        "id": new_id("cmpl-"),
        "object": "text_completion",
        "created": int(time.time()),
        "model": req.model,
        "choices": [_choice(ch.index, echo + ch.text, _finish(ch.finish_reason)) for ch in completion.choices],
        "usage": usage_json(completion.usage),
        "system_fingerprint": None,
    }


class CompletionsStreamEncoder:
    """Canonical stream events -> `text_completion` SSE chunks, ending in `data: [DONE]`.

    Every chunk shares one id/created/model; with include_usage each carries `"usage": null` and a
    last chunk with `choices: []` carries the totals, as Chat Completions does.
    """

    def __init__(self, req: c.ChatRequest, echo: str) -> None:
        self._base = {"id": new_id("cmpl-"), "object": "text_completion", "created": int(time.time()),
                      "model": req.model, "system_fingerprint": None}
        self._n = req.n
        self._echo = echo
        self._include_usage = req.include_usage
        self._usage = c.Usage()

    def _chunk(self, choices: list[dict[str, Any]], **extra: Any) -> bytes:
        chunk = {**self._base, "choices": choices}
        if self._include_usage:
            chunk["usage"] = None
        return sse_data({**chunk, **extra})

    def start(self) -> bytes:
        if not self._echo:
            return b""
        return b"".join(self._chunk([_choice(i, self._echo, None)]) for i in range(self._n))

    def feed(self, ev: c.StreamEvent) -> bytes:
        if isinstance(ev, c.TextDelta) and ev.text:
            return self._chunk([_choice(ev.choice, ev.text, None)])
        if isinstance(ev, c.Finish):
            return self._chunk([_choice(ev.choice, "", _finish(ev.reason))])
        if isinstance(ev, c.UsageUpdate):
            self._usage = ev.usage
        return b""  # reasoning and tool calls have no place in a text completion

    def close(self) -> bytes:
        out = b""
        if self._include_usage:
            out = self._chunk([], usage=usage_json(self._usage))
        return out + DONE

    def fail(self, err: GatewayError) -> bytes:
        return sse_data(err.payload())


class CompletionsFrontend(Frontend[str]):
    """`POST /v1/completions` (also `/completions`); the context is the prompt echoed back (`echo`)."""

    name = "completions"

    def routes(self) -> list[Route]:
        return [Route("POST", r"/(?:v1/)?completions", "/v1/completions")]

    def error(self, err: GatewayError) -> Outcome:
        return openai_error(err)

    async def parse(self, body: Any, match: re.Match[str], incoming: Incoming) -> tuple[c.ChatRequest, str]:
        return parse(body)

    def render(self, completion: c.Completion, req: c.ChatRequest, ctx: str) -> dict[str, Any]:
        return render(completion, req, ctx)

    def encoder(self, req: c.ChatRequest, ctx: str) -> CompletionsStreamEncoder:
        return CompletionsStreamEncoder(req, ctx)
