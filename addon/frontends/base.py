"""What a front end is: the interface every client surface implements.

A front end owns everything about its protocol: its routes (`routes`), the paths whose errors it
answers (`owns`: also header-level refusals such as 401, 403, 413, 415 on those paths), its error
shape (`error`, and `StreamEncoder.fail` once a stream has begun), parsing a request into the
canonical `ChatRequest` with a typed per-request context (`Ctx`), and rendering or streaming the
canonical answer. It never imports the engine: routes with a `handler` get a `RouteCall`, whose
`pool` calls upstreams.
"""

from __future__ import annotations

import functools
import logging
import re
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Generic, Protocol, TypeVar

from ..protocol import canonical as c
from ..protocol.errors import GatewayError, UnusableAnswer, UpstreamError
from ..routes import Incoming, Outcome, Route

log = logging.getLogger(__name__)

Ctx = TypeVar("Ctx")


class StreamEncoder(Protocol):
    """Canonical stream events -> the bytes of one client-facing SSE stream."""

    def start(self) -> bytes: ...
    def feed(self, ev: c.StreamEvent) -> bytes: ...
    def close(self) -> bytes: ...
    def fail(self, err: GatewayError) -> bytes: ...  # the protocol's own error event, after the first byte


class Surface(ABC):
    """One client API surface: its routes, the paths whose errors it answers, its error shape.
    A surface whose routes all have handlers (e.g. embeddings) is just this; one that serves
    completions through the engine is a `Frontend`."""

    name: str  # e.g. "chat", "responses": bounded, for logs

    @abstractmethod
    def routes(self) -> list[Route]:
        """All its routes: completions (handler None) and any other operation (with a handler)."""

    def owns(self, path: str) -> bool:
        """Whether errors on `path` (no trailing slash) are answered in this surface's shape; by
        default, the paths of its routes."""
        return self._own_paths.fullmatch(path) is not None

    @functools.cached_property
    def _own_paths(self) -> re.Pattern[str]:
        return re.compile("|".join(f"(?:{r.pattern})" for r in self.routes()))

    @abstractmethod
    def error(self, err: GatewayError) -> Outcome:
        """`err` as a whole answer in this surface's error shape, with err.status and err.headers."""

    def accepts_query_key(self, path: str) -> bool:
        """Whether a client may present its key as `?key=` on `path` (Google's API does)."""
        return False

    def listing_for(self, headers: Any, query: str, path: str) -> tuple[Route, re.Match[str]] | None:
        """A route of this surface that answers GET /v1/models[/{id}] for this client instead of
        OpenAI's listing (Google's SDK lists at /v1/models too), with its match; None: not this one."""
        return None


class Frontend(Surface, Generic[Ctx]):
    """A surface whose routes without a handler are completions: the engine parses the request
    with it, calls the pool, and renders or streams the answer with it. `Ctx` is what parse()
    learned that rendering needs."""

    keepalive: bytes | None = None  # what its streams send during upstream silences; None: an SSE comment

    @abstractmethod
    async def parse(self, body: Any, match: re.Match[str], incoming: Incoming) -> tuple[c.ChatRequest, Ctx]:
        """The request body (parsed JSON, None if empty), its route match and the request itself
        -> the canonical request and this surface's context. Raises GatewayError (4xx)."""

    @abstractmethod
    def render(self, completion: c.Completion, req: c.ChatRequest, ctx: Ctx) -> dict[str, Any]: ...

    @abstractmethod
    def encoder(self, req: c.ChatRequest, ctx: Ctx) -> StreamEncoder: ...

    def answer_headers(self, ctx: Ctx) -> dict[str, str]:
        """Headers of its own on every answer (Anthropic's `request-id`)."""
        return {}

    async def settle(self, ctx: Ctx) -> None:
        """Called once the whole answer was rendered or encoded, before its last bytes go out:
        keep what must outlive the request (the Responses store)."""


def _ignore(*_: Any) -> None:
    return None


async def encode_stream(batches: AsyncIterator[list[c.StreamEvent]], enc: StreamEncoder, *,
                        on_usage: Callable[[c.Usage], None] = _ignore,
                        on_failure: Callable[[str], None] = _ignore,
                        settle: Callable[[], Awaitable[None]] | None = None,
                        redact: Callable[[str], str] = str) -> AsyncIterator[bytes]:
    """Canonical event batches -> the client's SSE bytes, one write per upstream read.

    A failure after the first byte cannot change the status any more: it ends the stream with the
    protocol's own error event (chat `data: {"error": ...}`, Responses `response.failed`), never
    a silent cut. `settle` runs before the closing bytes, so a client that chains on them (e.g.
    `previous_response_id`) finds the answer stored."""
    try:
        head = enc.start()
        if head:
            yield head
        async for batch in batches:
            out = []
            for ev in batch:
                if isinstance(ev, c.UsageUpdate):
                    on_usage(ev.usage)
                out.append(enc.feed(ev))
            data = b"".join(out)
            if data:
                yield data
        tail = enc.close()
        if settle is not None:
            await settle()
        yield tail
    except UpstreamError as err:
        on_failure(redact(f"{err.status or 'conn'} {err.message}")[:120])
        log.warning("upstream stream failed mid-way: %s", redact(err.message))
        code = err.code if isinstance(err, UnusableAnswer) else "upstream_stream_error"
        yield enc.fail(GatewayError(502, redact(f"Upstream stream failed: {err.message}"), code=code))
    except Exception:  # a bug must still end the stream in the client's protocol
        on_failure("internal error")
        log.exception("stream translation failed")
        yield enc.fail(GatewayError(500, "The gateway hit an internal error; see its log.", code="internal_error"))
    finally:
        aclose = getattr(batches, "aclose", None)
        if aclose is not None:
            await aclose()
