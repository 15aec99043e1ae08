"""Accounts file (what the user configures) and the pool (who answers next, who is cooling).

The pool is pure bookkeeping: it never makes a request. The engine's retry policy asks it
for the next account, then reports how the attempt went. Cooldowns, disabled flags,
refreshed tokens and usage counters survive restarts through `StateStore`.
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
import time
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .protocol import canonical as c
from .safety import SafetySettings, parse_safety_settings
from .state import StateStore

GEMINI_BASE = "https://generativelanguage.googleapis.com"
CLOUDCODE_BASE = "https://cloudcode-pa.googleapis.com"
GOOGLE_TOKEN_URL = "https://oauth2.googleapis.com/token"


class _AccountBase(BaseModel):
    model_config = ConfigDict(extra="forbid")

    email: str | None = None  # label shown in X-Account-Email and in flows
    label: str | None = None  # alternative to email for accounts that have none
    models: list[str] | None = None  # upstream models this account serves (patterns with *); None = all
    disabled: bool = False
    weight: int = Field(default=1, ge=1, le=100)  # rough share in round-robin

    @property
    def name(self) -> str:
        return self.email or self.label or "account"

    def serves(self, model: str) -> bool:
        return self.models is None or any(fnmatch.fnmatchcase(model, p) for p in self.models)


def _secret(value: str | None, env: str | None, what: str) -> str | None:
    if value:
        return value
    if env:
        found = os.environ.get(env)
        if not found:
            raise ValueError(f"{what}_env names ${env}, which is not set")
        return found
    return None


class _GoogleAccount(_AccountBase):
    """Gemini API and Cloud Code accounts: both send Gemini's generateContent body."""

    safety_settings: SafetySettings | None = None  # None: the file's top-level safety_settings

    @field_validator("safety_settings", mode="before")
    @classmethod
    def _safety(cls, value: Any) -> SafetySettings | None:
        return None if value is None else parse_safety_settings(value)


class GeminiAccount(_GoogleAccount):
    provider: Literal["gemini"]
    api_key: str | None = Field(default=None, repr=False)
    api_key_env: str | None = None
    base_url: str = GEMINI_BASE

    @model_validator(mode="after")
    def _key(self) -> "GeminiAccount":
        self.api_key = _secret(self.api_key, self.api_key_env, "api_key")
        if not self.api_key:
            raise ValueError("a gemini account needs api_key (or api_key_env)")
        self.base_url = self.base_url.rstrip("/")
        return self


class CloudCodeAccount(_GoogleAccount):
    provider: Literal["cloudcode"]
    refresh_token: str | None = Field(default=None, repr=False)
    refresh_token_env: str | None = None
    client_id: str
    client_secret: str | None = Field(default=None, repr=False)
    client_secret_env: str | None = None
    project: str
    token_url: str = GOOGLE_TOKEN_URL
    base_url: str = CLOUDCODE_BASE

    @model_validator(mode="after")
    def _secrets(self) -> "CloudCodeAccount":
        self.refresh_token = _secret(self.refresh_token, self.refresh_token_env, "refresh_token")
        self.client_secret = _secret(self.client_secret, self.client_secret_env, "client_secret")
        if not self.refresh_token:
            raise ValueError("a cloudcode account needs refresh_token (or refresh_token_env)")
        self.base_url = self.base_url.rstrip("/")
        return self


class OpenAIAccount(_AccountBase):
    provider: Literal["openai"]
    base_url: str  # e.g. http://127.0.0.1:8000/v1 (ends before /chat/completions)
    api_key: str | None = Field(default=None, repr=False)
    api_key_env: str | None = None
    # which field carries the output-token limit; auto: see backends.openai.limit_field
    max_tokens_field: Literal["auto", "max_tokens", "max_completion_tokens"] = "auto"

    @model_validator(mode="after")
    def _key(self) -> "OpenAIAccount":
        self.api_key = _secret(self.api_key, self.api_key_env, "api_key")
        self.base_url = self.base_url.rstrip("/")
        return self


Account = GeminiAccount | CloudCodeAccount | OpenAIAccount
_TaggedAccount = Annotated[Union[GeminiAccount, CloudCodeAccount, OpenAIAccount], Field(discriminator="provider")]


class AccountsFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    accounts: list[_TaggedAccount] = Field(default_factory=list)
    sticky: bool = False  # same conversation -> same account while healthy (upstream prompt caching)
    safety_settings: SafetySettings | None = None  # Gemini safetySettings for accounts that set none

    @field_validator("safety_settings", mode="before")
    @classmethod
    def _safety(cls, value: Any) -> SafetySettings | None:
        return None if value is None else parse_safety_settings(value)

    @model_validator(mode="after")
    def _default_safety(self) -> "AccountsFile":
        for acc in self.accounts:
            if isinstance(acc, _GoogleAccount) and acc.safety_settings is None:
                acc.safety_settings = self.safety_settings
        return self


