"""The account pool: who answers next, who is cooling, who is disabled.

The pool is pure bookkeeping: it never makes a request. The engine's retry policy asks it
for the next account, then reports how the attempt went. Cooldowns, disabled flags and usage
counters survive restarts, and are shared between gateway instances, through an
`AccountRecords` backend (addon/stores/shared: the local state file, or Redis).
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..protocol import canonical as c
from .accounts_file import Account, AccountsFile, fingerprint

if TYPE_CHECKING:
    from ..stores.shared import AccountRecords


MAX_BACKOFF = 300.0
COUNTERS = ("requests", "usage")  # additive fields: shared as increments, not overwritten
MAX_COOLDOWN = 3600.0  # whatever an upstream asked for (it may say inf, or years)
MAX_MODEL_COOLDOWN = 25 * 3600.0  # a spent daily quota rests its model until midnight Pacific
MAX_USAGE_MODELS = 64  # usage counters per account; later models are counted under OTHER_MODELS
OTHER_MODELS = "(other models)"
MAX_CURSORS = 1024  # round-robin positions kept per model name


@dataclass(slots=True)
class ModelCooldown:
    """One model resting on one account: Google's quotas (and overloads) are per model."""

    until: float
    why: str  # "rate limit", "daily quota", "quota exhausted", "overloaded"
    status: int

    def to_json(self) -> dict[str, Any]:
        return {"until": self.until, "why": self.why, "status": self.status}

    @classmethod
    def from_json(cls, data: Any) -> "ModelCooldown | None":
        if not isinstance(data, dict):
            return None
        until, why, status = data.get("until"), data.get("why"), data.get("status")
        if (not isinstance(until, (int, float)) or isinstance(until, bool) or not math.isfinite(until)
                or not isinstance(why, str)):
            return None
        return cls(float(until), why, status if isinstance(status, int) and not isinstance(status, bool) else 429)


@dataclass(slots=True)
class AccountState:
    cooldown_until: float = 0.0  # the whole account (connection failures, 5xx)
    failures: int = 0  # consecutive, drives the backoff
    disabled_reason: str | None = None
    last_status: int | None = None
    last_error: str | None = None  # the upstream's last error message (redacted), for the operator
    why: str | None = None  # what the cooldown or disabling is about: "rate limit", "credentials", ...
    requests: int = 0
    usage: dict[str, dict[str, int]] = field(default_factory=dict)  # model -> counters
    credential: str | None = None  # fingerprint() of the credential this state belongs to
    models: dict[str, ModelCooldown] = field(default_factory=dict)  # upstream model -> its cooldown

    def to_json(self) -> dict[str, Any]:
        return {"cooldown_until": self.cooldown_until, "failures": self.failures,
                "disabled_reason": self.disabled_reason, "last_status": self.last_status,
                "last_error": self.last_error, "why": self.why,
                "requests": self.requests, "usage": self.usage, "credential": self.credential,
                "model_cooldowns": {m: mc.to_json() for m, mc in self.models.items()}}

    def wait(self, model: str, now: float) -> float:
        """Seconds before this account may serve `model` again (<= 0: now)."""
        mc = self.models.get(model)
        return max(self.cooldown_until, mc.until if mc is not None else 0.0) - now

    @classmethod
    def from_json(cls, data: Any) -> "AccountState":
        """Lenient: a hand-edited or foreign state file must not break the pool; bad fields are dropped."""
        st = cls()
        if not isinstance(data, dict):
            return st
        for key, kind in (("cooldown_until", (int, float)), ("failures", int), ("disabled_reason", str),
                          ("last_status", int), ("last_error", str), ("why", str), ("requests", int),
                          ("credential", str)):
            value = data.get(key)
            if (isinstance(value, kind) and not isinstance(value, bool)
                    and not (isinstance(value, float) and not math.isfinite(value))):
                setattr(st, key, value)
        usage = data.get("usage")
        if isinstance(usage, dict):
            st.usage = {m: {k: v for k, v in counters.items() if isinstance(v, int) and not isinstance(v, bool)}
                        for m, counters in usage.items() if isinstance(counters, dict)}
        cooldowns = data.get("model_cooldowns")
        if isinstance(cooldowns, dict):
            for model, raw in cooldowns.items():
                mc = ModelCooldown.from_json(raw)
                if mc is not None:
                    st.models[str(model)] = mc
        return st


