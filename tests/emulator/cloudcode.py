"""Google Cloud Code (``/v1internal``): generate with an OAuth access token, and the setup calls
gemini-cli makes (google-gemini/gemini-cli packages/core/src/code_assist/setup.ts, server.ts,
types.ts, converter.ts): ``loadCodeAssist``, ``onboardUser`` and polling its long-running operation
with ``GET /v1internal/{operation name}``.

The envelope of a generate call is gemini-cli's CAGenerateContentRequest: {"model", "project",
"user_prompt_id", "request": {...GenerateContentRequest, "session_id"}}; other top-level fields are
refused like any unknown proto field.

Who the caller is comes from its access token (the e-mail it signed in with, or the refresh token it
was refreshed from); the prefix picks what Google answers:
  ``individual``  an individual Google account since 2026-06-18: loadCodeAssist lists the
                  UNSUPPORTED_CLIENT reason ("This client is no longer supported for Gemini Code
                  Assist for individuals...", gemini-cli issues #28229, #28846, #29279), generate 403s
  ``validate``    loadCodeAssist asks for VALIDATION_REQUIRED with a validationUrl; generate 403s with
                  ErrorInfo VALIDATION_REQUIRED and a google.rpc.Help link (gemini-cli googleQuotaErrors.ts)
  ``nolicense``   setup works, generate 403s with SUBSCRIPTION_REQUIRED, "...lack a Gemini Code Assist
                  license..." (gemini-cli issue #19472)
  ``onboard``     not onboarded yet: no currentTier; onboardUser's operation is not done at first and
                  done at the first poll; generate then needs exactly the project the operation named
  ``noproject``   a current tier but no project (the user must configure one)
  anything else   a licensed Standard user whose project is ``emulated-project`` (or the one it names)
"""

from __future__ import annotations

import hashlib
import secrets
from typing import Any

from aiohttp import web

from .gemini import gemini_model_ok
from .gemini_request import GeminiInvalid, validate_generate_request
from .gemini_response import request_words, respond_generate
from .state import EmulatorState
from .wire import GOOGLE_MESSAGES, Call, bearer, begin, error_response, google_error_body, read_body

STANDARD = {"id": "standard-tier", "name": "Gemini Code Assist Standard", "isDefault": True,
            "userDefinedCloudaicompanionProject": True}
DEFAULT_PROJECT = "emulated-project"
UNSUPPORTED = ("This client is no longer supported for Gemini Code Assist for individuals. To continue using "
               "Gemini, please migrate to the Antigravity suite of products: https://antigravity.google")
VALIDATION_URL = "https://accounts.google.com/signin/continue?sarp=1&scc=1&continue=emulated-validation"
NO_LICENCE = ("You are currently configured to use a Google Cloud Project but lack a Gemini Code Assist license. "
              "Please contact your administrator to request a license. (#3501)")
# Code Assist knows some models by another name: gemini-cli renames them for Code Assist only
# (packages/core/src/config/models.ts, CCPA_AI_MODEL_MAPPINGS: gemini-3.5-flash is sent as
# gemini-3-flash), so the public name is not one Code Assist serves.
CODE_ASSIST_SPELLS_OTHERWISE = frozenset({"gemini-3.5-flash"})
ENVELOPE_KEYS = frozenset({"model", "project", "user_prompt_id", "request"})
KINDS = ("individual", "validate", "nolicense", "onboard", "noproject")


def _kind(user: str) -> str:
    return next((k for k in KINDS if user.startswith(k)), "licensed")


def _cloudcode_auth(call: Call) -> web.Response | None:
    if call.state.token_valid(call.key):
        return None
    # Auth failures come from Google's front end, so they are a plain object, not an array.
    return web.json_response(google_error_body(401, GOOGLE_MESSAGES[401]), status=401)


def _refusal(user: str, state: EmulatorState, project: str) -> web.Response | None:
    """What generate answers an account that setup would not have let through."""
    kind = _kind(user)
    if kind == "individual":
        return error_response("cloudcode", 403, UNSUPPORTED)
    if kind == "validate":
        return error_response("cloudcode", 403, "Verify your account to continue.", details=[
            {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "VALIDATION_REQUIRED",
             "domain": "cloudcode-pa.googleapis.com"},
            {"@type": "type.googleapis.com/google.rpc.Help",
             "links": [{"description": "Verify your account", "url": VALIDATION_URL}]}])
    if kind == "nolicense":
        return error_response("cloudcode", 403, NO_LICENCE, details=[
            {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "SUBSCRIPTION_REQUIRED",
             "domain": "cloudaicompanion.googleapis.com"}])
    if kind == "onboard" and state.onboarded.get(user) != project:
        return error_response("cloudcode", 403, f"Permission denied on resource project {project}.")
    return None


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
    unknown = sorted(set(body) - ENVELOPE_KEYS)
    if unknown:
        return error_response("cloudcode", 400, f'Invalid JSON payload received. Unknown name "{unknown[0]}": '
                                                "Cannot find field.")
    if not isinstance(model, str) or not model:
        return error_response("cloudcode", 400, "* CaGenerateContentRequest.model: model is required\n")
    if not body.get("project"):
        return error_response("cloudcode", 400, "* CaGenerateContentRequest.project: project is required\n")
    refused = _refusal(call.state.user_of(token), call.state, body["project"])
    if refused is not None:
        return refused
    if not gemini_model_ok(model) or model in CODE_ASSIST_SPELLS_OTHERWISE:
        return error_response("cloudcode", 404, f"Requested entity was not found: model {model}.")
    inner = body.get("request")
    if isinstance(inner, dict) and "session_id" in inner:
        inner = dict(inner)
        if not isinstance(inner.pop("session_id"), str):
            return error_response("cloudcode", 400, "Invalid JSON payload received. Invalid value at "
                                                    "'request.session_id' (TYPE_STRING)")
    try:
        req = validate_generate_request(inner, model, call.state, flavor="cloudcode", credential=call.credential)
    except GeminiInvalid as exc:
        return error_response("cloudcode", 400, exc.message, details=exc.details)
    return await respond_generate(call, req, model, stream, request.query.get("alt") == "sse", wrap=True)


