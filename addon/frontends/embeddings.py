"""Embeddings front end (`POST /v1/embeddings`, also `/embeddings`): OpenAI's request -> canonical
EmbedRequest, canonical Embeddings -> OpenAI's `list` of `embedding` objects.

What OpenAI's API takes and the upstreams cannot is refused with a 400 naming the parameter:
token-id inputs (Gemini embeds text; the ids of OpenAI's tokenizer cannot be turned back into the
client's text here), empty texts, more than MAX_INPUTS texts, `dimensions` outside 1..MAX_DIMENSIONS.
`user` is accepted and ignored. `encoding_format: "base64"` (what the openai SDKs ask for by default)
is each vector as little-endian float32 bytes, base64-encoded, which the SDKs decode.

A request is served in chunks of CHUNK texts (a Gemini batchEmbedContents holds at most 100), a few
at a time, all through one pool call: when an account fails mid-way, the next one is asked only for
the chunks still missing, and the vectors come back whole and in order.
"""

from __future__ import annotations

import array
import asyncio
import base64
import sys
from collections.abc import Awaitable, Callable
from typing import Any

from ..protocol import canonical as c
from ..protocol import jsonfast
from ..protocol.batching import CONCURRENT_BATCHES, estimate_tokens, gather_or_cancel, merge, split
from ..protocol.errors import GatewayError, bad_request
from ..protocol.openai.common import validate_body
from ..protocol.openai.embeddings import EmbeddingRequest
from ..routes import JSON_HEADERS, Outcome, Route, RouteCall, openai_error
from .base import Surface

MAX_INPUTS = 2048  # OpenAI's own limit of texts per request
MAX_DIMENSIONS = 16384  # beyond any embedding model's width: a typo, not a request
CHUNK = 100  # what one Gemini batchEmbedContents call holds
# Rendering millions of floats (2048 texts x 3072 dimensions) takes longer than an event-loop turn may.
OFF_LOOP_VALUES = 200_000

# One attempt on one account: (provider, account, upstream model) -> embeddings. The pool runs it.
Op = Callable[[Any, Any, str], Awaitable[c.Embeddings]]
RunOp = Callable[[str, Op], Awaitable[c.Embeddings]]


def parse(body: Any) -> tuple[c.EmbedRequest, bool]:
    """The canonical request, and whether the client wants base64."""
    req = validate_body(EmbeddingRequest, body)
    inputs = _inputs(req.input)
    if req.dimensions is not None and not 1 <= req.dimensions <= MAX_DIMENSIONS:
        raise bad_request(f"'dimensions' must be between 1 and {MAX_DIMENSIONS} (got {req.dimensions}).",
                          "dimensions", code="invalid_value")
    task = req.task_type.upper() if req.task_type else None
    if task is not None and task not in c.TASK_TYPES:
        raise bad_request(f"'task_type' must be one of {', '.join(c.TASK_TYPES)}.", "task_type",
                          code="invalid_value")
    creq = c.EmbedRequest(model=req.model, inputs=inputs, dimensions=req.dimensions, task_type=task,
                          title=req.title or None)
    return creq, req.encoding_format == "base64"


def _inputs(value: str | list[Any]) -> list[str]:
    texts = [value] if isinstance(value, str) else value
    if not texts:
        raise bad_request("'input' must not be empty: send a string or a list of strings.", "input",
                          code="invalid_value")
    if not isinstance(texts[0], str):
        raise bad_request("Token-id inputs are not supported by this gateway: its upstreams embed text, and "
                          "token ids cannot be turned back into it here. Send the text itself (LangChain: "
                          "OpenAIEmbeddings(check_embedding_ctx_length=False)).", "input",
                          code="unsupported_parameter")
    if len(texts) > MAX_INPUTS:
        raise bad_request(f"'input' holds {len(texts)} texts; at most {MAX_INPUTS} are allowed per request.",
                          "input", code="invalid_value")
    for i, text in enumerate(texts):
        if not text:
            where = "input" if isinstance(value, str) else f"input[{i}]"
            raise bad_request(f"'{where}' must not be an empty string.", where, code="invalid_value")
    return texts


