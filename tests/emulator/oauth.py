"""Google's OAuth token endpoint (``/token``), refresh_token grant only."""

from __future__ import annotations

import asyncio

from aiohttp import web

from .state import STATE
from .wire import begin, read_body


async def oauth_token(request: web.Request) -> web.StreamResponse:
    body, _ = await read_body(request)
    form = body if isinstance(body, dict) else {}
    refresh_token = form.get("refresh_token")
    state = request.app[STATE]
    if refresh_token:
        state.refreshes[refresh_token] += 1  # counted on arrival so races are visible even if the reply fails
    _, early = await begin(request, "oauth", body, refresh_token, None)
    if early is not None:
        return early
    if state.refresh_delay_ms:
        await asyncio.sleep(state.refresh_delay_ms / 1000)
    if form.get("grant_type") != "refresh_token":
        return web.json_response({"error": "unsupported_grant_type",
                                  "error_description": f"Invalid grant_type: {form.get('grant_type') or ''}"},
                                 status=400)
    if not form.get("client_id") and not request.headers.get("Authorization", "").lower().startswith("basic "):
        return web.json_response({"error": "invalid_request",
                                  "error_description": "Could not determine client ID from request."}, status=400)
    if not refresh_token:
        return web.json_response({"error": "invalid_request", "error_description": "Missing required parameter: "
                                  "refresh_token"}, status=400)
    if refresh_token.startswith("revoked"):
        return web.json_response({"error": "invalid_grant",
                                  "error_description": "Token has been expired or revoked."}, status=400)
    return web.json_response({
        "access_token": state.issue_token(),
        "expires_in": state.token_ttl,
        "token_type": "Bearer",
        "scope": "https://www.googleapis.com/auth/cloud-platform https://www.googleapis.com/auth/userinfo.email "
                 "https://www.googleapis.com/auth/userinfo.profile openid",
    })
