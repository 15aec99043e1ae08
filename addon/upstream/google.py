"""Gemini API (API keys) and Cloud Code v1internal (OAuth) providers.

Both speak the same GenerateContent payloads (translate/gemini.py); Cloud Code wraps the
request as {"model", "project", "request"} and every response as {"response": ...}.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

from ..accounts import CloudCodeAccount
from ..protocol import canonical as c
from ..state import StateStore
from ..translate import gemini
from .base import UpstreamError, event_batches, google_error
from .http import HttpClient, UpstreamResponse

log = logging.getLogger(__name__)
_JSON = {"content-type": "application/json"}


class GeminiProvider:
    name = "gemini"

    def __init__(self, http: HttpClient) -> None:
        self.http = http

    # -- what differs between Gemini API and Cloud Code --------------------------------------
    async def _target(self, acc: Any, model: str, stream: bool) -> tuple[str, dict[str, str]]:
        verb = "streamGenerateContent?alt=sse" if stream else "generateContent"
        return f"{acc.base_url}/v1beta/models/{model}:{verb}", {**_JSON, "x-goog-api-key": acc.api_key}

    def _wrap(self, acc: Any, model: str, body: dict[str, Any]) -> dict[str, Any]:
        return body

    def _unwrap(self, data: Any) -> dict[str, Any]:
        return data

    async def _rejected(self, acc: Any, err: UpstreamError, headers: dict[str, str]) -> None:
        """Hook: an auth failure may mean a stale token (`headers` are the ones that were sent)."""

    # -- the calls ---------------------------------------------------------------------------
    async def _send(self, acc: Any, req: c.ChatRequest, model: str, stream: bool) -> UpstreamResponse:
        url, headers = await self._target(acc, model, stream)
        payload = json.dumps(self._wrap(acc, model, gemini.build_request(req, model)), ensure_ascii=False)
        resp = await self.http.post(url, payload.encode(), headers)
        if resp.status != 200:
            err = google_error(resp.status, await resp.read(), resp.headers)
            if err.status in (401, 403):
                await self._rejected(acc, err, headers)
            raise err
        return resp

    async def complete(self, acc: Any, req: c.ChatRequest, model: str) -> c.Completion:
        resp = await self._send(acc, req, model, stream=False)
        body = await resp.read()
        try:
            data = self._unwrap(json.loads(body))
        except (ValueError, KeyError, TypeError):
            raise UpstreamError(502, "Upstream returned a body that is not a GenerateContentResponse.") from None
        return gemini.completion_from(data, req.n)

    async def stream(self, acc: Any, req: c.ChatRequest, model: str) -> AsyncIterator[list[c.StreamEvent]]:
        """Opens the stream (raising UpstreamError on a non-200), then returns its event batches."""
        resp = await self._send(acc, req, model, stream=True)
        return self._events(resp, req.n)

    async def _events(self, resp: UpstreamResponse, n: int) -> AsyncIterator[list[c.StreamEvent]]:
        decoder = gemini.GeminiStreamDecoder(n)

        def decode(payload: str) -> list[c.StreamEvent]:
            try:
                data = json.loads(payload)
            except ValueError:
                raise UpstreamError(502, "Upstream sent an SSE event that is not JSON.") from None
            if isinstance(data, list) or (isinstance(data, dict) and "error" in data):
                raise google_error(500, payload.encode(), {})
            return decoder.feed(self._unwrap(data))

        try:
            async for batch in event_batches(resp.chunks(), decode):
                yield batch
            if not decoder.complete:
                raise UpstreamError(502, "Upstream stream ended before the answer was complete.")
            yield decoder.finish()
        finally:
            await resp.close()


class TokenManager:
    """OAuth access tokens for Cloud Code accounts: one refresh at a time per account.

    Concurrent requests that find the token stale wait on the same lock, and the first one
    through refreshes; the rest reuse its token (no refresh storm).
    """

    REFRESH_MARGIN = 60.0  # refresh this long before expiry

    def __init__(self, http: HttpClient, store: StateStore | None = None) -> None:
        self.http = http
        # account name -> (access token, expiry, fingerprint of the refresh token that produced it)
        self._tokens: dict[str, tuple[str, float, str]] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._store = store
        if store is not None:
            saved = store.load().get("tokens")
            for name, tok in (saved.items() if isinstance(saved, dict) else ()):
                if (isinstance(tok, dict) and isinstance(tok.get("access_token"), str)
                        and isinstance(tok.get("expires_at"), (int, float)) and isinstance(tok.get("owner"), str)):
                    self._tokens[name] = (tok["access_token"], float(tok["expires_at"]), tok["owner"])
            store.add_source(self._collect)

    def _collect(self, doc: dict[str, Any]) -> None:
        doc["tokens"] = {name: {"access_token": tok, "expires_at": exp, "owner": owner}
                         for name, (tok, exp, owner) in self._tokens.items()}

    @staticmethod
    def _owner(acc: CloudCodeAccount) -> str:
        # A refresh token edited in the accounts file must not keep using the old one's access token.
        return hashlib.sha256(f"{acc.token_url}|{acc.client_id}|{acc.refresh_token}".encode()).hexdigest()[:16]

    def active_tokens(self) -> list[str]:
        """Access tokens currently held (for redaction)."""
        return [tok[0] for tok in self._tokens.values()]

    def invalidate(self, acc: CloudCodeAccount, token: str | None = None) -> None:
        """Forget the access token; with `token`, only if it is still the current one (a request that
        was refused with an old token must not throw away the one a concurrent refresh just got)."""
        tok = self._tokens.get(acc.name)
        if tok is not None and (token is None or tok[0] == token):
            del self._tokens[acc.name]

    def _fresh(self, acc: CloudCodeAccount) -> str | None:
        tok = self._tokens.get(acc.name)
        if tok and tok[1] - self.REFRESH_MARGIN > time.time() and tok[2] == self._owner(acc):
            return tok[0]
        return None

    async def token(self, acc: CloudCodeAccount) -> str:
        tok = self._fresh(acc)
        if tok:
            return tok
        lock = self._locks.setdefault(acc.name, asyncio.Lock())
        async with lock:
            tok = self._fresh(acc)  # someone refreshed while we waited
            if tok:
                return tok
            return await self._refresh(acc)

    async def _refresh(self, acc: CloudCodeAccount) -> str:
        form = {"grant_type": "refresh_token", "refresh_token": acc.refresh_token, "client_id": acc.client_id}
        if acc.client_secret:
            form["client_secret"] = acc.client_secret
        status, headers, body = await self.http.post_form(acc.token_url, form)
        if status != 200:
            err = google_error(status, body, headers)
            if err.reason == "invalid_grant" or err.status in (400, 401, 403):
                # invalid_grant, invalid_client, unauthorized_client...: the account's credentials,
                # not the client's request, are at fault: disable it (with the OAuth reason) and move on.
                err.message = f"OAuth refresh rejected ({err.reason or err.status}): {err.message}"
                err.status, err.reason = 401, err.reason or "invalid_grant"
            raise err
        try:
            data = json.loads(body)
        except ValueError:
            data = {}
        token = data.get("access_token") if isinstance(data, dict) else None
        if not token:
            raise UpstreamError(502, "OAuth token endpoint answered without an access_token.")
        self._tokens[acc.name] = (token, time.time() + float(data.get("expires_in", 3600)), self._owner(acc))
        if self._store is not None:
            self._store.mark_dirty()
        log.info("refreshed the access token of %s", acc.name)
        return token


class CloudCodeProvider(GeminiProvider):
    name = "cloudcode"

    def __init__(self, http: HttpClient, tokens: TokenManager) -> None:
        super().__init__(http)
        self.tokens = tokens

    async def _send(self, acc: CloudCodeAccount, req: c.ChatRequest, model: str, stream: bool) -> UpstreamResponse:
        try:
            return await super()._send(acc, req, model, stream)
        except UpstreamError as err:
            if err.reason != "stale_token":
                raise
        # A token we believed valid was refused (expired early, revoked): `_rejected` dropped it,
        # so this refreshes once and retries on the same account. A second refusal rotates.
        log.info("access token of %s was refused; refreshing and retrying", acc.name)
        return await super()._send(acc, req, model, stream)

    async def _target(self, acc: CloudCodeAccount, model: str, stream: bool) -> tuple[str, dict[str, str]]:
        verb = "streamGenerateContent?alt=sse" if stream else "generateContent"
        token = await self.tokens.token(acc)
        return f"{acc.base_url}/v1internal:{verb}", {**_JSON, "authorization": f"Bearer {token}"}

    def _wrap(self, acc: CloudCodeAccount, model: str, body: dict[str, Any]) -> dict[str, Any]:
        return {"model": model, "project": acc.project, "request": body}

    def _unwrap(self, data: Any) -> dict[str, Any]:
        if isinstance(data, dict) and isinstance(data.get("response"), dict):
            return data["response"]
        return data

    async def _rejected(self, acc: CloudCodeAccount, err: UpstreamError, headers: dict[str, str]) -> None:
        # A 401 with a token we thought valid: drop it so the next use refreshes, and let the
        # policy rotate rather than disable (invalid_grant at refresh is what disables).
        self.tokens.invalidate(acc, headers.get("authorization", "").removeprefix("Bearer ") or None)
        if err.status == 401:
            err.reason = "stale_token"
