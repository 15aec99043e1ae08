"""Finish reasons and quota errors through a real mitmdump, with the openai SDK as the client.

Finish reasons (google-genai's FinishReason): a malformed function call or an empty answer is
retried once before the client sees a byte (as gemini-cli's geminiChat.ts retries them), then it
is an error with a code saying why; filters are `content_filter` / Responses `incomplete`.
Quotas (gemini-cli's googleQuotaErrors.ts; daily quotas reset at midnight Pacific time,
ai.google.dev/gemini-api/docs/rate-limits): a daily quota rests that model on that account until
then, and the account keeps serving other models.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from addon.pool.policy import until_pacific_midnight
from tests.conftest import Emulator, Gateway, GatewayFactory
from tests.test_pool_e2e import PROBE, accounts, email, gemini, key, state, wait_for
from tests.test_quota_unit import DAILY

pytestmark = pytest.mark.e2e

FLASH, PRO = "gemini-2.5-flash", "gemini-2.5-pro"


def generate_calls(emulator: Emulator) -> list[dict[str, Any]]:
    return [e for e in emulator.log() if "generatecontent" in e["path"].lower()]


# ---- finish reasons --------------------------------------------------------------------------

@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_a_malformed_function_call_is_retried_once(gateway: Gateway, emulator: Emulator, stream: bool) -> None:
    emulator.rules({"times": 1, "reply": {"text": "", "finish_reason": "MALFORMED_FUNCTION_CALL"}},
                   {"times": 1, "reply": {"text": "Fixed."}})
    client = gateway.openai()
    if stream:
        text = "".join(ch.choices[0].delta.content or "" for ch in client.chat.completions.create(
            model=FLASH, messages=[{"role": "user", "content": "hi"}], stream=True) if ch.choices)
    else:
        text = client.chat.completions.create(model=FLASH, messages=[{"role": "user", "content": "hi"}]) \
            .choices[0].message.content
    assert text == "Fixed." and len(generate_calls(emulator)) == 2
    # nobody was cooled for it: the next request goes straight through
    emulator.reset()
    client.chat.completions.create(model=FLASH, messages=[{"role": "user", "content": "again"}])
    assert len(generate_calls(emulator)) == 1


def test_a_second_failure_is_an_error_that_says_why(gateway: Gateway, emulator: Emulator) -> None:
    emulator.rules({"times": 4, "reply": {"text": "", "finish_reason": "MALFORMED_FUNCTION_CALL"}})
    client = gateway.openai()
    with pytest.raises(openai.InternalServerError) as info:
        client.chat.completions.create(model=FLASH, messages=[{"role": "user", "content": "hi"}])
    assert info.value.status_code == 502 and info.value.code == "malformed_function_call"
    assert "MALFORMED_FUNCTION_CALL" in info.value.message and len(generate_calls(emulator)) == 2
    with pytest.raises(openai.InternalServerError) as info:  # Responses: the same error
        client.responses.create(model=FLASH, input="hi")
    assert info.value.code == "malformed_function_call"


def test_a_failure_after_the_first_byte_ends_the_stream_with_an_error(gateway: Gateway, emulator: Emulator) -> None:
    emulator.rules({"times": 1, "reply": {"chunks": ["Let me ", "call it"], "finish_reason": "MALFORMED_FUNCTION_CALL"}})
    got = ""
    with pytest.raises(openai.APIError) as info:
        for ch in gateway.openai().chat.completions.create(model=FLASH, messages=[{"role": "user", "content": "hi"}],
                                                           stream=True):
            got += (ch.choices[0].delta.content or "") if ch.choices else ""
    assert got == "Let me call it" and "MALFORMED_FUNCTION_CALL" in info.value.message
    assert len(generate_calls(emulator)) == 1  # text was already out: no silent retry


def test_filters_are_content_filter_and_incomplete(gateway: Gateway, emulator: Emulator) -> None:
    emulator.rules({"times": 2, "reply": {"text": "Partial", "finish_reason": "RECITATION"}})
    client = gateway.openai()
    choice = client.chat.completions.create(model=FLASH, messages=[{"role": "user", "content": "hi"}]).choices[0]
    assert (choice.finish_reason, choice.message.content) == ("content_filter", "Partial")
    resp = client.responses.create(model=FLASH, input="hi")
    assert resp.status == "incomplete" and resp.incomplete_details is not None
    assert resp.incomplete_details.reason == "content_filter" and resp.output_text == "Partial"


# ---- quotas ------------------------------------------------------------------------------------

def test_a_daily_quota_rests_one_model_and_the_account_serves_others(gateways: GatewayFactory, emulator: Emulator,
                                                                      tmp_path: Path) -> None:
    probe = tmp_path / "probe.py"
    probe.write_text(PROBE)
    gw = gateways.start(accounts(gemini(emulator, "quota")), extra_args=["-s", str(probe)])
    err = DAILY["error"]
    emulator.rules({"match": {"model": PRO}, "status": 429, "message": err["message"], "details": err["details"]})
    client = gw.openai()

    with pytest.raises(openai.RateLimitError) as info:
        client.chat.completions.create(model=PRO, messages=[{"role": "user", "content": "hi"}])
    wait = int(info.value.response.headers["retry-after"])
    assert abs(wait - until_pacific_midnight(time.time())) < 120, "not the misleading 47 s of RetryInfo"
    assert info.value.code == "rate_limit_exceeded" and len(generate_calls(emulator)) == 1

    # the same account still answers another model ...
    raw = client.chat.completions.with_raw_response.create(model=FLASH, messages=[{"role": "user", "content": "hi"}])
    assert raw.headers["x-account-email"] == email("quota") and raw.parse().choices[0].message.content
    # ... while the spent one is refused without asking the upstream, saying why
    with pytest.raises(openai.RateLimitError) as info:
        client.responses.create(model=PRO, input="hi")
    assert "daily quota" in info.value.message and len(generate_calls(emulator)) == 2
    assert abs(int(info.value.response.headers["retry-after"]) - wait) < 5

    out = httpx.get(gw.url + "/__probe/gateway.accounts", timeout=5).text
    assert f"{email('quota')} [gemini] ready" in out and f"  {PRO}: daily quota (429), " in out
    saved = wait_for(lambda: state(gw).get("accounts", {}).get(email("quota"), {}).get("model_cooldowns"),
                     what="the state file")
    assert set(saved) == {PRO} and saved[PRO]["why"] == "daily quota"


def test_a_daily_quota_rotates_the_model_to_another_account(gateways: GatewayFactory, emulator: Emulator) -> None:
    gw = gateways.start(accounts(gemini(emulator, "spent"), gemini(emulator, "fresh")))
    err = DAILY["error"]
    emulator.rules({"match": {"key": key("spent"), "model": PRO}, "status": 429, "message": err["message"],
                    "details": err["details"]})
    client = gw.openai()
    for _ in range(3):
        raw = client.chat.completions.with_raw_response.create(model=PRO, messages=[{"role": "user", "content": "q"}])
        assert raw.headers["x-account-email"] == email("fresh")
    assert [e["key"] for e in generate_calls(emulator)].count(key("spent")) <= 1
    served = {client.chat.completions.with_raw_response.create(
        model=FLASH, messages=[{"role": "user", "content": "q"}]).headers["x-account-email"] for _ in range(4)}
    assert served == {email("spent"), email("fresh")}, "flash still rotates over both accounts"
