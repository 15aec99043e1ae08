"""Vertex AI provider: the Gemini wire format at
`{base}/v1/projects/{project}/locations/{location}/publishers/google/models/{model}:generateContent`
(and `:streamGenerateContent?alt=sse`), where base is `https://{location}-aiplatform.googleapis.com`
or, for location `global`, `https://aiplatform.googleapis.com`
(https://cloud.google.com/vertex-ai/generative-ai/docs/model-reference/inference), with an OAuth
access token from a service-account key or Application Default Credentials. An express-mode API
key calls `https://aiplatform.googleapis.com/v1/publishers/google/models/{model}:...` with the key
in `x-goog-api-key` and no project or location
(https://cloud.google.com/vertex-ai/generative-ai/docs/start/express-mode/vertex-ai-express-mode-api-reference).

Requests and answers are the Gemini API's (addon/backends/gemini/) with no envelope. Where
Vertex's rules differ, the shared translation stays on the common ground: tool and response
schemas go as `parametersJsonSchema` / `responseJsonSchema`, which both take (Vertex's
FunctionDeclaration and GenerationConfig have the same fields); Vertex errors are a plain
{"error": {...}} object, which the shared error parser reads.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from ..backends import embeddings as emb
from ..pool.accounts_file import VertexAccount
from ..backends.gemini import native as gn
from ..protocol import canonical as c
from ..protocol import jsonfast
from ..protocol.batching import decode, in_batches
from ..protocol.errors import UpstreamError
from .gemini import JSON, GeminiFormat, verb
from ..stores.signature_store import SignatureStore
from .http import HttpClient, UpstreamResponse
from .oauth import TokenManager


class VertexProvider(GeminiFormat[VertexAccount]):
    name = "vertex"

    def __init__(self, http: HttpClient, tokens: TokenManager, *, signatures: SignatureStore | None = None) -> None:
        super().__init__(http, signatures)
        self.tokens = tokens

    async def probe(self, acc: VertexAccount) -> UpstreamError | None:
        """OAuth: a fresh access token. An express-mode key has no client-free call known to check
        it, so the policy cannot confirm its errors: such an account cools down, never disables."""
        if acc.api_key:
            return UpstreamError(0, "an express-mode key cannot be probed")
        await self.tokens.invalidate(acc)
        try:
            await self.tokens.token(acc)
        except UpstreamError as err:
            return err
        return None

    async def _send(self, acc: VertexAccount, req: c.ChatRequest, request: dict[str, Any],
                    model: str, stream: bool) -> UpstreamResponse:
        return await self._call(acc, model, verb(stream), jsonfast.dumps(request))

    native_embed = None  # Vertex AI embeds with :predict / :embedContent of its own (the `embed` capability)

    async def _native_send(self, acc: VertexAccount, body: dict[str, Any], model: str,
                           verb_name: str, stream: bool) -> UpstreamResponse:
        if verb_name == gn.COUNT:
            body = gn.vertex_count_body(body)
        return await self._call(acc, model, verb_name + ("?alt=sse" if stream else ""), jsonfast.dumps(body))

    async def _call(self, acc: VertexAccount, model: str, method: str, body: bytes) -> UpstreamResponse:
        """POST `body` to the publisher model's `method` (e.g. `generateContent`, `predict`)."""
        name = f"publishers/google/models/{quote(model, safe='')}:{method}"
        if acc.api_key:
            return await self._post(f"{acc.base_url}/v1/{name}", {**JSON, "x-goog-api-key": acc.api_key}, body)
        url = f"{acc.base_url}/v1/projects/{quote(acc.project or '', safe='')}/locations/{acc.location}/{name}"
        headers = dict(JSON)
        if acc.quota_project:  # user credentials: bill the quota project (gcloud sets it in the ADC file)
            headers["x-goog-user-project"] = acc.quota_project
        return await self.tokens.call_with_token(
            acc, lambda token: self._post(url, {**headers, "authorization": f"Bearer {token}"}, body))

    async def embed(self, acc: VertexAccount, req: c.EmbedRequest,
                    model: str) -> c.Embeddings:
        """Vertex's text embeddings API (`:predict` with `instances`): at most 250 texts per call,
        one for gemini-embedding-001 (Vertex's documented limits); `:embedContent`, one text per
        call, for the Gemini embedding models only served there."""
        method = emb.vertex_method(model)

        async def call(part: c.EmbedRequest) -> c.Embeddings:
            shortened = part.dimensions is not None
            if method == "embedContent":
                resp = await self._call(acc, model, method, jsonfast.dumps(emb.vertex_embed_content_body(part)))
                return await decode(emb.gemini_embeddings_from, await resp.read(), 1, shortened)
            resp = await self._call(acc, model, method, jsonfast.dumps(emb.vertex_predict_body(part)))
            return await decode(emb.vertex_embeddings_from, await resp.read(), len(part.inputs), shortened)

        return await in_batches(req, emb.vertex_batch_size(model), call)
