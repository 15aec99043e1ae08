"""Codex CLI (npm `@openai/codex`) driving a real mitmdump gateway over the Responses API.

Opt-in (`scripts/test-codex`, or RUN_CODEX=1 with `codex` installed): conftest skips tests marked
`codex` unless the CLI is on PATH. Codex 0.169 streams `POST {base_url}/responses` (store: false, the
whole history every turn), runs a tool when it sees its `response.output_item.done`, sends the result
back as a `function_call_output`, and needs `response.completed` to end each turn. With the provider's
`model_catalog_url` pointing at the gateway it reads model metadata from `/v1/models` and, for a name
listed there, offers its freeform `apply_patch` tool (a `custom` tool, answered with `custom_tool_call`).
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests import readme
from tests.conftest import ROOT, Emulator, Gateway, GatewayFactory, gemini_accounts

pytestmark = [pytest.mark.codex, pytest.mark.e2e]

SHELL_TOOL = "exec_command"  # Codex 0.169's shell tool: {"cmd": "<shell command>", ...}
FINAL_TEXT = "All done: out.txt now says hi."
README_PROMPT = "Create out.txt containing hi, then tell me what you did."


def codex_binary() -> str:
    found = shutil.which("codex") or str(ROOT / ".venv" / "codex" / "node_modules" / ".bin" / "codex")
    if not os.access(found, os.X_OK):
        pytest.fail("RUN_CODEX is set but the Codex CLI is not installed: run scripts/test-codex")
    return found


def codex_home(path: Path, gateway: Gateway, model: str) -> Path:
    """A private CODEX_HOME with the README's config.toml as written, but for the gateway's port,
    the model under test, no update check and no retries (nothing reaches api.openai.com); model
    metadata comes from the gateway's catalog, as the README's config says."""
    path.mkdir()
    config = readme.blocks()["codex-config"].text
    assert "http://127.0.0.1:8045/v1" in config and "model_catalog_url" in config
    config = config.replace("http://127.0.0.1:8045/v1", gateway.v1)
    config = re.sub(r'(?m)^model = "[^"]*"', f'model = "{model}"', config)
    (path / "config.toml").write_text("check_for_update_on_startup = false\n" + config
                                      + "request_max_retries = 0\nstream_max_retries = 0\n")
    return path


def run_codex(gateway: Gateway, tmp_path: Path, model: str, prompt: str) -> tuple[Path, subprocess.CompletedProcess]:
    work = tmp_path / "work"
    work.mkdir()
    subprocess.run(["git", "init", "-q", str(work)], check=True)  # the README runs Codex in a repository
    env = {**os.environ, "CODEX_HOME": str(codex_home(tmp_path / "codex_home", gateway, model)), "NO_COLOR": "1",
           "PATH": f"{Path(codex_binary()).parent}:{os.environ['PATH']}"}
    env.pop("OPENAI_API_KEY", None)
    env.pop("GATEWAY_API_KEY", None)  # auth is off: the README's block sets it to any text
    # The README's block as written but for the prompt (0.169 has no --full-auto: workspace-write is it)
    block = readme.blocks()["codex"].text
    assert f'"{README_PROMPT}"' in block and "codex exec" in block
    script = block.replace(f'"{README_PROMPT}"', shlex.quote(prompt)).replace("codex exec", "codex exec --color never")
    proc = subprocess.run(["bash", "-euc", script], cwd=work, env=env, stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=180)
    print("codex exec stdout:\n" + proc.stdout)
    print("codex exec stderr:\n" + proc.stderr)
    return work, proc


def generate_calls(emulator: Emulator) -> list[dict[str, Any]]:
    return [r["body"] for r in emulator.log() if "GenerateContent" in r["path"]]


# gpt-5-codex maps to gemini-2.5-pro; on gemini-3 the emulator also insists, like Gemini 3, that the
# call's thought signature comes back with Codex's second request (the gateway keeps it under the
# short call_id Codex echoes).
@pytest.mark.parametrize("model", ["gpt-5-codex", "gemini-3-pro-preview"])
def test_codex_runs_a_shell_command_through_the_gateway(gateway: Gateway, emulator: Emulator, tmp_path: Path,
                                                        model: str) -> None:
    emulator.rules(
        {"times": 1, "reply": {"function_calls": [{"name": SHELL_TOOL,
                                                   "args": {"cmd": "echo hi > out.txt && cat out.txt"}}]}},
        {"times": 1, "reply": {"text": FINAL_TEXT}},
    )
    work, proc = run_codex(gateway, tmp_path, model, "Create out.txt containing hi, then tell me what you did.")
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
        assert call_part["thoughtSignature"] not in (None, "skip_thought_signature_validator"), \
            "Gemini 3's own signature survived the round trip through Codex"
    [result] = [p["functionResponse"] for p in contents[-1]["parts"] if "functionResponse" in p]
    assert result["name"] == SHELL_TOOL and "hi" in str(result["response"])


PATCH = "*** Begin Patch\n*** Add File: notes.txt\n+Grüße from the gateway\n*** End Patch\n"


# Names the gateway lists in /v1/models get catalog metadata: here an exact mapping and a real name.
CATALOG_MAPPINGS = "default: gemini-2.5-flash\nmappings:\n  gpt-5-codex: gemini-2.5-pro\n  gemini-3-pro-preview: ~\n"


@pytest.mark.parametrize("model", ["gpt-5-codex", "gemini-3-pro-preview"])
def test_codex_applies_a_patch_through_the_gateway(gateways: GatewayFactory, emulator: Emulator, tmp_path: Path,
                                                  model: str) -> None:
    gateway = gateways.start(gemini_accounts(emulator.url, "patcher"), mappings_yaml=CATALOG_MAPPINGS)
    emulator.rules(
        {"times": 1, "reply": {"function_calls": [{"name": "apply_patch", "args": {"input": PATCH}}]}},
        {"times": 1, "reply": {"text": FINAL_TEXT}},
    )
    work, proc = run_codex(gateway, tmp_path, model, "Create notes.txt with a greeting.")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (work / "notes.txt").read_text() == "Grüße from the gateway\n", "Codex applied the model's patch"
    assert FINAL_TEXT in proc.stdout

    calls = generate_calls(emulator)
    assert len(calls) == 2
    [decl] = [d for t in calls[0]["tools"] for d in t.get("functionDeclarations", []) if d["name"] == "apply_patch"]
    assert list(decl["parametersJsonSchema"]["properties"]) == ["input"], \
        "the freeform tool went up as a one-string function"
    contents = calls[1]["contents"]
    [call_part] = [p for p in contents[-2]["parts"] if "functionCall" in p]
    assert call_part["functionCall"] == {"name": "apply_patch", "args": {"input": PATCH}}
    if model.startswith("gemini-3"):
        assert call_part["thoughtSignature"], "Gemini 3's signature survived Codex's custom_tool_call replay"
    [result] = [p["functionResponse"] for p in contents[-1]["parts"] if "functionResponse" in p]
    assert result["name"] == "apply_patch" and "notes.txt" in str(result["response"])
    # the catalog replaced Codex's fallback prompt with the gateway's (Codex sends it as instructions)
    assert "apply_patch" in calls[0]["systemInstruction"]["parts"][0]["text"]
