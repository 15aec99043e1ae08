"""Quota errors: what Google's 429 bodies mean for the pool, and per-model cooldowns.

The bodies are Google's own, verbatim as third parties pasted them into issues (sources next to
each). The classification follows gemini-cli's packages/core/src/utils/googleQuotaErrors.ts: a
QuotaFailure quotaId with PerDay/Daily or a Cloud Code ErrorInfo QUOTA_EXHAUSTED is spent for hours
(daily quotas reset at midnight Pacific time: ai.google.dev/gemini-api/docs/rate-limits), a wait
over 5 minutes likewise, anything else is a short rate limit; 499 counts as 429. Quotas are per
model, so the pool rests the (account, model) pair.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest

from addon.pool.pool import AccountPool, NoAccount
from addon.backends import MAX_UPSTREAM_DELAY, parse_duration
from addon.backends.gemini import error_from
from addon.pool.policy import (
    PACIFIC,
    Cooldown,
    RetryPolicy,
    Verdict,
    cooldown_for,
    judge,
    until_pacific_midnight,
)
from addon.protocol.errors import GatewayError, UpstreamError
from addon.stores.shared.local import FileAccountRecords
from addon.pool.state import StateStore
from tests.test_pool_unit import Clock, config, gem, make_pool

PRO, FLASH = "gemini-2.5-pro", "gemini-2.5-flash"
# 2025-07-01 12:00 in California (summer time, UTC-7): midnight is 12 hours away
NOON_PDT = dt.datetime(2025, 7, 1, 12, 0, tzinfo=dt.timezone(dt.timedelta(hours=-7))).timestamp()

# google-gemini/gemini-cli-action#36, RooCodeInc/Roo-Code#3883: the free tier's per-minute limit
PER_MINUTE = {"error": {"code": 429, "message": "You exceeded your current quota, please check your plan and billing details. For more information on this error, head to: https://ai.google.dev/gemini-api/docs/rate-limits.", "status": "RESOURCE_EXHAUSTED", "details": [  # noqa: E501
    {"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": [{"quotaMetric": "generativelanguage.googleapis.com/generate_content_free_tier_input_token_count", "quotaId": "GenerateContentInputTokensPerModelPerMinute-FreeTier", "quotaDimensions": {"location": "global", "model": "gemini-2.5-flash"}, "quotaValue": "250000"}]},  # noqa: E501
    {"@type": "type.googleapis.com/google.rpc.Help", "links": [{"description": "Learn more about Gemini API quotas", "url": "https://ai.google.dev/gemini-api/docs/rate-limits"}]},  # noqa: E501
    {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "26s"}]}}

# googleapis/python-genai#2044: the daily limit, reported together with minute and token limits,
# with a misleading short RetryInfo
DAILY = {"error": {"code": 429, "message": "You exceeded your current quota, please check your plan and billing details. For more information on this error, head to: https://ai.google.dev/gemini-api/docs/rate-limits.", "status": "RESOURCE_EXHAUSTED", "details": [  # noqa: E501
    {"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": [
        {"quotaMetric": "generativelanguage.googleapis.com/generate_content_free_tier_requests", "quotaId": "GenerateRequestsPerDayPerProjectPerModel-FreeTier", "quotaDimensions": {"location": "global", "model": "gemini-2.5-pro"}, "quotaValue": "50"},  # noqa: E501
        {"quotaMetric": "generativelanguage.googleapis.com/generate_content_free_tier_requests", "quotaId": "GenerateRequestsPerMinutePerProjectPerModel-FreeTier", "quotaDimensions": {"location": "global", "model": "gemini-2.5-pro"}, "quotaValue": "2"}]},  # noqa: E501
    {"@type": "type.googleapis.com/google.rpc.Help", "links": [{"description": "Learn more about Gemini API quotas", "url": "https://ai.google.dev/gemini-api/docs/rate-limits"}]},  # noqa: E501
    {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "47s"}]}}

# continuedev/continue#10085: the newer message states the wait in words, details come Help first
NEWER_MESSAGE = {"error": {"code": 429, "status": "RESOURCE_EXHAUSTED", "message": "You exceeded your current quota, please check your plan and billing details. For more information on this error, head to: https://ai.google.dev/gemini-api/docs/rate-limits. To monitor your current usage, head to: https://ai.dev/rate-limit. \n* Quota exceeded for metric: generativelanguage.googleapis.com/generate_content_free_tier_requests, limit: 0, model: gemini-2.5-pro\nPlease retry in 38.962214405s.", "details": [  # noqa: E501
    {"@type": "type.googleapis.com/google.rpc.Help", "links": [{"description": "Learn more about Gemini API quotas", "url": "https://ai.google.dev/gemini-api/docs/rate-limits"}]}]}}  # noqa: E501

# liuw1535/antigravity2api-nodejs#44: Cloud Code, a spent quota that resets in days
CLOUDCODE_EXHAUSTED = {"error": {"code": 429, "message": "You have exhausted your capacity on this model. Your quota will reset after 161h39m41s.", "status": "RESOURCE_EXHAUSTED", "details": [  # noqa: E501
    {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "QUOTA_EXHAUSTED", "domain": "cloudcode-pa.googleapis.com", "metadata": {"uiMessage": "true", "model": "claude-sonnet-4-5", "quotaResetDelay": "161h39m41.300432511s", "quotaResetTimeStamp": "2025-12-18T20:18:34Z"}},  # noqa: E501
    {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "581981.300432511s"}]}}

# google-gemini/gemini-cli#29425: the newer Cloud Code wording, the reset only in the metadata
INDIVIDUAL_QUOTA = {"error": {"code": 429, "message": "Individual quota reached. Please upgrade your subscription to increase your limits. Resets in 9h22m20s.", "status": "RESOURCE_EXHAUSTED", "details": [  # noqa: E501
    {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "QUOTA_EXHAUSTED", "domain": "cloudcode-pa.googleapis.com", "metadata": {"quotaResetTimeStamp": "2026-03-02T07:00:00Z", "quotaResetDelay": "33740.910400305s", "uiMessage": "true", "model": "gemini-3.5-flash"}}]}}  # noqa: E501

# google-gemini/gemini-cli#10513: the older Cloud Code form, an array with RATE_LIMIT_EXCEEDED
CLOUDCODE_RATE_LIMIT = [{"error": {"code": 429, "message": "Quota exceeded for quota metric 'Gemini 2.5 Pro Requests' and limit 'Gemini 2.5 Pro Requests per day per user per tier' of service 'cloudcode-pa.googleapis.com' for consumer 'project_number:…'.", "errors": [{"message": "…", "domain": "global", "reason": "rateLimitExceeded"}], "status": "RESOURCE_EXHAUSTED", "details": [  # noqa: E501
    {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "RATE_LIMIT_EXCEEDED", "domain": "googleapis.com", "metadata": {"quota_metric": "cloudcode-pa.googleapis.com/gemini_2_5_pro_requests", "quota_limit": "Gemini25ProReques…"}}]}}]  # noqa: E501

# google/deprecated-generative-ai-python#206 (2024): the per-region limit
PER_REGION = {"error": {"code": 429, "message": "Quota exceeded for quota metric 'Generate Content API requests per minute' and limit 'GenerateContent request limit per minute for a region' of service 'generativelanguage.googleapis.com' for consumer 'project_number:…'.", "status": "RESOURCE_EXHAUSTED", "details": [  # noqa: E501
    {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "RATE_LIMIT_EXCEEDED", "domain": "googleapis.com", "metadata": {"quota_limit": "GenerateContentRequestsPerMinutePerProjectPerRegion", "service": "generativelanguage.googleapis.com"}}]}}  # noqa: E501

# google-gemini/gemini-cli#23520: Cloud Code out of capacity
NO_CAPACITY = {"error": {"code": 503, "message": "No capacity available for model on the server", "status": "UNAVAILABLE", "details": [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "domain": "cloudcode-pa.googleapis.com", "reason": "MODEL_CAPACITY_EXHAUSTED"}]}}  # noqa: E501


def parsed(body: Any, status: int = 429) -> UpstreamError:
    return error_from(status, json.dumps(body).encode(), {})


def classify(body: Any, status: int = 429, now: float = NOON_PDT) -> Cooldown:
    err = parsed(body, status)
    assert judge(err) is Verdict.COOL_DOWN
    return cooldown_for(err, now)


# ---- classification ------------------------------------------------------------------------------

def test_per_minute_limit_is_a_short_rate_limit_of_the_model() -> None:
    err = parsed(PER_MINUTE)
    assert err.quota_ids == ("GenerateContentInputTokensPerModelPerMinute-FreeTier",) and err.retry_after == 26.0
    assert classify(PER_MINUTE) == Cooldown(26.0, "rate limit", True)


def test_daily_quota_rests_until_midnight_pacific_whatever_retry_info_says() -> None:
    err = parsed(DAILY)
    assert "GenerateRequestsPerDayPerProjectPerModel-FreeTier" in err.quota_ids and err.retry_after == 47.0
    assert classify(DAILY) == Cooldown(12 * 3600.0, "daily quota", True)


def test_the_wait_in_the_newer_message_text_is_understood() -> None:
    assert parsed(NEWER_MESSAGE).retry_after == pytest.approx(38.962214405)
    assert classify(NEWER_MESSAGE) == Cooldown(pytest.approx(38.962214405), "rate limit", True)


def test_cloud_code_quota_exhausted_rests_until_its_reset() -> None:
    # the reset in 161 hours, capped like every upstream wait at an hour (then the model is tried again)
    assert classify(CLOUDCODE_EXHAUSTED) == Cooldown(MAX_UPSTREAM_DELAY, "quota exhausted", True)
    # only quotaResetDelay ("9h22m20s" in words): still the reset, capped the same way
    assert classify(INDIVIDUAL_QUOTA) == Cooldown(MAX_UPSTREAM_DELAY, "quota exhausted", True)
    # gemini-cli#22107: QUOTA_EXHAUSTED with "reset after 5s" is still terminal for gemini-cli; the
    # pool simply rests the model for what Google said
    short = json.loads(json.dumps(CLOUDCODE_EXHAUSTED))
    short["error"]["details"] = [short["error"]["details"][0]]
    short["error"]["details"][0]["metadata"]["quotaResetDelay"] = "5s"
    assert classify(short) == Cooldown(5.0, "quota exhausted", True)
    # and without any reset time: until the next midnight Pacific
    bare = {"error": {"code": 429, "status": "RESOURCE_EXHAUSTED", "message": "exhausted", "details": [
        {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "QUOTA_EXHAUSTED",
         "domain": "cloudcode-pa.googleapis.com"}]}}
    assert classify(bare) == Cooldown(12 * 3600.0, "quota exhausted", True)


def test_rate_limit_exceeded_is_short() -> None:
    err = parsed(CLOUDCODE_RATE_LIMIT)
    assert err.reason == "RATE_LIMIT_EXCEEDED" and err.message.startswith("Quota exceeded for quota metric")
    assert classify(CLOUDCODE_RATE_LIMIT) == Cooldown(10.0, "rate limit", True)
    assert classify(PER_REGION) == Cooldown(60.0, "rate limit", True)  # a PerMinute quota_limit


def test_any_wait_over_five_minutes_is_a_spent_quota() -> None:
    long_wait = {"error": {"code": 429, "status": "RESOURCE_EXHAUSTED", "message": "quota", "details": [
        {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "301s"}]}}
    assert classify(long_wait) == Cooldown(301.0, "quota exhausted", True)
    long_wait["error"]["details"][0]["retryDelay"] = "300s"
    assert classify(long_wait) == Cooldown(300.0, "rate limit", True)


def test_499_is_a_quota_status_and_overloads_rest_only_the_model() -> None:
    cancelled = {"error": {"code": 499, "status": "CANCELLED", "message": "The operation was cancelled."}}
    assert classify(cancelled, 499) == Cooldown(None, "rate limit", True)
    assert classify(NO_CAPACITY, 503) == Cooldown(None, "overloaded", True)
    assert cooldown_for(UpstreamError(500, "internal"), NOON_PDT) == Cooldown(None, "upstream 500", False)
    assert cooldown_for(UpstreamError(0, "connection failed"), NOON_PDT) == Cooldown(None, "unreachable", False)


@pytest.mark.parametrize("text, seconds", [("34.074824224s", 34.074824224), ("900ms", 0.9), ("60s", 60.0),
                                           ("2m5.5s", 125.5), ("51820.638305887s", MAX_UPSTREAM_DELAY),
                                           ("9h22m20s", MAX_UPSTREAM_DELAY), ("1.5 s", None), ("soon", None),
                                           (12, None), ("1" * 13 + "s", None)])
def test_durations(text: Any, seconds: float | None) -> None:
    assert parse_duration(text) == (pytest.approx(seconds) if seconds is not None else None)


def test_midnight_pacific_in_winter_and_summer() -> None:
    winter = dt.datetime(2025, 1, 15, 23, 0, tzinfo=dt.timezone(dt.timedelta(hours=-8))).timestamp()
    assert until_pacific_midnight(winter) == 3600.0
    assert until_pacific_midnight(NOON_PDT) == 12 * 3600.0
    at = dt.datetime.fromtimestamp(NOON_PDT + until_pacific_midnight(NOON_PDT), PACIFIC)
    assert (at.hour, at.minute, at.day) == (0, 0, 2)


# ---- the pool rests (account, model) -----------------------------------------------------------

def test_a_daily_quota_on_one_model_leaves_the_account_serving_others(tmp_path: Path) -> None:
    clock = Clock(NOON_PDT)
    store = StateStore(tmp_path / "state.json")
    pool = make_pool(gem("a"), clock=clock, store=store)
    a = pool.accounts[0]
    cool = cooldown_for(parsed(DAILY), clock())
    assert pool.cool_down(a, 429, cool.seconds, model=PRO, why=cool.why) == 12 * 3600.0
    assert pool.pick(FLASH, set()).name == "a"  # another model on the same account still serves
    with pytest.raises(NoAccount) as info:
        pool.pick(PRO, set())
    assert info.value.status == 429 and info.value.retry_after == 12 * 3600.0
    assert "daily quota" in str(info.value) and "midnight Pacific" in str(info.value)
    assert pool.shortest_wait(PRO) == 12 * 3600.0 and pool.shortest_wait(FLASH) is None
    row = pool.describe()[0]
    assert row["status"] == "ready" and row["models"] == {
        PRO: {"why": "daily quota", "status": 429, "cooldown_seconds": 12 * 3600.0}}

    # it survives a restart (persisted per model), and ends on time
    store.flush()
    saved = json.loads((tmp_path / "state.json").read_text())["accounts"]["a"]["model_cooldowns"]
    assert saved == {PRO: {"until": NOON_PDT + 12 * 3600, "why": "daily quota", "status": 429}}
    again = AccountPool(FileAccountRecords(StateStore(tmp_path / "state.json")), clock=clock)
    again.update(config(gem("a")))
    with pytest.raises(NoAccount):
        again.pick(PRO, set())
    clock.advance(12 * 3600)
    assert again.pick(PRO, set()).name == "a"


def test_a_success_or_enable_ends_the_models_rest() -> None:
    pool = make_pool(gem("a"))
    a = pool.accounts[0]
    pool.cool_down(a, 429, 30.0, model=PRO, why="rate limit")
    pool.succeeded(a, PRO)
    assert pool.state(a).models == {}
    pool.cool_down(a, 429, 3600.0, model=PRO, why="daily quota")
    assert pool.enable("a") and pool.pick(PRO, set()).name == "a"


def test_a_corrupt_model_cooldown_in_the_state_file_is_dropped(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    path.write_text(json.dumps({"accounts": {"a": {"model_cooldowns": {
        PRO: {"until": "tomorrow"}, FLASH: "x", "gemini-3-flash": {"until": 5e9, "why": "daily quota"}}}}}))
    pool = AccountPool(FileAccountRecords(StateStore(path)), clock=Clock(NOON_PDT))
    pool.update(config(gem("a")))
    assert set(pool.state(pool.accounts[0]).models) == {"gemini-3-flash"}
    assert pool.pick(PRO, set()).name == "a"


async def test_policy_rotates_away_from_a_spent_model_and_ends_in_a_429_with_retry_after() -> None:
    clock = Clock(NOON_PDT)
    pool = make_pool(gem("a"), gem("b"), clock=clock)
    daily = parsed(DAILY)
    calls: list[str] = []

    async def attempt(acc: Any) -> str:
        calls.append(acc.name)
        if acc.name == "a":
            raise daily
        return "ok"

    policy = RetryPolicy(pool)
    for _ in range(3):
        acc, _ = await policy.run(PRO, attempt)
        assert acc.name == "b"
    assert calls.count("a") == 1, "a spent daily quota is not tried again"
    assert (await policy.run(FLASH, attempt))[0].name in ("a", "b")

    async def spent(acc: Any) -> str:
        raise daily

    with pytest.raises(GatewayError) as info:
        await RetryPolicy(make_pool(gem("c"), clock=clock)).run(PRO, spent)
    err = info.value
    assert err.status == 429 and err.code == "rate_limit_exceeded" and err.headers == {"retry-after": "43200"}


def test_a_model_resting_after_overloads_is_a_503_not_a_rate_limit() -> None:
    pool = make_pool(gem("a"))
    pool.cool_down(pool.accounts[0], 503, 20.0, model=PRO, why="overloaded")
    with pytest.raises(NoAccount) as info:
        pool.pick(PRO, set())
    assert info.value.status == 503 and "upstream errors (503)" in str(info.value)


def test_model_cooldowns_per_account_are_bounded() -> None:
    """Model names may be the client's (a pass-through mapping): the map cannot grow without end."""
    from addon.pool.pool import MAX_MODEL_COOLDOWN, MAX_USAGE_MODELS
    pool = make_pool(gem("a"))
    a = pool.accounts[0]
    for i in range(MAX_USAGE_MODELS + 10):
        pool.cool_down(a, 429, 100.0 + i, model=f"gemini-x-{i}", why="rate limit")
    models = pool.state(a).models
    assert len(models) == MAX_USAGE_MODELS and f"gemini-x-{MAX_USAGE_MODELS + 9}" in models
    assert "gemini-x-0" not in models  # the one ending soonest made room
    assert pool.cool_down(a, 429, 10 * 24 * 3600.0, model=PRO, why="daily quota") == MAX_MODEL_COOLDOWN
