"""OAuth access tokens for Cloud Code accounts, from each account's refresh token."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from typing import Any

from ..accounts import CloudCodeAccount
from ..backends import gemini
from ..protocol.errors import CredentialsRejected, UpstreamError
from ..state import StateStore
from .http import HttpClient

log = logging.getLogger(__name__)


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
            err = gemini.error_from(status, body, headers)
            if err.reason == "invalid_grant" or err.status in (400, 401, 403):
                # invalid_grant, invalid_client, unauthorized_client...: the account's credentials,
                # not the client's request, are at fault: the policy disables it with this reason.
                raise CredentialsRejected(401, f"OAuth refresh rejected ({err.reason or err.status}): {err.message}",
                                          reason=err.reason or "invalid_grant")
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


