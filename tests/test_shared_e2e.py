"""Two gateway processes sharing one Redis (`state=redis://...`), as behind a load balancer."""

from __future__ import annotations

import json
import time

import pytest

from tests.conftest import Emulator, GatewayFactory

pytestmark = pytest.mark.e2e


def accounts(emu: Emulator, *rows: str) -> str:
    return "accounts:" + "".join(rows)


def gemini(emu: Emulator, name: str) -> str:
    return f"""
  - provider: gemini
    email: {name}@example.com
    api_key: AIza-{name}
    base_url: {emu.url}"""


def cloudcode(emu: Emulator, name: str) -> str:
    return f"""
  - provider: cloudcode
    email: {name}@example.com
    refresh_token: 1//rt-{name}
    client_id: {name}.apps.googleusercontent.com
    project: project-{name}
    token_url: {emu.url}/token
    base_url: {emu.url}"""


def pair(gateways: GatewayFactory, yaml_text: str, redis_url: str):
    return (gateways.start(yaml_text, state=redis_url), gateways.start(yaml_text, state=redis_url))


def wait_until(check, what: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def test_a_cooldown_set_on_one_instance_is_respected_by_the_other(gateways: GatewayFactory, emulator: Emulator,
                                                                   redis_url: str, redis_server) -> None:
    a, b = pair(gateways, accounts(emulator, gemini(emulator, "shared1"), gemini(emulator, "shared2")), redis_url)
    emulator.rules({"match": {"key": "AIza-shared1"}, "times": 1, "status": 429, "retry_delay": "60s"})
    raw = a.openai().chat.completions.with_raw_response.create(
        model="gemini-2.5-flash", messages=[{"role": "user", "content": "hi"}])
    assert raw.headers["x-account-email"] == "shared2@example.com"  # shared1 got the 429 and cools for 60 s
    with redis_server.client() as r:
        def resting() -> bool:  # the account, or (a quota 429) the model on it
            rec = r.hgetall("oaigw:account:shared1@example.com")
            return (json.loads(rec.get(b"cooldown_until", b"0")) > time.time()
                    or bool(json.loads(rec.get(b"model_cooldowns", b"{}"))))

        wait_until(resting, "the cooldown in Redis")
    time.sleep(0.1)  # B applies the published change as it arrives
    # Without sharing, B's round-robin would start with shared1 (and the emulator would answer it).
    for _ in range(4):
        raw = b.openai().chat.completions.with_raw_response.create(
            model="gemini-2.5-flash", messages=[{"role": "user", "content": "hi"}])
        assert raw.headers["x-account-email"] == "shared2@example.com"
    assert [e["key"] for e in emulator.log()].count("AIza-shared1") == 1


def test_a_conversation_continues_on_the_other_instance(gateways: GatewayFactory, emulator: Emulator,
                                                        redis_url: str) -> None:
    a, b = pair(gateways, accounts(emulator, gemini(emulator, "conv")), redis_url)
    first = a.openai().responses.create(model="gpt-4o", instructions="Be brief.", input="My name is Ada.")
    second = b.openai().responses.create(model="gpt-4o", previous_response_id=first.id, input="What is my name?")
    assert second.output_text
    contents = emulator.log()[-1]["body"]["contents"]
    assert [p["text"] for turn in contents for p in turn["parts"]][:1] == ["My name is Ada."]
    assert len(contents) == 3  # user, model (A's answer), user
    assert b.openai().responses.retrieve(first.id).id == first.id
    b.openai().responses.delete(first.id)
    with pytest.raises(Exception, match="404|not found"):
        a.openai().responses.retrieve(first.id)


def test_a_token_refreshed_on_one_instance_is_reused_by_the_other(gateways: GatewayFactory, emulator: Emulator,
                                                                  redis_url: str) -> None:
    a, b = pair(gateways, accounts(emulator, cloudcode(emulator, "cctoken")), redis_url)
    for gw in (a, b, a, b):
        out = gw.openai().chat.completions.create(model="gemini-2.5-flash",
                                                  messages=[{"role": "user", "content": "hi"}])
        assert out.choices[0].message.content
    assert emulator.control("stats")["refreshes"] == {"1//rt-cctoken": 1}
