"""Everything mutable about one emulator: fault rules, the request log, counters, issued credentials."""

from __future__ import annotations

import base64
import secrets
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

LOG_LIMIT = 5000  # bounded so long benchmark runs don't grow memory without limit


@dataclass
class EmulatorState:
    """Everything mutable about one emulator instance (one per app)."""

    rules: list[dict[str, Any]] = field(default_factory=list)
    log: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=LOG_LIMIT))
    refreshes: Counter[str] = field(default_factory=Counter)
    requests: int = 0
    access_tokens: dict[str, float] = field(default_factory=dict)  # token -> monotonic expiry
    token_users: dict[str, str] = field(default_factory=dict)  # access token -> the user it was issued to
    refresh_users: dict[str, str] = field(default_factory=dict)  # refresh token issued here -> its user
    auth_codes: dict[str, dict[str, Any]] = field(default_factory=dict)  # code -> what /o/oauth2/v2/auth saw
    service_accounts: dict[str, dict[str, str]] = field(default_factory=dict)  # client_email -> key_id, PEM
    operations: dict[str, dict[str, Any]] = field(default_factory=dict)  # onboarding operations
    onboarded: dict[str, str] = field(default_factory=dict)  # user -> Code Assist project after onboarding
    # thought signature -> the credential it was issued to (Call.credential; None when issued
    # outside a request, by unit tests)
    signatures: dict[str, str | None] = field(default_factory=dict)
    token_ttl: int = 3600
    refresh_delay_ms: int = 0
    aborted_streams: int = 0  # streams whose client went away before the end
    # "turn": like Gemini 3, only validate signatures in the current turn (model turns
    # after the last user text message). "all": every model function-call turn.
    signature_scope: str = "turn"

    def reset(self) -> None:
        """Clear rules, logs, counters and issued credentials (config is kept)."""
        self.rules.clear()
        self.log.clear()
        self.refreshes.clear()
        self.requests = 0
        self.aborted_streams = 0
        self.access_tokens.clear()
        self.token_users.clear()
        self.refresh_users.clear()
        self.auth_codes.clear()
        self.operations.clear()
        self.onboarded.clear()
        self.signatures.clear()
        # service_accounts stay: like accounts at Google, they outlive a test's tokens

    def take_rule(self, path: str, key: str | None, model: str | None) -> dict[str, Any] | None:
        """First matching rule, consuming one of its ``times``.

        No await happens between match and decrement, so this is race-free on one loop.
        """
        for i, rule in enumerate(self.rules):
            match = rule.get("match") or {}
            if "key" in match and match["key"] != key:
                continue
            if "path_contains" in match and match["path_contains"] not in path:
                continue
            if "model" in match and match["model"] != model:
                continue
            if rule.get("times") is not None:
                rule["times"] -= 1
                if rule["times"] <= 0:
                    del self.rules[i]
            return rule
        return None

    def issue_token(self, user: str = "") -> str:
        token = "ya29." + secrets.token_urlsafe(32)
        self.access_tokens[token] = time.monotonic() + self.token_ttl
        self.token_users[token] = user
        return token

    def user_of(self, token: str | None) -> str:
        """Who an access token belongs to: an e-mail (signed in here), a service account, or the
        refresh token it came from. Its prefix picks the Code Assist behaviour (cloudcode.py)."""
        return self.token_users.get(token or "", "")

    def token_valid(self, token: str | None) -> bool:
        expiry = self.access_tokens.get(token or "")
        return expiry is not None and time.monotonic() < expiry

    def signature_from(self, sig: str, credential: str | None, *, issued_only: bool) -> bool:
        """Whether `credential` may send `sig`: not issued to another credential, and (with
        `issued_only`) issued at all. Unit tests that validate without a credential skip the binding."""
        if sig not in self.signatures:
            return not issued_only
        owner = self.signatures[sig]
        return credential is None or owner is None or owner == credential

    def issue_signature(self, credential: str | None = None) -> str:
        sig = base64.b64encode(f"sig:{secrets.token_hex(8)}".encode()).decode()
        self.signatures[sig] = credential
        return sig


STATE = web.AppKey("emulator_state", EmulatorState)
