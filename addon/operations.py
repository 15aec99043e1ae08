"""Operations other than a completion (Gemini-native calls, token counts, embeddings) through the
account pool: the engine's side of `frontends.base.PoolCalls`.

`run(client_model, op, story, capability=)` does for any operation what the completion path does
(Engine.run: the model checked and mapped, accounts with the capability picked by the retry policy,
the story filled); `route_for` / `operate` dispatch the front ends' operation routes.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

from .frontends.base import Answer, OpRoute, RouteCall
from .protocol import canonical as c
from .protocol import limits
from .protocol.errors import GatewayError

if TYPE_CHECKING:
    from .engine import Engine, Incoming

T = TypeVar("T")

class EnginePoolCalls:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    async def run(self, client_model: str, op: Callable[[Any, Any, str], Awaitable[T]], story: Any, *,
                  capability: str = "chat") -> T:
        return await self.engine.run(client_model, op, story, capability=capability)

    # ---- the engine's dispatch of operation routes ------------------------------------------
    def route_for(self, req: Incoming, path: str, *, listing: bool) -> tuple[OpRoute, re.Match[str]] | None:
        """The operation route `path` belongs to (a 405 if only its method is wrong); with `listing`
        (GET /v1/models[/{id}]) a surface may claim the request for its own listing shape."""
        allowed = []
        for route in self.engine.op_routes:
            m = route.pattern.fullmatch(path)
            if m is None:
                continue
            if req.method == route.method:
                return route, m
            allowed.append(route.method)
        if allowed:
            raise GatewayError(405, f"Method {req.method} is not allowed on {req.path}; use "
                                    f"{' or '.join(allowed)}.", code="method_not_allowed")
        if listing and req.method == "GET":
            for surface in self.engine.surfaces:  # google-genai lists at /v1/models: Google's shape for Google
                found = surface.listing_for(req.headers, req.query, path)
                if found is not None:
                    return found
        return None

    async def operate(self, route: OpRoute, match: re.Match[str], req: Incoming, story: Any) -> Answer:
        limit = self.engine.settings.max_body_size
        if len(req.body) > limit:
            raise limits.too_large(limit)
        body = limits.parse_json(req.body) if req.body else None
        return await route.handler(RouteCall(req, match, body, story, self))

    def record_usage(self, acc: Any, model: str, usage: c.Usage | None, story: Any) -> None:
        if usage is not None:
            self.engine.pool.record_usage(acc, model, usage)
            story.tokens_in, story.tokens_out = usage.input_tokens, usage.output_tokens

    def model_ids(self) -> list[str]:
        return self.engine._model_ids()

    def model_exists(self, name: str) -> bool:
        return self.engine._model_exists(name)

    def resolve(self, name: str) -> str:
        return self.engine.mappings.resolve(name)

    def redact(self, text: str) -> str:
        return self.engine.redact(text)
