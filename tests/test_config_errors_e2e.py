"""A configuration file that cannot be used stops a real `mitmdump -s addon/gateway.py` at start-up
with one line naming the file, the entry and the reason, and a non-zero exit status.

mitmproxy rolls its options back after an OptionsError and calls `configure` again with the
previous values; that call must neither fail again on the same file nor set an option (which
recursed until RecursionError and printed thousands of lines of tracebacks).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.conftest import BIN, ROOT, free_port

pytestmark = pytest.mark.e2e


def start(tmp_path: Path, *sets: str) -> tuple[int, str]:
    cmd = [str(BIN / "mitmdump"), "-s", str(ROOT / "addon" / "gateway.py"),
           "--mode", f"reverse:http://127.0.0.1:9@{free_port()}", "--listen-host", "127.0.0.1",
           "--set", f"confdir={tmp_path / 'confdir'}", "--set", f"state_file={tmp_path / 'state.json'}",
           "--set", "check_models=false"]
    for s in sets:
        cmd += ["--set", s]
    env = {k: v for k, v in os.environ.items() if k not in ("GEMINI_API_KEY", "GATEWAY_API_KEY")}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=env, cwd=tmp_path)
    return done.returncode, done.stdout + done.stderr


def assert_one_clear_line(out: str, *expected: str) -> None:
    lines = out.splitlines()
    assert len(lines) < 60, out
    assert "Traceback" not in out and "recursion" not in out, out
    told = [line for line in lines if all(e in line for e in expected)]
    assert len(told) == 1, out


def test_invalid_yaml_in_the_mappings_file(tmp_path: Path) -> None:
    mappings = tmp_path / "mappings.yaml"
    mappings.write_text("mappings:\n  gpt-4o: [gemini-2.5-flash\n")
    status, out = start(tmp_path, f"mappings={mappings}")
    assert status != 0
    assert_one_clear_line(out, f"cannot load mappings {mappings}", "line 3, column 1", "expected ',' or ']'")


def test_an_invalid_entry_in_the_mappings_file_is_named(tmp_path: Path) -> None:
    mappings = tmp_path / "mappings.yaml"
    mappings.write_text("mappings:\n  gpt-4o: {model: gemini-2.5-pro, thinking_level: extreme}\n")
    status, out = start(tmp_path, f"mappings={mappings}")
    assert status != 0
    assert_one_clear_line(out, str(mappings), "target of 'gpt-4o'", "thinking_level")


def test_a_missing_accounts_file_says_so_without_blaming_the_mappings(tmp_path: Path) -> None:
    status, out = start(tmp_path, f"accounts={tmp_path / 'accounts.yaml'}")
    assert status != 0
    assert_one_clear_line(out, f"cannot load accounts {tmp_path / 'accounts.yaml'}", "No such file or directory")
    assert "mappings" not in out, out
