"""OAuth access tokens for Google accounts (Cloud Code, Vertex AI), from each account's grant:
a refresh token (installed-app sign-in, gcloud user credentials, gemini-cli's file) or a
service-account key (a signed JWT, see jwt.py)."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Protocol, TypeVar

from ..backends.gemini.errors import error_from as google_error
from ..pool.credentials import CredentialsError, OAuthGrant, read_gemini_cli_refresh_token
from ..protocol.errors import CredentialsRejected, StaleCredentials, UpstreamError
from .http import HttpClient
from .jwt import JWT_BEARER, service_account_assertion

if TYPE_CHECKING:
    from ..stores.shared import Token, TokenStore

log = logging.getLogger(__name__)
T = TypeVar("T")


class OAuthAccount(Protocol):
    name: str

    @property
    def grant(self) -> OAuthGrant | None: ...


class TokenManager:
    """OAuth access tokens for Google accounts: one refresh at a time per account.

    Concurrent requests that find the token stale wait on the same lock, and the first one
    through refreshes; the rest reuse its token (no refresh storm). With a shared store (Redis)
    the same holds across gateway instances: a token one instance got is used by all, and the
    store's lock lets one instance refresh at a time.
    """

    REFRESH_MARGIN = 60.0  # refresh this long before expiry

    def __init__(self, http: HttpClient, store: TokenStore | None = None) -> None:
        self.http = http
        self._store = store
        # account name -> (access token, expiry, fingerprint of the credential that produced it)
        self._tokens: dict[str, Token] = store.load() if store is not None else {}
        self._locks: dict[str, asyncio.Lock] = {}

    @staticmethod
    def _owner(acc: OAuthAccount) -> str:
        # A credential edited in the accounts file must not keep using the old one's access token.
        grant = acc.grant
        return grant.owner if grant is not None else ""

    def active_tokens(self) -> list[str]:
        """Access tokens currently held (for redaction)."""
        return [tok[0] for tok in self._tokens.values()]

    async def invalidate(self, acc: OAuthAccount, token: str | None = None) -> None:
        """Forget the access token; with `token`, only if it is still the current one (a request that
        was refused with an old token must not throw away the one a concurrent refresh just got)."""
        tok = self._tokens.get(acc.name)
        if tok is not None and (token is None or tok[0] == token):
            del self._tokens[acc.name]
        refused = token or (tok[0] if tok else None)
        if self._store is not None and refused:
            await self._store.forget(acc.name, refused)

    def _usable(self, acc: OAuthAccount, tok: Token | None) -> str | None:
        if tok and tok[1] - self.REFRESH_MARGIN > time.time() and tok[2] == self._owner(acc):
            return tok[0]
        return None

    async def _shared(self, acc: OAuthAccount) -> str | None:
        """A usable token from the store (got by another instance, or while we waited)."""
        if self._store is None:
            return None
        tok = await self._store.get(acc.name)
        if self._usable(acc, tok):
            self._tokens[acc.name] = tok
            return tok[0]
        return None

    async def token(self, acc: OAuthAccount) -> str:
        tok = self._usable(acc, self._tokens.get(acc.name))
        if tok:
            return tok
        lock = self._locks.setdefault(acc.name, asyncio.Lock())
        async with lock:
            # someone here refreshed while we waited, or another instance did
            tok = self._usable(acc, self._tokens.get(acc.name)) or await self._shared(acc)
            if tok:
                return tok
            if self._store is None:
                return await self._refresh(acc)
            async with self._store.lock(acc.name):
                return await self._shared(acc) or await self._refresh(acc)

    async def call_with_token(self, acc: OAuthAccount, send: Callable[[str], Awaitable[T]]) -> T:
        """`send(access_token)`; a 401 (a token we believed valid was refused: expired early, revoked)
        forgets that token, refreshes once and sends again. A second refusal rotates without disabling;
        a refresh refused with invalid_grant disables (CredentialsRejected)."""
        for attempt in (1, 2):
            token = await self.token(acc)
            try:
                return await send(token)
            except UpstreamError as err:
                if err.status != 401:
                    raise
                await self.invalidate(acc, token)  # only if no concurrent refresh replaced it already
                if attempt == 2:
                    raise StaleCredentials(401, err.message, reason=err.reason) from None
                log.info("access token of %s was refused; refreshing and retrying", acc.name)
        raise AssertionError("unreachable")

    async def _refresh(self, acc: OAuthAccount) -> str:
        grant = acc.grant
        assert grant is not None, f"{acc.name} has no OAuth grant"
        status, headers, body = await self.http.post_form(grant.token_url, await _token_form(grant))
        if status != 200:
            err = google_error(status, body, headers)
            if err.reason == "invalid_grant" or err.status in (400, 401, 403):
                # invalid_grant, invalid_client, unauthorized_client...: the account's credentials,
                # not the client's request, are at fault: the policy disables it with this reason.
                raise CredentialsRejected(401, f"OAuth token request rejected ({err.reason or err.status}): "
                                               f"{err.message}", reason=err.reason or "invalid_grant")
            raise err
        try:
            data = json.loads(body)
        except ValueError:
            data = {}
        token = data.get("access_token") if isinstance(data, dict) else None
        if not token:
            raise UpstreamError(502, "OAuth token endpoint answered without an access_token.")
        tok = self._tokens[acc.name] = (token, time.time() + float(data.get("expires_in", 3600)), self._owner(acc))
        if self._store is not None:
            await self._store.put(acc.name, tok)
        log.info("got a new access token for %s", acc.name)
        return token


async def _token_form(grant: OAuthGrant) -> dict[str, str]:
    if grant.private_key:
        return {"grant_type": JWT_BEARER, "assertion": service_account_assertion(grant)}
    refresh_token = grant.refresh_token or ""
    if grant.creds_file:
        # gemini-cli may have signed in again since the accounts file was read: follow its file.
        try:
            refresh_token = await asyncio.to_thread(read_gemini_cli_refresh_token, grant.creds_file)
        except CredentialsError as exc:
            log.warning("using the refresh token read at load time: %s", exc)
    form = {"grant_type": "refresh_token", "refresh_token": refresh_token, "client_id": grant.client_id or ""}
    if grant.client_secret:
        form["client_secret"] = grant.client_secret
    return form
