"""Which Google Cloud project a Cloud Code account works in, found the way gemini-cli finds it
(packages/core/src/code_assist/setup.ts, server.ts and types.ts in google-gemini/gemini-cli):

1. `POST {base}/v1internal:loadCodeAssist` {"cloudaicompanionProject"?, "metadata": {"ideType":
   "IDE_UNSPECIFIED", "platform": "PLATFORM_UNSPECIFIED", "pluginType": "GEMINI", "duetProject"?}}.
   With a `currentTier` the answer's `cloudaicompanionProject` (else the configured project) is it.
   Without one, an `ineligibleTiers` entry with reasonCode VALIDATION_REQUIRED carries the link the
   user must open; other entries say why the account cannot be used (reasonCode UNSUPPORTED_CLIENT:
   since 2026-06-18 Google no longer serves Code Assist to individual accounts through this client,
   reasonMessage "This client is no longer supported for Gemini Code Assist for individuals...",
   gemini-cli issues #28229, #28846, #29279).
2. No current tier: `POST {base}/v1internal:onboardUser` {"tierId": the default allowed tier,
   "cloudaicompanionProject" (not for free-tier), "metadata"} returns a long-running operation,
   polled with `GET {base}/v1internal/{operation name}` until `done`; its
   `response.cloudaicompanionProject.id` is the project.

The answer is cached per account in the state file (keyed by the credential, so a new sign-in
asks again). Answers that make the account unusable raise AccountUnusable with a status that says
what to do; the retry policy disables the account with it.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from ..pool.accounts_file import CloudCodeAccount
from ..backends.gemini.errors import error_from as google_error
from ..protocol.errors import CredentialsRejected, UpstreamError
from ..pool.state import StateStore
from .gemini import JSON
from .http import HttpClient
from .oauth import TokenManager

log = logging.getLogger(__name__)

METADATA = {"ideType": "IDE_UNSPECIFIED", "platform": "PLATFORM_UNSPECIFIED", "pluginType": "GEMINI"}
FREE_TIER, LEGACY_TIER = "free-tier", "legacy-tier"
ONBOARD_TIMEOUT = 120.0  # seconds of polling before giving up (gemini-cli polls every 5 s, forever)
INDIVIDUALS_ENDED = ("individual Google account: Gemini Code Assist for individuals (free, AI Pro, Ultra) "
                     "ended on 2026-06-18; use a Gemini API key (provider: gemini) or Vertex AI (provider: vertex)")

# An authorized call: `authorized(send)` runs `send(access_token)` (refreshing as needed).
Authorized = Callable[[Callable[[str], Awaitable[Any]]], Awaitable[Any]]


class AccountUnusable(CredentialsRejected):
    """Google answered that this account cannot use Code Assist as configured (not a passing error)."""


@dataclass(slots=True)
class CodeAssistUser:
    project: str
    tier: str | None = None
    tier_name: str | None = None


def _ineligible_status(tiers: list[dict[str, Any]], project: str | None) -> AccountUnusable:
    codes = {t.get("reasonCode") for t in tiers}
    if "UNSUPPORTED_CLIENT" in codes:
        return AccountUnusable(403, INDIVIDUALS_ENDED, reason="UNSUPPORTED_CLIENT")
    reasons = "; ".join(str(t.get("reasonMessage") or t.get("reasonCode")) for t in tiers)
    if reasons:
        return AccountUnusable(403, f"not eligible for Gemini Code Assist: {reasons}",
                               reason=str(tiers[0].get("reasonCode") or "INELIGIBLE_ACCOUNT"))
    return AccountUnusable(403, "loadCodeAssist named no project for this account: set `project:` to the Google "
                                "Cloud project that holds its Gemini Code Assist licence", reason="PROJECT_REQUIRED")


def _validation_required(res: dict[str, Any]) -> AccountUnusable | None:
    if res.get("currentTier"):
        return None
    for tier in res.get("ineligibleTiers") or []:
        if tier.get("reasonCode") == "VALIDATION_REQUIRED" and tier.get("validationUrl"):
            return AccountUnusable(403, f"Google asks to verify this account: open {tier['validationUrl']} signed in "
                                        "as it, then run gateway.enable", reason="VALIDATION_REQUIRED")
    return None


class CodeAssistClient:
    """The v1internal setup calls, with whatever supplies access tokens."""

    def __init__(self, http: HttpClient, base_url: str, authorized: Authorized,
                 poll_interval: float = 1.0) -> None:
        self.http, self.base_url, self.authorized = http, base_url.rstrip("/"), authorized
        self.poll_interval = poll_interval

    async def _call(self, method: str, body: dict[str, Any] | None) -> dict[str, Any]:
        async def send(token: str) -> dict[str, Any]:
            headers = {**JSON, "authorization": f"Bearer {token}"}
            if body is None:  # an operation: GET {base}/v1internal/{name}
                resp = await self.http.get(f"{self.base_url}/v1internal/{method}", headers)
            else:
                resp = await self.http.post(f"{self.base_url}/v1internal:{method}", json.dumps(body).encode(), headers)
            raw = await resp.read()
            if resp.status != 200:
                raise google_error(resp.status, raw, resp.headers)
            try:
                data = json.loads(raw)
            except ValueError:
                data = None
            if not isinstance(data, dict):
                raise UpstreamError(502, f"Cloud Code {method.split('/')[0]} answered with something that is not a "
                                         "JSON object.")
            return data

        return await self.authorized(send)

    async def setup_user(self, project: str | None) -> CodeAssistUser:
        meta = {**METADATA, **({"duetProject": project} if project else {})}
        res = await self._call("loadCodeAssist", {**({"cloudaicompanionProject": project} if project else {}),
                                                  "metadata": meta})
        problem = _validation_required(res)
        if problem is not None:
            raise problem
        current = res.get("currentTier")
        if isinstance(current, dict):
            tier = res.get("paidTier") if isinstance(res.get("paidTier"), dict) else current
            found = res.get("cloudaicompanionProject") or project
            if not found:
                raise _ineligible_status(res.get("ineligibleTiers") or [], project)
            return CodeAssistUser(found, tier.get("id"), tier.get("name"))

        allowed = [t for t in res.get("allowedTiers") or [] if isinstance(t, dict)]
        tier = next((t for t in allowed if t.get("isDefault")), {"id": LEGACY_TIER})
        if not allowed and res.get("ineligibleTiers"):
            raise _ineligible_status(res["ineligibleTiers"], project)
        # The free tier runs in a Google-managed project; naming one there fails (gemini-cli setup.ts).
        free = tier.get("id") == FREE_TIER
        op = await self._call("onboardUser", {"tierId": tier.get("id"),
                                              **({} if free or not project else {"cloudaicompanionProject": project}),
                                              "metadata": METADATA if free else meta})
        waited, delay = 0.0, self.poll_interval
        while not op.get("done") and op.get("name"):
            if waited >= ONBOARD_TIMEOUT:
                raise UpstreamError(504, f"Code Assist onboarding did not finish within {ONBOARD_TIMEOUT:.0f} s.")
            await asyncio.sleep(delay)
            waited += delay
            delay = min(delay * 2, 5.0)
            op = await self._call(op["name"], None)
        found = ((op.get("response") or {}).get("cloudaicompanionProject") or {}).get("id") or project
        if not found:
            raise _ineligible_status(res.get("ineligibleTiers") or [], project)
        return CodeAssistUser(found, tier.get("id"), tier.get("name"))


class ProjectDirectory:
    """The discovered project of each Cloud Code account without `project:`, one discovery at a
    time per account, remembered in the state file."""

    def __init__(self, http: HttpClient, tokens: TokenManager, store: StateStore | None = None) -> None:
        self.http, self.tokens, self._store = http, tokens, store
        self._known: dict[str, dict[str, Any]] = {}  # name -> {"project", "tier", "owner"}
        self._locks: dict[str, asyncio.Lock] = {}
        if store is not None:
            saved = store.load().get("code_assist")
            for name, entry in (saved.items() if isinstance(saved, dict) else ()):
                if isinstance(entry, dict) and isinstance(entry.get("project"), str) and isinstance(entry.get("owner"), str):
                    self._known[name] = entry
            store.add_source(lambda doc: doc.__setitem__("code_assist", self._known))

    def _cached(self, acc: CloudCodeAccount) -> str | None:
        entry = self._known.get(acc.name)
        return entry["project"] if entry and entry["owner"] == acc.grant.owner else None

    async def project(self, acc: CloudCodeAccount) -> str:
        if acc.project:
            return acc.project
        found = self._cached(acc)
        if found:
            return found
        async with self._locks.setdefault(acc.name, asyncio.Lock()):
            found = self._cached(acc)
            if found:
                return found
            client = CodeAssistClient(self.http, acc.base_url, lambda send: self.tokens.call_with_token(acc, send))
            user = await client.setup_user(None)
            self._known[acc.name] = {"project": user.project, "tier": user.tier, "owner": acc.grant.owner}
            if self._store is not None:
                self._store.mark_dirty()
            log.info("Cloud Code account %s: project %s (tier %s)", acc.name, user.project, user.tier)
            return user.project

    def describe(self, acc: CloudCodeAccount) -> dict[str, Any]:
        entry = self._known.get(acc.name)
        if acc.project or not entry or entry["owner"] != acc.grant.owner:
            return {}
        return {"project": entry["project"], "project_discovered": True, "tier": entry.get("tier")}
