"""Gemini API provider (API keys): `{base}/v1beta/models/{model}:generateContent` and
`:streamGenerateContent?alt=sse`, key in `x-goog-api-key`; `GET {base}/v1beta/models` lists what
the key can call (the startup check of mapping targets). `GeminiFormat` is the base of every
Gemini-format provider (this one, Cloud Code, Vertex AI), which differ in `_send`, the HTTP call.

Thought signatures are this format's own: before an attempt, the history's tool calls and
reasoning get their stored signatures back (`hydrate`, from the signature store); an answer's new
signatures are stored before the client can see them (it may send the next step at once).

One attempt builds the request for the account it goes to (thought signatures are only sent to
the credential that issued them), and the answer's signatures are stamped with that credential.
If Gemini still refuses the signatures (or answers MISSING_THOUGHT_SIGNATURE), the call is
repeated once on the same account with the documented dummy signature instead of every stored one.
A stream is read ahead to its first answer text so that a malformed or empty answer still fails
the attempt (and is retried) before the client gets a byte."""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar
from urllib.parse import quote

from ..pool.accounts_file import GeminiAccount, GoogleAccount, credential_id
from ..backends import decoding, gemini, well_formed
from ..backends import embeddings as emb
from ..backends.gemini.count import count_request, total_tokens
from ..backends.gemini.models import rules_for
from ..protocol import canonical as c
from ..protocol import jsonfast
from ..protocol.batching import decode, in_batches
from ..protocol.errors import UpstreamError
from .fanout import all_or_none, merge_completions, merge_streams, singles
from . import native
from .http import HttpClient, UpstreamResponse
from ..stores.signature_store import MemorySignatureStore, SignatureStore, hydrate, in_completion, remembering
from .streaming import StreamBatches, decode_stream, read_ahead

log = logging.getLogger(__name__)
T = TypeVar("T")
A = TypeVar("A", bound=GoogleAccount)

JSON = {"content-type": "application/json"}
READ_AHEAD_SECONDS = 10.0  # how long a stream may think before it is handed over unchecked
MODELS_PAGE = 1000  # the largest page GET /v1beta/models serves (ai.google.dev/api/models)


def verb(stream: bool) -> str:
    return "streamGenerateContent?alt=sse" if stream else "generateContent"


def _fan_out(req: c.ChatRequest, model: str) -> bool:
    """n > 1 on a model that refuses candidateCount > 1: n parallel calls instead."""
    return req.n > 1 and not rules_for(model).multi_candidates


class GeminiFormat(ABC, Generic[A]):
    """A provider speaking generateContent; subclasses say how one call is sent (`_send`)."""

    name: str

    def __init__(self, http: HttpClient, signatures: SignatureStore | None = None) -> None:
        self.http = http
        self.signatures = signatures if signatures is not None else MemorySignatureStore()

    async def _post(self, url: str, headers: dict[str, str], body: bytes) -> UpstreamResponse:
        resp = await self.http.post(url, body, headers)
        if resp.status != 200:
            raise gemini.error_from(resp.status, await resp.read(), resp.headers)
        return resp

    @abstractmethod
    async def _send(self, acc: A, req: c.ChatRequest, body: dict[str, Any], model: str,
                    stream: bool) -> UpstreamResponse:
        """One call with the prepared GenerateContentRequest `body` (`req` for what a provider's
        envelope needs)."""

    @abstractmethod
    async def probe(self, acc: A) -> UpstreamError | None: ...

    # ---- Gemini-native requests (frontends/gemini.py): the client's body as sent ----------------
    unwraps = False  # whether answers come in Cloud Code's {"response": ...} envelope

    async def native(self, acc: A, body: dict[str, Any], model: str, verb: str, stream: bool) -> Any:
        """One call of Google's own API (generateContent, streamGenerateContent, countTokens, and
        for Gemini API keys embedContent / batchEmbedContents): the answer object, or for a stream
        its events once the upstream answered 200."""
        resp = await self._native_send(acc, body, model, verb, stream)
        return await (native.events(resp, unwrap=self.unwraps) if stream else native.whole(resp, unwrap=self.unwraps))

    counts_contents_only = False  # Cloud Code's countTokens takes contents and nothing else

    async def count_tokens(self, acc: A, req: c.ChatRequest, model: str) -> int:
        """The request's prompt as the upstream's countTokens counts it (backends/gemini/count.py):
        the same contents, system instruction and tools a generateContent call would send."""
        body = count_request(req, model, credential_id(acc), contents_only=self.counts_contents_only)
        return total_tokens(await self.native(acc, body, model, "countTokens", False))

    async def native_embed(self, acc: A, body: dict[str, Any], model: str, verb: str, stream: bool) -> Any:
        """Embeddings as Google's API takes them: only Gemini API keys serve these two verbs."""
        return await self.native(acc, body, model, verb, stream)

    @abstractmethod
    async def _native_send(self, acc: A, body: dict[str, Any], model: str, verb: str,
                           stream: bool) -> UpstreamResponse: ...

    def describe(self, acc: A) -> dict[str, Any]:
        return {}

    async def _signed(self, acc: A, req: c.ChatRequest, model: str,
                      call: Callable[[dict[str, Any], gemini.Reply], Awaitable[T]]) -> T:
        """`call(body, reply)` with the request built for this account's credential; once more
        with dummy signatures only if Gemini refuses the ones sent."""
        origin = credential_id(acc)
        body, reply = gemini.prepare(req, model, origin, safety=acc.safety_settings)
        try:
            return await call(body, reply)
        except UpstreamError as err:
            if not gemini.signature_refused(err):
                raise
            plain, reply = gemini.prepare(req, model, origin, safety=acc.safety_settings, trust_signatures=False)
            if plain == body:
                raise
            log.info("%s refused the thought signatures (%s); resending with dummy signatures", acc.name, err.reason)
            return await call(plain, reply)

    async def complete(self, acc: A, req: c.ChatRequest, model: str) -> c.Completion:
        await hydrate(self.signatures, req)  # the history's signatures, with their origin
        completion = await self._complete(acc, req, model)
        issued = in_completion(completion, req.returns_reasoning_state)
        if issued:
            await self.signatures.put(issued)  # before the client can send the next step
        return completion

    async def _complete(self, acc: A, req: c.ChatRequest, model: str) -> c.Completion:
        if _fan_out(req, model):
            return merge_completions(await all_or_none([self._complete(acc, one, model) for one in singles(req)]))

        async def call(body: dict[str, Any], reply: gemini.Reply) -> c.Completion:
            resp = await self._send(acc, req, body, model, stream=False)
            raw = await resp.read()
            with decoding():
                return well_formed(gemini.completion_from_body(raw, req.n, reply))

        return await self._signed(acc, req, model, call)

    async def stream(self, acc: A, req: c.ChatRequest, model: str) -> StreamBatches:
        await hydrate(self.signatures, req)
        calls = singles(req) if _fan_out(req, model) else [req]
        n = req.n if len(calls) == 1 else 1

        async def open_one(one: c.ChatRequest) -> StreamBatches:
            async def call(body: dict[str, Any], reply: gemini.Reply) -> StreamBatches:
                resp = await self._send(acc, one, body, model, stream=True)
                return await read_ahead(decode_stream(resp, gemini.GeminiStreamDecoder(n, reply)), READ_AHEAD_SECONDS)
            return await self._signed(acc, one, model, call)

        streams = await all_or_none([open_one(one) for one in calls], discard=lambda s: s.aclose())
        batches = streams[0] if len(streams) == 1 else merge_streams(streams)
        return remembering(self.signatures, batches, req.returns_reasoning_state)


