"""What a new user meets on a first run, through real processes: the design card's bare mitmdump
command, state left by the emulator, scripts/run's help and scripts/login's prompt."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import httpx
import pytest

from tests.conftest import BIN, ROOT, Emulator, GatewayFactory, _stop, _wait_http, free_port

pytestmark = pytest.mark.e2e

CHAT = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}
DAILY_QUOTA = {"status": 429, "message": "You exceeded your current quota, please check your plan and billing details.",
               "details": [{"@type": "type.googleapis.com/google.rpc.QuotaFailure",
                            "violations": [{"quotaId": "GenerateRequestsPerDayPerProjectPerModel-FreeTier"}]}],
               "retry_delay": "47s", "times": 1}


def test_the_bare_mitmdump_command_serves_requests(emulator: Emulator, tmp_path: Path) -> None:
    """`mitmdump -s addon/gateway.py --mode reverse:http://127.0.0.1:9@PORT` and nothing else (the
    addon sets connection_strategy=lazy itself: eager answered every request with an empty reply)."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GEMINI_", "GATEWAY_"))}
    env.update(HOME=str(tmp_path), GEMINI_API_KEY="bare-key", GEMINI_BASE_URL=emulator.url)
    log = tmp_path / "mitmdump.log"
    proc = subprocess.Popen([str(BIN / "mitmdump"), "-s", "addon/gateway.py", "--mode",
                             f"reverse:http://127.0.0.1:9@{port}"], cwd=ROOT, env=env, stdout=log.open("w"),
                            stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}"
        _wait_http(url + "/healthz", proc, log)
        r = httpx.post(url + "/v1/chat/completions", json=CHAT, timeout=30)
        assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"].startswith("Echo(")
        with httpx.stream("POST", url + "/v1/chat/completions", json={**CHAT, "stream": True}, timeout=30) as s:
            assert s.status_code == 200 and "[DONE]" in s.read().decode()
    finally:
        _stop(proc)
    assert "connection_strategy set to lazy" in log.read_text()


def test_cooldowns_of_one_key_never_reach_another_key_under_the_same_label(gateways: GatewayFactory,
                                                                           emulator: Emulator,
                                                                           tmp_path: Path) -> None:
    """`scripts/run --emulator` and `GEMINI_API_KEY=... scripts/run` both label their account
    env:GEMINI_API_KEY: a daily quota the emulator injected must not make a run with another key
    answer 429 without calling the upstream."""
    state = tmp_path / "state.json"
    first = gateways.start(None, env={"GEMINI_API_KEY": "emulated-key-1", "GEMINI_BASE_URL": emulator.url},
                           state_file=str(state))
    emulator.rules(DAILY_QUOTA)
    assert httpx.post(first.v1 + "/chat/completions", json=CHAT, timeout=30).status_code == 429
    again = httpx.post(first.v1 + "/chat/completions", json=CHAT, timeout=30)
    assert again.status_code == 429 and "daily quota" in again.text  # the model rests on that key
    gateways.stop(first)
    assert "model_cooldowns" in state.read_text() and "gemini-2.5-flash" in state.read_text()

    calls = len(emulator.log())
    second = gateways.start(None, env={"GEMINI_API_KEY": "another-key-2", "GEMINI_BASE_URL": emulator.url},
                            state_file=str(state))
    r = httpx.post(second.v1 + "/chat/completions", json=CHAT, timeout=30)
    assert r.status_code == 200, r.text
    assert len(emulator.log()) == calls + 1 and emulator.log()[-1]["key"] == "another-key-2"