async def cloudcode_count(request: web.Request) -> web.StreamResponse:
    """``v1internal:countTokens``: {"request": {"model": "models/<m>", "contents"}} -> {"totalTokens"}, not
    wrapped (gemini-cli's code_assist converter: toCountTokenRequest / fromCountTokenResponse)."""
    body, parsed = await read_body(request)
    token = bearer(request)
    inner = body.get("request") if isinstance(body, dict) else None
    model = inner.get("model") if isinstance(inner, dict) else None
    call, early = await begin(request, "cloudcode", body, token, model, auth=_cloudcode_auth)
    if early is not None:
        return early
    if not parsed or not isinstance(body, dict) or not isinstance(inner, dict):
        return error_response("cloudcode", 400, "Invalid JSON payload received. request is required.")
    unknown = sorted(set(body) - {"request"}) or sorted(set(inner) - {"model", "contents"})
    if unknown:
        return error_response("cloudcode", 400, f'Invalid JSON payload received. Unknown name "{unknown[0]}": '
                                                "Cannot find field.")
    if not isinstance(model, str) or not model.startswith("models/") or not gemini_model_ok(model[7:]):
        return error_response("cloudcode", 404, f"Requested entity was not found: model {model}.")
    try:
        req = validate_generate_request({"contents": inner.get("contents")}, model[7:], call.state,
                                        flavor="cloudcode")
    except GeminiInvalid as exc:
        return error_response("cloudcode", 400, exc.message, details=exc.details)
    return web.json_response({"totalTokens": request_words(req)})


async def _setup_call(request: web.Request) -> tuple[Call, Any, web.StreamResponse | None]:
    body, parsed = await read_body(request)
    call, early = await begin(request, "cloudcode", body, bearer(request), None, auth=_cloudcode_auth)
    if early is None and (not parsed or not isinstance(body, dict) or not isinstance(body.get("metadata"), dict)):
        early = error_response("cloudcode", 400, "Invalid JSON payload received. metadata is required.")
    return call, body, early


async def cloudcode_load(request: web.Request) -> web.StreamResponse:
    call, body, early = await _setup_call(request)
    if early is not None:
        return early
    user, state = call.state.user_of(call.key), call.state
    kind, named = _kind(user), body.get("cloudaicompanionProject")
    if kind == "individual":
        return web.json_response({"allowedTiers": [], "ineligibleTiers": [{
            "reasonCode": "UNSUPPORTED_CLIENT", "reasonMessage": UNSUPPORTED, "tierId": "free-tier",
            "tierName": "Gemini Code Assist for individuals"}]})
    if kind == "validate":
        return web.json_response({"allowedTiers": [STANDARD], "ineligibleTiers": [{
            "reasonCode": "VALIDATION_REQUIRED", "reasonMessage": "Verify your account to continue.",
            "tierId": "standard-tier", "tierName": STANDARD["name"], "validationUrl": VALIDATION_URL,
            "validationUrlLinkText": "Verify your account"}]})
    if kind == "onboard" and user not in state.onboarded:
        return web.json_response({"allowedTiers": [STANDARD]})
    res: dict[str, Any] = {"currentTier": STANDARD, "allowedTiers": [STANDARD]}
    project = state.onboarded.get(user) or named or (None if kind == "noproject" else DEFAULT_PROJECT)
    if project:
        res["cloudaicompanionProject"] = project
    return web.json_response(res)


async def cloudcode_onboard(request: web.Request) -> web.StreamResponse:
    call, body, early = await _setup_call(request)
    if early is not None:
        return early
    user, state = call.state.user_of(call.key), call.state
    if body.get("tierId") == "free-tier" and body.get("cloudaicompanionProject"):
        # gemini-cli setup.ts: the free tier's project is managed; naming one fails the precondition
        return error_response("cloudcode", 400, "Precondition check failed.")
    name = f"operations/onboard-{secrets.token_hex(6)}"
    kind = _kind(user)
    if kind == "onboard":
        state.operations[name] = {"user": user, "polls": 0}
        return web.json_response({"name": name, "done": False})
    project = None if kind in ("individual", "noproject") else body.get("cloudaicompanionProject") or DEFAULT_PROJECT
    return web.json_response(_finished(name, project))


def _finished(name: str, project: str | None) -> dict[str, Any]:
    response: dict[str, Any] = {"@type": "type.googleapis.com/google.internal.cloud.code.v1internal.OnboardUserResponse"}
    if project:
        response["cloudaicompanionProject"] = {"id": project, "name": project}
    return {"name": name, "done": True, "response": response}


async def cloudcode_operation(request: web.Request) -> web.StreamResponse:
    name = "operations/" + request.match_info["op"]
    call, early = await begin(request, "cloudcode", None, bearer(request), None, auth=_cloudcode_auth)
    if early is not None:
        return early
    op = call.state.operations.get(name)
    if op is None or op["user"] != call.state.user_of(call.key):
        return error_response("cloudcode", 404, f"Operation {name} not found.")
    op["polls"] += 1  # onboardUser said "not done"; the first poll finds it finished
    project = "onboarded-" + hashlib.sha256(op["user"].encode()).hexdigest()[:8]
    call.state.onboarded[op["user"]] = project
    return web.json_response(_finished(name, project))
