"""gemini-cli (npm `@google/gemini-cli`) driving a real mitmdump gateway over Google's own API.

Opt-in (`scripts/test-gemini-cli`, or RUN_GEMINI_CLI=1 with `gemini` installed): conftest skips
tests marked `gemini_cli` unless the CLI is on PATH. gemini-cli 0.61 with GOOGLE_GEMINI_BASE_URL
and its auth method set to an API key streams `POST {base}/v1beta/models/{model}:streamGenerateContent?alt=sse`
with the key in `x-goog-api-key` (captured against a logging server). Each run gets a private
HOME and GEMINI_CLI_HOME, so nothing of the machine's own gemini-cli set-up is read or written.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
from pathlib import Path

import pytest

from tests import readme
from tests.conftest import ROOT, Emulator, Gateway, GatewayFactory

pytestmark = [pytest.mark.gemini_cli, pytest.mark.e2e]

SALT = secrets.token_hex(6)
KEY_A, KEY_B = f"AIzaSy-cli-a-{SALT}", f"AIzaSy-cli-b-{SALT}"
GATEWAY_KEY = f"gw-cli-{SALT}"


def gemini_binary() -> str:
    found = shutil.which("gemini") or str(ROOT / ".venv" / "gemini-cli" / "node_modules" / ".bin" / "gemini")
    if not os.access(found, os.X_OK):
        pytest.fail("RUN_GEMINI_CLI is set but gemini-cli is not installed: run scripts/test-gemini-cli")
    return found


def run_recipe(gw: Gateway, home: Path, key: str) -> subprocess.CompletedProcess:
    """The README's gemini-cli recipe as written, for this gateway's port and key, in a private HOME."""
    home.mkdir()
    work = home / "work"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GEMINI_", "GOOGLE_"))}
    env.update(HOME=str(home), NO_COLOR="1", PATH=f"{Path(gemini_binary()).parent}:{env['PATH']}")
    script = readme.blocks()["gemini-cli"].text
    assert "http://127.0.0.1:8045" in script and "anything-unless-auth-is-on" in script
    script = script.replace("http://127.0.0.1:8045", gw.url).replace("anything-unless-auth-is-on", key)
    return subprocess.run(["bash", "-euc", script], cwd=work, env=env, capture_output=True, text=True, timeout=180)


@pytest.fixture(scope="module")
def gateway_pair(gateways: GatewayFactory, emulator_proc: Emulator) -> Gateway:
    rows = "".join(f"""
  - provider: gemini
    label: acc-{name}
    api_key: {key}
    base_url: {emulator_proc.url}""" for name, key in (("a", KEY_A), ("b", KEY_B)))
    return gateways.start("accounts:" + rows, auth_mode="strict", api_key=GATEWAY_KEY)


def test_readme_recipe_answers_through_the_pool_past_a_rate_limited_account(
        gateway_pair: Gateway, emulator: Emulator, tmp_path: Path) -> None:
    emulator.rules({"match": {"key": KEY_A}, "status": 429, "retry_delay": "40s"})
    done = run_recipe(gateway_pair, tmp_path / "home", GATEWAY_KEY)
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-3000:]
    [cmd] = [c for c in readme.commands(readme.blocks()["gemini-cli"]) if c.expect]
    assert readme.missing(cmd.expect, out) is None, out[-3000:]
    calls = [r for r in emulator.log() if ":streamGenerateContent" in r["path"] or ":generateContent" in r["path"]]
    assert calls and calls[-1]["path"] == "/v1beta/models/gemini-2.5-flash:streamGenerateContent"
    assert calls[-1]["key"] == KEY_B and calls[-1]["query"] == {"alt": "sse"}
    assert KEY_A in [c["key"] for c in calls], "the first account was tried and refused"
    assert "functionDeclarations" in json.dumps(calls[-1]["body"]["tools"]), "gemini-cli's tools went up as sent"
    for r in emulator.log():
        assert GATEWAY_KEY not in json.dumps(r), "the client's key went upstream"
    assert "route=/v1beta/models/{model}:{verb}" in gateway_pair.log()


def test_a_wrong_key_is_an_error_gemini_cli_reports(gateway_pair: Gateway, emulator: Emulator,
                                                    tmp_path: Path) -> None:
    done = run_recipe(gateway_pair, tmp_path / "home", "not-the-gateway-key")
    out = done.stdout + done.stderr
    assert done.returncode != 0 and "401" in out, out[-3000:]
    assert not [r for r in emulator.log() if "GenerateContent" in r["path"]]
