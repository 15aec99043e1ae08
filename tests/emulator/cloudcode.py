"""Google Cloud Code (``/v1internal``): generate with an OAuth access token, and loadCodeAssist."""

from __future__ import annotations

from aiohttp import web

from .gemini import gemini_model_ok
from .gemini_request import GeminiInvalid, validate_generate_request
from .gemini_response import respond_generate
from .wire import (
    GOOGLE_MESSAGES,
    Call,
    bearer,
    begin,
    error_response,
    google_error_body,
    read_body,
)


def _cloudcode_auth(call: Call) -> web.Response | None:
    if call.state.token_valid(call.key):
        return None
    # Auth failures come from Google's front end, so they are a plain object, not an array.
    return web.json_response(google_error_body(401, GOOGLE_MESSAGES[401]), status=401)


async def cloudcode_generate(request: web.Request) -> web.StreamResponse:
    stream = request.path.endswith(":streamGenerateContent")
    body, parsed = await read_body(request)
    token = bearer(request)
    model = body.get("model") if isinstance(body, dict) else None
    call, early = await begin(request, "cloudcode", body, token, model, auth=_cloudcode_auth)
    if early is not None:
        return early
    if not parsed or not isinstance(body, dict):
        return error_response("cloudcode", 400, "Invalid JSON payload received. Unexpected token.")
    if not isinstance(model, str) or not model:
        return error_response("cloudcode", 400, "* CaGenerateContentRequest.model: model is required\n")
    if not body.get("project"):
        return error_response("cloudcode", 400, "* CaGenerateContentRequest.project: project is required\n")
    if not gemini_model_ok(model):
        return error_response("cloudcode", 404, f"Requested entity was not found: model {model}.")
    try:
        req = validate_generate_request(body.get("request"), model, call.state)
    except GeminiInvalid as exc:
        return error_response("cloudcode", 400, exc.message, details=exc.details)
    return await respond_generate(call, req, model, stream, request.query.get("alt") == "sse", wrap=True)


async def cloudcode_load(request: web.Request) -> web.StreamResponse:
    body, _ = await read_body(request)
    token = bearer(request)
    _, early = await begin(request, "cloudcode", body, token, None, auth=_cloudcode_auth)
    if early is not None:
        return early
    return web.json_response({"cloudaicompanionProject": "emulated-project",
                              "currentTier": {"id": "free-tier", "name": "Emulated"}})
