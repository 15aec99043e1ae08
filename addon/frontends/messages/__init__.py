"""Anthropic's Messages API (`POST /v1/messages`, `/v1/messages/count_tokens`) as a front end: what
Claude Code and the `anthropic` SDKs speak, served by every upstream through the canonical model.

parse.py: request -> canonical; render.py: canonical answer -> Message, errors -> Anthropic's
shape; stream.py: canonical events -> Anthropic's SSE (a state machine); ids.py: msg_/toolu_ ids;
models.py: `GET /v1/models` in Anthropic's shape.
"""

from __future__ import annotations

import re
import time
from typing import Any

from ...protocol import canonical as c
from ...protocol import jsonfast
from ...protocol.anthropic.messages import CountTokensRequest, MessagesRequest, validate
from ...protocol.errors import GatewayError
from ...routes import Incoming, Outcome, Route, RouteCall
from ..base import Frontend
from . import models
from .ids import request_id
from .parse import Context, to_canonical
from .render import error_body, error_status, render
from .stream import PING, MessagesStreamEncoder

__all__ = ["MessagesFrontend"]

# Every path under /v1/messages answers in Anthropic's shape, unknown ones (batches) included
_OWNED = re.compile(r"/(?:v1/)?messages(?:/.*)?")
_JSON = {"content-type": "application/json"}


class MessagesFrontend(Frontend[Context]):
    """`POST /v1/messages` (Claude Code adds `?beta=true`), `POST /v1/messages/count_tokens`, and
    `GET /v1/models[/{id}]` in Anthropic's shape for clients that send `anthropic-version`."""

    name = "messages"
    keepalive = PING  # Anthropic's own keep-alive event during upstream silences

    def __init__(self) -> None:
        self.started = int(time.time())
        self._listings = (Route("GET", r"/(?:v1/)?models", "/v1/models", self._list_models),
                          Route("GET", r"/v1/models/(.+)", "/v1/models/{id}", self._retrieve_model))

    def routes(self) -> list[Route]:
        return [Route("POST", r"/(?:v1/)?messages", "/v1/messages"),
                Route("POST", r"/(?:v1/)?messages/count_tokens", "/v1/messages/count_tokens", self._count_tokens)]

    def owns(self, path: str) -> bool:
        return _OWNED.fullmatch(path) is not None

    def error(self, err: GatewayError) -> Outcome:
        rid = request_id()
        return Outcome(error_status(err.status), {**_JSON, **err.headers, "request-id": rid}, error_body(err, rid))

    def answer_headers(self, ctx: Context) -> dict[str, str]:
        return {"request-id": request_id()}

    def listing_for(self, headers: Any, query: str, path: str) -> tuple[Route, re.Match[str]] | None:
        if models.ANTHROPIC_VERSION_HEADER not in headers:
            return None
        for route in self._listings:
            m = re.fullmatch(route.pattern, path)
            if m is not None:
                return route, m
        return None

    async def parse(self, body: Any, match: re.Match[str] | None = None,
                    incoming: Incoming | None = None) -> tuple[c.ChatRequest, Context]:
        return to_canonical(validate(MessagesRequest, body))

    def render(self, completion: c.Completion, req: c.ChatRequest, ctx: Context) -> dict[str, Any]:
        return render(completion, ctx)

    def encoder(self, req: c.ChatRequest, ctx: Context) -> MessagesStreamEncoder:
        return MessagesStreamEncoder(ctx)

    # ---- operations ----------------------------------------------------------------------------
    async def _count_tokens(self, call: RouteCall) -> Outcome:
        """The prompt's size on the mapped model, counted by the upstream (see the README)."""
        creq, _ = to_canonical(validate(CountTokensRequest, call.body))

        async def count(provider: Any, acc: Any, model: str) -> int:
            return await provider.count_tokens(acc, creq, model)

        tokens = await call.pool.run(creq.model, count, call.story, capability="count_tokens")
        return _answer({"input_tokens": tokens})

    async def _list_models(self, call: RouteCall) -> Outcome:
        return _answer(models.model_list(call.pool.listed_for(call.incoming.client), self.started))

    async def _retrieve_model(self, call: RouteCall) -> Outcome:
        name = call.match.group(1)
        if not call.pool.model_exists(name):
            raise GatewayError(404, f"model: {name}", param="model", code="model_not_found")
        return _answer(models.model_object(name, self.started), {"x-mapped-model": call.pool.resolve(name)})


def _answer(obj: Any, headers: dict[str, str] | None = None) -> Outcome:
    return Outcome(200, {**_JSON, **(headers or {}), "request-id": request_id()}, jsonfast.dumps(obj))
