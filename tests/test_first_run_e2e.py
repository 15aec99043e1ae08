"""What a new user meets on a first run, through real processes: the design card's bare mitmdump
command, state left by the emulator, scripts/run's help and scripts/login's prompt."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import BIN, ROOT, Emulator, GatewayFactory, _stop, _wait_http, free_port, gemini_accounts

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
    assert "model_cooldowns" in state.read_text() and "daily quota" in state.read_text()

    calls = len(emulator.log())
    second = gateways.start(None, env={"GEMINI_API_KEY": "another-key-2", "GEMINI_BASE_URL": emulator.url},
                            state_file=str(state))
    r = httpx.post(second.v1 + "/chat/completions", json=CHAT, timeout=30)
    assert r.status_code == 200, r.text
    assert len(emulator.log()) == calls + 1 and emulator.log()[-1]["key"] == "another-key-2"


def login(*args: str, stdin: str, tmp_path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "python"), "-m", "addon.ops.login", "cloudcode", "--accounts",
                           str(tmp_path / "accounts.yaml"), *args], cwd=ROOT, input=stdin, capture_output=True,
                          text=True, timeout=30)


def test_login_answers_garbage_and_end_of_input_with_one_line(tmp_path: Path) -> None:
    # garbage pasted at Google's prompt (not an address, not a Google code): asked again; then Ctrl-D
    done = login("--client", "gemini-cli", stdin="garbage-pasted\n", tmp_path=tmp_path)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert "that is not the address the browser ended on; paste the whole address again" in done.stderr
    assert done.stderr.strip().splitlines()[-1] == ("login: no address was pasted (end of input); nothing was "
                                                    "written")
    # a code that cannot be exchanged because the token endpoint is unreachable: one line, no traceback
    cut = login("--client", "gemini-cli", "--token-url", "http://127.0.0.1:9/token", stdin="4/garbage\n",
                tmp_path=tmp_path)
    assert cut.returncode == 1 and "Traceback" not in cut.stderr, cut.stderr
    [line] = cut.stderr.strip().splitlines()
    assert line.startswith("login: could not reach the token endpoint http://127.0.0.1:9/token (Upstream "
                           "connection failed"), line
    assert not (tmp_path / "accounts.yaml").exists()


def test_health_probes_leave_the_log_alone(gateways: GatewayFactory, emulator: Emulator) -> None:
    """The README says probes and scrapes are logged at debug level only: mitmproxy's own lines for
    them (client connect, the flow, client disconnect) used to be four lines per /healthz."""
    gw = gateways.start(gemini_accounts(emulator.url, "probed"))
    time.sleep(0.5)
    start = len(gw.log())  # (the fixture's own first probe may race the addon's start)
    for _ in range(3):
        assert httpx.get(gw.url + "/healthz", timeout=10).status_code == 200
        assert httpx.get(gw.url + "/metrics", timeout=10).status_code == 200
    assert httpx.post(gw.v1 + "/chat/completions", json=CHAT, timeout=30).status_code == 200
    time.sleep(0.5)
    log = gw.log()[start:]
    assert "route=/v1/chat/completions" in log and "POST http://" in log  # the request itself is told
    assert "healthz" not in log and "/metrics" not in log and "client connect" not in log, log


def test_scripts_run_help_agrees_with_the_readme() -> None:
    helped = subprocess.run(["scripts/run", "--help"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    text = " ".join(helped.stdout.split())
    assert "auto = all_except_health with LAN access or a key configured" in text
    assert "gemini / vertex / cloudcode / openai" in text
    readme = (ROOT / "README.md").read_text()
    assert "`all_except_health` when `allow_lan_access=true` or a key is configured" in readme
    for option in ("client_header_timeout", "max_client_connections", "shutdown_grace_seconds"):
        assert option in text and f"`{option}`" in readme, option
