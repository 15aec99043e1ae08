"""Google's OAuth 2.0 endpoints: consent (``/o/oauth2/v2/auth``), token (``/token``: refresh_token,
authorization_code with PKCE, and the service-account JWT bearer grant) and userinfo.

Rules and texts, from Google's documentation and the error bodies its token endpoint returns:
  * installed apps use a loopback redirect (``http://127.0.0.1:PORT/...`` or ``localhost``), with
    PKCE ``code_challenge_method=S256`` (https://developers.google.com/identity/protocols/oauth2/native-app);
    the code is exchanged with the same ``redirect_uri`` and the ``code_verifier``
    ("Missing code verifier." / "Invalid code verifier.", error ``invalid_grant``);
  * a service account posts ``grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer`` and an RS256
    JWT {iss, scope, aud = the token endpoint, iat, exp <= iat + 1 h}
    (https://developers.google.com/identity/protocols/oauth2/service-account#httprest); a bad
    signature is ``invalid_grant`` "Invalid JWT Signature.", bad times "Invalid JWT: Token must be a
    short-lived token (60 minutes) and in a reasonable timeframe. Check your iat and exp values in the
    JWT claim." (googleapis/google-cloud-python#10004, erebusnz/gapi-google-analytics-php-interface#147).

The consent page is scripted: it consents at once for the account named by ``login_hint``
(default ``user@example.com``; a hint starting with ``deny`` refuses) and redirects back with the
code. Public keys of service accounts are registered with ``POST /__control/service_accounts``.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import secrets
import time
from typing import Any
from urllib.parse import urlencode, urlsplit

from aiohttp import web

from .state import STATE
from .wire import bearer, begin, read_body

JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
SCOPE = ("https://www.googleapis.com/auth/cloud-platform https://www.googleapis.com/auth/userinfo.email "
         "https://www.googleapis.com/auth/userinfo.profile openid")
JWT_TIMEFRAME = ("Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe. "
                 "Check your iat and exp values in the JWT claim.")
LOOPBACK = ("127.0.0.1", "localhost", "::1")


def _oauth_error(error: str, description: str, status: int = 400) -> web.Response:
    return web.json_response({"error": error, "error_description": description}, status=status)


def _issue(state, user: str, *, refresh: bool, scope: str = SCOPE) -> web.Response:
    body: dict[str, Any] = {"access_token": state.issue_token(user), "expires_in": state.token_ttl,
                            "token_type": "Bearer", "scope": scope}
    if refresh:
        refresh_token = "1//emu-" + secrets.token_urlsafe(24)
        state.refresh_users[refresh_token] = user
        body["refresh_token"] = refresh_token
    return web.json_response(body)


# ---- consent --------------------------------------------------------------------------------

def _consent_error(message: str) -> web.Response:
    # Google shows an HTML error page ("Error 400: ...") and never redirects a bad request back.
    return web.Response(status=400, text=f"<html><body><h1>Access blocked: Error 400: {message}</h1></body></html>",
                        content_type="text/html")


async def oauth_authorize(request: web.Request) -> web.StreamResponse:
    q = request.query
    state = request.app[STATE]
    _, early = await begin(request, "oauth", dict(q), None, None)
    if early is not None:
        return early
    for name in ("client_id", "redirect_uri", "response_type", "scope"):
        if not q.get(name):
            return _consent_error(f"invalid_request (Required parameter is missing: {name})")
    redirect = urlsplit(q["redirect_uri"])
    if redirect.scheme != "http" or redirect.hostname not in LOOPBACK:
        return _consent_error("redirect_uri_mismatch (a desktop client redirects to a loopback address)")
    if q["response_type"] != "code":
        return _consent_error("unsupported_response_type")
    challenge, method = q.get("code_challenge"), q.get("code_challenge_method", "plain")
    if challenge and method not in ("S256", "plain"):
        return _consent_error("invalid_request (Invalid code_challenge_method)")
    user = q.get("login_hint") or "user@example.com"
    back: dict[str, str] = {"state": q["state"]} if q.get("state") else {}
    if user.startswith("deny"):
        back["error"] = "access_denied"
    else:
        code = "4/0A" + secrets.token_urlsafe(30)
        state.auth_codes[code] = {"client_id": q["client_id"], "redirect_uri": q["redirect_uri"], "user": user,
                                  "challenge": challenge, "method": method, "scope": q["scope"]}
        back.update(code=code, scope=q["scope"])
    sep = "&" if redirect.query else "?"
    raise web.HTTPFound(q["redirect_uri"] + sep + urlencode(back))


# ---- token ----------------------------------------------------------------------------------

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
    grant = form.get("grant_type")
    if grant == JWT_BEARER:
        return _jwt_bearer(request, form.get("assertion") or "")
    if grant not in ("refresh_token", "authorization_code"):
        return _oauth_error("unsupported_grant_type", f"Invalid grant_type: {grant or ''}")
    if not form.get("client_id") and not request.headers.get("Authorization", "").lower().startswith("basic "):
        return _oauth_error("invalid_request", "Could not determine client ID from request.")
    if grant == "authorization_code":
        return _authorization_code(state, form)
    if not refresh_token:
        return _oauth_error("invalid_request", "Missing required parameter: refresh_token")
    if refresh_token.startswith("revoked"):
        return _oauth_error("invalid_grant", "Token has been expired or revoked.")
    return _issue(state, state.refresh_users.get(refresh_token, refresh_token), refresh=False)


def _authorization_code(state, form: dict[str, Any]) -> web.Response:
    code = form.get("code") or ""
    issued = state.auth_codes.pop(code, None)  # a code is good once
    if issued is None:
        return _oauth_error("invalid_grant", "Malformed auth code.")
    if form.get("client_id") != issued["client_id"]:
        return _oauth_error("invalid_grant", "Unauthorized")
    if form.get("redirect_uri") != issued["redirect_uri"]:
        return _oauth_error("redirect_uri_mismatch", "Bad Request")
    if issued["challenge"]:
        verifier = form.get("code_verifier")
        if not verifier:
            return _oauth_error("invalid_grant", "Missing code verifier.")
        expect = (base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).decode().rstrip("=")
                  if issued["method"] == "S256" else verifier)
        if expect != issued["challenge"]:
            return _oauth_error("invalid_grant", "Invalid code verifier.")
    return _issue(state, issued["user"], refresh=True, scope=issued["scope"])


def _b64decode(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def _jwt_bearer(request: web.Request, assertion: str) -> web.Response:
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import padding

    state = request.app[STATE]
    try:
        head_b64, claims_b64, sig_b64 = assertion.split(".")
        header, claims = json.loads(_b64decode(head_b64)), json.loads(_b64decode(claims_b64))
        signature = _b64decode(sig_b64)
    except ValueError:
        return _oauth_error("invalid_grant", "Invalid JWT: the assertion is not a signed JWT.")  # wording not documented
    if header.get("alg") != "RS256":
        return _oauth_error("invalid_grant", "Invalid JWT: unsupported algorithm.")
    account = state.service_accounts.get(str(claims.get("iss")))
    if account is None:
        return _oauth_error("invalid_grant", "Invalid grant: account not found")
    aud = f"{request.scheme}://{request.host}{request.path}"
    if claims.get("aud") != aud:
        return _oauth_error("invalid_grant", "Invalid JWT: Failed audience check. The expected audience is "
                                             f"{aud}.")
    now = time.time()
    iat, exp = claims.get("iat"), claims.get("exp")
    if (not isinstance(iat, int) or not isinstance(exp, int) or exp - iat > 3600 or exp <= now
            or iat > now + 300):
        return _oauth_error("invalid_grant", JWT_TIMEFRAME)
    if not claims.get("scope"):
        return _oauth_error("invalid_scope", "Invalid OAuth scope or ID token audience provided.")
    key = serialization.load_pem_public_key(account["public_key"].encode())
    try:
        key.verify(signature, f"{head_b64}.{claims_b64}".encode(), padding.PKCS1v15(), hashes.SHA256())
    except InvalidSignature:
        return _oauth_error("invalid_grant", "Invalid JWT Signature.")
    if account.get("key_id") and header.get("kid") not in (None, account["key_id"]):
        return _oauth_error("invalid_grant", "Invalid JWT Signature.")
    return _issue(state, claims["iss"], refresh=False, scope=claims["scope"])


# ---- userinfo -------------------------------------------------------------------------------

async def oauth_userinfo(request: web.Request) -> web.StreamResponse:
    token = bearer(request)
    state = request.app[STATE]
    _, early = await begin(request, "oauth", None, token, None)
    if early is not None:
        return early
    if not state.token_valid(token):
        return web.json_response({"error": {"code": 401, "message": "Request is missing required authentication "
                                            "credential.", "status": "UNAUTHENTICATED"}}, status=401)
    user = state.user_of(token)
    return web.json_response({"id": hashlib.sha256(user.encode()).hexdigest()[:21], "email": user,
                              "verified_email": True})
