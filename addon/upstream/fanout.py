"""`n` choices from `n` single-choice upstream calls, for models that refuse several candidates
(Gemini 3: "Multiple candidates is not enabled for this model", googleapis/js-genai#1609).

The calls run in parallel; the answer is one completion (or one stream) whose choice `i` is call
`i`'s only choice, with the usage of all calls added up. Every call must be accepted before the
first byte goes out, so a refusal still rotates the account as a single call would; a call that
fails later ends the merged stream with the error.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

from ..protocol import canonical as c

T = TypeVar("T")


def singles(req: c.ChatRequest) -> list[c.ChatRequest]:
    """One n=1 request per choice; a client's seed is varied so the choices differ."""
    return [dataclasses.replace(req, n=1, seed=None if req.seed is None else req.seed + i) for i in range(req.n)]


async def all_or_none(calls: list[Awaitable[T]], discard: Callable[[T], Awaitable[Any]] | None = None) -> list[T]:
    """Every call's result, or the first failure (the others are cancelled, finished ones discarded)."""
    tasks = [asyncio.ensure_future(call) for call in calls]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
    finally:
        failed = next((t for t in tasks if t.done() and not t.cancelled() and t.exception()), None)
        if failed is not None or any(not t.done() for t in tasks):
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if discard is not None:
                for t in tasks:
                    if t.done() and not t.cancelled() and t.exception() is None:
                        await discard(t.result())
    if failed is not None:
        raise failed.exception()  # type: ignore[misc]
    return [t.result() for t in tasks]


def _add(a: c.Usage, b: c.Usage) -> c.Usage:
    return c.Usage(a.input_tokens + b.input_tokens, a.output_tokens + b.output_tokens,
                   a.reasoning_tokens + b.reasoning_tokens, a.cached_tokens + b.cached_tokens, a.model or b.model)


def merge_completions(parts: list[c.Completion]) -> c.Completion:
    choices: list[c.Choice] = []
    usage = c.Usage()
    for i, part in enumerate(parts):
        for ch in part.choices[:1]:
            ch.index = i
            choices.append(ch)
        usage = _add(usage, part.usage)
    return c.Completion(choices, usage, parts[0].upstream_model if parts else None)


async def merge_streams(streams: list[AsyncIterator[list[c.StreamEvent]]]) -> AsyncIterator[list[c.StreamEvent]]:
    """Batches from every stream as they come, choice 0 of stream i renumbered to choice i; one
    summed UsageUpdate at the end."""
    queue: asyncio.Queue[tuple[int, list[c.StreamEvent] | BaseException | None]] = asyncio.Queue()

    async def pump(i: int, stream: AsyncIterator[list[c.StreamEvent]]) -> None:
        try:
            async for batch in stream:
                await queue.put((i, batch))
        except Exception as exc:
            await queue.put((i, exc))
            return
        await queue.put((i, None))

    tasks = [asyncio.ensure_future(pump(i, s)) for i, s in enumerate(streams)]
    usage, running = c.Usage(), len(streams)
    try:
        while running:
            i, item = await queue.get()
            if item is None:
                running -= 1
                continue
            if isinstance(item, BaseException):
                raise item
            out: list[c.StreamEvent] = []
            for ev in item:
                if isinstance(ev, c.UsageUpdate):
                    usage = _add(usage, ev.usage)
                else:
                    ev.choice = i
                    out.append(ev)
            if out:
                yield out
        yield [c.UsageUpdate(usage)]
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for s in streams:
            aclose = getattr(s, "aclose", None)
            if aclose is not None:
                await aclose()
