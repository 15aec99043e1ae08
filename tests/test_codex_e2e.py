"""Codex CLI (npm `@openai/codex`) driving a real mitmdump gateway over the Responses API.

Opt-in (`scripts/test-codex`, or RUN_CODEX=1 with `codex` installed): conftest skips tests marked
`codex` unless the CLI is on PATH. Codex streams `POST {base_url}/responses` (store: false with
`include: ["reasoning.encrypted_content"]`, the whole history every turn), runs a tool when it sees
its `response.output_item.done`, sends the result back as a `function_call_output`, and needs
`response.completed` to end each turn. With the provider's `model_catalog_url` pointing at the
gateway it reads model metadata from `/v1/models` and, for a name listed there, offers its freeform
`apply_patch` tool (a `custom` tool, answered with `custom_tool_call`). Each MCP server configured
in `config.toml` reaches the request as a `namespace` tool (`mcp__<server>`), and Codex runs a call
only if it names the tool *and* its namespace.
"""

from __future__ import annotations

import http.server
import itertools
import json
import os
import re
import shlex
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

import pytest

from tests import readme
from tests.conftest import ROOT, Emulator, Gateway, GatewayFactory, gemini_accounts

pytestmark = [pytest.mark.codex, pytest.mark.e2e]

SHELL_TOOL = "exec_command"  # Codex 0.169-0.171's shell tool: {"cmd": "<shell command>", ...}
FINAL_TEXT = "All done: out.txt now says hi."
README_PROMPT = "Create out.txt containing hi, then tell me what you did."


def codex_binary() -> str:
    found = shutil.which("codex") or str(ROOT / ".venv" / "codex" / "node_modules" / ".bin" / "codex")
    if not os.access(found, os.X_OK):
        pytest.fail("RUN_CODEX is set but the Codex CLI is not installed: run scripts/test-codex")
    return found


def codex_home(path: Path, gateway: Gateway | str, model: str, extra: str = "", catalog_json: Path | None = None) -> Path:
    """A private CODEX_HOME with the README's config.toml as written, but for the gateway's port,
    the model under test, and no update check (nothing reaches api.openai.com); model metadata
    comes from the gateway's catalog, as the README's config says; no retries (in the provider's
    table, which the README's block ends with). `extra`: more config after it."""
    path.mkdir()
    config = readme.blocks()["codex-config"].text
    assert "http://127.0.0.1:8045/v1" in config and "model_catalog_url" in config
    config = config.replace("http://127.0.0.1:8045/v1", gateway.v1 if isinstance(gateway, Gateway) else gateway)
    config = re.sub(r'(?m)^model = "[^"]*"', f'model = "{model}"', config)
    if catalog_json is not None:  # model metadata from a file instead of the gateway's catalog
        config = re.sub(r'(?m)^model_catalog_url = .*$', "", config)
        config = f"model_catalog_json = {json.dumps(str(catalog_json))}\n" + config
    (path / "config.toml").write_text("check_for_update_on_startup = false\n" + config
                                      + "request_max_retries = 0\nstream_max_retries = 0\n" + extra)
    return path


def mcp_config(calls_log: Path) -> str:
    """The README's MCP server block, with the probe server's full path and a log of what it gets."""
    block = readme.blocks()["codex-mcp"].text
    assert 'args = ["tests/mcp_probe.py"]' in block
    return "\n" + block.replace('args = ["tests/mcp_probe.py"]',
                                f'args = [{json.dumps(str(ROOT / "tests" / "mcp_probe.py"))}, {json.dumps(str(calls_log))}]')


def run_codex(gateway: Gateway | str, tmp_path: Path, model: str, prompt: str, extra_config: str = "",
              catalog_json: Path | None = None) -> tuple[Path, subprocess.CompletedProcess]:
    work = tmp_path / "work"
    work.mkdir()
    subprocess.run(["git", "init", "-q", str(work)], check=True)  # the README runs Codex in a repository
    home = codex_home(tmp_path / "codex_home", gateway, model, extra_config, catalog_json)
    env = {**os.environ, "CODEX_HOME": str(home), "NO_COLOR": "1",
           "PATH": f"{Path(codex_binary()).parent}:{os.environ['PATH']}"}
    env.pop("OPENAI_API_KEY", None)
    env.pop("GATEWAY_API_KEY", None)  # auth is off: the README's block sets it to any text
    # The README's block as written but for the prompt (0.169+ has no --full-auto: workspace-write is it)
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


# gpt-5-codex maps to gemini-4-argon; on Gemini 3 and 4 the emulator also insists, like Gemini 3, that the
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
CATALOG_MAPPINGS = "default: gemini-3.8-flash\nmappings:\n  gpt-5-codex: gemini-4-argon\n  gemini-3.1-pro-preview: ~\n"


@pytest.mark.parametrize("model", ["gpt-5-codex", "gemini-3.1-pro-preview"])
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


# ---- MCP servers and stateless sessions ------------------------------------------------------------


def mcp_calls(log: Path) -> list[dict[str, Any]]:
    lines = log.read_text().splitlines() if log.exists() else []
    return [m for m in map(json.loads, lines) if m.get("method") == "tools/call"]


