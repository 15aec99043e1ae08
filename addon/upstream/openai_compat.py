"""OpenAI-compatible upstream provider (any server speaking /chat/completions)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from ..accounts import OpenAIAccount
from ..protocol import canonical as c
from ..translate import openai_upstream as tr
from .base import UpstreamError, event_batches, retry_after_header
from .http import HttpClient, UpstreamResponse


def openai_error(status: int, body: bytes, headers: Any) -> UpstreamError:
    message = body.decode("utf-8", "replace")[:500] or f"HTTP {status}"
    reason = None
    try:
        data = json.loads(body)
        err = data.get("error") if isinstance(data, dict) else None
        if isinstance(err, dict):
            message = str(err.get("message") or message)
            reason = err.get("code") or err.get("type")
        elif isinstance(err, str):
            message = err
    except ValueError:
        pass
    return UpstreamError(status, message, retry_after=retry_after_header(headers), reason=reason)


class OpenAIProvider:
    name = "openai"

    def __init__(self, http: HttpClient) -> None:
        self.http = http

    async def _send(self, acc: OpenAIAccount, body: dict[str, Any]) -> UpstreamResponse:
        headers = {"content-type": "application/json"}
        if acc.api_key:
            headers["authorization"] = f"Bearer {acc.api_key}"
        resp = await self.http.post(f"{acc.base_url}/chat/completions",
                                    json.dumps(body, ensure_ascii=False).encode(), headers)
        if resp.status != 200:
            raise openai_error(resp.status, await resp.read(), resp.headers)
        return resp

    async def complete(self, acc: OpenAIAccount, req: c.ChatRequest, model: str) -> c.Completion:
        resp = await self._send(acc, tr.build_request(req, model, stream=False))
        body = await resp.read()
        try:
            return tr.completion_from(json.loads(body))
        except (ValueError, AttributeError, TypeError):
            raise UpstreamError(502, "Upstream returned a body that is not a chat completion.") from None

    async def stream(self, acc: OpenAIAccount, req: c.ChatRequest, model: str) -> AsyncIterator[list[c.StreamEvent]]:
        resp = await self._send(acc, tr.build_request(req, model, stream=True))
        return self._events(resp)

    async def _events(self, resp: UpstreamResponse) -> AsyncIterator[list[c.StreamEvent]]:
        decoder = tr.OpenAIStreamDecoder()

        def decode(payload: str) -> list[c.StreamEvent]:
            if payload.lstrip().startswith('{"error"'):
                raise openai_error(502, payload.encode(), {})
            try:
                return decoder.feed(payload)
            except ValueError:
                raise UpstreamError(502, "Upstream sent an SSE event that is not JSON.") from None

        try:
            async for batch in event_batches(resp.chunks(), decode):
                yield batch
            if not decoder.done:
                raise UpstreamError(502, "Upstream stream ended before [DONE].")
            yield decoder.finish()
        finally:
            await resp.close()
