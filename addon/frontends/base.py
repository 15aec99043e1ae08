"""What a front end is: the interface every OpenAI surface implements."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Protocol

from ..protocol import canonical as c
from ..protocol.errors import GatewayError, UnusableAnswer, UpstreamError

log = logging.getLogger(__name__)

# (method, path regex, handler(match) -> (status, JSON object)); the handler may raise GatewayError.
Route = tuple[str, str, Callable[[re.Match[str]], Awaitable[tuple[int, Any]]]]


@dataclass(slots=True)
class Answer:
    """What an operation route answers: a whole body, or a stream whose upstream already said 200."""

    status: int
    headers: dict[str, str]
    body: bytes = b""
    stream: AsyncIterator[bytes] | None = None


class PoolCalls(Protocol):
    """The engine's side of an operation: one call through the account pool (model mapping, retry
    policy, rotation, cooldowns), filling the story. `capability` names the provider method the
    operation needs (e.g. "native"); accounts whose provider lacks all of them are not picked."""

    async def run(self, client_model: str, op: Callable[[Any, Any, str], Awaitable[Any]], story: Any, *,
                  capability: str = "chat") -> Any: ...

    def record_usage(self, acc: Any, model: str, usage: c.Usage | None, story: Any) -> None: ...

    def model_ids(self) -> list[str]: ...

    def model_exists(self, name: str) -> bool: ...

    def resolve(self, name: str) -> str: ...

    def redact(self, text: str) -> str: ...


@dataclass(slots=True)
class RouteCall:
    """One request on an operation route: what a handler gets (a front end never imports the engine)."""

    incoming: Any  # the engine's Incoming: method, path, headers, query
    match: re.Match[str]
    body: Any  # the parsed JSON body (None when there was none)
    story: Any
    pool: PoolCalls


@dataclass(slots=True)
class OpRoute:
    """A route served by `handler` rather than as a completion; `label` is its bounded name in logs
    and metrics; `pattern` must match the whole path (no query)."""

    method: str
    pattern: re.Pattern[str]
    label: str
    handler: Callable[[RouteCall], Awaitable[Answer]]


class StreamEncoder(Protocol):
    """Canonical stream events -> the bytes of one client-facing SSE stream."""

    def start(self) -> bytes: ...
    def feed(self, ev: c.StreamEvent) -> bytes: ...
    def close(self) -> bytes: ...
    def fail(self, err: GatewayError) -> bytes: ...


class Frontend:
    """One OpenAI API surface. `ctx` is whatever parse() learned that rendering needs."""

    path: str | None  # e.g. "/v1/chat/completions"; None: a surface of operation routes only
    # Whether answers carry the upstream's reasoning signature back to the client (Responses
    # reasoning items do; Chat Completions has no place for it), so the engine keeps it.
    returns_reasoning_state = False

    async def parse(self, body: Any) -> tuple[c.ChatRequest, Any]:
        raise NotImplementedError

    def render(self, completion: c.Completion, req: c.ChatRequest, ctx: Any) -> dict[str, Any]:
        raise NotImplementedError

    def encoder(self, req: c.ChatRequest, ctx: Any) -> StreamEncoder:
        raise NotImplementedError

    async def settle(self, ctx: Any) -> None:
        """Called once the whole answer was rendered or encoded, before its last bytes go out:
        keep what must outlive the request (the Responses store)."""

    def routes(self) -> list[Route]:
        return []

    def op_routes(self) -> list[OpRoute]:
        """Routes answered by a handler of their own (operations other than a completion)."""
        return []

    def owns(self, path: str) -> bool:
        """Whether errors on `path` (even refusals on the headers alone) are this surface's to shape."""
        return False

    def error(self, err: GatewayError) -> tuple[int, dict[str, str], bytes]:
        """`err` in this surface's error shape: (status, headers, body)."""
        return err.status, {"content-type": "application/json", **err.headers}, err.body()

    def accepts_query_key(self, path: str) -> bool:
        """Whether a client may present the gateway's key as `?key=` on `path` (Google's API does)."""
        return False

    def listing_for(self, headers: Any, query: str, path: str) -> tuple[OpRoute, re.Match[str]] | None:
        """A route of this surface that answers GET /v1/models[/{id}] for this client instead of
        OpenAI's listing (Google's SDK lists at /v1/models too), with its match; None: not this one."""
        return None


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
