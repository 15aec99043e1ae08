"""Gemini API provider (API keys): `{base}/v1beta/models/{model}:generateContent` and
`:streamGenerateContent?alt=sse`, key in `x-goog-api-key`."""

from __future__ import annotations

import json

from ..accounts import GeminiAccount
from ..backends import gemini
from ..protocol import canonical as c
from .http import HttpClient, UpstreamResponse
from .streaming import StreamBatches, decode_stream

JSON = {"content-type": "application/json"}


def verb(stream: bool) -> str:
    return "streamGenerateContent?alt=sse" if stream else "generateContent"


class GeminiProvider:
    name = "gemini"

    def __init__(self, http: HttpClient) -> None:
        self.http = http

    async def _post(self, url: str, headers: dict[str, str], body: bytes) -> UpstreamResponse:
        resp = await self.http.post(url, body, headers)
        if resp.status != 200:
            raise gemini.error_from(resp.status, await resp.read(), resp.headers)
        return resp

    async def _send(self, acc: GeminiAccount, req: c.ChatRequest, model: str, stream: bool) -> UpstreamResponse:
        inner = gemini.build_request(req, model, safety=acc.safety_settings)
        body = json.dumps(inner, ensure_ascii=False).encode()
        url = f"{acc.base_url}/v1beta/models/{model}:{verb(stream)}"
        return await self._post(url, {**JSON, "x-goog-api-key": acc.api_key or ""}, body)

    async def complete(self, acc: GeminiAccount, req: c.ChatRequest, model: str) -> c.Completion:
        resp = await self._send(acc, req, model, stream=False)
        return gemini.completion_from_body(await resp.read(), req.n)

    async def stream(self, acc: GeminiAccount, req: c.ChatRequest, model: str) -> StreamBatches:
        resp = await self._send(acc, req, model, stream=True)
        return decode_stream(resp, gemini.GeminiStreamDecoder(req.n))