def parse_accounts(data: Any) -> AccountsFile:
    if data is None:
        return AccountsFile()
    try:
        parsed = AccountsFile.model_validate(data)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = ".".join(str(p) for p in first["loc"])
        # pydantic's message never includes the input value here, so no secret leaks into logs
        raise ValueError(f"accounts file: {where}: {first['msg']}") from None
    seen: set[str] = set()
    for acc in parsed.accounts:
        if acc.name in seen:
            raise ValueError(f"accounts file: two accounts are labelled {acc.name!r}; labels must be unique")
        seen.add(acc.name)
    return parsed


def env_accounts() -> AccountsFile:
    """One-account start: GEMINI_API_KEY (and optional GEMINI_BASE_URL) with no accounts file."""
    key = os.environ.get("GEMINI_API_KEY")
    if not key:
        return AccountsFile()
    return AccountsFile(accounts=[GeminiAccount(provider="gemini", label="env:GEMINI_API_KEY", api_key=key,
                                                base_url=os.environ.get("GEMINI_BASE_URL", GEMINI_BASE))])


# ---- pool ----------------------------------------------------------------------------------

MAX_BACKOFF = 300.0


@dataclass(slots=True)
class AccountState:
    cooldown_until: float = 0.0
    failures: int = 0  # consecutive, drives the backoff
    disabled_reason: str | None = None
    last_status: int | None = None
    requests: int = 0
    usage: dict[str, dict[str, int]] = field(default_factory=dict)  # model -> counters
    credential: str | None = None  # _fingerprint() of the credential this state belongs to

    def to_json(self) -> dict[str, Any]:
        return {"cooldown_until": self.cooldown_until, "failures": self.failures,
                "disabled_reason": self.disabled_reason, "last_status": self.last_status,
                "requests": self.requests, "usage": self.usage, "credential": self.credential}

    @classmethod
    def from_json(cls, data: Any) -> "AccountState":
        """Lenient: a hand-edited or foreign state file must not break the pool; bad fields are dropped."""
        st = cls()
        if not isinstance(data, dict):
            return st
        for key, kind in (("cooldown_until", (int, float)), ("failures", int), ("disabled_reason", str),
                          ("last_status", int), ("requests", int), ("credential", str)):
            value = data.get(key)
            if isinstance(value, kind) and not isinstance(value, bool):
                setattr(st, key, value)
        usage = data.get("usage")
        if isinstance(usage, dict):
            st.usage = {m: {k: v for k, v in counters.items() if isinstance(v, int) and not isinstance(v, bool)}
                        for m, counters in usage.items() if isinstance(counters, dict)}
        return st


class NoAccount(Exception):
    """Nothing can serve right now; `retry_after` is set when accounts are only cooling."""

    def __init__(self, message: str, retry_after: float | None = None, status: int = 503) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.status = status


