"""Codex CLI (npm `@openai/codex`) driving a real mitmdump gateway over the Responses API.

Opt-in (`scripts/test-codex`, or RUN_CODEX=1 with `codex` installed): conftest skips tests marked
`codex` unless the CLI is on PATH. Codex 0.169 streams `POST {base_url}/responses` (store: false, the
whole history every turn), runs a tool when it sees its `response.output_item.done`, sends the result
back as a `function_call_output`, and needs `response.completed` to end each turn.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import textwrap
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT, Emulator, Gateway

pytestmark = [pytest.mark.codex, pytest.mark.e2e]

SHELL_TOOL = "exec_command"  # Codex 0.169's shell tool: {"cmd": "<shell command>", ...}
FINAL_TEXT = "All done: out.txt now says hi."


def codex_binary() -> str:
    found = shutil.which("codex") or str(ROOT / ".venv" / "codex" / "node_modules" / ".bin" / "codex")
    if not os.access(found, os.X_OK):
        pytest.fail("RUN_CODEX is set but the Codex CLI is not installed: run scripts/test-codex")
    return found


def codex_home(path: Path, gateway: Gateway, model: str) -> Path:
    """A private CODEX_HOME whose only provider is the gateway (nothing reaches api.openai.com)."""
    path.mkdir()
    (path / "config.toml").write_text(textwrap.dedent(f"""\
        model = "{model}"
        model_provider = "gateway"
        check_for_update_on_startup = false

        [model_providers.gateway]
        name = "OpenAI-compatible gateway"
        base_url = "{gateway.v1}"
        wire_api = "responses"
        env_key = "GATEWAY_TEST_API_KEY"
        request_max_retries = 0
        stream_max_retries = 0
        """))
    return path


def generate_calls(emulator: Emulator) -> list[dict[str, Any]]:
    return [r["body"] for r in emulator.log() if "GenerateContent" in r["path"]]


# gpt-5-codex maps to gemini-2.5-pro; on gemini-3 the emulator also insists, like Gemini 3, that the
# call's thought signature comes back with Codex's second request (it rides in the call_id).
@pytest.mark.parametrize("model", ["gpt-5-codex", "gemini-3-pro-preview"])
def test_codex_runs_a_shell_command_through_the_gateway(gateway: Gateway, emulator: Emulator, tmp_path: Path,
                                                        model: str) -> None:
    emulator.rules(
        {"times": 1, "reply": {"function_calls": [{"name": SHELL_TOOL,
                                                   "args": {"cmd": "echo hi > out.txt && cat out.txt"}}]}},
        {"times": 1, "reply": {"text": FINAL_TEXT}},
    )
    work = tmp_path / "work"
    work.mkdir()
    env = {**os.environ, "CODEX_HOME": str(codex_home(tmp_path / "codex_home", gateway, model)),
           "GATEWAY_TEST_API_KEY": "sk-test", "NO_COLOR": "1"}
    env.pop("OPENAI_API_KEY", None)
    proc = subprocess.run(
        [codex_binary(), "exec", "--skip-git-repo-check", "--color", "never",
         # 0.169 has no --full-auto: its workspace-write sandbox (exec never asks for approval) is it
         "--sandbox", "workspace-write",
         "Create out.txt containing hi, then tell me what you did."],
        cwd=work, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=180)
    print("codex exec stdout:\n" + proc.stdout)
    print("codex exec stderr:\n" + proc.stderr)
    assert proc.returncode == 0, proc.stderr[-3000:]

    assert (work / "out.txt").read_text().strip() == "hi", "Codex ran the model's shell command"
    assert FINAL_TEXT in proc.stdout, "the final answer came back through the gateway"

    calls = generate_calls(emulator)
    assert len(calls) == 2, f"expected one tool turn and one answer turn, got {len(calls)} upstream calls"
    first_tools = [d["name"] for t in calls[0]["tools"] for d in t.get("functionDeclarations", [])]
    assert SHELL_TOOL in first_tools
    # the second request carries Codex's tool result, paired with the call as Gemini requires
    contents = calls[1]["contents"]
    [call_part] = [p for p in contents[-2]["parts"] if "functionCall" in p]
    assert call_part["functionCall"]["name"] == SHELL_TOOL
    if model.startswith("gemini-3"):
        assert call_part["thoughtSignature"], "Gemini 3's signature survived the round trip through Codex"
    [result] = [p["functionResponse"] for p in contents[-1]["parts"] if "functionResponse" in p]
    assert result["name"] == SHELL_TOOL and "hi" in str(result["response"])
