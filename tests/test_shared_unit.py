"""The shared state backends against a real redis-server (started by the `redis_server` fixture):
two `RedisState`s in one process stand for two gateway instances."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest

from addon.pool.pool import AccountPool
from addon.pool.accounts_file import parse_accounts
from addon.protocol import canonical as c
from addon.protocol.errors import GatewayError
from addon.stores.response_store import KVResponseStore, decode, encode
from addon.stores.shared import open_state
from addon.stores.shared.local import LocalState
from addon.stores.shared.redis_state import RedisState
from addon.upstream.http import HttpClient
from addon.upstream.oauth import TokenManager
from tests import emulator as emu_pkg
from tests.emulator import EmulatorState

FLASH = "gemini-2.5-flash"


def accounts(*names: str, emu: str = "http://127.0.0.1:9"):
    return parse_accounts({"accounts": [
        {"provider": "cloudcode", "email": n, "refresh_token": f"1//rt-{n}", "client_id": "cid", "project": "p",
         "token_url": f"{emu}/token", "base_url": emu} if n.startswith("cc") else
        {"provider": "gemini", "email": n, "api_key": f"AIza-{n}"} for n in names]})


async def eventually(check: Callable[[], bool], what: str, timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


async def instance(url: str, *names: str) -> tuple[RedisState, AccountPool]:
    state = RedisState(url)
    pool = AccountPool(state.accounts)
    pool.update(accounts(*names))
    await state.start()
    return state, pool


async def test_cooldowns_disabled_flags_and_usage_reach_the_other_instance(redis_url: str) -> None:
    (sa, a), (sb, b) = await instance(redis_url, "x", "y"), await instance(redis_url, "x", "y")
    try:
        x_a, y_a = a.accounts
        x_b, y_b = b.accounts
        a.cool_down(x_a, 429, 60.0)
        await eventually(lambda: b.state(x_b).cooldown_until > time.time() + 50, "B to see A's cooldown")
        assert {b.pick(FLASH, set()).name for _ in range(4)} == {"y"}

        b.disable(y_b, 401, "401: API key not valid")
        await eventually(lambda: a.state(y_a).disabled_reason == "401: API key not valid", "A to see B's disable")
        assert a.enable("y") and a.enable("x")
        await eventually(lambda: b.state(y_b).disabled_reason is None and not b.state(x_b).cooldown_until,
                         "B to see A's enable")

        a.succeeded(x_a, FLASH, c.Usage(input_tokens=3, output_tokens=4))
        b.succeeded(x_b, FLASH, c.Usage(input_tokens=10, output_tokens=1))
        total = {"requests": 2, "input_tokens": 13, "output_tokens": 5}
        await eventually(lambda: b.state(x_b).usage.get(FLASH) == total, "usage totals over both instances")
    finally:
        await sa.aclose()
        await sb.aclose()

    # a third instance starting now loads everything
    sc, pc = await instance(redis_url, "x", "y")
    try:
        assert pc.state(pc.accounts[0]).usage[FLASH] == total and pc.state(pc.accounts[0]).requests == 2
    finally:
        await sc.aclose()


async def test_a_dropped_subscription_resynchronises(redis_url: str, redis_server) -> None:
    (sa, a), (sb, b) = await instance(redis_url, "x"), await instance(redis_url, "x")
    try:
        with redis_server.client() as r:  # kill B's subscriber connection (and everyone's, harmlessly)
            r.client_kill_filter(_type="pubsub")
        a.cool_down(a.accounts[0], 429, 60.0)
        await eventually(lambda: b.state(b.accounts[0]).cooldown_until > 0, "B to catch up after reconnecting",
                         timeout=5)
    finally:
        await sa.aclose()
        await sb.aclose()


async def test_one_token_refresh_across_instances(redis_url: str) -> None:
    emu_state = EmulatorState()
    runner, url = await emu_pkg.start(state=emu_state)
    managers, states = [], []
    try:
        emu_state.refresh_delay_ms = 300  # a slow token endpoint: both instances ask while one refreshes
        for _ in range(2):
            st = RedisState(redis_url)
            states.append(st)
            managers.append(TokenManager(HttpClient(), st.tokens))
        acc = accounts("cc1", emu=url).accounts[0]
        tokens = await asyncio.gather(*(m.token(acc) for m in managers for _ in range(3)))
        assert len(set(tokens)) == 1
        assert dict(emu_state.refreshes) == {"1//rt-cc1": 1}

        # the token is refused on A: A forgets it everywhere, refreshes once, B picks the new one up
        await managers[0].invalidate(acc, tokens[0])
        new = await managers[0].token(acc)
        assert new != tokens[0]
        await managers[1].invalidate(acc, tokens[0])  # B was refused the old one too
        assert await managers[1].token(acc) == new
        assert dict(emu_state.refreshes) == {"1//rt-cc1": 2}
    finally:
        for m in managers:
            await m.http.aclose()
        for st in states:
            await st.aclose()
        await runner.cleanup()


async def test_bounded_kv_keeps_the_newest_and_expires(redis_url: str) -> None:
    state = RedisState(redis_url)
    try:
        kv = state.kv("t", max_items=3, ttl=0.5)
        for i in range(5):
            await kv.put(f"k{i}", f"v{i}".encode())
        await kv.get("k2")  # recently used: survives the next trim
        await kv.put("k5", b"v5")
        assert [await kv.get(f"k{i}") for i in range(6)] == [None, None, b"v2", None, b"v4", b"v5"]
        assert await kv.delete("k5") and not await kv.delete("k5")
        await asyncio.sleep(0.6)
        assert await kv.get("k4") is None
    finally:
        await state.aclose()


async def test_responses_round_trip_through_redis(redis_url: str) -> None:
    conversation = [
        c.Message("system", [c.TextPart("Be brief.")]),
        c.Message("user", [c.TextPart("look"), c.MediaPart("image/png", data="aGk="), c.MediaPart(url="https://x/y")]),
        c.Message("assistant", [c.ReasoningPart("hmm", signature=c.Signature("sig==", origin="gemini:ab12"))],
                  tool_calls=[c.ToolCall("call_1", "f", '{"a": 1}', c.Signature("sig2==", model="gemini-3-pro"))]),
        c.Message("tool", [c.TextPart("42")], tool_call_id="call_1", name="f"),
    ]
    assert decode(encode(conversation)) == conversation
    a, b = RedisState(redis_url), RedisState(redis_url)
    try:
        await a.responses.put({"id": "resp_1", "object": "response"}, conversation)
        got = await b.responses.get("resp_1")
        assert got is not None and got.response["id"] == "resp_1" and got.conversation == conversation
        assert await b.responses.delete("resp_1") and await a.responses.get("resp_1") is None
    finally:
        await a.aclose()
        await b.aclose()


async def test_redis_trouble_is_a_503_for_stored_responses_not_a_500() -> None:
    from tests.conftest import free_port

    with pytest.raises(ValueError, match="cannot use the state store redis://:\\*\\*\\*@127.0.0.1"):
        open_state(f"redis://:hunter2@127.0.0.1:{free_port()}/0", "unused.json")
    store = KVResponseStore(_unreachable().kv("responses", max_items=1, ttl=1))
    with pytest.raises(GatewayError) as err:
        await store.get("resp_x")
    assert err.value.status == 503 and "hunter2" not in str(err.value)


def _unreachable() -> RedisState:
    from tests.conftest import free_port

    state = RedisState.__new__(RedisState)  # skip the start-up check: Redis went away later
    state.url, state._client = f"redis://:hunter2@127.0.0.1:{free_port()}/0", None
    return state


def test_the_default_is_the_local_state_file(tmp_path) -> None:
    state = open_state("", tmp_path / "s.json")
    assert isinstance(state, LocalState) and state.state_file.path == tmp_path / "s.json"
    with pytest.raises(ValueError, match="redis://"):
        open_state("memcached://x", tmp_path / "s.json")


async def test_a_model_resting_on_one_instance_rests_on_the_other(redis_url: str) -> None:
    (sa, a), (sb, b) = await instance(redis_url, "x"), await instance(redis_url, "x")
    try:
        a.cool_down(a.accounts[0], 429, 3600.0, model="gemini-2.5-pro", why="daily quota")
        await eventually(lambda: "gemini-2.5-pro" in b.state(b.accounts[0]).models, "B to see the model rest")
        assert b.pick(FLASH, set()).name == "x"  # other models still served
        b.succeeded(b.accounts[0], "gemini-2.5-pro")  # it recovered there: both forget the rest
        await eventually(lambda: not a.state(a.accounts[0]).models, "A to see it served again")
    finally:
        await sa.aclose()
        await sb.aclose()


async def test_thought_signatures_are_shared_between_instances(redis_url: str) -> None:
    """With state=redis://, a tool loop's next step on another instance finds Gemini's real
    signature (with its origin) instead of falling back to the dummy."""
    from addon.stores.signature_store import SharedSignatureStore

    a, b = RedisState(redis_url), RedisState(redis_url)
    try:
        on_a = SharedSignatureStore(a.kv("signatures", max_items=100, ttl=60))
        on_b = SharedSignatureStore(b.kv("signatures", max_items=100, ttl=60))
        sig = c.Signature("c2lnbmF0dXJl", origin="gemini:ab12", model="gemini-3-pro", key="call_abc")
        await on_a.put({"call_abc": sig})
        assert await on_b.get(["call_abc", "call_missing"]) == {"call_abc": sig}
    finally:
        await a.aclose()
        await b.aclose()


async def test_redis_trouble_costs_only_the_signature() -> None:
    from addon.stores.signature_store import SharedSignatureStore

    state = _unreachable()
    store = SharedSignatureStore(state.kv("signatures", max_items=10, ttl=60))
    await store.put({"call_x": c.Signature("sig", origin="gemini:1", key="call_x")})  # logged, not raised
    assert await store.get(["call_x"]) == {}


def test_the_seal_key_is_made_once_and_shared(redis_url: str) -> None:
    one, two = RedisState(redis_url), RedisState(redis_url)
    first = one.secret("seal_key", lambda: "first instance's")
    assert first == "first instance's" == two.secret("seal_key", lambda: "second instance's")