class NoAccount(Exception):
    """Nothing can serve right now; `retry_after` is set when accounts are only cooling."""

    def __init__(self, message: str, retry_after: float | None = None, status: int = 503) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.status = status


class AccountPool:
    def __init__(self, records: AccountRecords | None = None, clock=time.time) -> None:
        self._accounts: list[Account] = []
        self._sticky = False
        self._states: dict[str, AccountState] = {}
        self._cursors: dict[str, int] = {}  # per model: alternating models must not pin each to one account
        self._records = records
        self._clock = clock
        # Whether an account may serve a model by what its upstream lists (addon/pool/model_lists.py);
        # None: every account serving the model by its `models` patterns is asked.
        self.model_filter: Callable[[Account, str], bool] | None = None
        if records is not None:
            for name, data in records.attach(self).items():
                st = self._states[name] = AccountState.from_json(data)
                st.cooldown_until = min(st.cooldown_until, self._clock() + MAX_COOLDOWN)
                for mc in st.models.values():
                    mc.until = min(mc.until, self._clock() + MAX_MODEL_COOLDOWN)

    def clock(self) -> float:
        """The pool's idea of now (epoch seconds; tests give it a fake clock)."""
        return self._clock()

    @property
    def sticky(self) -> bool:
        return self._sticky

    # -- configuration ----------------------------------------------------------------------
    def update(self, config: AccountsFile) -> None:
        """Install a (re)loaded accounts file; state of accounts that stay is kept."""
        for acc in config.accounts:
            st = self.state(acc)
            fp = fingerprint(acc)
            # A credential edited in the file deserves a fresh chance, also when the edit
            # happened while the gateway was stopped (the fingerprint is in the state file).
            # The state belongs to the credential, not to the label: another key under the same label
            # (e.g. env:GEMINI_API_KEY, the emulator's then a real one) starts with none of its cooldowns.
            if st.credential is not None and st.credential != fp:
                st.disabled_reason, st.cooldown_until, st.failures, st.why = None, 0.0, 0, None
                st.last_status, st.last_error = None, None
                st.models.clear()
                self._changed(acc.name, "disabled_reason", "cooldown_until", "failures", "why", "last_status",
                              "last_error", "model_cooldowns")
            if st.credential != fp:
                st.credential = fp
                self._changed(acc.name, "credential")
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
        """Enabled accounts that serve `model`; of those, the ones whose upstream lists it, when
        some do (when none does, all are asked: a list may be stale, the upstream decides)."""
        found = [a for a in self._accounts if not a.disabled and a.serves(model)
                 and not self.state(a).disabled_reason]
        if self.model_filter is not None and found:
            listed = [a for a in found if self.model_filter(a, model)]
            return listed or found
        return found

    def listed(self, model: str, skip: frozenset[str] = frozenset()) -> bool:
        """False when no enabled account (outside `skip`) may serve `model` by what the upstreams list."""
        found = [a for a in self.candidates(model) if a.name not in skip]
        return bool(found) and (self.model_filter is None or any(self.model_filter(a, model) for a in found))

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
        ready = [a for a in serving if a.name not in exclude and self.state(a).wait(model, now) <= 0]
        if not ready:
            resting = [a for a in serving if a.name not in exclude and self.state(a).wait(model, now) > 0]
            waits = [self.state(a).wait(model, now) for a in resting]
            if any(self._resting_status(a, model, now) in (429, 499) for a in resting):
                raise NoAccount(f"Every account for this model is {self._why_cooling(resting, model, now)}.",
                                retry_after=min(waits) if waits else None, status=429)
            # Resting after server errors or timeouts: saying "rate-limited" would be a wrong signal.
            last = ", ".join(sorted({str(self._resting_status(a, model, now) or "no answer") for a in resting}))
            raise NoAccount(f"Every account for this model is resting after upstream errors ({last}).",
                            retry_after=min(waits) if waits else None, status=503)
        if self._sticky and sticky_key:
            h = int.from_bytes(hashlib.blake2b(sticky_key.encode(), digest_size=8).digest(), "big")
            preferred = serving[h % len(serving)]  # stable while the set of accounts is stable
            if preferred in ready:
                return preferred
        # weighted round-robin: an account of weight w appears w times in the cycle
        cycle = [a for a in ready for _ in range(a.weight)]
        if model not in self._cursors and len(self._cursors) >= MAX_CURSORS:
            self._cursors.clear()  # model names may be the client's: keep this small
        cursor = self._cursors[model] = (self._cursors.get(model, -1) + 1) % (1 << 30)
        return cycle[cursor % len(cycle)]

    def _resting_status(self, acc: Account, model: str, now: float) -> int | None:
        """The upstream status that rests `acc` for `model` now: its model's, else the account's."""
        st = self.state(acc)
        mc = st.models.get(model)
        return mc.status if mc is not None and mc.until > now else st.last_status

    def _why_cooling(self, accounts: list[Account], model: str, now: float) -> str:
        whys = []
        for acc in accounts:
            mc = self.state(acc).models.get(model)
            whys.append(mc.why if mc is not None and mc.until > now else "cooling down")
        if set(whys) == {"daily quota"}:
            return "out of its daily quota (it resets at midnight Pacific time)"
        return "rate-limited or cooling down (" + ", ".join(sorted(set(whys))) + ")"

    def ready(self, model: str, skip: frozenset[str] = frozenset()) -> bool:
        """True if some enabled account serving `model` (not in `skip`) may be asked for it now."""
        now = self._clock()
        return any(self.state(a).wait(model, now) <= 0 for a in self.candidates(model) if a.name not in skip)

    def eligible_count(self, model: str) -> int:
        return len(self.candidates(model))

    # -- outcomes ---------------------------------------------------------------------------
    def succeeded(self, acc: Account, model: str, usage: c.Usage | None = None) -> None:
        st = self.state(acc)
        if st.failures or st.cooldown_until or st.last_status != 200 or model in st.models:
            st.failures, st.cooldown_until, st.last_status = 0, 0.0, 200
            st.models.pop(model, None)
            self._changed(acc.name, "failures", "cooldown_until", "last_status", "model_cooldowns")
        self._count(acc.name, st, model, usage)

    def record_usage(self, acc: Account, model: str, usage: c.Usage | None) -> None:
        """Usage that arrives at the end of a stream, after `succeeded` was already called."""
        if usage is not None:
            self._count(acc.name, self.state(acc), model, usage, request=False)

    def _count(self, name: str, st: AccountState, model: str, usage: c.Usage | None, request: bool = True) -> None:
        if model not in st.usage and len(st.usage) >= MAX_USAGE_MODELS:
            model = OTHER_MODELS  # a pass-through mapping lets clients choose the names: bounded
        counters = st.usage.setdefault(model, {"requests": 0, "input_tokens": 0, "output_tokens": 0})
        delta = {"requests": int(request), "input_tokens": usage.input_tokens if usage else 0,
                 "output_tokens": usage.output_tokens if usage else 0}
        st.requests += delta["requests"]
        for k, v in delta.items():
            counters[k] = counters.get(k, 0) + v
        if self._records is not None:
            self._records.counted(name, model, delta)

    def cool_down(self, acc: Account, status: int, retry_after: float | None, *, model: str | None = None,
                  error: str | None = None, why: str | None = None) -> float:
        """Rest an account (or, with `model`, only that model on it: quotas are per model) after a
        rate limit or overload; returns the cooldown in seconds."""
        st = self.state(acc)
        st.failures += 1
        st.last_status = status
        st.last_error = error
        if retry_after is None or not math.isfinite(retry_after):
            delay = min(MAX_BACKOFF, 2.0 ** min(st.failures - 1, 30))
        else:  # a model's quota may rest until tomorrow's reset; an account no more than an hour
            delay = min(max(0.0, retry_after), MAX_COOLDOWN if model is None else MAX_MODEL_COOLDOWN)
        until = self._clock() + delay
        if model is None:
            st.cooldown_until, st.why = until, why
        else:
            if model not in st.models and len(st.models) >= MAX_USAGE_MODELS:  # names may be the client's
                now = self._clock()
                st.models = {m: mc for m, mc in st.models.items() if mc.until > now}
                while len(st.models) >= MAX_USAGE_MODELS:
                    del st.models[min(st.models, key=lambda m: st.models[m].until)]
            st.models[model] = ModelCooldown(until, why or "cooling down", status)
        self._changed(acc.name, "failures", "last_status", "last_error",
                      *(("cooldown_until", "why") if model is None else ("model_cooldowns",)))
        return delay

    def disable(self, acc: Account, status: int, reason: str, *, why: str = "credentials") -> None:
        st = self.state(acc)
        st.disabled_reason = reason
        st.last_status = status
        st.last_error, st.why = reason, why
        self._changed(acc.name, "disabled_reason", "last_status", "last_error", "why")

    def enable(self, name: str) -> bool:
        for acc in self._accounts:
            if acc.name == name:
                st = self.state(acc)
                st.disabled_reason, st.cooldown_until, st.failures, st.why = None, 0.0, 0, None
                st.models.clear()
                self._changed(acc.name, "disabled_reason", "cooldown_until", "failures", "why", "model_cooldowns")
                return True
        return False

    def shortest_wait(self, model: str) -> float | None:
        now = self._clock()
        waits = [self.state(a).wait(model, now) for a in self.candidates(model)]
        waits = [w for w in waits if w > 0]
        return min(waits) if waits else None

    # -- persistence, sharing & reporting ----------------------------------------------------
    def _changed(self, name: str, *fields: str) -> None:
        """`fields` are keys of AccountState.to_json(): what a backend writes and tells others."""
        if self._records is not None:
            self._records.changed(name, fields)

    def snapshot(self) -> dict[str, Any]:
        now = self._clock()
        for st in self._states.values():  # finished cooldowns need not outlive a restart
            for model in [m for m, mc in st.models.items() if mc.until <= now]:
                del st.models[model]
        return {name: st.to_json() for name, st in self._states.items()}

    def record(self, key: str) -> dict[str, Any] | None:
        """One account's record without its counters (those travel as increments)."""
        st = self._states.get(key)
        if st is None:
            return None
        doc = st.to_json()
        for k in COUNTERS:
            doc.pop(k, None)
        return doc

    def apply(self, key: str, record: dict[str, Any]) -> None:
        """Install fields another gateway instance changed (or counter totals it read back)."""
        st = self._states.get(key)
        if st is None:
            st = self._states[key] = AccountState()
        parsed = AccountState.from_json(record)
        for k in record:
            if k == "usage":
                st.usage.update(parsed.usage)
            elif k == "model_cooldowns":
                st.models = parsed.models
            elif k in AccountState.__dataclass_fields__:
                setattr(st, k, getattr(parsed, k))

    def describe(self) -> list[dict[str, Any]]:
        """Human-facing state, without any secret: one row per account, its usage per model, and
        `models`: the models resting on it, with why (rate limit, daily quota, ...) and how long."""
        now = self._clock()
        rows = []
        for acc in self._accounts:
            st = self.state(acc)
            cooling = max(0.0, st.cooldown_until - now)
            state = ("off" if acc.disabled else "disabled" if st.disabled_reason else
                     "cooling" if cooling else "ready")
            status = ("disabled in file" if acc.disabled else
                      f"disabled: {st.disabled_reason}" if st.disabled_reason else
                      f"cooling {cooling:.1f}s" if cooling else "ready")
            models = {m: {"why": mc.why, "status": mc.status, "cooldown_seconds": round(mc.until - now, 1)}
                      for m, mc in sorted(st.models.items()) if mc.until > now}
            rows.append({"account": acc.name, "provider": acc.provider, "status": status, "state": state,
                         "why": st.why if state in ("disabled", "cooling") else None,
                         "cooldown_seconds": round(cooling, 1), "models": models, "last_status": st.last_status,
                         "last_error": st.last_error, "requests": st.requests,
                         "usage": st.usage, **acc.public()})
        return rows
