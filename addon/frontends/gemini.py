"""The Gemini-native surface: Google's own API shape (google-genai with `http_options.base_url`,
gemini-cli with GOOGLE_GEMINI_BASE_URL, ADK apps), served from the account pool.

Routes, under /v1beta (gemini-cli, older google-genai) and /v1 (google-genai 3.x's default):
    POST /{version}/models/{model}:generateContent | :streamGenerateContent (?alt=sse, else one
         JSON array) | :countTokens | :embedContent | :batchEmbedContents
    GET  /v1beta/models, /v1beta/models/{model}: what the gateway serves, in Google's list shape
(GET /v1/models is OpenAI's listing; the engine answers it in Google's shape for Google's clients.)
The colon-verb paths cannot be mistaken for OpenAI's GET /v1/models/{id}.

The body goes to the upstream as the client sent it (see backends/gemini/native.py for what the
pool changes per attempt); the answer comes back as the upstream sent it, Cloud Code's envelope
removed. Which accounts serve it: those whose provider has `native` (Gemini API keys, Vertex AI,
Cloud Code). OpenAI-compatible accounts are never picked for generation: a pool with nothing else
answers 400 naming the provider (translating Google's format to Chat Completions and back would
lose most of what a native client sends: thought signatures, safety settings, grounding, media).
Embeddings go to every account that embeds: Gemini API keys get the body as sent
(`native_embed`), Vertex AI and OpenAI-compatible accounts the texts through their `embed`.

Every error on these paths, the gateway's own refusals before the body included, is Google's
envelope {"error": {"code", "message", "status"}}, so google-genai raises ClientError/ServerError.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import parse_qs

from ..backends import gemini
from ..backends.gemini import native as gn
from ..pool.accounts_file import credential_id
from ..protocol import canonical as c
from ..protocol import jsonfast, limits
from ..protocol.errors import GatewayError, UpstreamError
from ..stores.signature_store import SignatureStore
from ..routes import Outcome, Route, RouteCall
from .base import Surface
from .gemini_wire import JSON_TYPE, ArrayFraming, SSEFraming, error_answer, framed, model_object, models_page

_VERB = r"/(?:v1beta|v1)/models/(?P<model>[^/:]+):(?P<verb>[A-Za-z]+)"
_LIST = r"/v1beta/models"
_GET = r"/v1beta/models/(?P<model>[^/:]+)"
_VERB_PATH, _LIST_PATH, _GET_PATH = re.compile(_VERB), re.compile(_LIST), re.compile(_GET)
LABEL = "/v1beta/models/{model}:{verb}"


def query_params(query: str) -> dict[str, str]:
    return {k: v[-1] for k, v in parse_qs(query, keep_blank_values=True).items()}


def is_google_client(headers: Any, query: str) -> bool:
    """A request for GET /v1/models from google-genai (which lists at /v1 by default): Google's SDKs
    send `x-goog-api-client`; a `key`, `pageSize` or `pageToken` parameter is Google's API too."""
    if headers.get("x-goog-api-client"):
        return True
    return bool(query) and any(k in ("key", "pageSize", "pageToken") for k in query_params(query))