def namespaced_declarations(call: dict[str, Any]) -> list[str]:
    return [d["name"] for t in call["tools"] for d in t.get("functionDeclarations", [])]


def test_codex_calls_an_mcp_tool_through_the_gateway(gateway: Gateway, emulator: Emulator, tmp_path: Path) -> None:
    """The MCP server's tool reaches the model as a function, the model's call comes back as the
    namespaced call Codex runs, the server receives it, and its result goes back upstream."""
    emulator.rules(
        {"times": 1, "reply": {"function_calls": [{"name": "mcp__probe__echo", "args": {"text": "hello gateway"}}]}},
        {"times": 1, "reply": {"text": FINAL_TEXT}},
    )
    calls_log = tmp_path / "mcp_calls.jsonl"
    _, proc = run_codex(gateway, tmp_path, "gpt-5-codex", "Echo 'hello gateway' with the probe tool.",
                        mcp_config(calls_log))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert FINAL_TEXT in proc.stdout, "Codex showed the model's final answer"
    [call] = mcp_calls(calls_log)
    assert call["params"]["name"] == "echo" and call["params"]["arguments"] == {"text": "hello gateway"}

    calls = generate_calls(emulator)
    assert len(calls) == 2
    assert {"mcp__probe__echo", "multi_agent_v1__spawn_agent"} <= set(namespaced_declarations(calls[0])), \
        "every namespace's tools (the MCP server's, the sub-agents') were offered upstream"
    contents = calls[1]["contents"]
    [call_part] = [p for p in contents[-2]["parts"] if "functionCall" in p]
    assert call_part["functionCall"] == {"name": "mcp__probe__echo", "args": {"text": "hello gateway"}}
    [result] = [p["functionResponse"] for p in contents[-1]["parts"] if "functionResponse" in p]
    assert result["name"] == "mcp__probe__echo" and "echo: hello gateway" in json.dumps(result["response"])
    assert "left out: web_search (cached index only)" in gateway.log() or "left_out=" in gateway.log()


class Alternating:
    """A loopback HTTP forwarder that sends each POST to the next of several gateways in turn (and
    GETs to the first): every step of one Codex session lands on another instance."""

    def __init__(self, targets: list[str]) -> None:
        self.targets = targets
        self.served: list[str] = []
        turn = itertools.cycle(targets)
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _forward(self, target: str) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length")}
                with httpx.Client(timeout=60) as client, client.stream(
                        self.command, target + self.path, headers=headers, content=body) as resp:
                    self.send_response(resp.status_code)
                    for k, v in resp.headers.items():
                        if k.lower() not in ("content-length", "transfer-encoding", "connection", "content-encoding"):
                            self.send_header(k, v)
                    self.send_header("connection", "close")
                    self.end_headers()
                    for chunk in resp.iter_bytes():
                        self.wfile.write(chunk)
                        self.wfile.flush()
                self.close_connection = True

            def do_GET(self) -> None:
                self._forward(outer.targets[0])

            def do_POST(self) -> None:
                target = next(turn)
                outer.served.append(target)
                self._forward(target)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def two_instances(gateways: GatewayFactory, emulator: Emulator) -> Iterator[tuple[Alternating, list[Gateway]]]:
    """Two gateways with nothing in common but the upstream account and the seal key (own state
    files, in-memory signature stores, no Redis), behind one address that alternates between them."""
    accounts = gemini_accounts(emulator.url, "stateless")
    both = [gateways.start(accounts, mappings_yaml=CATALOG_MAPPINGS, seal_key="one secret for both instances")
            for _ in range(2)]
    front = Alternating([gw.url for gw in both])
    yield front, both
    front.close()
    for gw in both:
        gateways.stop(gw)


def test_codex_stateless_tool_loop_keeps_gemini3_signatures_across_instances(
        two_instances: tuple[Alternating, list[Gateway]], emulator: Emulator, tmp_path: Path) -> None:
    """Codex sends `store: false`: the Gemini 3 call's thought signature must come back from the
    sealed reasoning item alone, on the other instance, which never saw it."""
    front, both = two_instances
    emulator.rules(
        {"times": 1, "reply": {"function_calls": [{"name": "mcp__probe__echo", "args": {"text": "sealed"}}]}},
        {"times": 1, "reply": {"text": FINAL_TEXT}},
    )
    calls_log = tmp_path / "mcp_calls.jsonl"
    _, proc = run_codex(front.url + "/v1", tmp_path, "gemini-3-pro-preview", "Echo 'sealed' with the probe tool.",
                        mcp_config(calls_log))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert FINAL_TEXT in proc.stdout
    assert front.served == [both[0].url, both[1].url], "the two steps went to different instances"
    assert [c["params"]["arguments"] for c in mcp_calls(calls_log)] == [{"text": "sealed"}]

    calls = generate_calls(emulator)
    assert len(calls) == 2
    [call_part] = [p for p in calls[1]["contents"][-2]["parts"] if "functionCall" in p]
    # The emulator, like Gemini 3, refuses a signature it did not issue to this key (400 "Corrupted
    # thought signature."); the dummy would pass, so the real one is checked for here.
    assert call_part["thoughtSignature"] not in (None, "skip_thought_signature_validator"), \
        "the real signature came back through Codex, sealed, to the other instance"


