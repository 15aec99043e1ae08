"""The retry and rotation policy: which account tries next, and what an upstream error means.

One request makes at most `max_attempts` attempts (Antigravity Tools' limit is 3), bounded by
the number of accounts that serve the model:
  * quota errors (429, and 499 which Google also uses for them) and overloads (503, 529) -> that
    model rests on that account (Google's quotas are per model; the account keeps serving other
    models) and the next account is tried. How long, as gemini-cli's googleQuotaErrors.ts decides:
      - a daily quota (a QuotaFailure quotaId or ErrorInfo quota_limit with "PerDay"/"Daily")
        -> until the next midnight Pacific time, when Google resets daily quotas
        (ai.google.dev/gemini-api/docs/rate-limits), whatever RetryInfo says (it says ~47s);
      - Cloud Code's ErrorInfo QUOTA_EXHAUSTED -> until its reset (quotaResetDelay / RetryInfo,
        at most an hour as every upstream wait), else the next midnight Pacific;
      - any other wait over 5 minutes -> that wait ("quota exhausted");
      - else a rate limit: RetryInfo / "Please retry in 34.07s" / Retry-After, else 60 s for a
        PerMinute quota, 10 s for RATE_LIMIT_EXCEEDED, else an increasing backoff;
  * other 5xx (500, 502, 504), connection failures and timeouts -> the whole account cools down
    (for what the upstream asked, else an increasing backoff) and the next account is tried;
  * an answer nobody can use (a malformed function call, an empty answer) -> one more attempt
    (another account, or the same one), nothing cooled;
  * the account's own credentials refused (401/403, Gemini API_KEY_INVALID) -> confirmed by a
    probe first (below); refused again -> the account is disabled with the reason, next account;
  * an OAuth refresh refused (CredentialsRejected: invalid_grant...) -> disabled at once: that
    request carries nothing from the client;
  * an access token refused twice (StaleCredentials) -> next account, without cooling or disabling;
  * anything else that is not a 4xx (a redirect, a malformed answer = 502) -> cool down, rotate;
  * any other 4xx is the request's own fault -> returned to the client at once.
When no attempt succeeded the client gets one OpenAI-shaped error that says why: 429 only when
the upstreams said so, 503 with the real reason when accounts rest after server errors.

Why the probe: a 401/403 answer to a client's request does not prove the account's credentials
bad. The request may have asked for something the account may not touch (Gemini answers 403 for
a file URI of another project), and a model name built to escape its URL path once made every
account disable itself. So a credential error is only believed after a probe that carries no
client input (the provider's `probe`: list models, load the Cloud Code project) is refused too.
A probe that passes clears the account (the upstream refused *this request*: next account, and a
400 to the client if none accepts it); one that cannot tell cools the account instead. A passing
probe is remembered for PROBE_TTL seconds, so hostile requests cannot make every request probe.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import enum
import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from .accounts_file import Account
from .pool import AccountPool, NoAccount
from ..protocol.errors import (
    CredentialsRejected,
    GatewayError,
    StaleCredentials,
    UnusableAnswer,
    UpstreamError,
)

log = logging.getLogger(__name__)

T = TypeVar("T")

MAX_ATTEMPTS = 3  # Antigravity Tools' MAX_RETRY_ATTEMPTS
# Statuses after which another account may well succeed.
ROTATE_STATUSES = frozenset({429, 499, 500, 502, 503, 504, 529})
QUOTA_STATUSES = frozenset({429, 499})  # 499: gRPC CANCELLED, which gemini-cli treats exactly like 429
MODEL_STATUSES = QUOTA_STATUSES | {503, 529}  # about one model on the account ("The model is overloaded")
MAX_RETRYABLE_DELAY = 300.0  # gemini-cli: a longer wait is a spent quota, not a rate limit
RATE_LIMIT_DELAY = 10.0  # gemini-cli's wait for Cloud Code's RATE_LIMIT_EXCEEDED without a delay
PER_MINUTE_DELAY = 60.0
# Reasons that blame the account's credentials whatever the status (the Gemini API answers a
# wrong or expired key with 400 INVALID_ARGUMENT + ErrorInfo API_KEY_INVALID).
CREDENTIAL_REASONS = frozenset({"invalid_grant", "API_KEY_INVALID"})
PROBE_TTL = 60.0  # seconds a passed credential probe is trusted

# Checks an account's credentials with a request that carries no client input: None if they were
# accepted, else the error (judged like any other: DISABLE = refused, anything else = cannot tell).
Probe = Callable[[Account], Awaitable[UpstreamError | None]]


class Verdict(enum.Enum):
    COOL_DOWN = "cool down and rotate"
    DISABLE = "disable the account and rotate"
    ROTATE = "rotate"
    RETRY = "try once more, any account"
    FAIL = "return to the client"


def judge(err: UpstreamError) -> Verdict:
    """What an upstream error says about the account that got it."""
    if isinstance(err, UnusableAnswer):
        return Verdict.RETRY if err.retry else Verdict.FAIL
    if isinstance(err, StaleCredentials):
        return Verdict.ROTATE
    if isinstance(err, CredentialsRejected) or err.status in (401, 403) or err.reason in CREDENTIAL_REASONS:
        return Verdict.DISABLE
    if err.status == 0 or err.status in ROTATE_STATUSES or not 400 <= err.status < 500:
        return Verdict.COOL_DOWN  # includes redirects (never followed) and malformed answers (502)
    return Verdict.FAIL


# What a disabling error is about, for the operator (GET /gateway/accounts); default "credentials".
_WHY_BY_REASON = {
    "UNSUPPORTED_CLIENT": "unsupported account",  # individual accounts since 2026-06-18 (Cloud Code)
    "VALIDATION_REQUIRED": "validation required",
    "SUBSCRIPTION_REQUIRED": "no licence",  # 403 from Cloud Code: no Gemini Code Assist licence
    "PROJECT_REQUIRED": "no project",
}


def why(err: UpstreamError) -> str:
    """In a few words, what an error says about the account (the operator's view)."""
    if judge(err) is Verdict.DISABLE:
        return _WHY_BY_REASON.get(err.reason or "", "credentials")
    return "rate limit" if err.status == 429 else "unreachable" if err.status == 0 else f"upstream {err.status}"


@dataclass(slots=True)
class Cooldown:
    seconds: float | None  # None: the pool's increasing backoff
    why: str  # what `gateway.accounts` shows: "rate limit", "daily quota", ...
    model: bool  # only the model on this account, not the whole account


def _pacific() -> dt.tzinfo:
    try:
        return ZoneInfo("America/Los_Angeles")
    except ZoneInfoNotFoundError:  # no tz database: standard time; up to an hour late in summer
        return dt.timezone(dt.timedelta(hours=-8))


PACIFIC = _pacific()


def until_pacific_midnight(now: float) -> float:
    """Seconds from `now` (epoch) to the next midnight in California, when daily quotas reset."""
    local = dt.datetime.fromtimestamp(now, PACIFIC)
    midnight = dt.datetime.combine(local.date() + dt.timedelta(days=1), dt.time(), PACIFIC)
    return max(1.0, midnight.timestamp() - now)


def cooldown_for(err: UpstreamError, now: float) -> Cooldown:
    """How long an account (or one model on it) rests after a COOL_DOWN error, and why."""
    if err.status in QUOTA_STATUSES:
        if any("PerDay" in q or "Daily" in q for q in err.quota_ids):
            return Cooldown(until_pacific_midnight(now), "daily quota", True)
        if err.reason in ("QUOTA_EXHAUSTED", "INSUFFICIENT_G1_CREDITS_BALANCE"):
            wait = err.retry_after if err.retry_after is not None else until_pacific_midnight(now)
            return Cooldown(wait, "quota exhausted", True)
        wait = err.retry_after
        if wait is None and any("PerMinute" in q for q in err.quota_ids):
            wait = PER_MINUTE_DELAY
        if wait is None and err.reason == "RATE_LIMIT_EXCEEDED":
            wait = RATE_LIMIT_DELAY
        if wait is not None and wait > MAX_RETRYABLE_DELAY:
            return Cooldown(wait, "quota exhausted", True)
        return Cooldown(wait, "rate limit", True)
    if err.status in MODEL_STATUSES:
        return Cooldown(err.retry_after, "overloaded", True)
    return Cooldown(err.retry_after, why(err), False)


@dataclass(slots=True)
class Attempt:
    account: str
    status: int  # the upstream's HTTP status; 0 = no answer (connection failure, timeout)
    # until the upstream answered (a stream: until it accepted the request)
    seconds: float = field(default=0.0, compare=False)


def retry_after_seconds(delay: float | None) -> str | None:
    """A `retry-after` header value (whole seconds, at least 1)."""
    return None if delay is None else str(max(1, math.ceil(delay)))


def _from(err: GatewayError, upstream: UpstreamError) -> GatewayError:
    """Keep what the upstream said on the client's error: a fallback chain (addon/pool/fallback.py)
    reads it to tell a missing model from the request's own fault."""
    err.upstream = upstream  # type: ignore[attr-defined]
    return err


class RetryPolicy:
    def __init__(self, pool: AccountPool, *, max_attempts: int = MAX_ATTEMPTS,
                 redact: Callable[[str], str] = lambda text: text, probe: Probe | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.pool = pool
        self.max_attempts = max_attempts
        self.redact = redact  # upstream messages may echo a key or token back
        self.probe = probe
        self._clock = clock
        self._probing: dict[str, asyncio.Future[bool | None]] = {}  # one probe at a time per account
        self._vouched: dict[str, float] = {}  # account -> when its credentials last passed a probe

    async def run(self, model: str, call: Callable[[Account], Awaitable[T]], *, sticky_key: str | None = None,
                  attempts: list[Attempt] | None = None, skip: frozenset[str] = frozenset()) -> tuple[Account, T]:
        """`call(account)` on one account after another until one succeeds; raises GatewayError.

        `attempts` (if given) receives one entry per attempt, for the operator's story; accounts
        named in `skip` are never picked (e.g. their provider cannot do what is asked)."""
        attempts = attempts if attempts is not None else []
        tried: set[str] = set(skip)
        last: UpstreamError | None = None
        eligible = sum(1 for a in self.pool.candidates(model) if a.name not in skip)
        budget = max(1, min(self.max_attempts, eligible))
        retried, made = False, 0
        while made < budget:
            made += 1
            try:
                acc = self.pool.pick(model, tried, sticky_key)
            except NoAccount as exc:
                if last is not None:
                    break
                raise self._no_account(exc) from None
            tried.add(acc.name)
            began = time.monotonic()
            try:
                result = await call(acc)
            except UpstreamError as err:
                attempts.append(Attempt(acc.name, err.status, time.monotonic() - began))
                last = err
                verdict = judge(err)
                # Refused refreshes/setup calls and Google's account-state reasons are about the account itself.
                if (verdict is Verdict.DISABLE and not isinstance(err, CredentialsRejected)
                        and err.reason not in _WHY_BY_REASON):
                    confirmed = await self._credentials_refused(acc)
                    if confirmed is None:
                        verdict = Verdict.COOL_DOWN
                    elif not confirmed:
                        err.request_refused = True  # type: ignore[attr-defined]
                        log.info("account %s: upstream %s for this request, but its credentials passed a probe",
                                 acc.name, err.status)
                        continue
                if verdict is Verdict.DISABLE:
                    # long enough for a verification link (Cloud Code's VALIDATION_REQUIRED)
                    reason = self.redact(f"{err.status}: {err.message}")[:400]
                    self.pool.disable(acc, err.status, reason, why=why(err))
                    log.warning("account %s disabled (%s): %s", acc.name, why(err), reason)
                elif verdict is Verdict.COOL_DOWN:
                    cool = cooldown_for(err, self.pool.clock())
                    delay = self.pool.cool_down(acc, err.status, cool.seconds, model=model if cool.model else None,
                                                error=self.redact(err.message)[:400], why=cool.why)
                    log.info("account %s cooling %.1fs (%s%s) after upstream %s", acc.name, delay, cool.why,
                             f", {model}" if cool.model else "", err.status)
                elif verdict is Verdict.RETRY and not retried:
                    # Not the account's fault: one more attempt, on this account too if it is the only one.
                    retried, budget = True, budget + 1
                    tried.discard(acc.name)
                    log.info("account %s gave an unusable answer (%s); trying once more", acc.name, err.reason)
                elif verdict in (Verdict.FAIL, Verdict.RETRY):
                    raise _from(self._upstream_error(err, acc.provider), err) from None
                continue
            attempts.append(Attempt(acc.name, 200, time.monotonic() - began))
            self.pool.succeeded(acc, model)
            return acc, result
        assert last is not None
        raise _from(self._exhausted(last, model), last)

    async def _credentials_refused(self, acc: Account) -> bool | None:
        """True if a client-free probe confirms the account's credentials are refused."""
        if self.probe is None:
            return None
        vouched = self._vouched.get(acc.name)
        if vouched is not None and self._clock() - vouched < PROBE_TTL:
            return False
        pending = self._probing.get(acc.name)
        if pending is None:
            pending = self._probing[acc.name] = asyncio.ensure_future(self._run_probe(acc))
            pending.add_done_callback(lambda _: self._probing.pop(acc.name, None))
        ok = await asyncio.shield(pending)
        return None if ok is None else not ok

    async def _run_probe(self, acc: Account) -> bool | None:
        """True = credentials accepted, False = refused, None = cannot tell."""
        assert self.probe is not None
        try:
            err = await self.probe(acc)
        except UpstreamError as exc:  # e.g. the upstream could not be reached
            err = exc
        except Exception:  # a probe must never turn into the client's error
            log.exception("credential probe of %s failed", acc.name)
            return None
        if err is None:
            self._vouched[acc.name] = self._clock()
            return True
        return False if judge(err) is Verdict.DISABLE else None

    # ---- what the client is told -------------------------------------------------------------
    @staticmethod
    def _no_account(exc: NoAccount) -> GatewayError:
        if exc.status == 429:
            ra = retry_after_seconds(exc.retry_after)
            return GatewayError(429, f"{exc} Retry after {ra or 'a few'} seconds.", code="rate_limit_exceeded",
                                headers={"retry-after": ra} if ra else {})
        if exc.retry_after is not None:  # resting after server errors, not rate-limited
            ra = retry_after_seconds(exc.retry_after)
            return GatewayError(503, f"{exc} Retry after {ra} seconds.", code="upstream_unavailable",
                                headers={"retry-after": ra})
        # A configuration problem: the SDKs' automatic retries of a 5xx cannot help (x-should-retry).
        return GatewayError(503, str(exc), code="no_account_available", headers={"x-should-retry": "false"})

    def _upstream_error(self, err: UpstreamError, provider: str) -> GatewayError:
        status = err.status if 400 <= err.status <= 599 else 502
        ra = retry_after_seconds(err.retry_after)
        msg = self.redact(f"Upstream {provider} error ({err.status}): {err.message}")
        code = err.code if isinstance(err, UnusableAnswer) else "upstream_error"
        return GatewayError(status, msg, code=code, headers={"retry-after": ra} if ra else {})

    def _exhausted(self, last: UpstreamError, model: str) -> GatewayError:
        if last.status in QUOTA_STATUSES:
            ra = retry_after_seconds(self.pool.shortest_wait(model) or last.retry_after)
            return GatewayError(429, self.redact(f"All accounts for '{model}' are rate-limited "
                                                 f"(last upstream message: {last.message})"),
                                code="rate_limit_exceeded", headers={"retry-after": ra} if ra else {})
        if getattr(last, "request_refused", False):
            # The accounts' credentials work (probed): the upstream refused what this request asks.
            return GatewayError(400, self.redact(f"The upstream refused this request ({last.status}: "
                                                 f"{last.message})"), code="upstream_refused_request")
        if last.status == 0:
            return GatewayError(502, f"Could not reach the upstream for '{model}': {last.message}",
                                code="upstream_unreachable")
        if last.status in (401, 403) or judge(last) is Verdict.DISABLE:
            # Our account's credentials were refused, not the client's key: a 401/403 would make
            # clients think *their* key is wrong (and some would ask the user to log in again).
            return GatewayError(503, self.redact(f"No usable upstream account for '{model}': the upstream "
                                                 f"rejected the account's credentials ({last.status}: "
                                                 f"{last.message})"), code="no_account_available")
        status = last.status if 400 <= last.status <= 599 else 502
        return GatewayError(status, self.redact(f"Upstream error ({last.status}) after trying every eligible "
                                                f"account: {last.message}"), code="upstream_error")
