"""The one stream tail every provider shares: upstream bytes -> SSE payloads -> canonical event
batches, through the back end's StreamDecoder, closing the upstream response whatever happens."""

from __future__ import annotations

from collections.abc import AsyncIterator

from ..backends import StreamDecoder, decoding, well_formed_events
from ..protocol import canonical as c
from ..protocol.errors import UpstreamError
from .http import UpstreamResponse
from .sse import SSEParser

StreamBatches = AsyncIterator[list[c.StreamEvent]]


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
