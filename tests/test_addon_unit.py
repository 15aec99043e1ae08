"""The mitmproxy adapter itself, with mitmproxy's own test helpers (taddons, tflow).

Option validation must fail at startup with a clear OptionsError, and outside reverse mode only
the configured hosts are answered; everything else passes through untouched.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mitmproxy import exceptions
from mitmproxy.test import taddons, tflow

from addon.gateway import Gateway


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GEMINI_API_KEY", raising=False)
    monkeypatch.delenv("GATEWAY_API_KEY", raising=False)


def _ctx(tmp_path: Path, gw: Gateway):
    tctx = taddons.context(gw)
    tctx.options.confdir = str(tmp_path)  # keeps the state file out of ~/.mitmproxy
    return tctx


def test_env_key_alone_is_a_one_account_gateway(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GEMINI_API_KEY", "AIza-test-key-123")
    gw = Gateway()
    with _ctx(tmp_path, gw) as tctx:
        tctx.configure(gw)
        assert [a.name for a in gw.wiring.engine.pool.accounts] == ["env:GEMINI_API_KEY"]
        assert gw.wiring.engine.settings.auth_mode == "off"  # auto without LAN access


def test_bad_options_fail_at_startup(tmp_path: Path) -> None:
    gw = Gateway()
    with _ctx(tmp_path, gw) as tctx:
        with pytest.raises(exceptions.OptionsError, match="auth_mode"):
            tctx.configure(gw, auth_mode="sometimes")
        with pytest.raises(exceptions.OptionsError, match="needs a key"):
            tctx.configure(gw, auth_mode="strict")
        with pytest.raises(exceptions.OptionsError, match="needs a key"):
            tctx.configure(gw, auth_mode="auto", allow_lan_access=True)
        with pytest.raises(exceptions.OptionsError, match="at least 1"):
            tctx.configure(gw, max_attempts=0)


def test_broken_files_fail_at_startup_without_leaking_secrets(tmp_path: Path) -> None:
    accounts = tmp_path / "accounts.yaml"
    accounts.write_text("accounts:\n  - provider: gemini\n    api_key: AIza-very-secret-value\n    colour: blue\n")
    mappings = tmp_path / "mappings.yaml"
    mappings.write_text("mappings: [not, a, mapping]\n")
    gw = Gateway()
    with _ctx(tmp_path, gw) as tctx:
        with pytest.raises(exceptions.OptionsError) as info:
            tctx.configure(gw, accounts=str(accounts))
        assert "colour" in str(info.value) and "AIza-very-secret-value" not in str(info.value)
        with pytest.raises(exceptions.OptionsError, match="mappings"):
            tctx.configure(gw, mappings=str(mappings))


async def test_outside_reverse_mode_only_gateway_hosts_are_answered(tmp_path: Path) -> None:
    gw = Gateway()
    with _ctx(tmp_path, gw) as tctx:
        tctx.configure(gw)
        other = tflow.tflow()  # regular mode, a request to address:22
        await gw.request(other)
        assert other.response is None  # passed through untouched

        ours = tflow.tflow()
        ours.request.host, ours.request.path, ours.request.method = "api.openai.com", "/healthz", "GET"
        ours.client_conn.peername = ("127.0.0.1", 50000)
        await gw.request(ours)
        assert ours.response is not None and ours.response.status_code == 200
        assert json.loads(ours.response.content)["status"] == "ok"
        assert ours.comment == "" and ours.marked == ""  # a plain success needs no story in the list

        tctx.options.gateway_hosts = ["llm.internal, api.openai.com"]  # a comma list in one value works too
        named = tflow.tflow()
        named.request.host, named.request.path, named.request.method = "llm.internal", "/v1/models", "GET"
        named.client_conn.peername = ("127.0.0.1", 50001)
        await gw.request(named)
        assert named.response is not None and named.response.status_code == 200


async def test_client_credentials_are_hidden_in_recorded_flows(tmp_path: Path) -> None:
    gw = Gateway()
    with _ctx(tmp_path, gw) as tctx:
        tctx.configure(gw, auth_mode="strict", api_key="gw-secret-key")
        f = tflow.tflow()
        f.request.host, f.request.path, f.request.method = "api.openai.com", "/v1/models", "GET"
        f.request.headers["Authorization"] = "Bearer gw-secret-key"
        f.request.headers["x-api-key"] = "gw-secret-key"
        f.client_conn.peername = ("127.0.0.1", 50002)
        await gw.request(f)
        assert f.response is not None and f.response.status_code == 200  # the key was checked first
        assert f.request.headers["authorization"] == "Bearer [redacted]"
        assert f.request.headers["x-api-key"] == "[redacted]"
        assert "gw-secret-key" not in repr(f.get_state())
