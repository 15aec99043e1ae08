"""The Gemini API (``/v1beta``): generateContent, streamGenerateContent, countTokens and models."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from addon.backends.gemini.lifecycle import CURRENT, is_shut_down, lifecycle, rerouted_to

from .embeddings import GEMINI_EMBEDDERS, gemini_embed, not_found
from .gemini_request import GeminiInvalid, validate_generate_request
from .gemini_response import request_words, respond_generate
from .state import EmulatorState
from .wire import Call, begin, error_response, read_body

# GET /v1beta/models: the December 2026 line-up, following Google's lifecycle as the gateway's
# table has it (addon/backends/gemini/lifecycle.py, with a source per row): the models Google lists
# as current, image models and previews still served, Google's moving aliases, and models that do
# not generate content (the gateway's startup check must skip those). Re-routed names (2.5 Pro and
# Flash, 3.5 and 3.7 Flash) are not listed but still answer -- from their successor, whose name the
# answer's modelVersion carries; shut-down names (3 Pro Preview, 2.0 Flash, ...) are 404s.
OTHER_MODELS = {
    "gemini-3.8-live": ["bidiGenerateContent"],
    "gemini-embedding-001": ["embedContent", "countTokens", "countTextTokens", "asyncBatchEmbedContent"],
    "gemini-embedding-2": ["embedContent", "countTokens", "countTextTokens", "asyncBatchEmbedContent"],
}
GEMINI_MODELS = (
    *(m for m in CURRENT if m not in OTHER_MODELS), "gemini-3.1-flash-image", "gemini-3-pro-image",
    "gemini-3-flash-preview", "gemini-flash-latest", "gemini-flash-lite-latest", "gemini-pro-latest",
)
PAGE_SIZE, MAX_PAGE_SIZE = 50, 1000  # ai.google.dev/api/models: default 50, at most 1000


def gemini_model_ok(model: str) -> bool:
    return model.startswith(("gemini-", "gemma-"))


def _gemini_model_info(name: str) -> dict[str, Any]:
    methods = OTHER_MODELS.get(name, ["generateContent", "countTokens", "createCachedContent",
                                      "batchGenerateContent"])
    return {"name": f"models/{name}", "baseModelId": name, "version": "001",
            "displayName": name.replace("-", " ").title(),
            "inputTokenLimit": 1048576, "outputTokenLimit": 65536, "supportedGenerationMethods": methods}


def _gemini_key(request: web.Request) -> str | None:
    return request.headers.get("x-goog-api-key") or request.query.get("key")


def _gemini_auth(call: Call) -> web.Response | None:
    key = call.key
    if not key:
        return error_response("gemini", 403, "Method doesn't allow unregistered callers (callers without "
                                   "established identity). Please use API Key or other form of API consumer "
                                   "identity to call this API.")
    if key.startswith("bad"):
        return error_response("gemini", 401, "API key not valid. Please pass a valid API key.",
                                   details=[{"@type": "type.googleapis.com/google.rpc.ErrorInfo",
                                             "reason": "API_KEY_INVALID", "domain": "googleapis.com"}])
    return None


async def gemini_generate(request: web.Request) -> web.StreamResponse:
    model, _, method = request.match_info["target"].partition(":")
    body, parsed = await read_body(request)
    key = _gemini_key(request)
    call, early = await begin(request, "gemini", body, key, model, auth=_gemini_auth)
    if early is not None:
        return early
    if method in ("embedContent", "batchEmbedContents"):
        if not parsed:
            return error_response("gemini", 400, "Invalid JSON payload received. Unexpected token.")
        return await gemini_embed(call, body, model, method)
    if model in GEMINI_EMBEDDERS:  # embedding models do not generate (or count: only embedContent)
        return not_found(model, method)
    if (method not in ("generateContent", "streamGenerateContent", "countTokens") or not gemini_model_ok(model)
            or is_shut_down(model)):
        # Google's text for an unknown or shut-down model ("completely turned off, and the endpoint
        # is no longer available": ai.google.dev/gemini-api/docs/deprecations), quoted e.g. in
        # wwardaww/gnome-gemini-ai#22 for the shut-down gemini-pro.
        return error_response("gemini", 404, f"models/{model} is not found for API version v1beta, or is not "
                              f"supported for {method}. Call ListModels to see the list of available models "
                              "and their supported methods.")
    if not parsed:
        return error_response("gemini", 400, "Invalid JSON payload received. Unexpected token.")
    if method == "countTokens":
        return _count_tokens(body, model, call.state)
    try:
        req = validate_generate_request(body, model, call.state, credential=call.credential)
    except GeminiInvalid as exc:
        return error_response("gemini", 400, exc.message, details=exc.details)
    stream = method == "streamGenerateContent"
    return await respond_generate(call, req, model, stream, request.query.get("alt") == "sse", wrap=False,
                                  served=rerouted_to(model))


def _count_tokens(body: Any, model: str, state: EmulatorState) -> web.Response:
    inner = body.get("generateContentRequest", body) if isinstance(body, dict) else body
    try:
        req = validate_generate_request(inner, model, state)
    except GeminiInvalid as exc:
        return error_response("gemini", 400, exc.message, details=exc.details)
    return web.json_response({"totalTokens": request_words(req)})


async def gemini_models(request: web.Request) -> web.StreamResponse:
    body, _ = await read_body(request)
    key = _gemini_key(request)
    _, early = await begin(request, "gemini", body, key, None, auth=_gemini_auth)
    if early is not None:
        return early
    try:
        size = min(int(request.query.get("pageSize") or PAGE_SIZE), MAX_PAGE_SIZE)
        start = int(request.query.get("pageToken") or 0)
    except ValueError:
        return error_response("gemini", 400, "Invalid page token or page size.")
    names = [*GEMINI_MODELS, *OTHER_MODELS]
    size = size if size > 0 else PAGE_SIZE
    page: dict[str, Any] = {"models": [_gemini_model_info(m) for m in names[start:start + size]]}
    if start + size < len(names):
        page["nextPageToken"] = str(start + size)
    return web.json_response(page)


async def gemini_model_get(request: web.Request) -> web.StreamResponse:
    name = request.match_info["target"]
    key = _gemini_key(request)
    _, early = await begin(request, "gemini", None, key, name, auth=_gemini_auth)
    if early is not None:
        return early
    row = lifecycle(name)
    if name not in GEMINI_MODELS and name not in OTHER_MODELS and (row is None or row.stage != "rerouted"):
        return error_response("gemini", 404, f"models/{name} is not found for API version v1beta.")
    return web.json_response(_gemini_model_info(name))