def test_codex_tool_search_loads_the_mcp_tool_through_the_gateway(gateway: Gateway, emulator: Emulator,
                                                                   tmp_path: Path) -> None:
    """With model metadata that says `supports_search_tool` (Codex's own for OpenAI's models),
    Codex defers MCP tools behind `tool_search`: the model's search comes back as the
    `tool_search_call` Codex runs, the tools it loads are offered from the next request on, and the
    loaded tool's call reaches the MCP server."""
    listing = httpx.get(gateway.v1 + "/models", params={"client_version": "0.171.0"}, timeout=10).json()
    [info] = [m for m in listing["models"] if m["slug"] == "gpt-5-codex"]
    catalog = tmp_path / "catalog.json"
    catalog.write_text(json.dumps({"models": [{**info, "supports_search_tool": True}]}))
    emulator.rules(
        {"times": 1, "reply": {"function_calls": [{"name": "tool_search", "args": {"query": "echo"}}]}},
        {"times": 1, "reply": {"function_calls": [{"name": "mcp__probe__echo", "args": {"text": "found"}}]}},
        {"times": 1, "reply": {"text": FINAL_TEXT}},
    )
    calls_log = tmp_path / "mcp_calls.jsonl"
    config = mcp_config(calls_log)
    _, proc = run_codex(gateway, tmp_path, "gpt-5-codex", "Find the echo tool and echo 'found'.",
                           config, catalog_json=catalog)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert FINAL_TEXT in proc.stdout
    assert [c["params"]["arguments"] for c in mcp_calls(calls_log)] == [{"text": "found"}]

    calls = generate_calls(emulator)
    assert len(calls) == 3
    assert "tool_search" in namespaced_declarations(calls[0])
    assert "mcp__probe__echo" not in namespaced_declarations(calls[0]), "Codex deferred the MCP tool"
    assert "mcp__probe__echo" in namespaced_declarations(calls[1]), "the searched tool is offered after the search"
    [loaded] = [p["functionResponse"] for p in calls[1]["contents"][-1]["parts"] if "functionResponse" in p]
    assert loaded["name"] == "tool_search" and loaded["response"]["loaded_tools"] == ["mcp__probe__echo"]


SUBAGENT_MAPPINGS = "default: gemini-2.5-flash\nmappings:\n  gpt-5-codex: gemini-2.5-pro\n  gpt-4o: gemini-2.5-flash\n"


def test_codex_spawns_a_sub_agent_through_the_gateway(gateways: GatewayFactory, emulator: Emulator,
                                                      tmp_path: Path) -> None:
    """Sub-agents (the `multi_agent_v1` namespace): the model's `spawn_agent` call comes back in the
    form Codex dispatches, and the sub-agent's own requests go through the gateway too (here with a
    model override, gpt-4o -> gemini-2.5-flash, so the emulator can tell parent and child apart)."""
    gateway = gateways.start(gemini_accounts(emulator.url, "parent"), mappings_yaml=SUBAGENT_MAPPINGS)
    pro, flash = {"model": "gemini-2.5-pro"}, {"model": "gemini-2.5-flash"}
    spawn = {"name": "multi_agent_v1__spawn_agent", "args": {"message": "Report CHILD_DONE.", "model": "gpt-4o"}}
    emulator.rules(
        {"match": pro, "times": 1, "reply": {"function_calls": [spawn]}},
        {"match": flash, "times": 1, "reply": {"text": "CHILD_DONE"}},
        # every later parent step (after the spawn, and after Codex's note that the child finished)
        {"match": pro, "reply": {"text": FINAL_TEXT}},
    )
    _, proc = run_codex(gateway, tmp_path, "gpt-5-codex", "Spawn a helper agent.")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert FINAL_TEXT in proc.stdout

    log = [r for r in emulator.log() if "GenerateContent" in r["path"]]
    parent = [r["body"] for r in log if "gemini-2.5-pro" in r["path"]]
    child = [r["body"] for r in log if "gemini-2.5-flash" in r["path"]]
    assert len(parent) >= 2 and child, f"the sub-agent asked the gateway itself ({len(parent)} parent, " \
                                       f"{len(child)} child requests)\n{proc.stdout[-2000:]}"
    assert "Report CHILD_DONE." in json.dumps(child[0]["contents"]), "the task reached the sub-agent as plain input"
    results = [p["functionResponse"] for c in parent[1]["contents"] for p in c["parts"] if "functionResponse" in p]
    assert [r["name"] for r in results] == ["multi_agent_v1__spawn_agent"]
    assert "unsupported" not in json.dumps(results).lower(), "Codex ran the spawn: the call came back namespaced"
    assert any("CHILD_DONE" in json.dumps(p["contents"]) for p in parent[1:]), \
        f"the sub-agent's answer reached the parent\n{proc.stdout[-2000:]}"
