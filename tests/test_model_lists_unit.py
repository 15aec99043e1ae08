"""What each account serves (addon/pool/model_lists.py): lists fetched from the emulator's Gemini
and OpenAI-compatible model routes, re-routed names counted as served, 404s remembered for a while,
and the pool preferring accounts that list a model without ever stranding it."""

from __future__ import annotations

import pytest

from addon.pool.accounts_file import parse_accounts
from addon.pool.model_lists import ABSENT_SECONDS, ModelLists
from addon.pool.pool import AccountPool
from addon.upstream import HttpClient, TokenManager, build_providers
from tests import emulator as emu


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.asyncio
async def test_lists_are_fetched_per_account_and_filter_the_pool() -> None:
    state = emu.EmulatorState()
    runner, url = await emu.start(state=state)
    http = HttpClient()
    try:
        accounts = parse_accounts({"accounts": [
            {"provider": "gemini", "email": "g@x", "api_key": "k1", "base_url": url},
            {"provider": "openai", "label": "local", "base_url": f"{url}/openai/v1", "api_key": "sk"},
            {"provider": "cloudcode", "email": "c@x", "refresh_token": "r", "client_id": "id", "base_url": url,
             "models": ["gemini-*"]},
        ]})
        providers = build_providers(http, TokenManager(HttpClient()), None)
        clock = Clock()
        lists = ModelLists(clock)
        fetched = await lists.refresh(accounts.accounts, providers)
        assert set(fetched) == {"g@x", "local"}  # Cloud Code keeps no per-account list: never filtered
        assert "gemini-3.8-flash" in fetched["g@x"] and "emulator-echo" in fetched["local"]
        assert [e["path"] for e in state.log] == ["/v1beta/models", "/openai/v1/models"]
        g, local, code = accounts.accounts
        assert lists.may_serve(g, "gemini-3.8-flash") and not lists.may_serve(g, "gemini-9-nonexistent")
        assert lists.may_serve(g, "gemini-2.5-pro")  # not listed, but Google answers it from 3.8 Flash
        assert lists.may_serve(code, "anything") and not lists.may_serve(local, "gemini-3.8-flash")

        pool = AccountPool()
        pool.update(accounts)
        pool.model_filter = lists.may_serve
        assert [a.name for a in pool.candidates("emulator-echo")] == ["local"]  # the one that lists it
        assert [a.name for a in pool.candidates("gemini-3.8-flash")] == ["g@x", "c@x"]
        # nobody lists it: every account may still be asked (a list may be stale), but the pool says so
        assert len(pool.candidates("brand-new-model")) == 2 and not pool.listed("brand-new-model")
        assert pool.listed("gemini-brand-new")  # Cloud Code's account keeps no list: it may serve it
        assert not pool.listed("gemini-brand-new", skip=frozenset({"c@x"}))

        lists.absent("g@x", "gemini-3.8-flash")  # the upstream said 404
        assert not lists.may_serve(g, "gemini-3.8-flash")
        assert [a.name for a in pool.candidates("gemini-3.8-flash")] == ["c@x"]
        clock.now += ABSENT_SECONDS + 1
        assert lists.may_serve(g, "gemini-3.8-flash")
        version = lists.version
        await lists.refresh(accounts.accounts, providers)
        assert lists.version == version  # the same lists: nothing to invalidate
    finally:
        await http.aclose()
        await runner.cleanup()