class GeminiFrontend(Surface):
    name = "gemini"

    def __init__(self, signatures: SignatureStore) -> None:
        self.signatures = signatures

    # ---- the surface ----------------------------------------------------------------------
    def routes(self) -> list[Route]:
        return [Route("POST", _VERB, LABEL, self._call),
                Route("GET", _LIST, "/v1beta/models", self.list_models),
                Route("GET", _GET, "/v1beta/models/{model}", self.get_model)]

    def owns(self, path: str) -> bool:
        return path.startswith("/v1beta/") or path == "/v1beta" or _VERB_PATH.fullmatch(path) is not None

    def error(self, err: GatewayError) -> Outcome:
        return Outcome(*error_answer(err))

    def accepts_query_key(self, path: str) -> bool:
        """Google's API takes the key as `?key=` too (its REST docs and curl examples do), also where
        a Google client lists at GET /v1/models[/{id}]."""
        return self.owns(path) or path == "/v1/models" or path.startswith("/v1/models/")

    def listing_for(self, headers: Any, query: str, path: str) -> tuple[Route, re.Match[str]] | None:
        if not is_google_client(headers, query):
            return None
        name = path.removeprefix("/v1/models").removeprefix("/models").lstrip("/")
        if not name:
            return Route("GET", _LIST, "/v1/models", self.list_models), _LIST_PATH.fullmatch("/v1beta/models")
        m = _GET_PATH.fullmatch(f"/v1beta/models/{name}")
        return (Route("GET", _GET, "/v1/models/{id}", self.get_model), m) if m is not None else None

    # ---- models ---------------------------------------------------------------------------
    async def list_models(self, call: RouteCall) -> Outcome:
        page = models_page(call.pool.model_ids(), call.pool.resolve, query_params(call.incoming.query))
        return Outcome(200, {"content-type": JSON_TYPE}, jsonfast.dumps(page))

    async def get_model(self, call: RouteCall) -> Outcome:
        name = call.match["model"]
        try:
            limits.check_model_name(name)
            if not call.pool.model_exists(name):
                raise GatewayError(404, f"models/{name} is not found for API version v1beta, or is not served by "
                                        "this gateway (no mapping rule covers it).", code="model_not_found")
        except GatewayError as err:  # in Google's shape under /v1/models/{id} too, where OpenAI's shape owns the path
            call.story.error_code = err.code
            return self.error(err)
        return Outcome(200, {"content-type": JSON_TYPE, "x-mapped-model": limits.header_value(call.pool.resolve(name))},
                      jsonfast.dumps(model_object(name, call.pool.resolve(name))))

    # ---- operations -----------------------------------------------------------------------
    async def _call(self, call: RouteCall) -> Outcome:
        model, verb = call.match["model"], call.match["verb"]
        if verb not in gn.VERBS:
            raise GatewayError(404, f"The method '{verb[:40]}' is not served on models/{model[:100]}; this gateway "
                                    f"serves {', '.join(gn.VERBS)}.", code="unknown_url")
        limits.check_model_name(model)
        body = call.body
        if not isinstance(body, dict):
            raise GatewayError(400, "Invalid JSON payload received. Expected a JSON object as the request body.",
                               code="invalid_request")
        stream = verb == gn.STREAM
        call.story.client_model, call.story.stream = model, stream
        origins = await self._origins(body, verb)
        embedding = verb in (gn.EMBED, gn.BATCH_EMBED)

        async def op(provider: Any, acc: Any, mapped: str) -> tuple[Any, str, Any]:
            if embedding and getattr(provider, "native_embed", None) is None:
                return acc, mapped, await _embed_through(provider, acc, body, mapped, verb, model)
            return acc, mapped, await _attempt(provider, acc, body, mapped, verb, origins)

        # who answered, for which model of a fallback chain
        acc, mapped, result = await call.pool.run(model, op, call.story, capability="embed" if embedding else "native")
        if stream:
            sse = query_params(call.incoming.query).get("alt") == "sse"
            return self._stream(call, result, acc, mapped, SSEFraming() if sse else ArrayFraming())
        await self._keep(gn.answer_signatures(result), acc, mapped)
        call.pool.record_usage(acc, mapped, gn.usage(result), call.story)
        call.story.answered_by(_model_version(result))  # Google answers a deprecated name from its successor
        return Outcome(200, {"content-type": JSON_TYPE}, jsonfast.dumps(result))

    def _stream(self, call: RouteCall, batches: AsyncIterator[list[Any]], acc: Any, mapped: str,
                framing: SSEFraming | ArrayFraming) -> Outcome:
        last: list[c.Usage] = []
        served: list[str] = []

        def on_event(event: Any) -> Any:
            usage = gn.usage(event)
            if usage is not None:
                last[:] = [usage]
            version = _model_version(event)
            if version:
                served[:] = [version]
            signatures = gn.answer_signatures(event)
            return self._keep(signatures, acc, mapped) if signatures else None

        def on_failure(why: str) -> None:
            call.story.stream_error = why

        async def counted() -> AsyncIterator[bytes]:
            try:
                async for chunk in framed(call.pool.until_shutdown(batches), framing, on_event=on_event, on_failure=on_failure,
                                          redact=call.pool.redact):
                    yield chunk
            finally:
                call.pool.record_usage(acc, mapped, last[0] if last else None, call.story)
                call.story.answered_by(served[0] if served else None)

        headers = {"content-type": framing.content_type, "cache-control": "no-cache", "x-accel-buffering": "no"}
        return Outcome(200, headers, stream=counted())

    # ---- thought signatures ---------------------------------------------------------------
    async def _origins(self, body: dict[str, Any], verb: str) -> dict[str, str | None]:
        """Which credential issued each signature the request carries back (unknown: not here)."""
        sent = gn.sent_signatures(body, verb)
        if not sent:
            return {}
        keys = {gn.signature_key(s): s for s in sent}
        found = await self.signatures.get(list(keys))
        return {keys[k]: rec.origin for k, rec in found.items()}

    async def _keep(self, signatures: list[str], acc: Any, mapped: str) -> None:
        if signatures:
            origin = credential_id(acc)
            await self.signatures.put({gn.signature_key(s): c.Signature("", origin, mapped) for s in signatures})


def _model_version(answer: Any) -> str | None:
    """The upstream's name for the model that answered (Gemini's `modelVersion`), if it said."""
    version = answer.get("modelVersion") if isinstance(answer, dict) else None
    return version if isinstance(version, str) else None


async def _embed_through(provider: Any, acc: Any, body: dict[str, Any], mapped: str, verb: str,
                         client_model: str) -> dict[str, Any]:
    """Embeddings on an account whose upstream does not take Google's embed verbs (Vertex AI,
    OpenAI-compatible): through the canonical EmbedRequest and the provider's `embed`."""
    groups = gn.embed_groups(body, verb, client_model)
    parts = [(positions, await provider.embed(acc, req, mapped)) for positions, req in groups]
    return gn.embed_answer(verb, sum(len(p) for p, _ in groups), parts)


async def _attempt(provider: Any, acc: Any, body: dict[str, Any], mapped: str, verb: str,
                   origins: dict[str, str | None]) -> Any:
    """One account: the body made for its credential; once more with dummy signatures only if
    Gemini still refuses the ones sent (e.g. issued before this gateway kept their origin)."""
    origin = credential_id(acc)
    safety = getattr(acc, "safety_settings", None)
    sent = gn.for_account(body, verb, mapped, origin=origin, origins=origins, safety=safety)
    stream = verb == gn.STREAM
    try:
        return await provider.native(acc, sent, mapped, verb, stream)
    except UpstreamError as err:
        if not gemini.signature_refused(err) or not gn.carried_signatures(sent, verb):
            raise
        plain = gn.for_account(body, verb, mapped, origin=origin, safety=safety, trust_signatures=False)
        return await provider.native(acc, plain, mapped, verb, stream)
