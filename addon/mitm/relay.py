"""Loopback relay: how a response the engine produces gets *streamed* through mitmproxy.

mitmproxy sends a response set in the `request` hook in one piece; it streams only what it
reads from a server. So once the engine has an upstream stream open (after any retries),
the addon registers it here under a one-time token and points the flow at this listener;
mitmproxy then reads it like any server and, with `flow.response.stream = True`, forwards
each chunk as it is written. Listens on 127.0.0.1 only; tokens are unguessable, single-use
and expire if never claimed (the upstream connection is closed then).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import AsyncIterator
from http import HTTPStatus

log = logging.getLogger(__name__)

PATH_PREFIX = "/__gateway_relay__/"


KEEPALIVE = b": keep-alive\n\n"  # an SSE comment: every client's parser skips it


class _Entry:
    __slots__ = ("status", "headers", "stream", "expiry", "keepalive")

    def __init__(self, status: int, headers: dict[str, str], stream: AsyncIterator[bytes],
                 expiry: asyncio.TimerHandle | None, keepalive: bytes = KEEPALIVE) -> None:
        self.status, self.headers, self.stream, self.expiry = status, headers, stream, expiry
        self.keepalive = keepalive


class Relay:
    def __init__(self, *, keepalive: float = 15.0, claim_timeout: float = 30.0) -> None:
        self.keepalive = keepalive  # SSE comment after this much silence: keeps idle proxies from cutting us
        self.claim_timeout = claim_timeout
        self._server: asyncio.Server | None = None
        self._entries: dict[str, _Entry] = {}
        self._tasks: set[asyncio.Task] = set()
        self.pumping: set[asyncio.Task] = set()  # connections writing a stream right now
        self.port = 0

    async def start(self) -> int:
        # backlog: a burst of streams opens as many relay connections at once (the kernel caps it
        # at net.core.somaxconn); asyncio's default of 100 would drop SYNs and add 1 s retries.
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, limit=1 << 16, backlog=4096)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for token in list(self._entries):
            self._expire(token)
        for task in list(self._tasks):
            task.cancel()

    @property
    def active(self) -> int:
        return len(self._entries)

    def interrupt(self) -> None:
        """Shutting down: cancel every stream being written. The engine's stream turns that into
        its protocol's error event (the engine's `stopping` is set), which still goes out."""
        for task in list(self.pumping):
            task.cancel()

    def register(self, status: int, headers: dict[str, str], stream: AsyncIterator[bytes],
                 keepalive: bytes | None = None) -> str:
        """Returns the path mitmproxy should request from 127.0.0.1:port. `keepalive`: what to send
        during upstream silences (the protocol's own ping; an SSE comment by default)."""
        token = secrets.token_urlsafe(24)
        expiry = asyncio.get_running_loop().call_later(self.claim_timeout, self._expire, token)
        self._entries[token] = _Entry(status, headers, stream, expiry, keepalive or KEEPALIVE)
        return PATH_PREFIX + token

    def discard(self, path: str) -> None:
        """Drop a registration that will never be claimed (no-op once it has been)."""
        self._expire(path.removeprefix(PATH_PREFIX))

    def _expire(self, token: str) -> None:
        entry = self._entries.pop(token, None)
        if entry is None:
            return
        if entry.expiry is not None:
            entry.expiry.cancel()
        self._spawn(_aclose(entry.stream))

    def _spawn(self, coro) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One mitmproxy->relay connection; kept alive so a client's next stream reuses it."""
        pending = b""  # a byte read by the disconnect watcher that belongs to the next request
        try:
            while True:
                try:
                    head = pending + await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
                    return
                request_line = head.split(b"\r\n", 1)[0].decode("latin-1")
                parts = request_line.split(" ")
                path = parts[1] if len(parts) == 3 else ""
                token = path.removeprefix(PATH_PREFIX) if path.startswith(PATH_PREFIX) else ""
                entry = self._entries.pop(token, None)
                # A refused request's body streams through here to be dropped (see the adapter):
                # read to its end first, so the answer follows a complete request.
                await _drain_body(reader, head)
                if entry is None:
                    writer.write(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n")
                    await writer.drain()
                    continue
                if entry.expiry is not None:
                    entry.expiry.cancel()
                pending = await self._pump(entry, reader, writer)
                if pending is None:
                    return  # the client went away: so did this connection
        except (ConnectionError, asyncio.CancelledError):
            pass  # peer gone, or shutting down: nothing left to tell anyone
        except Exception:
            log.exception("relay connection failed")
        finally:
            writer.close()

    async def _pump(self, entry: _Entry, reader: asyncio.StreamReader,
                    writer: asyncio.StreamWriter) -> bytes | None:
        """Writes one streamed response. Returns leftover input, or None if the peer closed."""
        reason = HTTPStatus(entry.status).phrase if entry.status in HTTPStatus._value2member_map_ else "Status"
        head = [f"HTTP/1.1 {entry.status} {reason}"]
        head += [f"{k}: {v}" for k, v in entry.headers.items()]
        head += ["transfer-encoding: chunked", "", ""]
        writer.write("\r\n".join(head).encode("latin-1"))

        pump = asyncio.current_task()
        if pump is not None:
            self.pumping.add(pump)
        last_write = time.monotonic()
        leftover = b""
        peer_closed = False

        async def watch_client() -> None:
            # mitmproxy closes this connection when its client goes away: stop the upstream at once.
            nonlocal leftover, peer_closed
            try:
                leftover = await reader.read(1)
            except Exception:
                leftover = b""
            if not leftover:
                peer_closed = True
                if pump is not None and not pump.done():
                    pump.cancel()

        ping = b"%x\r\n%s\r\n" % (len(entry.keepalive), entry.keepalive)

        async def keep_alive() -> None:
            while True:
                await asyncio.sleep(self.keepalive)
                if time.monotonic() - last_write >= self.keepalive:
                    writer.write(ping)

        watcher = asyncio.ensure_future(watch_client())
        pinger = asyncio.ensure_future(keep_alive())
        try:
            async for data in entry.stream:
                if data:
                    writer.write(b"%x\r\n%s\r\n" % (len(data), data))
                    last_write = time.monotonic()
                    await writer.drain()
            writer.write(b"0\r\n\r\n")
            await writer.drain()
        except asyncio.CancelledError:
            if not peer_closed:
                raise  # shutdown, not a departed client
            log.info("client went away mid-stream; upstream request cancelled")
        finally:
            self.pumping.discard(pump)
            pinger.cancel()
            watcher.cancel()
            # the watcher's pending read must be gone before this connection reads the next request
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
            await _aclose(entry.stream)
        return None if peer_closed else leftover


async def _drain_body(reader: asyncio.StreamReader, head: bytes) -> None:
    """Read and drop a request body announced by Content-Length or chunked Transfer-Encoding."""
    fields = {}
    for line in head.split(b"\r\n")[1:]:
        name, sep, value = line.partition(b":")
        if sep:
            fields[name.strip().lower()] = value.strip().lower()
    if b"chunked" in fields.get(b"transfer-encoding", b""):
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";", 1)[0].strip() or b"0", 16)
            if size == 0:
                while (await reader.readuntil(b"\r\n")) != b"\r\n":  # trailers, then the empty line
                    pass
                return
            await _skip(reader, size + 2)
    length = fields.get(b"content-length", b"0")
    await _skip(reader, int(length) if length.isdigit() else 0)


async def _skip(reader: asyncio.StreamReader, n: int) -> None:
    while n > 0:
        data = await reader.read(min(n, 1 << 16))
        if not data:
            raise ConnectionError("request body cut short")
        n -= len(data)


async def _aclose(stream: AsyncIterator[bytes]) -> None:
    aclose = getattr(stream, "aclose", None)
    if aclose is not None:
        with contextlib.suppress(Exception):
            await aclose()
