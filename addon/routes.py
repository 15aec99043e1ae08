"""What the engine and the front ends share about one exchange, without mitmproxy.

`Incoming` is a request as the engine sees it and `Outcome` its answer (a whole body, or an
async iterator of SSE bytes). A `Route` is one line of the engine's route table: a method, a
full-match regex on the path, a bounded label for logs and metrics, and either no handler (a
completion: the owning front end's parse → the pool → render or stream encoder) or a handler
for any other operation, given a `RouteCall`. `PoolCalls.run` is how a handler (or the engine's
own completion path) calls an upstream: model mapping, account choice, retries, usage.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from .ops.story import Story
from .protocol import jsonfast
from .protocol.errors import GatewayError

if TYPE_CHECKING:
    from .config.mapping import Target
    from .pool.accounts_file import Account
    from .protocol import canonical as c
    from .upstream import Provider

T = TypeVar("T")

JSON_HEADERS = {"content-type": "application/json"}
SSE_HEADERS = {"content-type": "text/event-stream; charset=utf-8", "cache-control": "no-cache",
               "x-accel-buffering": "no"}


@dataclass(slots=True)
class Incoming:
    method: str
    path: str  # without the query string
    headers: Mapping[str, str]  # case-insensitive mapping (mitmproxy's Headers qualifies)
    body: bytes = b""
    peer: str | None = None
    query: str = ""  # the raw query string, without "?"
    host: str | None = None  # the Host header when the client called the listener itself (reverse mode)
    admitted: bool = False  # admit() already passed on these headers (the adapter does it before the body)
    client: str | None = None  # the clients file's name for the key admit() accepted (None: operator / no file)


@dataclass(slots=True)
class Outcome:
    status: int
    headers: dict[str, str]
    body: bytes = b""
    stream: AsyncIterator[bytes] | None = None
    story: Story = field(default_factory=Story)
    keepalive: bytes | None = None  # a stream's bytes for upstream silences (None: an SSE comment)


def json_outcome(status: int, obj: Any, headers: dict[str, str] | None = None) -> Outcome:
    return Outcome(status, {**JSON_HEADERS, **(headers or {})}, jsonfast.dumps(obj))


def openai_error(err: GatewayError) -> Outcome:
    """OpenAI's error shape: the engine's own routes, and the OpenAI surfaces."""
    return Outcome(err.status, {**JSON_HEADERS, **err.headers}, err.body())


class PoolCalls(Protocol):
    """What a route's handler may ask of the gateway: calls through the account pool, and what the
    model mapping knows. The engine's implementation is addon/operations.py."""

    async def run(self, client_model: str, op: Callable[[Provider, Account, str], Awaitable[T]], story: Story, *,
                  capability: str = "chat", sticky_key: str | None = None) -> T:
        """`op(provider, account, upstream_model)` for the client's model: checked (exists, the
        client may use it) and mapped (exact > wildcard > default), on accounts picked by the retry
        policy (rotation, cooldowns), the story filled (mapped model, account, attempts).
        `capability` names the provider method the operation needs ("embed", "native", ...): only
        accounts whose provider has it are picked; none among those serving the model -> a 400
        naming their providers. Usage of a result with a canonical `usage` is recorded."""
        ...

    def record_usage(self, acc: Account | None, model: str, usage: c.Usage | None, story: Story | None) -> None:
        """Count `usage` on the account (and, with a story, tell it the tokens)."""

    def target(self, client_model: str) -> Target:
        """The mapping's target for a client model (its upstream name and per-target settings)."""

    def resolve(self, client_model: str) -> str: ...

    def model_ids(self) -> list[str]: ...  # the names /v1/models lists

    def listed_for(self, client: str | None) -> list[str]: ...  # ... to this client (its allow-list)

    def model_exists(self, name: str) -> bool: ...

    def redact(self, text: str) -> str: ...  # secrets out of text bound for a client or the log

    def until_shutdown(self, batches: AsyncIterator[Any]) -> AsyncIterator[Any]:
        """An upstream stream that, when the gateway stops while it is open, raises ShuttingDown
        (an UpstreamError) for the surface to end its client's stream with its own error event."""


@dataclass(slots=True)
class RouteCall:
    """What a route's handler gets: the request, its path match, its parsed JSON body (None
    without a body), the request's story, and the pool to call upstreams through."""

    incoming: Incoming
    match: re.Match[str]
    body: Any
    story: Story
    pool: PoolCalls


Handler = Callable[[RouteCall], Awaitable[Outcome]]


@dataclass(frozen=True, slots=True)
class Route:
    method: str
    pattern: str  # full match on the path (no query string, no trailing slash)
    label: str  # bounded: the route in logs and metrics
    handler: Handler | None = None  # None: a completion through the owning front end


class RouteTable:
    """Every route, in order; the first whose pattern and method match serves the request."""

    def __init__(self, routes: Iterable[tuple[Route, Any]]) -> None:
        """`routes`: (route, its owner: the front end serving its completions, or None)."""
        self._routes = [(route, re.compile(route.pattern), owner) for route, owner in routes]

    def resolve(self, method: str, path: str, shown: str) -> tuple[Route, re.Match[str], Any]:
        """The route for `method` on `path`, its match and owner; GatewayError 405 or 404 otherwise
        (`shown`: the path as the client sent it, for the message)."""
        allowed: list[str] = []
        for route, pattern, owner in self._routes:
            m = pattern.fullmatch(path)
            if m is None:
                continue
            if route.method == method:
                return route, m, owner
            allowed.append(route.method)
        if allowed:
            raise GatewayError(405, f"Method {method} is not allowed on {shown}; use "
                                    f"{' or '.join(dict.fromkeys(allowed))}.", code="method_not_allowed")
        raise GatewayError(404, f"Unknown request URL: {method} {shown}. The base URL of an OpenAI client "
                                "must end in /v1 (e.g. http://127.0.0.1:8045/v1).", code="unknown_url")

    def label(self, method: str, path: str) -> str:
        """The label of the route serving `method` on `path` (else of the first whose path matches)."""
        other = None
        for route, pattern, _ in self._routes:
            if pattern.fullmatch(path):
                if route.method == method:
                    return route.label
                other = other or route.label
        return other or "unknown"
