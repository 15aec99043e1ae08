"""Anthropic's Messages API (`POST /v1/messages`, `/v1/messages/count_tokens`) as a front end: what
Claude Code and the `anthropic` SDKs speak, served by every upstream through the canonical model.

parse.py: request -> canonical; render.py: canonical answer -> Message, errors -> Anthropic's
shape; stream.py: canonical events -> Anthropic's SSE (a state machine); ids.py: msg_/toolu_ ids.
"""

from __future__ import annotations

import re
from typing import Any

from ...protocol import canonical as c
from ...protocol import jsonfast
from ...protocol.anthropic.messages import CountTokensRequest, MessagesRequest, validate
from ...protocol.errors import GatewayError
from ...routes import Route
from ..base import Frontend
from .ids import request_id
from .parse import Context, to_canonical
from .render import error_body, error_status, render
from .stream import PING, MessagesStreamEncoder

__all__ = ["MessagesFrontend"]

_OWNED = re.compile(r"/(?:v1/)?messages(?:/.*)?")
COUNT_TOKENS_PATH = "/v1/messages/count_tokens"


class MessagesFrontend(Frontend):
    """`POST /v1/messages` (with or without `?beta=true`); `count_tokens` next to it."""

    name = "messages"
    path = "/v1/messages"

    def routes(self) -> list[Route]:  # (not in build_frontends yet)
        return [Route("POST", r"/(?:v1/)?messages", "/v1/messages")]
    # thinking blocks carry the key of Gemini's signature back (their `signature`)
    returns_reasoning_state = True
    keepalive = PING

    async def parse(self, body: Any) -> tuple[c.ChatRequest, Context]:
        return to_canonical(validate(MessagesRequest, body))

    async def parse_count(self, body: Any) -> tuple[c.ChatRequest, Context]:
        """A count_tokens request: the same fields as a message, without max_tokens."""
        return to_canonical(validate(CountTokensRequest, body))

    def render(self, completion: c.Completion, req: c.ChatRequest, ctx: Context) -> dict[str, Any]:
        return render(completion, ctx)

    def encoder(self, req: c.ChatRequest, ctx: Context) -> MessagesStreamEncoder:
        return MessagesStreamEncoder(ctx)

    def owns(self, path: str) -> bool:
        return _OWNED.fullmatch(path) is not None

    def headers(self) -> dict[str, str]:
        return {"request-id": request_id()}

    def error(self, err: GatewayError) -> tuple[int, dict[str, str], bytes]:
        rid = request_id()
        headers = {"content-type": "application/json", **err.headers, "request-id": rid}
        if err.status in (429, 503) and "retry-after" not in {k.lower() for k in headers}:
            headers["retry-after"] = "1"  # Claude Code and the SDKs wait what they are told
        return error_status(err.status), headers, error_body(err, rid)


def count_answer(tokens: int) -> bytes:
    return jsonfast.dumps({"input_tokens": tokens})
