"""The loopback relay on its own: chunked streaming, connection reuse, keep-alives, cleanup.

A raw asyncio client plays mitmproxy's part (HTTP/1.1, one request at a time per connection).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from addon.mitm.relay import Relay


class Source:
    """A stream of chunks that records whether it was closed (the upstream request's fate)."""

    def __init__(self, *chunks: bytes, pause: float = 0.0, hang: bool = False) -> None:
        self.chunks, self.pause, self.hang = chunks, pause, hang
        self.closed = asyncio.Event()

    async def __call__(self) -> AsyncIterator[bytes]:
        try:
            for chunk in self.chunks:
                await asyncio.sleep(self.pause)
                yield chunk
            if self.hang:
                await asyncio.sleep(3600)
        finally:
            self.closed.set()


async def read_response(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    if b"content-length: 0" in head:
        return head, b""
    body = b""
    while not body.endswith(b"0\r\n\r\n"):
        chunk = await asyncio.wait_for(reader.read(65536), 5)
        assert chunk, "relay closed the connection mid-response"
        body += chunk
    return head, body


def dechunk(body: bytes) -> list[bytes]:
    out, rest = [], body
    while True:
        size, _, rest = rest.partition(b"\r\n")
        n = int(size, 16)
        if n == 0:
            return out
        out.append(rest[:n])
        rest = rest[n + 2:]


@pytest.fixture
async def relay() -> AsyncIterator[Relay]:
    r = Relay(keepalive=60, claim_timeout=5)
    await r.start()
    yield r
    await r.close()


async def test_streams_chunks_and_reuses_the_connection(relay: Relay) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", relay.port)
    for n in range(3):  # three streams over one connection, as mitmproxy sends a client's requests
        src = Source(b"data: 1\n\n", b"data: 2\n\n")
        path = relay.register(200, {"content-type": "text/event-stream", "x-mapped-model": "m"}, src())
        writer.write(f"GET {path} HTTP/1.1\r\nhost: relay\r\n\r\n".encode())
        head, body = await read_response(reader)
        assert head.startswith(b"HTTP/1.1 200 OK\r\n") and b"x-mapped-model: m" in head
        assert b"connection: close" not in head.lower()
        assert dechunk(body) == [b"data: 1\n\n", b"data: 2\n\n"], n
        assert src.closed.is_set()
    writer.close()


async def test_unknown_or_reused_tokens_are_404_and_the_connection_survives(relay: Relay) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", relay.port)
    path = relay.register(200, {}, Source(b"x")())
    for target in ("/__gateway_relay__/guess", path, path):  # a token works once
        writer.write(f"GET {target} HTTP/1.1\r\n\r\n".encode())
        head, body = await read_response(reader)
        status = head.split(b" ")[1]
        assert status == (b"200" if target == path and body else b"404")
    writer.close()


async def test_keepalive_comments_fill_upstream_silence() -> None:
    relay = Relay(keepalive=0.1)
    await relay.start()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", relay.port)
        path = relay.register(200, {}, Source(b"data: late\n\n", pause=0.45)())
        writer.write(f"GET {path} HTTP/1.1\r\n\r\n".encode())
        _, body = await read_response(reader)
        chunks = dechunk(body)
        assert chunks[-1] == b"data: late\n\n"
        assert chunks.count(b": keep-alive\n\n") >= 2
        writer.close()
    finally:
        await relay.close()


async def test_a_stream_brings_its_own_keepalive_bytes() -> None:
    """Anthropic's stream pings with its own event (`event: ping`) rather than a comment."""
    ping = b'event: ping\ndata: {"type": "ping"}\n\n'
    relay = Relay(keepalive=0.1)
    await relay.start()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", relay.port)
        path = relay.register(200, {}, Source(b"event: x\ndata: {}\n\n", pause=0.45)(), ping)
        writer.write(f"GET {path} HTTP/1.1\r\n\r\n".encode())
        _, body = await read_response(reader)
        chunks = dechunk(body)
        assert chunks.count(ping) >= 2 and b": keep-alive\n\n" not in chunks
        writer.close()
    finally:
        await relay.close()


async def test_client_leaving_mid_stream_closes_the_upstream(relay: Relay) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", relay.port)
    src = Source(b"data: first\n\n", hang=True)
    writer.write(f"GET {relay.register(200, {}, src())} HTTP/1.1\r\n\r\n".encode())
    await asyncio.wait_for(reader.readuntil(b"data: first\n\n"), 5)
    writer.close()
    await asyncio.wait_for(src.closed.wait(), 2)  # promptly, not after the hour-long silence


async def test_unclaimed_or_discarded_registrations_close_their_upstream() -> None:
    relay = Relay(claim_timeout=0.2)
    await relay.start()
    try:
        expired, discarded = Source(b"x"), Source(b"y")
        # an async generator only runs its `finally` once started: start both as the engine does
        gen_a, gen_b = expired(), discarded()
        await gen_a.__anext__()
        await gen_b.__anext__()
        relay.register(200, {}, gen_a)
        relay.discard(relay.register(200, {}, gen_b))
        await asyncio.wait_for(discarded.closed.wait(), 1)
        await asyncio.wait_for(expired.closed.wait(), 2)
        assert relay.active == 0
    finally:
        await relay.close()
