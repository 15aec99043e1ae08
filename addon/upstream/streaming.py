"""The one stream tail every provider shares: upstream bytes -> SSE payloads -> canonical event
batches, through the back end's StreamDecoder, closing the upstream response whatever happens."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

from ..backends import StreamDecoder, decoding, well_formed_events
from ..protocol import canonical as c
from ..protocol.errors import ShuttingDown, UpstreamError
from .http import UpstreamResponse
from .sse import SSEParser

StreamBatches = AsyncIterator[list[c.StreamEvent]]
B = TypeVar("B")  # one batch of a stream: canonical events, or Gemini-native JSON objects


async def sse_payloads(chunks: AsyncIterator[bytes]) -> AsyncIterator[list[str]]:
    """The `data` of each SSE event, batched per network read."""
    parser = SSEParser()
    async for chunk in chunks:
        events = parser.feed(chunk)
        if events:
            yield [e.data for e in events]
    tail = parser.flush()
    if tail:
        yield [e.data for e in tail]


async def event_batches(chunks: AsyncIterator[bytes], decoder: StreamDecoder) -> StreamBatches:
    """Canonical event batches, one per network read, then the decoder's closing events.

    The decoder raises UpstreamError for a payload that reports or is a failure; the events
    decoded before it in the same read are still delivered first.
    """
    async for payloads in sse_payloads(chunks):
        batch: list[c.StreamEvent] = []
        failure: UpstreamError | None = None
        for payload in payloads:
            try:
                with decoding():
                    batch += well_formed_events(decoder.feed(payload))
            except UpstreamError as err:
                failure = err
                break
        if batch:
            yield batch
        if failure is not None:
            raise failure
    with decoding():
        tail = well_formed_events(decoder.finish())
    yield tail


async def decode_stream(resp: UpstreamResponse, decoder: StreamDecoder) -> StreamBatches:
    try:
        async for batch in event_batches(resp.chunks(), decoder):
            yield batch
    finally:
        await resp.close()


def _has_output(batch: list[c.StreamEvent]) -> bool:
    return any((isinstance(ev, c.TextDelta) and ev.text) or isinstance(ev, c.ToolCallDelta) for ev in batch)


async def read_ahead(batches: AsyncIterator[B], patience: float,
                     enough: Callable[[B], bool] = _has_output) -> AsyncIterator[B]:
    """Read a stream until its first answer text or tool call (at most `patience` seconds), so a
    failure the upstream reports before any (a malformed function call, an empty answer: the
    decoder raises UpstreamError) still fails this attempt and the retry policy can try again
    before the client saw a byte. Returns the whole stream, starting with what was read.

    Thoughts do not end the wait (a failure after them can still be retried); the bound keeps
    clients from waiting without even keep-alive comments while a model thinks silently.
    `enough` says which batch ends the wait (a Gemini-native stream: its first)."""
    it = aiter(batches)
    held: list[B] = []
    deadline = asyncio.get_running_loop().time() + patience
    pending: asyncio.Future | None = None
    try:
        while True:
            step = asyncio.ensure_future(anext(it))
            done, _ = await asyncio.wait({step}, timeout=max(0.0, deadline - asyncio.get_running_loop().time()))
            if not done:
                pending = step  # still thinking: hand the stream over, the wait goes on there
                break
            try:
                batch = step.result()
            except StopAsyncIteration:
                break
            held.append(batch)
            if enough(batch):
                break
    except BaseException:
        if pending is None and not step.done():
            step.cancel()
        await _close(it)
        raise
    return _replay(held, pending, it)


async def _replay(held: list[B], pending: asyncio.Future | None, it: AsyncIterator[B]) -> AsyncIterator[B]:
    try:
        for batch in held:
            yield batch
        if pending is not None:
            try:
                yield await pending
            except StopAsyncIteration:
                return
        async for batch in it:
            yield batch
    finally:
        if pending is not None:
            if not pending.done():
                pending.cancel()
            elif not pending.cancelled():
                pending.exception()  # retrieved: no "exception was never retrieved" at exit
        await _close(it)


async def _close(it: AsyncIterator[Any]) -> None:
    aclose = getattr(it, "aclose", None)
    if aclose is not None:
        try:
            await aclose()
        except RuntimeError:  # "asynchronous generator is already running": a cancelled step owns it
            pass


async def until_shutdown(batches: StreamBatches, stopping) -> StreamBatches:
    """`batches`, unless the gateway cancels the stream because it is stopping (`stopping()` true):
    then ShuttingDown, which the front end's encoder turns into its protocol's error event."""
    try:
        async for batch in batches:
            yield batch
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if not stopping() or task is None:
            raise
        task.uncancel()  # the cancellation was only the signal; the error event still goes out
        raise ShuttingDown() from None
    finally:
        aclose = getattr(batches, "aclose", None)
        if aclose is not None:
            await aclose()