class GeminiProvider(GeminiFormat[GeminiAccount]):
    name = "gemini"

    async def _send(self, acc: GeminiAccount, req: c.ChatRequest, body: dict[str, Any], model: str,
                    stream: bool) -> UpstreamResponse:
        data = jsonfast.dumps(body)
        url = f"{acc.base_url}/v1beta/models/{quote(model, safe='')}:{verb(stream)}"
        return await self._post(url, {**JSON, "x-goog-api-key": acc.api_key or ""}, data)

    async def probe(self, acc: GeminiAccount) -> UpstreamError | None:
        """The key alone, without the client's request: list one model."""
        resp = await self.http.get(f"{acc.base_url}/v1beta/models?pageSize=1", {"x-goog-api-key": acc.api_key or ""})
        body = await resp.read()
        return None if resp.status == 200 else gemini.error_from(resp.status, body, resp.headers)

    async def _native_send(self, acc: GeminiAccount, body: dict[str, Any], model: str, verb: str,
                           stream: bool) -> UpstreamResponse:
        url = f"{acc.base_url}/v1beta/models/{quote(model, safe='')}:{verb}" + ("?alt=sse" if stream else "")
        return await self._post(url, {**JSON, "x-goog-api-key": acc.api_key or ""}, jsonfast.dumps(body))

    async def embed(self, acc: GeminiAccount, req: c.EmbedRequest, model: str) -> c.Embeddings:
        """`batchEmbedContents`, at most 100 texts per call (Google refuses more)."""
        url = f"{acc.base_url}/v1beta/models/{quote(model, safe='')}:batchEmbedContents"
        headers = {**JSON, "x-goog-api-key": acc.api_key or ""}

        async def call(part: c.EmbedRequest) -> c.Embeddings:
            resp = await self._post(url, headers, jsonfast.dumps(emb.gemini_batch_body(part, model)))
            return await decode(emb.gemini_embeddings_from, await resp.read(), len(part.inputs),
                                part.dimensions is not None)

        return await in_batches(req, emb.GEMINI_BATCH, call)

    async def list_models(self, acc: GeminiAccount, page_size: int = MODELS_PAGE) -> set[str]:
        """Names (without `models/`) of the models this key may call generateContent or, for
        embedding models, embedContent on."""
        names: set[str] = set()
        token = ""
        for _ in range(100):  # a bound, in case an upstream keeps handing out page tokens
            query = f"pageSize={page_size}" + (f"&pageToken={token}" if token else "")
            resp = await self.http.get(f"{acc.base_url}/v1beta/models?{query}", {"x-goog-api-key": acc.api_key or ""})
            raw = await resp.read()
            if resp.status != 200:
                raise gemini.error_from(resp.status, raw, resp.headers)
            data = jsonfast.loads(raw)
            for m in data.get("models") or []:
                methods = m.get("supportedGenerationMethods") if isinstance(m, dict) else None
                if isinstance(methods, list) and ("generateContent" in methods or "embedContent" in methods):
                    names.add(str(m.get("name") or m.get("baseModelId") or "").removeprefix("models/"))
            token = data.get("nextPageToken") or ""
            if not token:
                break
        return names