class AccountPool:
    def __init__(self, store: StateStore | None = None, clock=time.time) -> None:
        self._accounts: list[Account] = []
        self._sticky = False
        self._states: dict[str, AccountState] = {}
        self._cursors: dict[str, int] = {}  # per model: alternating models must not pin each to one account
        self._store = store
        self._clock = clock
        if store is not None:
            saved = store.load().get("accounts")
            for name, data in (saved.items() if isinstance(saved, dict) else ()):
                self._states[name] = AccountState.from_json(data)
            store.add_source(self._collect)

    def _collect(self, doc: dict[str, Any]) -> None:
        doc["accounts"] = self.snapshot()

    @property
    def sticky(self) -> bool:
        return self._sticky

    # -- configuration ----------------------------------------------------------------------
    def update(self, config: AccountsFile) -> None:
        """Install a (re)loaded accounts file; state of accounts that stay is kept."""
        for acc in config.accounts:
            st = self.state(acc)
            fp = _fingerprint(acc)
            # A credential edited in the file deserves a fresh chance, also when the edit
            # happened while the gateway was stopped (the fingerprint is in the state file).
            if st.credential is not None and st.credential != fp:
                st.disabled_reason, st.cooldown_until, st.failures = None, 0.0, 0
            if st.credential != fp:
                st.credential = fp
                self._dirty()
        self._accounts = list(config.accounts)
        self._sticky = config.sticky

    @property
    def accounts(self) -> list[Account]:
        return self._accounts

    def state(self, acc: Account) -> AccountState:
        st = self._states.get(acc.name)
        if st is None:
            st = self._states[acc.name] = AccountState()
        return st

    # -- selection --------------------------------------------------------------------------
    def candidates(self, model: str) -> list[Account]:
        return [a for a in self._accounts if not a.disabled and a.serves(model)
                and not self.state(a).disabled_reason]

    def pick(self, model: str, exclude: set[str], sticky_key: str | None = None) -> Account:
        """Next account for `model`, skipping `exclude` and cooling accounts. Raises NoAccount."""
        now = self._clock()
        serving = self.candidates(model)
        if not serving:
            if not self._accounts:
                raise NoAccount("No upstream account is configured. Set GEMINI_API_KEY, or pass "
                                "`--set accounts=accounts.yaml` (see accounts.example.yaml).")
            broken = [a for a in self._accounts if not a.disabled and a.serves(model)]
            if broken:  # disabled at runtime: say why, and how to undo it
                raise NoAccount(f"Every account for the model '{model}' was disabled after the upstream rejected "
                                f"it ({broken[0].name}: {self.state(broken[0]).disabled_reason}). Fix the accounts "
                                "file or run the gateway.enable command.")
            raise NoAccount(f"No enabled account serves the model '{model}'.")
        ready = [a for a in serving if a.name not in exclude and self.state(a).cooldown_until <= now]
        if not ready:
            waits = [self.state(a).cooldown_until - now for a in serving if a.name not in exclude]
            waits = [w for w in waits if w > 0]
            raise NoAccount("Every account for this model is rate-limited or cooling down.",
                            retry_after=min(waits) if waits else None, status=429)
        if self._sticky and sticky_key:
            h = int.from_bytes(hashlib.blake2b(sticky_key.encode(), digest_size=8).digest(), "big")
            preferred = serving[h % len(serving)]  # stable while the set of accounts is stable
            if preferred in ready:
                return preferred
        # weighted round-robin: an account of weight w appears w times in the cycle
        cycle = [a for a in ready for _ in range(a.weight)]
        cursor = self._cursors[model] = (self._cursors.get(model, -1) + 1) % (1 << 30)
        return cycle[cursor % len(cycle)]

    def eligible_count(self, model: str) -> int:
        return len(self.candidates(model))

    # -- outcomes ---------------------------------------------------------------------------
    def succeeded(self, acc: Account, model: str, usage: c.Usage | None = None) -> None:
        st = self.state(acc)
        st.failures, st.cooldown_until, st.last_status = 0, 0.0, 200
        st.requests += 1
        self._count(st, model, usage)
        self._dirty()

    def record_usage(self, acc: Account, model: str, usage: c.Usage | None) -> None:
        """Usage that arrives at the end of a stream, after `succeeded` was already called."""
        self._count(self.state(acc), model, usage, request=False)
        self._dirty()

    def _count(self, st: AccountState, model: str, usage: c.Usage | None, request: bool = True) -> None:
        counters = st.usage.setdefault(model, {"requests": 0, "input_tokens": 0, "output_tokens": 0})
        if request:
            counters["requests"] += 1
        if usage is not None:
            counters["input_tokens"] += usage.input_tokens
            counters["output_tokens"] += usage.output_tokens

    def cool_down(self, acc: Account, status: int, retry_after: float | None) -> float:
        """Rest an account after a rate limit or overload; returns the cooldown in seconds."""
        st = self.state(acc)
        st.failures += 1
        st.last_status = status
        delay = retry_after if retry_after is not None else min(MAX_BACKOFF, 2.0 ** (st.failures - 1))
        st.cooldown_until = self._clock() + delay
        self._dirty()
        return delay

    def disable(self, acc: Account, status: int, reason: str) -> None:
        st = self.state(acc)
        st.disabled_reason = reason
        st.last_status = status
        self._dirty()

    def enable(self, name: str) -> bool:
        for acc in self._accounts:
            if acc.name == name:
                st = self.state(acc)
                st.disabled_reason, st.cooldown_until, st.failures = None, 0.0, 0
                self._dirty()
                return True
        return False

    def shortest_wait(self, model: str) -> float | None:
        now = self._clock()
        waits = [self.state(a).cooldown_until - now for a in self.candidates(model)]
        waits = [w for w in waits if w > 0]
        return min(waits) if waits else None

    # -- persistence & reporting ------------------------------------------------------------
    def _dirty(self) -> None:
        if self._store is not None:
            self._store.mark_dirty()

    def snapshot(self) -> dict[str, Any]:
        return {name: st.to_json() for name, st in self._states.items()}

    def describe(self) -> list[dict[str, Any]]:
        """Human-facing state, without any secret."""
        now = self._clock()
        rows = []
        for acc in self._accounts:
            st = self.state(acc)
            status = ("disabled in file" if acc.disabled else
                      f"disabled: {st.disabled_reason}" if st.disabled_reason else
                      f"cooling {st.cooldown_until - now:.1f}s" if st.cooldown_until > now else "ready")
            rows.append({"account": acc.name, "provider": acc.provider, "status": status,
                         "last_status": st.last_status, "requests": st.requests, "usage": st.usage})
        return rows


def _fingerprint(acc: Account) -> str:
    secret = getattr(acc, "api_key", None) or getattr(acc, "refresh_token", None) or ""
    # Persisted in the state file (mode 0600) to notice a credential edited while stopped; truncated.
    return hashlib.sha256(f"{acc.provider}|{acc.base_url}|{secret}".encode()).hexdigest()[:16]
