"""OpenAI-compatible upstream provider: any server speaking `{base_url}/chat/completions`
(vLLM, Ollama, LM Studio, OpenAI itself)."""

from __future__ import annotations

from typing import Any

from ..pool.accounts_file import OpenAIAccount
from ..backends import decoding, well_formed
from ..backends import embeddings as emb
from ..backends import openai as tr
from ..protocol import canonical as c
from ..protocol import jsonfast
from ..protocol.batching import decode
from ..protocol.errors import UpstreamError
from .http import HttpClient, UpstreamResponse
from .streaming import StreamBatches, decode_stream


class OpenAIProvider:
    name = "openai"

    def __init__(self, http: HttpClient) -> None:
        self.http = http

    @staticmethod
    def _auth(acc: OpenAIAccount) -> dict[str, str]:
        return acc.auth_headers()

    async def probe(self, acc: OpenAIAccount) -> UpstreamError | None:
        """The key alone, without the client's request: list the models."""
        resp = await self.http.get(f"{acc.base_url}/models", self._auth(acc))
        body = await resp.read()
        return None if resp.status == 200 else tr.error_from(resp.status, body, resp.headers)

    async def list_models(self, acc: OpenAIAccount) -> set[str]:
        """The ids of `GET {base_url}/models` (OpenAI's list shape: {"data": [{"id"}, ...]})."""
        resp = await self.http.get(f"{acc.base_url}/models", self._auth(acc))
        body = await resp.read()
        if resp.status != 200:
            raise tr.error_from(resp.status, body, resp.headers)
        data = jsonfast.loads(body)
        rows = data.get("data") if isinstance(data, dict) else None
        return {str(m["id"]) for m in rows or [] if isinstance(m, dict) and isinstance(m.get("id"), str)}

    async def _send(self, acc: OpenAIAccount, body: dict[str, Any]) -> UpstreamResponse:
        headers = {"content-type": "application/json", **self._auth(acc)}
        resp = await self.http.post(f"{acc.base_url}/chat/completions",
                                    jsonfast.dumps(body), headers)
        if resp.status != 200:
            raise tr.error_from(resp.status, await resp.read(), resp.headers)
        return resp

    @staticmethod
    def _body(acc: OpenAIAccount, req: c.ChatRequest, model: str, stream: bool) -> dict[str, Any]:
        limit = tr.limit_field(model, acc.base_url, acc.max_tokens_field)
        return tr.build_request(req, model, stream, limit=limit)

    async def count_tokens(self, acc: OpenAIAccount, req: c.ChatRequest, model: str) -> int:
        """OpenAI-compatible servers count no tokens before a call: an estimate (see estimate_tokens)."""
        return tr.estimate_tokens(req, model)

    async def complete(self, acc: OpenAIAccount, req: c.ChatRequest, model: str) -> c.Completion:
        resp = await self._send(acc, self._body(acc, req, model, stream=False))
        body = await resp.read()
        with decoding():
            return well_formed(tr.completion_from_body(body))

    def describe(self, acc: OpenAIAccount) -> dict[str, Any]:
        return {}

    async def stream(self, acc: OpenAIAccount, req: c.ChatRequest, model: str) -> StreamBatches:
        resp = await self._send(acc, self._body(acc, req, model, stream=True))
        return decode_stream(resp, tr.OpenAIStreamDecoder())

    async def embed(self, acc: OpenAIAccount, req: c.EmbedRequest, model: str) -> c.Embeddings:
        """`POST {base_url}/embeddings`, the request passed through (as floats: the front end
        encodes base64 itself)."""
        headers = {"content-type": "application/json", **self._auth(acc)}
        resp = await self.http.post(f"{acc.base_url}/embeddings", jsonfast.dumps(emb.openai_body(req, model)), headers)
        raw = await resp.read()
        if resp.status != 200:
            raise tr.error_from(resp.status, raw, resp.headers)
        return await decode(emb.openai_embeddings_from, raw, len(req.inputs))
