"""What the engine asks about clients: whose key is this, may it use this model, may this request
go now (and what the rate-limit headers say), and what a finished request spent.

The engine calls it at four points: `authenticate` with the headers (before the body is read),
`check_model` once the client's model name is known, `admit` right before the upstream call, and
`finished` when the answer is over (tokens from the upstream's usage; the slot freed).
"""

from __future__ import annotations

import asyncio
import hmac
import itertools
import logging
import math
import secrets
from collections.abc import Mapping
from typing import Any

from .. import auth
from ..protocol.errors import GatewayError
from .config import Client, ClientsFile, key_digest
from .ledger import DAY, WINDOW, Ledger, Verdict

log = logging.getLogger(__name__)

MAX_MODELS = 64  # per client in the usage counters; further names count as OTHER_MODELS
OTHER_MODELS = "(other models)"


def duration(seconds: float) -> str:
    """OpenAI's x-ratelimit-reset-* format: 12ms, 1s, 17.5s, 6m0s, 1h2m3s."""
    if seconds < 1:
        return f"{max(0, int(seconds * 1000))}ms"
    seconds = round(seconds, 3)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    text = f"{secs:.3f}".rstrip("0").rstrip(".") + "s"
    if hours:
        return f"{int(hours)}h{int(minutes)}m{text}"
    return f"{int(minutes)}m{text}" if minutes else text


def _until_midnight(now: float) -> float:
    return DAY - now % DAY


def rate_headers(client: Client, v: Verdict, spent_extra: int = 0) -> dict[str, str]:
    """OpenAI's x-ratelimit-* headers for the limits this client has."""
    out: dict[str, str] = {}
    if client.rpm:
        reset = (v.newest + WINDOW - v.now) if v.newest is not None else 0.0
        out.update({"x-ratelimit-limit-requests": str(client.rpm),
                    "x-ratelimit-remaining-requests": str(max(0, client.rpm - v.used)),
                    "x-ratelimit-reset-requests": duration(max(0.0, reset))})
    if client.tokens_per_day:
        out.update({"x-ratelimit-limit-tokens": str(client.tokens_per_day),
                    "x-ratelimit-remaining-tokens": str(max(0, client.tokens_per_day - v.spent_today - spent_extra)),
                    "x-ratelimit-reset-tokens": duration(_until_midnight(v.now))})
    return out


def _refusal(client: Client, v: Verdict) -> GatewayError:
    headers = rate_headers(client, v)
    if v.refused == "tokens_per_day":
        wait = _until_midnight(v.now)
        headers.update({"retry-after": str(math.ceil(wait)), "x-should-retry": "false"})  # hours: no SDK retry
        return GatewayError(429, f"You exceeded your daily token budget: client '{client.name}' has spent "
                                 f"{v.spent_today} of its {client.tokens_per_day} tokens today; it resets at 00:00 "
                                 f"UTC, in {duration(wait)}.", type="insufficient_quota", code="insufficient_quota",
                            headers=headers)
    if v.refused == "rpm":
        wait = (v.oldest + WINDOW - v.now) if v.oldest is not None else 1.0
        headers["retry-after"] = str(max(1, math.ceil(wait)))
        return GatewayError(429, f"Rate limit reached for client '{client.name}' on requests per min (RPM): Limit "
                                 f"{client.rpm}, Used {v.used}, Requested 1. Please try again in {duration(wait)}.",
                            type="requests", code="rate_limit_exceeded", headers=headers)
    headers["retry-after"] = "1"
    return GatewayError(429, f"Too many requests open at once for client '{client.name}': Limit "
                             f"{client.max_concurrent}. Try again when one of them has finished.",
                        type="requests", code="rate_limit_exceeded", headers=headers)


def _missing() -> GatewayError:
    return GatewayError(401, "Missing API key. Send it as 'Authorization: Bearer <key>', 'x-api-key' or "
                             "'x-goog-api-key'.", code="missing_api_key")


def _invalid() -> GatewayError:
    return GatewayError(401, "Incorrect API key provided.", code="invalid_api_key")


class _AllowedModels:
    """A PoolCalls for one client's model listings (Anthropic's, Google's): the models it may use."""

    def __init__(self, pool: Any, client: Client) -> None:
        self._pool, self._client = pool, client

    def model_ids(self) -> list[str]:
        return [n for n in self._pool.model_ids() if self._client.allows(n)]

    def model_exists(self, name: str) -> bool:
        return self._client.allows(name) and self._pool.model_exists(name)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._pool, name)


