"""The process-wide upstream HTTP client: pooled keep-alive connections over aiohttp.

aiohttp directly rather than httpx: profiling the non-streaming path showed httpx's request
building, URL merging and cookie handling costing ~0.6 ms of a ~1.4 ms request (the upstream
client's transport was where the gateway's own time went). This wrapper keeps the providers
independent of the library and maps every transport failure to UpstreamError(0).

Nothing an upstream sends is trusted to be small or prompt: redirects are not followed (the
request carries the account's key), the response headers must arrive within `headers_timeout`,
and a whole body is read up to MAX_BODY bytes (a larger one is a 502, like any broken answer).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from urllib.parse import urlencode

import aiohttp

from ..protocol.errors import UpstreamError

MAX_BODY = 64 * 1024 * 1024  # a whole (non-streamed) answer; inline images make some large


def _transport_error(exc: BaseException) -> UpstreamError:
    kind = "timed out" if isinstance(exc, asyncio.TimeoutError) else "connection failed"
    return UpstreamError(0, f"Upstream {kind} ({type(exc).__name__}).")


class UpstreamResponse:
    """An upstream response whose headers have arrived; the body is read or streamed on demand."""

    __slots__ = ("_resp", "status", "headers")

    def __init__(self, resp: aiohttp.ClientResponse) -> None:
        self._resp = resp
        self.status = resp.status
        self.headers: Mapping[str, str] = resp.headers

    async def read(self, limit: int = MAX_BODY) -> bytes:
        chunks: list[bytes] = []
        size = 0
        try:
            async for chunk in self._resp.content.iter_any():
                size += len(chunk)
                if size > limit:
                    self._resp.close()
                    raise UpstreamError(502, f"Upstream answer is larger than {limit} bytes.")
                chunks.append(chunk)
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            raise _transport_error(exc) from None
        finally:
            self._resp.release()
        return b"".join(chunks)

    async def chunks(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._resp.content.iter_any():
                yield chunk
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            # aiohttp raises a stored failure (e.g. the upstream cut the connection) *before* handing
            # out bytes it had already buffered; what the upstream sent before failing still belongs
            # to the client. Private API, so best effort.
            rest = b""
            try:
                if getattr(self._resp.content, "_buffer", None):
                    rest = self._resp.content._read_nowait(-1)
            except Exception:
                rest = b""
            if rest:
                yield rest
            raise _transport_error(exc) from None

    async def close(self) -> None:
        """Done early (client gone, error): drop the connection so the upstream stops generating."""
        if not self._resp.closed:
            if self._resp.content.at_eof():
                self._resp.release()
            else:
                self._resp.close()


DEFAULT_CONNECTIONS_PER_HOST = 2048  # every Gemini API key shares one host: this bounds concurrent streams


class HttpClient:
    """One aiohttp session for every upstream call.

    `connect_timeout` bounds only the TCP (and TLS) connect to the upstream. aiohttp's `connect`
    timeout would also count the wait for a free connection in the local pool, and a connect
    timeout is blamed on the account (it cools down): a busy gateway would cool healthy accounts.
    So only `sock_connect` is bounded, and `connections_per_host` is an option
    (`upstream_connections`) rather than aiohttp's default of 100 per host. (`headers_timeout`,
    300 s by default, bounds the whole wait for response headers, a local queue included: only a
    queue that long would be blamed; the client's own timeout or departure usually ends it first.)
    """

    def __init__(self, *, read_timeout: float = 600.0, connect_timeout: float = 10.0,
                 headers_timeout: float = 300.0, connections_per_host: int = DEFAULT_CONNECTIONS_PER_HOST) -> None:
        self._timeout = aiohttp.ClientTimeout(total=None, connect=None, sock_connect=connect_timeout,
                                              sock_read=read_timeout)
        self.headers_timeout = headers_timeout
        self.connections_per_host = connections_per_host
        self._session: aiohttp.ClientSession | None = None

    def _get(self) -> aiohttp.ClientSession:
        # Created on first use, inside the running event loop (aiohttp requires it).
        if self._session is None or self._session.closed:
            # limit=0: no total cap beyond the per-host one (0 there too means unlimited)
            connector = aiohttp.TCPConnector(limit=0, limit_per_host=self.connections_per_host,
                                             keepalive_timeout=30, ttl_dns_cache=300)
            # trust_env=False: the gateway may run with HTTPS_PROXY pointing at mitmproxy itself.
            self._session = aiohttp.ClientSession(connector=connector, timeout=self._timeout, trust_env=False,
                                                  auto_decompress=True, cookie_jar=aiohttp.DummyCookieJar())
        return self._session

    async def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> UpstreamResponse:
        try:
            async with asyncio.timeout(self.headers_timeout):
                resp = await self._get().post(url, data=body, headers=headers, allow_redirects=False)
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            raise _transport_error(exc) from None
        return UpstreamResponse(resp)

    async def get(self, url: str, headers: Mapping[str, str]) -> UpstreamResponse:
        try:
            async with asyncio.timeout(self.headers_timeout):
                resp = await self._get().get(url, headers=headers, allow_redirects=False)
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            raise _transport_error(exc) from None
        return UpstreamResponse(resp)

    async def post_form(self, url: str, form: dict[str, str]) -> tuple[int, Mapping[str, str], bytes]:
        resp = await self.post(url, urlencode(form).encode(), {"content-type": "application/x-www-form-urlencoded"})
        return resp.status, resp.headers, await resp.read()

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
