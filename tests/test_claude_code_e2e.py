"""Claude Code (npm `@anthropic-ai/claude-code`) driving a real mitmdump gateway over the Messages API.

Opt-in (`scripts/test-claude`, or RUN_CLAUDE=1 with `claude` installed). Claude Code 2.1 posts
`{ANTHROPIC_BASE_URL}/v1/messages?beta=true` with `x-api-key`, streams every answer, offers its ~25
client tools (Write among them), asks for adaptive thinking, and sends the whole history back each
turn: the assistant turn exactly as it was answered (thinking blocks with their signature,
`tool_use` with our ids) and the tool's result as a `tool_result` block. It also asks for a session
title in a side call (thinking disabled, a JSON schema as `output_config.format`).

The upstream is the emulator on a Gemini 3 model, which refuses a tool loop whose thought
signature did not come back (as Gemini 3 does); the model's step is scripted with the emulator's
`[[tool:NAME {args}]]` directive in the prompt.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests import readme
from tests.conftest import ROOT, Emulator, Gateway, GatewayFactory, gemini_accounts

pytestmark = [pytest.mark.claude, pytest.mark.e2e]

README_PROMPT = "Create out.txt containing hi, then tell me what you did."
MAPPINGS = "default: gemini-3.8-flash\nmappings:\n  \"claude-*\": gemini-3.8-flash\n"


def claude_binary() -> str:
    found = shutil.which("claude") or str(ROOT / ".venv" / "claude" / "node_modules" / ".bin" / "claude")
    if not os.access(found, os.X_OK):
        pytest.fail("RUN_CLAUDE is set but Claude Code is not installed: run scripts/test-claude")
    return found


def run_claude(gateway: Gateway, tmp_path: Path, prompt: str) -> tuple[Path, subprocess.CompletedProcess]:
    """The README's recipe as written, but for the gateway's port and the prompt, with a private
    HOME (Claude Code keeps its settings and sessions there) and no traffic to Anthropic."""
    work, home = tmp_path / "work", tmp_path / "home"
    work.mkdir()
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANTHROPIC_", "CLAUDE_"))}
    env.update(HOME=str(home), NO_COLOR="1", CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC="1",
               PATH=f"{Path(claude_binary()).parent}:{os.environ['PATH']}")
    env.pop("GATEWAY_API_KEY", None)  # auth is off: the recipe sends any text
    block = readme.blocks()["claude-code"].text
    assert "ANTHROPIC_BASE_URL=http://127.0.0.1:8045" in block and "/v1" not in block
    assert f'"{README_PROMPT}"' in block and "claude -p" in block
    script = block.replace("http://127.0.0.1:8045", gateway.url).replace(f'"{README_PROMPT}"', shlex.quote(prompt))
    proc = subprocess.run(["bash", "-euc", script], cwd=work, env=env, stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=240)
    print("claude stdout:\n" + proc.stdout)
    print("claude stderr:\n" + proc.stderr)
    return work, proc


def generate_calls(emulator: Emulator) -> list[dict[str, Any]]:
    return [r["body"] for r in emulator.log() if "GenerateContent" in r["path"]]


def test_claude_code_writes_a_file_through_the_gateway(gateways: GatewayFactory, emulator: Emulator,
                                                       tmp_path: Path) -> None:
    gateway = gateways.start(gemini_accounts(emulator.url, "claude-alice"), mappings_yaml=MAPPINGS)
    target = tmp_path / "work" / "out.txt"
    args = json.dumps({"file_path": str(target), "content": "hi\n"})
    work, proc = run_claude(gateway, tmp_path, f"Create out.txt containing hi. [[tool:Write {args}]]")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert target.read_text() == "hi\n", "Claude Code ran the model's Write call"
    assert "Tool Write returned" in proc.stdout, "the answer after the tool result came back through the gateway"

    calls = [c for c in generate_calls(emulator) if any(
        d["name"] == "Write" for t in c.get("tools", []) for d in t.get("functionDeclarations", []))]
    assert len(calls) == 2, f"one tool turn and one answer turn, got {len(calls)}"
    # the second request carries Claude Code's tool result, paired with the call, and Gemini 3's own
    # thought signature came back through Claude Code's history (the emulator refuses a dummy there)
    contents = calls[1]["contents"]
    [call_part] = [p for p in contents[-2]["parts"] if "functionCall" in p]
    assert call_part["functionCall"]["name"] == "Write"
    assert call_part["thoughtSignature"] not in (None, "skip_thought_signature_validator")
    [result] = [p["functionResponse"] for p in contents[-1]["parts"] if "functionResponse" in p]
    assert result["name"] == "Write" and "out.txt" in json.dumps(result["response"])
    system = calls[0]["systemInstruction"]["parts"][0]["text"]
    assert "x-anthropic-billing-header" not in system, "Claude Code's per-request attribution line stays behind"
    assert calls[0]["generationConfig"]["thinkingConfig"].get("includeThoughts") is True
    log = gateway.log()
    assert "route=/v1/messages" in log and "client_model=claude-" in log and "mapped_model=gemini-3.8-flash" in log