class ClientGate:
    def __init__(self, source: Any, ledger: Ledger) -> None:
        """`source.current()` -> ClientsFile (a ReloadingFile: an edit is seen within a second)."""
        self.source = source
        self.ledger = ledger
        self._seen: ClientsFile | None = None
        self._reconciling: asyncio.Task | None = None
        self._instance = secrets.token_hex(4)
        self._tickets = itertools.count()
        self._models: dict[str, set[str]] = {}  # per client: model names with their own counters

    # ---- the file -------------------------------------------------------------------------
    def current(self) -> ClientsFile:
        file = self.source.current()
        if file is not self._seen:
            self._seen = file
            self._reconcile(file)
        return file

    def _reconcile(self, file: ClientsFile) -> None:
        try:
            self._reconciling = asyncio.get_running_loop().create_task(self.ledger.reconcile(file))
        except RuntimeError:
            self._seen = None  # no loop yet (start-up): start() or the first request does it

    def names(self) -> list[str]:
        return [c.name for c in self.current().clients]

    # ---- who is calling -------------------------------------------------------------------
    def authenticate(self, headers: Mapping[str, str], operator_key: str, url_key: str | None = None) -> str | None:
        """The client's name, or None for the operator key (no limits); 401 for anything else.
        `url_key`: a key from the query string where the surface takes one (Google's `?key=`)."""
        key = auth.presented_key(headers) or url_key
        if key is None:
            raise _missing()
        digest = key_digest(key)  # compared as digests: constant time, whatever the key's length
        if operator_key and hmac.compare_digest(digest, key_digest(operator_key)):
            return None
        client = self.current().by_digest.get(digest)  # see ClientsFile.find for why a lookup is safe
        if client is None or not any(hmac.compare_digest(digest, d) for d in client.digests):
            raise _invalid()
        return client.name

    def client(self, name: str) -> Client:
        """A client admitted on its headers may have been removed since (a revoked key): 401."""
        found = self.current().by_name.get(name)
        if found is None:
            raise GatewayError(401, "Incorrect API key provided (it was revoked).", code="invalid_api_key")
        return found

    # ---- models ---------------------------------------------------------------------------
    def allows(self, name: str | None, model: str) -> bool:
        return name is None or self.client(name).allows(model)

    def check_model(self, name: str | None, model: str, story: Any = None) -> None:
        """404 model_not_found, as OpenAI answers for a model the key cannot use."""
        if self.allows(name, model):
            return
        self.ledger.refused(name, "model")
        if story is not None:
            story.limit = "model"
        raise GatewayError(404, f"The model '{model[:100]}' does not exist or you do not have access to it.",
                           param="model", type="invalid_request_error", code="model_not_found")

    def listing_view(self, pool: Any, name: str | None) -> Any:
        """`pool` as a surface's model listing should see it for this caller: only its models."""
        return pool if name is None else _AllowedModels(pool, self.client(name))

    # ---- limits ---------------------------------------------------------------------------
    async def admit(self, name: str | None, story: Any) -> None:
        """Count the request against its client's limits, or raise the 429. The x-ratelimit-*
        headers go on the story (every answer carries them); the slot it holds is freed by
        `finished`."""
        if name is None or story.admission is not None:  # the operator; or counted already
            return
        client = self.client(name)
        ticket = f"{self._instance}:{next(self._tickets)}"
        verdict = await self.ledger.admit(client, ticket)
        if verdict.refused is not None:
            story.limit = verdict.refused
            raise _refusal(client, verdict)
        story.admission = (client.name, ticket, bool(client.max_concurrent))
        story.limit_headers = rate_headers(client, verdict)

    def finished(self, story: Any) -> None:
        admission = getattr(story, "admission", None)
        if admission is None:
            return
        story.admission = None
        name, ticket, held = admission
        model = story.client_model
        if model is not None:
            seen = self._models.setdefault(name, set())
            if model not in seen:
                if len(seen) >= MAX_MODELS:
                    model = OTHER_MODELS  # clients choose names: the counters stay bounded
                else:
                    seen.add(model)
        self.ledger.settle(name, ticket, model, story.tokens_in or 0, story.tokens_out or 0, held)

    # ---- what the operator sees -----------------------------------------------------------
    async def view(self, caller: str | None) -> list[dict[str, Any]]:
        """Every client (the operator), or only the caller itself (a client key)."""
        clients = self.current().clients if caller is None else [self.client(caller)]
        usage = await self.ledger.usage([c.name for c in clients])
        rows = []
        for c in clients:
            u = usage.get(c.name, {})
            left = (max(0, c.tokens_per_day - u.get("tokens_today", 0)) if c.tokens_per_day else None)
            rows.append({"name": c.name, "models": list(c.models) if c.models is not None else None,
                         "limits": c.limits(), "tokens_left_today": left, **u})
        return rows

    async def start(self) -> None:
        self.current()
        await self.ledger.start()

    async def aclose(self) -> None:
        if self._reconciling is not None and not self._reconciling.done():
            self._reconciling.cancel()
        await self.ledger.aclose()