async def embed_all(req: c.EmbedRequest, run: RunOp) -> c.Embeddings:
    """Every chunk of `req` embedded through `run` (one pool call: retries and rotation included).
    An attempt asks only for the chunks earlier attempts did not get."""
    chunks = split(req, CHUNK)
    done: list[c.Embeddings | None] = [None] * len(chunks)

    async def op(provider: Any, acc: Any, model: str) -> c.Embeddings:
        gate = asyncio.Semaphore(CONCURRENT_BATCHES)

        async def one(i: int) -> c.Embeddings:
            async with gate:
                done[i] = result = await provider.embed(acc, chunks[i], model)
                return result

        await gather_or_cancel([one(i) for i, got in enumerate(done) if got is None])
        return merge([r for r in done if r is not None])

    return await run(req.model, op)


def usage_tokens(req: c.EmbedRequest, result: c.Embeddings) -> int:
    """What the upstream counted, else an estimate (about four characters a token)."""
    return result.input_tokens if result.input_tokens is not None else estimate_tokens(req.inputs)


def _float32_base64(values: list[float]) -> str:
    packed = array.array("f", values)
    if sys.byteorder != "little":
        packed.byteswap()
    return base64.b64encode(packed.tobytes()).decode("ascii")


def render(req: c.EmbedRequest, result: c.Embeddings, as_base64: bool, tokens: int) -> dict[str, Any]:
    if len(result.vectors) != len(req.inputs):  # the back ends check this; never answer misaligned
        raise GatewayError(502, "The upstream returned a different number of embeddings than inputs.",
                           code="upstream_error")
    encode = _float32_base64 if as_base64 else (lambda v: v)
    return {
        "object": "list",
        "data": [{"object": "embedding", "index": i, "embedding": encode(v)} for i, v in enumerate(result.vectors)],
        "model": req.model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }


async def render_off_loop(req: c.EmbedRequest, result: c.Embeddings, as_base64: bool, tokens: int,
                          dumps: Callable[[Any], bytes]) -> bytes:
    """The answer's bytes; large ones are built in a worker thread, off the event loop."""
    if sum(len(v) for v in result.vectors) < OFF_LOOP_VALUES:
        return dumps(render(req, result, as_base64, tokens))
    return await asyncio.to_thread(lambda: dumps(render(req, result, as_base64, tokens)))


class EmbeddingsSurface(Surface):
    """`POST /v1/embeddings` (also `/embeddings`), in OpenAI's shape, errors included."""

    name = "embeddings"

    def routes(self) -> list[Route]:
        return [Route("POST", r"/(?:v1/)?embeddings", "/v1/embeddings", self._embed)]

    def error(self, err: GatewayError) -> Outcome:
        return openai_error(err)

    async def _embed(self, call: RouteCall) -> Outcome:
        story = call.story
        creq, as_base64 = parse(call.body)
        story.client_model = creq.model
        target = call.pool.target(creq.model)
        if creq.task_type is None and target.task_type:
            creq.task_type = target.task_type
        if creq.dimensions is None and target.dimensions:
            creq.dimensions = target.dimensions
        used: list[Any] = []  # the account that answered last, and its model (a fallback chain may move on)

        def run(model: str, op: Op) -> Awaitable[c.Embeddings]:
            async def on(provider: Any, acc: Any, mapped: str) -> c.Embeddings:
                used[:] = [acc, mapped]
                return await op(provider, acc, mapped)
            return call.pool.run(model, on, story, capability="embed")

        result = await embed_all(creq, run)
        tokens = usage_tokens(creq, result)
        if used:
            call.pool.record_usage(used[0], used[1], c.Usage(input_tokens=tokens), story)
        data = await render_off_loop(creq, result, as_base64, tokens, jsonfast.dumps)
        return Outcome(200, dict(JSON_HEADERS), data)
