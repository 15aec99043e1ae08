"""The clients file, the in-process ledger and the rate-limit headers, without a gateway."""

from __future__ import annotations

import asyncio
import hashlib

import pytest

from addon.clients.config import parse_clients
from addon.clients.gate import ClientGate, duration, rate_headers
from addon.clients.ledger import MemoryLedger, Verdict
from addon.engine import Fixed
from addon.protocol.errors import GatewayError
from addon.ops.story import Story


def sha(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def file(*entries: dict) -> object:
    return parse_clients({"clients": list(entries)}, env={"K": "from-env"})


def test_the_file_keeps_only_digests_and_refuses_what_it_cannot_use() -> None:
    f = file({"name": "a", "key_sha256": sha("ka"), "models": ["gpt-4o*"], "rpm": 2},
             {"name": "b", "key_env": "K"}, {"name": "c", "key_sha256": [sha("new"), sha("old").upper()]})
    assert f.find("ka").name == "a" and f.find("from-env").name == "b"
    assert f.find("old").name == "c" and f.find("new").name == "c" and f.find("nope") is None
    assert f.by_name["a"].allows("gpt-4o-mini") and not f.by_name["a"].allows("o3")
    assert f.by_name["b"].allows("anything")
    assert "from-env" not in repr(f)
    bad = [
        ({"name": "a", "key_sha256": "abc"}, "64-digit"),
        ({"name": "a"}, "exactly one"),
        ({"name": "a", "key_sha256": sha("x"), "key_env": "K"}, "exactly one"),
        ({"name": "a b", "key_sha256": sha("x")}, "name"),
        ({"name": "a", "key_env": "UNSET_VAR"}, "UNSET_VAR"),
        ({"name": "a", "key_sha256": sha("x"), "rpm": 0}, "rpm"),
        ({"name": "a", "key_sha256": sha("x"), "budget": 3}, "budget"),
    ]
    for entry, words in bad:
        with pytest.raises(ValueError, match=words):
            file(entry)
    with pytest.raises(ValueError, match="twice"):
        file({"name": "a", "key_sha256": sha("x")}, {"name": "a", "key_sha256": sha("y")})
    with pytest.raises(ValueError, match="same key as a"):
        file({"name": "a", "key_sha256": sha("x")}, {"name": "b", "key_sha256": sha("x")})


def test_duration_is_openais_reset_format() -> None:
    assert [duration(s) for s in (0.012, 1, 17.5, 360, 3723)] == ["12ms", "1s", "17.5s", "6m0s", "1h2m3s"]


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_the_ledger_counts_a_sliding_minute_open_requests_and_the_utc_day() -> None:
    clock = Clock(86_400 * 100 + 3600)
    ledger = MemoryLedger(clock=clock)
    c = file({"name": "a", "key_sha256": sha("k"), "rpm": 2, "tokens_per_day": 100, "max_concurrent": 1}).by_name["a"]
    v = ledger.admit_now(c, "t1")
    assert v.refused is None and v.used == 1 and v.open == 1
    assert ledger.admit_now(c, "t2").refused == "max_concurrent"
    ledger.settle("a", "t1", "gpt-4o", 40, 70, held=True)  # 110 tokens: over, but it was admitted
    clock.now += 30
    assert ledger.admit_now(c, "t3").refused == "tokens_per_day"
    clock.now += 86_400  # the next UTC day: the budget is back, the minute long gone
    v = ledger.admit_now(c, "t4")
    assert v.refused is None and v.spent_today == 0 and v.used == 1
    ledger.settle("a", "t4", "gpt-4o", 1, 1, held=True)
    clock.now += 1
    assert ledger.admit_now(c, "t5").refused is None
    ledger.settle("a", "t5", "gpt-4o", 0, 0, held=True)
    v = ledger.admit_now(c, "t6")
    assert v.refused == "rpm" and v.used == 2 and v.oldest == clock.now - 1
    usage = asyncio.run(ledger.usage(["a"]))["a"]
    assert usage["requests"] == 3 and usage["refused"] == {"max_concurrent": 1, "tokens_per_day": 1, "rpm": 1}
    assert usage["models"]["gpt-4o"] == {"requests": 3, "input_tokens": 41, "output_tokens": 71}
    assert usage["tokens_today"] == 2


def test_a_renamed_client_keeps_its_counters_through_its_key() -> None:
    ledger = MemoryLedger(clock=Clock(1_000_000.0))
    before = file({"name": "bob", "key_sha256": sha("kb"), "tokens_per_day": 10})
    asyncio.run(ledger.reconcile(before))
    ledger.admit_now(before.by_name["bob"], "t1")
    ledger.settle("bob", "t1", "m", 3, 3, held=False)
    ledger.admit_now(before.by_name["bob"], "t1b")  # still open when the file changes
    after = file({"name": "robert", "key_sha256": sha("kb"), "tokens_per_day": 10})
    asyncio.run(ledger.reconcile(after))
    ledger.settle("bob", "t1b", "m", 3, 3, held=False)  # settles under the new name
    assert ledger.admit_now(after.by_name["robert"], "t2").refused == "tokens_per_day"
    assert asyncio.run(ledger.usage(["bob"]))["bob"]["requests"] == 0
    # a new key for the same name keeps the counters too (they belong to the name)
    rotated = file({"name": "robert", "key_sha256": sha("new"), "tokens_per_day": 10})
    asyncio.run(ledger.reconcile(rotated))
    assert ledger.admit_now(rotated.by_name["robert"], "t3").refused == "tokens_per_day"


def test_headers_and_refusals() -> None:
    c = file({"name": "a", "key_sha256": sha("k"), "rpm": 3, "tokens_per_day": 1000}).by_name["a"]
    now = 86_400 * 5 + 86_000.0  # 400 s before midnight UTC
    h = rate_headers(c, Verdict(None, now, 250, 2, now - 10, 1, now))
    assert h == {"x-ratelimit-limit-requests": "3", "x-ratelimit-remaining-requests": "1",
                 "x-ratelimit-reset-requests": "1m0s", "x-ratelimit-limit-tokens": "1000",
                 "x-ratelimit-remaining-tokens": "750", "x-ratelimit-reset-tokens": "6m40s"}

    class Refusing(MemoryLedger):
        def __init__(self, verdict: Verdict) -> None:
            super().__init__()
            self.verdict = verdict

        async def admit(self, client, ticket):
            return self.verdict

    f = file({"name": "a", "key_sha256": sha("k"), "rpm": 3, "tokens_per_day": 1000, "models": ["gpt-*"]})
    for verdict, code, retry in ((Verdict("rpm", now, 0, 3, now - 50, 0, now), "rate_limit_exceeded", "10"),
                                 (Verdict("tokens_per_day", now, 1200, 1, now, 0, now), "insufficient_quota", "400")):
        gate = ClientGate(Fixed(f), Refusing(verdict))
        story = Story()
        with pytest.raises(GatewayError) as err:
            asyncio.run(gate.admit("a", story))
        assert err.value.status == 429 and err.value.code == code and err.value.headers["retry-after"] == retry
        assert story.limit == verdict.refused
    gate = ClientGate(Fixed(f), MemoryLedger())
    with pytest.raises(GatewayError) as err:
        gate.check_model("a", "o3")
    assert err.value.status == 404 and err.value.code == "model_not_found"
    assert gate.authenticate({"authorization": "Bearer k"}, "op") == "a"
    assert gate.authenticate({"x-api-key": "op"}, "op") is None
    for headers in ({}, {"authorization": "Bearer other"}):
        with pytest.raises(GatewayError) as err:
            gate.authenticate(headers, "op")
        assert err.value.status == 401


def test_without_an_answer_from_redis_an_instance_enforces_the_limits_alone() -> None:
    import redis.asyncio as aioredis

    from addon.clients.redis_ledger import RedisLedger
    from tests.conftest import free_port

    async def run() -> list[str | None]:
        class Unreachable:
            client = aioredis.Redis(host="127.0.0.1", port=free_port(), socket_connect_timeout=0.2)

        ledger = RedisLedger(Unreachable())
        c = file({"name": "a", "key_sha256": sha("k"), "rpm": 1}).by_name["a"]
        out = [(await ledger.admit(c, f"t{i}")).refused for i in range(2)]
        await Unreachable.client.aclose()
        return out

    assert asyncio.run(run()) == [None, "rpm"]


def test_the_story_names_the_client() -> None:
    story = Story(client="alice", client_model="gpt-4o", mapped_model="gemini-2.5-flash", account="acc", status=200)
    assert story.comment().startswith("alice · gpt-4o→gemini-2.5-flash")
    assert story.fields()["client"] == "alice"
