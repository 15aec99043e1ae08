"""Canonical embedding requests in batches: split, run a few at a time, put back together.

Shared by the embeddings front end (chunks kept across retries) and the providers (each
upstream's own limit per call). Nothing here does I/O itself.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any, TypeVar

from . import canonical as c

T = TypeVar("T")
OFF_LOOP_BYTES = 256 * 1024  # an upstream answer this large is decoded in a worker thread
CONCURRENT_BATCHES = 4  # per client request: enough to overlap round trips, polite to one account's quota
CHARS_PER_TOKEN = 4  # the estimate when an upstream reports no token count (OpenAI's rule of thumb)


def batches(items: list[Any], size: int) -> list[list[Any]]:
    return [items[i:i + size] for i in range(0, len(items), size)]


def split(req: c.EmbedRequest, size: int) -> list[c.EmbedRequest]:
    return [replace(req, inputs=part) for part in batches(req.inputs, size)]


def merge(results: list[c.Embeddings]) -> c.Embeddings:
    """The vectors in order; tokens added up (None if any part did not report them)."""
    vectors = [v for r in results for v in r.vectors]
    counts = [r.input_tokens for r in results]
    return c.Embeddings(vectors, None if any(n is None for n in counts) else sum(counts))  # type: ignore[arg-type]


def estimate_tokens(texts: list[str]) -> int:
    """About one token per four characters of each text (at least one per text)."""
    return sum(max(1, math.ceil(len(t) / CHARS_PER_TOKEN)) for t in texts)


async def gather_or_cancel(coros: list[Awaitable[T]]) -> list[T]:
    """All results in order; on the first failure the others are cancelled and it is raised."""
    tasks = [asyncio.ensure_future(co) for co in coros]
    try:
        return list(await asyncio.gather(*tasks))
    finally:
        for t in tasks:
            if not t.done():
                t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def in_batches(req: c.EmbedRequest, size: int, call: Callable[[c.EmbedRequest], Awaitable[c.Embeddings]],
                     concurrency: int = CONCURRENT_BATCHES) -> c.Embeddings:
    """`call` on each run of at most `size` inputs, at most `concurrency` at a time, merged in order.
    A failed batch fails the whole call at once (the retry policy judges that one error)."""
    parts = split(req, size)
    if len(parts) == 1:
        return await call(parts[0])
    gate = asyncio.Semaphore(concurrency)

    async def one(part: c.EmbedRequest) -> c.Embeddings:
        async with gate:
            return await call(part)

    return merge(await gather_or_cancel([one(p) for p in parts]))


async def decode(fn: Callable[..., T], raw: bytes, *args: Any) -> T:
    """`fn(raw, *args)`; for a large answer (100 vectors of 3072 numbers are ~6 MB of JSON) in a
    worker thread, so parsing and rescaling it never hold up the event loop."""
    if len(raw) < OFF_LOOP_BYTES:
        return fn(raw, *args)
    return await asyncio.to_thread(fn, raw, *args)
