"""Vertex AI: ``generateContent`` / ``streamGenerateContent`` / ``countTokens`` of Google's publisher models, at
``/v1/projects/{project}/locations/{location}/publishers/google/models/{model}:{method}`` with an
OAuth access token, and in express mode at ``/v1/publishers/google/models/{model}:{method}`` with an
API key (``x-goog-api-key`` or ``?key=``), as
https://cloud.google.com/vertex-ai/generative-ai/docs/start/express-mode/vertex-ai-express-mode-api-reference
describes. The body is the Gemini API's, validated with Vertex's Schema (which also knows
``additionalProperties``, ``ref``/``defs`` and type NULL); errors are a plain {"error": {...}} object.
The project endpoints refuse API keys like Vertex does ("API keys are not supported by this API...").
"""

from __future__ import annotations

from aiohttp import web

from .embeddings import vertex_embed
from .gemini import gemini_model_ok
from .gemini_request import GeminiInvalid, validate_generate_request
from .gemini_response import request_words, respond_generate
from .wire import GOOGLE_MESSAGES, Call, bearer, begin, error_response, google_error_body, read_body

METHODS = ("generateContent", "streamGenerateContent", "countTokens")
NO_API_KEYS = ("API keys are not supported by this API. Expected OAuth2 access token or other authentication "
               "credentials that assert a principal. See https://cloud.google.com/docs/authentication")


def _token_auth(call: Call) -> web.Response | None:
    if call.state.token_valid(call.key):
        return None
    if call.key is None and (call.request.headers.get("x-goog-api-key") or call.request.query.get("key")):
        return web.json_response(google_error_body(401, NO_API_KEYS), status=401)
    return web.json_response(google_error_body(401, GOOGLE_MESSAGES[401]), status=401)


def _key_auth(call: Call) -> web.Response | None:
    if not call.key:
        return web.json_response(google_error_body(401, NO_API_KEYS), status=401)
    if call.key.startswith("bad"):
        return error_response("gemini", 400, "API key not valid. Please pass a valid API key.",
                              details=[{"@type": "type.googleapis.com/google.rpc.ErrorInfo",
                                        "reason": "API_KEY_INVALID", "domain": "googleapis.com"}])
    return None


async def _generate(request: web.Request, resource: str, key: str | None, auth) -> web.StreamResponse:
    model, _, method = request.match_info["target"].partition(":")
    body, parsed = await read_body(request)
    call, early = await begin(request, "gemini", body, key, model, auth=auth)
    if early is not None:
        return early
    if method in ("predict", "embedContent"):
        if not parsed:
            return error_response("gemini", 400, "Invalid JSON payload received. Unexpected token.")
        return await vertex_embed(call, body, model, method, resource)
    if method not in METHODS or not gemini_model_ok(model):
        return error_response("gemini", 404, f"Publisher Model `{resource}{model}` was not found or your project "
                                             "does not have access to it. Please ensure you are using a valid model "
                                             "version.")
    if not parsed:
        return error_response("gemini", 400, "Invalid JSON payload received. Unexpected token.")
    try:
        req = validate_generate_request(body, model, call.state, vertex=True, credential=call.credential)
    except GeminiInvalid as exc:
        return error_response("gemini", 400, exc.message, details=exc.details)
    if method == "countTokens":
        # Vertex's CountTokensRequest has the generate fields at its top level (no
        # generateContentRequest wrapper, which the field check above refuses as an unknown name).
        return web.json_response({"totalTokens": request_words(req)})
    stream = method == "streamGenerateContent"
    return await respond_generate(call, req, model, stream, request.query.get("alt") == "sse", wrap=False)


async def vertex_generate(request: web.Request) -> web.StreamResponse:
    m = request.match_info
    resource = f"projects/{m['project']}/locations/{m['location']}/publishers/google/models/"
    return await _generate(request, resource, bearer(request), _token_auth)


async def vertex_express_generate(request: web.Request) -> web.StreamResponse:
    key = request.headers.get("x-goog-api-key") or request.query.get("key")
    return await _generate(request, "publishers/google/models/", key, _key_auth)
