"""Gemini API (API keys) and Cloud Code v1internal (OAuth) providers.

Both speak the same GenerateContent payloads (translate/gemini.py); Cloud Code wraps the
request as {"model", "project", "request"} and every response as {"response": ...}.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx

from ..accounts import CloudCodeAccount, GeminiAccount
from ..protocol import canonical as c
from ..state import StateStore
from ..translate import gemini
from .base import UpstreamError, google_error, read_error, sse_payloads

log = logging.getLogger(__name__)
_JSON = {"content-type": "application/json"}


def _transport_error(exc: Exception) -> UpstreamError:
    kind = "timed out" if isinstance(exc, httpx.TimeoutException) else "connection failed"
    return UpstreamError(0, f"Upstream {kind} ({type(exc).__name__}).")


class GeminiProvider:
    name = "gemini"

    def __init__(self, http: httpx.AsyncClient) -> None:
        self.http = http

    # -- what differs between Gemini API and Cloud Code --------------------------------------
    async def _target(self, acc: Any, model: str, stream: bool) -> tuple[str, dict[str, str]]:
        verb = "streamGenerateContent?alt=sse" if stream else "generateContent"
        return f"{acc.base_url}/v1beta/models/{model}:{verb}", {**_JSON, "x-goog-api-key": acc.api_key}

    def _wrap(self, acc: Any, model: str, body: dict[str, Any]) -> dict[str, Any]:
        return body

    def _unwrap(self, data: Any) -> dict[str, Any]:
        return data

    async def _rejected(self, acc: Any, err: UpstreamError) -> None:
        """Hook: an auth failure may mean a stale token."""

    # -- the calls ---------------------------------------------------------------------------
    async def _send(self, acc: Any, req: c.ChatRequest, model: str, stream: bool) -> httpx.Response:
        url, headers = await self._target(acc, model, stream)
        payload = json.dumps(self._wrap(acc, model, gemini.build_request(req, model)), ensure_ascii=False)
        request = self.http.build_request("POST", url, content=payload.encode(), headers=headers)
        try:
            resp = await self.http.send(request, stream=True)
        except httpx.HTTPError as exc:
            raise _transport_error(exc) from None
        if resp.status_code != 200:
            try:
                err = await read_error(resp, google_error)
            except httpx.HTTPError as exc:
                err = _transport_error(exc)
            finally:
                await resp.aclose()
            if err.status in (401, 403):
                await self._rejected(acc, err)
            raise err
        return resp

    async def complete(self, acc: Any, req: c.ChatRequest, model: str) -> c.Completion:
        resp = await self._send(acc, req, model, stream=False)
        try:
            body = await resp.aread()
        except httpx.HTTPError as exc:
            raise _transport_error(exc) from None
        finally:
            await resp.aclose()
        try:
            data = self._unwrap(json.loads(body))
        except (ValueError, KeyError, TypeError):
            raise UpstreamError(502, "Upstream returned a body that is not a GenerateContentResponse.") from None
        return gemini.completion_from(data, req.n)

    async def stream(self, acc: Any, req: c.ChatRequest, model: str) -> AsyncIterator[list[c.StreamEvent]]:
        """Opens the stream (raising UpstreamError on a non-200), then returns its event batches."""
        resp = await self._send(acc, req, model, stream=True)
        return self._events(resp, req.n)

    async def _events(self, resp: httpx.Response, n: int) -> AsyncIterator[list[c.StreamEvent]]:
        decoder = gemini.GeminiStreamDecoder(n)
        try:
            async for payloads in sse_payloads(resp):
                batch: list[c.StreamEvent] = []
                for payload in payloads:
                    try:
                        data = json.loads(payload)
                    except ValueError:
                        raise UpstreamError(502, "Upstream sent an SSE event that is not JSON.") from None
                    if isinstance(data, list) or (isinstance(data, dict) and "error" in data):
                        raise google_error(500, payload.encode(), httpx.Headers())
                    batch += decoder.feed(self._unwrap(data))
                if batch:
                    yield batch
            if not decoder.complete:
                raise UpstreamError(502, "Upstream stream ended before the answer was complete.")
            yield decoder.finish()
        except httpx.HTTPError as exc:
            raise _transport_error(exc) from None
        finally:
            await resp.aclose()


class TokenManager:
    """OAuth access tokens for Cloud Code accounts: one refresh at a time per account.

    Concurrent requests that find the token stale wait on the same lock, and the first one
    through refreshes; the rest reuse its token (no refresh storm).
    """

    REFRESH_MARGIN = 60.0  # refresh this long before expiry

    def __init__(self, http: httpx.AsyncClient, store: StateStore | None = None) -> None:
        self.http = http
        self._tokens: dict[str, tuple[str, float]] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._store = store
        if store is not None:
            for name, tok in store.load().get("tokens", {}).items():
                if isinstance(tok, dict) and tok.get("access_token"):
                    self._tokens[name] = (tok["access_token"], float(tok.get("expires_at", 0)))
            store.add_source(self._collect)

    def _collect(self, doc: dict[str, Any]) -> None:
        doc["tokens"] = {name: {"access_token": tok, "expires_at": exp} for name, (tok, exp) in self._tokens.items()}

    def invalidate(self, acc: CloudCodeAccount) -> None:
        self._tokens.pop(acc.name, None)

    def _fresh(self, acc: CloudCodeAccount) -> str | None:
        tok = self._tokens.get(acc.name)
        if tok and tok[1] - self.REFRESH_MARGIN > time.time():
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
        try:
            resp = await self.http.post(acc.token_url, data=form)
        except httpx.HTTPError as exc:
            raise _transport_error(exc) from None
        if resp.status_code != 200:
            err = google_error(resp.status_code, resp.content, resp.headers)
            if err.reason == "invalid_grant":
                err.status = 401  # the account, not the client, is at fault
                err.message = f"OAuth refresh rejected: {err.message}"
            raise err
        data = resp.json()
        token = data.get("access_token")
        if not token:
            raise UpstreamError(502, "OAuth token endpoint answered without an access_token.")
        self._tokens[acc.name] = (token, time.time() + float(data.get("expires_in", 3600)))
        if self._store is not None:
            self._store.mark_dirty()
        log.info("refreshed the access token of %s", acc.name)
        return token


class CloudCodeProvider(GeminiProvider):
    name = "cloudcode"

    def __init__(self, http: httpx.AsyncClient, tokens: TokenManager) -> None:
        super().__init__(http)
        self.tokens = tokens

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

    async def _rejected(self, acc: CloudCodeAccount, err: UpstreamError) -> None:
        # A 401 with a token we thought valid: drop it so the next use refreshes, and let the
        # policy rotate rather than disable (invalid_grant at refresh is what disables).
        self.tokens.invalidate(acc)
        if err.status == 401:
            err.reason = "stale_token"
