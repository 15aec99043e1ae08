"""Every README recipe runs as written (tests/readme.py extracts them; a shell, Python or config
block without a recipe marker fails `test_every_recipe_is_run`).

How each kind is run, and the only liberties taken with the text:
  * server lines (`scripts/run ...`, the regular-mode mitmdump): started as written with the README's
    ports (8045, 8080) swapped for free ones (PORT= for scripts/run), mitmweb on a free port without
    a browser; each must answer /healthz, then SIGTERM must stop it and everything it started, with
    no temporary file left behind. `accounts=accounts.yaml` is the README's accounts example,
    written with the credential files it names into a temporary home folder.
  * client lines (curl, the Python SDK): run with bash against a running `scripts/run --emulator`;
    each must exit 0 and print what its `#` comment promises. `$HOME` is a temporary folder, so
    `~/.mitmproxy` is the test gateway's confdir.
  * the hosts-file recipe: needs root; run in a private mount and network namespace (unshare), so
    the README's `sudo tee -a /etc/hosts` edits a copy, with `sudo` as a pass-through since the
    test is root already. Node 20 (the `openai` npm package, v5), Python and curl at their default
    base URL must all reach the gateway.
  * Codex: tests/test_codex_e2e.py runs the README's config and command (scripts/test-codex).
  * Claude Code: tests/test_claude_code_e2e.py runs the README's command (scripts/test-claude).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from addon.pool.accounts_file import parse_accounts
from addon.config.mapping import parse_mappings
from addon.ops.story import Story
from tests import readme
from tests.conftest import ROOT, Emulator, ensure_redis_server, free_port
from tests.google_creds import service_account_file
from tests.test_operator_e2e import parse_logfmt

pytestmark = pytest.mark.e2e

RECIPES = readme.blocks()
CLIENT_BLOCKS = ("try-it", "python", "regular-clients")
ACCOUNT_ENV = {"ALICE_KEY": "AIza-readme-alice", "BOB_SECRET": "readme-secret"}


def accounts_home(home: Path) -> None:
    """The files the README's accounts example names (~/keys/..., ~/accounts/...), as Google's
    tools write them, so the example loads as written."""
    text = RECIPES["accounts-file"].text
    for kind, name in re.findall(r"(credentials_file|oauth_creds): ~/(\S+)", text):
        path = home / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if kind == "credentials_file":
            service_account_file(path, "https://oauth2.googleapis.com/token")
        else:
            path.write_text('{"access_token": "ya29.x", "refresh_token": "1//readme-refresh", "token_type": "Bearer"}')


def clean_env(home: Path, tmp: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GEMINI_", "GATEWAY_", "OPENAI_", "PORT"))}
    env.update(HOME=str(home), TMPDIR=str(tmp), **extra)
    return env


def wait_up(url: str, proc: subprocess.Popen, log: Path, proxy: str | None = None, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"exited early ({proc.returncode}):\n{log.read_text()[-3000:]}")
        try:
            httpx.get(url, timeout=1, proxy=proxy, verify=False)
            return
        except httpx.HTTPError:
            time.sleep(0.2)
    raise AssertionError(f"{url} did not come up:\n{log.read_text()[-3000:]}")


def is_up(url: str) -> bool:
    try:
        httpx.get(url, timeout=1)
        return True
    except httpx.HTTPError:
        return False


def stop(proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 20) -> int:
    proc.send_signal(sig)
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        raise AssertionError(f"did not stop within {timeout:g} s of the signal") from None


def start(line: str, env: dict[str, str], log: Path) -> subprocess.Popen:
    # its own process group: the test can clean up even if the script leaves children behind
    return subprocess.Popen(["bash", "-c", line], cwd=ROOT, env=env, stdout=log.open("w"),
                            stderr=subprocess.STDOUT, start_new_session=True)


def run_client(cmd: readme.Command, env: dict[str, str], subs: dict[str, str]) -> None:
    text = cmd.text
    for old, new in subs.items():
        text = text.replace(old, new)
    proc = subprocess.run(["bash", "-c", text], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"{text}\nexited {proc.returncode}:\n{out[-3000:]}"
    gone = readme.missing(cmd.expect, out)
    assert gone is None, f"{text}\npromised {gone!r} but printed:\n{out[-3000:]}"


def test_every_recipe_is_run() -> None:
    ran_here = {"servers", "try-it", "python", "embeddings", "accounts-file", "safety-settings", "mapping-example",
                "regular-server", "regular-clients", "hosts-file", "log-line", "shared-state",
                "clients-setup", "clients-try", "clients-file", "gemini-native", "anthropic-python"}
    ran_by_codex_test = {"codex-config", "codex", "codex-mcp"}
    ran_by_gemini_cli_test = {"gemini-cli"}
    ran_by_claude_test = {"claude-code"}
    assert set(RECIPES) == ran_here | ran_by_codex_test | ran_by_gemini_cli_test | ran_by_claude_test


# ---- servers -----------------------------------------------------------------------------------

@pytest.mark.parametrize("line", readme.commands(RECIPES["servers"]), ids=lambda c: c.text.split("#")[0].strip())
def test_server_line_starts_answers_and_stops_cleanly_on_sigterm(line: readme.Command, tmp_path: Path) -> None:
    home, tmp = tmp_path / "home", tmp_path / "tmp"
    home.mkdir(), tmp.mkdir()
    port = free_port()
    text = line.text.split("  #")[0].strip()
    env = clean_env(home, tmp, PORT=str(port), **ACCOUNT_ENV)
    if "accounts=accounts.yaml" in text:
        accounts_home(home)
        (tmp_path / "accounts.yaml").write_text(RECIPES["accounts-file"].text)
        text = text.replace("accounts=accounts.yaml", f"accounts={tmp_path / 'accounts.yaml'}")
    web_port = free_port()
    if "--web" in text:
        text += f" --set web_port={web_port} --set web_open_browser=false"
    log = tmp_path / "run.log"
    proc = start(text, env, log)
    try:
        wait_up(f"http://127.0.0.1:{port}/healthz", proc, log)
        emulator = re.search(r"upstream emulator at (http://\S+)", log.read_text())
        if "--emulator" in text:
            assert emulator and is_up(emulator.group(1) + "/__control/log")
        if "--web" in text:
            check_mitmweb_columns(log, web_port)
        stop(proc)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert not is_up(f"http://127.0.0.1:{port}/healthz"), "the gateway still answers after SIGTERM"
    if emulator:
        assert not is_up(emulator.group(1) + "/__control/log"), "the emulator still answers after SIGTERM"
    assert not any(tmp.iterdir()), f"left behind: {list(tmp.iterdir())}"
    leftover = subprocess.run(["pgrep", "-s", str(proc.pid)], capture_output=True, text=True).stdout.split()
    assert not leftover, f"processes left in the script's session: {leftover}"


def test_shared_state_recipe_runs_two_gateways_on_one_redis(tmp_path: Path) -> None:
    """The README's Redis lines as written, with free ports for 6379, 8045 and 8046."""
    ensure_redis_server()
    home, tmp = tmp_path / "home", tmp_path / "tmp"
    home.mkdir(), tmp.mkdir()
    accounts_home(home)
    (tmp_path / "accounts.yaml").write_text(RECIPES["accounts-file"].text)
    redis_port = free_port()
    lines = [c.text.replace("6379", str(redis_port)) for c in readme.commands(RECIPES["shared-state"])]
    assert lines[0].startswith("redis-server") and len(lines) == 3
    procs: list[subprocess.Popen] = []
    try:
        procs.append(start(lines[0], clean_env(home, tmp), tmp_path / "redis.log"))
        wait_port(redis_port, procs[0], tmp_path / "redis.log")
        for i, line in enumerate(lines[1:]):
            port = free_port()
            text = re.sub(r"^PORT=\d+", f"PORT={port}", line)
            text = text.replace("accounts=accounts.yaml", f"accounts={tmp_path / 'accounts.yaml'}")
            log = tmp_path / f"gateway{i}.log"
            procs.append(start(text, clean_env(home, tmp, **ACCOUNT_ENV), log))
            wait_up(f"http://127.0.0.1:{port}/healthz", procs[-1], log)
            assert f"gateway state: shared in redis://127.0.0.1:{redis_port}/0" in log.read_text()
        for proc in reversed(procs):
            stop(proc)
    finally:
        for proc in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)


def wait_port(port: int, proc: subprocess.Popen, log: Path, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"exited early:\n{log.read_text()[-2000:]}"
        try:
            socket.create_connection(("127.0.0.1", port), 0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"nothing listens on {port}:\n{log.read_text()[-2000:]}")


def check_mitmweb_columns(log: Path, web_port: int) -> None:
    """mitmweb shows the gateway's comment column and keeps streamed bodies, as `--web` promises."""
    deadline = time.monotonic() + 20
    while not (m := re.search(r"mitmweb flow inspector: open (http://\S+)", log.read_text())):
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.2)
    # the address the gateway prints opens mitmweb (the bare address is refused: it needs the token)
    assert httpx.get(m.group(1), timeout=5).status_code == 200
    assert httpx.get(f"http://127.0.0.1:{web_port}/options.json", timeout=5).status_code == 403
    token = re.search(r"token=(\w+)", m.group(1))
    opts = httpx.get(f"http://127.0.0.1:{web_port}/options.json", timeout=5,
                     params={"token": token.group(1)} if token else None).json()
    assert "comment" in opts["web_columns"]["value"]
    assert opts["store_streamed_bodies"]["value"] is True


def test_scripts_run_forwards_ctrl_c_and_help_lists_the_gateway_options(tmp_path: Path) -> None:
    home, tmp = tmp_path / "home", tmp_path / "tmp"
    home.mkdir(), tmp.mkdir()
    env = clean_env(home, tmp)
    helped = subprocess.run(["scripts/run", "--help"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert helped.returncode == 0
    for flag in ("--web", "--emulator", "PORT", "accounts", "auth_mode", "log_format", "max_attempts"):
        assert flag in helped.stdout, flag

    port = free_port()
    log = tmp_path / "run.log"
    proc = start("scripts/run --emulator", {**env, "PORT": str(port)}, log)
    try:
        wait_up(f"http://127.0.0.1:{port}/healthz", proc, log)
        emulator = re.search(r"upstream emulator at (http://\S+)", log.read_text()).group(1)
        proc.send_signal(signal.SIGUSR1)  # logs the pool, keeps running
        # (budgets for a loaded machine: what is checked is that it happens, not how fast)
        deadline = time.monotonic() + 60
        while "env:GEMINI_API_KEY [gemini] ready" not in log.read_text():
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        assert is_up(f"http://127.0.0.1:{port}/healthz")
        code = stop(proc, signal.SIGINT, timeout=60)  # what Ctrl-C sends
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert code == 130, log.read_text()
    assert not is_up(f"http://127.0.0.1:{port}/healthz") and not is_up(emulator + "/__control/log")
    assert not any(tmp.iterdir())
    # the emulator's pool state never lands where a run with real accounts reads it
    assert not (home / ".mitmproxy" / "gateway-state.json").exists()
    assert "Traceback" not in log.read_text() and "CancelledError" not in log.read_text(), log.read_text()


# ---- clients against `scripts/run --emulator` --------------------------------------------------

@pytest.fixture(scope="module")
def running(tmp_path_factory) -> Iterator[tuple[int, dict[str, str], Path]]:
    base = tmp_path_factory.mktemp("readme")
    home, tmp = base / "home", base / "tmp"
    home.mkdir(), tmp.mkdir()
    port = free_port()
    env = clean_env(home, tmp)
    log = base / "run.log"
    proc = start("scripts/run --emulator", {**env, "PORT": str(port)}, log)
    try:
        wait_up(f"http://127.0.0.1:{port}/healthz", proc, log)
        yield port, env, log
    finally:
        if proc.poll() is None:
            stop(proc)


@pytest.mark.parametrize("block", ["try-it", "python", "anthropic-python"])
def test_client_recipes_print_what_they_promise(running: tuple[int, dict[str, str], Path], block: str) -> None:
    port, env, log = running
    for cmd in readme.commands(RECIPES[block], inline_expect=True):
        run_client(cmd, env, {"127.0.0.1:8045": f"127.0.0.1:{port}"})
    text = log.read_text()
    route = "route=/v1/messages" if block.startswith("anthropic") else "route=/v1/chat/completions"
    assert route in text and "stream=true" in text
    # streamed answers are kept (no "content missing"), and the relay hop is not in the log
    assert "content missing" not in text and "server connect" not in text and "Streaming response" not in text


def test_embeddings_recipe_prints_what_it_promises(running: tuple[int, dict[str, str], Path]) -> None:
    port, env, log = running
    for cmd in readme.commands(RECIPES["embeddings"], inline_expect=True):
        run_client(cmd, env, {"127.0.0.1:8045": f"127.0.0.1:{port}"})
    assert "route=/v1/embeddings" in log.read_text()


def test_gemini_native_recipe_prints_what_it_promises(running: tuple[int, dict[str, str], Path]) -> None:
    port, env, log = running
    for cmd in readme.commands(RECIPES["gemini-native"], inline_expect=True):
        run_client(cmd, env, {"127.0.0.1:8045": f"127.0.0.1:{port}"})
    text = log.read_text()
    assert "route=/v1beta/models/{model}:{verb}" in text and "stream=true" in text


def test_regular_mode_recipe_with_proxy_settings(tmp_path: Path) -> None:
    """`scripts/run --emulator --proxy`: the base-URL listener and an HTTP(S) proxy listener in one
    process, the README's proxy clients answered by the emulator; HTTPS_PROXY pointed at the
    base-URL listener instead gets the 400 the README warns about."""
    [server] = readme.commands(RECIPES["regular-server"])
    home, tmp = tmp_path / "home", tmp_path / "tmp"
    home.mkdir(), tmp.mkdir()
    port, proxy_port = free_port(), free_port()
    env = clean_env(home, tmp, PORT=str(port), PROXY_PORT=str(proxy_port))
    log = tmp_path / "run.log"
    proc = start(server.text.split("  #")[0].strip(), env, log)
    try:
        wait_up("http://api.openai.com/healthz", proc, log, proxy=f"http://127.0.0.1:{proxy_port}")
        wait_up(f"http://127.0.0.1:{port}/healthz", proc, log)
        for cmd in readme.commands(RECIPES["regular-clients"], inline_expect=True):
            run_client(cmd, env, {"127.0.0.1:8080": f"127.0.0.1:{proxy_port}"})
        with pytest.raises(httpx.ProxyError, match="400"):
            httpx.get("https://api.openai.com/v1/models", proxy=f"http://127.0.0.1:{port}", timeout=10)
        stop(proc)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert "route=/v1/chat/completions" in log.read_text()
    assert not any(tmp.iterdir())


def test_accounts_examples_and_log_line_sample_match_the_code(tmp_path: Path) -> None:
    accounts_home(tmp_path)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HOME", str(tmp_path))
        for k, v in ACCOUNT_ENV.items():
            mp.setenv(k, v)
        parsed = parse_accounts(yaml.safe_load(RECIPES["accounts-file"].text))
        safety = parse_accounts({**yaml.safe_load(RECIPES["safety-settings"].text), "accounts": []})
    assert [a.name for a in parsed.accounts] == ["alice@example.com", "vertex-prod", "bob@corp.example",
                                                 "local-vllm"]
    assert safety.safety_settings
    mapping = parse_mappings(yaml.safe_load(RECIPES["mapping-example"].text))
    assert mapping.target("gemini-3-pro-high").thinking_level == "high"
    assert [t.model for t in mapping.chain("gpt-5")] == ["gemini-4-argon", "gemini-3.1-pro-preview",
                                                        "gemini-3.8-flash"]
    assert [t.model for t in mapping.chain("gemini-3.6-flash")] == ["gemini-3.6-flash", "gemini-3.8-flash"]
    sample = parse_logfmt(RECIPES["log-line"].text.strip())
    full = Story(client_model="m", tokens_in=1, tokens_out=1, error_code="e", stream_error="x", ended=1.0,
                 first_byte=1.0, account="a", mapped_model="m", status=200)
    assert set(sample) <= set(full.fields()) | {"attempts"}, set(sample) - set(full.fields())


# ---- clients and budgets -----------------------------------------------------------------------

def test_clients_recipes_add_a_client_and_its_limits_hold(tmp_path: Path) -> None:
    """`scripts/clients add` as written (its file in a temporary folder), the gateway started with
    it, then the client lines with the key it printed in KEY."""
    home, tmp = tmp_path / "home", tmp_path / "tmp"
    home.mkdir(), tmp.mkdir()
    clients_file = str(tmp_path / "clients.yaml")
    add, server = readme.commands(RECIPES["clients-setup"])
    env = clean_env(home, tmp)
    proc = subprocess.run(["bash", "-c", add.text.replace("clients.yaml", clients_file)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert readme.missing(add.expect, proc.stdout) is None, proc.stdout
    key = proc.stdout.strip().splitlines()[-1]
    assert key.startswith("sk-gw-") and key not in Path(clients_file).read_text()
    port = free_port()
    log = tmp_path / "run.log"
    gw = start(server.text.replace("clients.yaml", clients_file), {**env, "PORT": str(port)}, log)
    try:
        wait_up(f"http://127.0.0.1:{port}/healthz", gw, log)
        for cmd in readme.commands(RECIPES["clients-try"]):
            run_client(cmd, {**env, "KEY": key}, {"127.0.0.1:8045": f"127.0.0.1:{port}"})
        stop(gw)
    finally:
        if gw.poll() is None:
            os.killpg(gw.pid, signal.SIGKILL)
    text = log.read_text()
    assert "client=alice" in text and "limit=rpm" in text and "limit=model" in text
    assert key not in text


def test_clients_file_example_loads(tmp_path: Path) -> None:
    from addon.clients import parse_clients

    parsed = parse_clients(yaml.safe_load(RECIPES["clients-file"].text), env={"CI_BOT_KEY": "sk-gw-ci"})
    alice = parsed.by_name["alice"]
    assert [c.name for c in parsed.clients] == ["alice", "ci-bot"]
    assert alice.allows("gpt-4o-mini") and not alice.allows("o3") and alice.rpm == 60
    assert parsed.find("sk-gw-ci").name == "ci-bot"


# ---- hard-coded api.openai.com: the hosts-file recipe ------------------------------------------

NODE_APP = """\
import OpenAI from "openai";
const client = new OpenAI();  // the default base URL: https://api.openai.com/v1
const r = await client.chat.completions.create({model: "gpt-4o", messages: [{role: "user", content: "Hi from Node"}]});
console.log(r.choices[0].message.content);
const s = await client.chat.completions.create({model: "gpt-4o", stream: true,
                                                messages: [{role: "user", content: "streamed"}]});
for await (const c of s) process.stdout.write(c.choices[0]?.delta?.content ?? "");
console.log();
"""


def node_openai() -> Path:
    """A folder with the `openai` npm package (v5: the last to support Node 20), cached in .venv."""
    folder = ROOT / ".venv" / "node-openai"
    if not (folder / "node_modules" / "openai").exists():
        subprocess.run(["npm", "install", "--prefix", str(folder), "--no-audit", "--no-fund", "openai@5"],
                       check=True, capture_output=True, timeout=300)
    return folder


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("unshare"), reason="needs root and unshare")
@pytest.mark.skipif(not (shutil.which("node") and shutil.which("npm")), reason="needs node and npm")
def test_hosts_file_recipe_serves_clients_with_a_hard_coded_url(tmp_path: Path) -> None:
    app = node_openai()
    (app / "app.mjs").write_text(NODE_APP)
    *setup, server = readme.commands(RECIPES["hosts-file"])
    home, tmp = tmp_path / "home", tmp_path / "tmp"
    home.mkdir(), tmp.mkdir()
    ca = home / ".mitmproxy" / "mitmproxy-ca-cert.pem"
    script = textwrap.dedent(f"""\
        set -euo pipefail
        ip link set lo up
        cp /etc/hosts {tmp_path}/hosts && mount --bind {tmp_path}/hosts /etc/hosts
        {chr(10).join(c.text for c in setup)}
        {server.text} > {tmp_path}/server.log 2>&1 &
        server=$!
        for _ in $(seq 300); do curl -s -o /dev/null http://127.0.0.1:443/healthz && break; sleep 0.2; done
        (cd {app} && OPENAI_API_KEY=anything NODE_EXTRA_CA_CERTS={ca} node app.mjs)
        SSL_CERT_FILE={ca} {sys.executable} -c \
          'import openai; print(openai.OpenAI(api_key="x").models.list().data[0].id)'
        curl -sS --cacert {ca} https://api.openai.com/healthz; echo
        kill -TERM $(pgrep -P $server) 2>/dev/null || true  # scripts/run, under the sudo stand-in's subshell
        wait $server || true
        """)
    env = clean_env(home, tmp)
    # a private PID namespace too: whatever the script leaves running ends with it
    proc = subprocess.run(["unshare", "--mount", "--net", "--pid", "--fork", "--mount-proc", "bash", "-c", script],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    out = proc.stdout + proc.stderr
    server_log = (tmp_path / "server.log").read_text() if (tmp_path / "server.log").exists() else ""
    assert proc.returncode == 0, out + server_log
    assert "Echo(gemini-3.8-flash): Hi from Node" in out and "Echo(gemini-3.8-flash): streamed" in out, out
    assert "gpt-4o" in out and '"status":"ok"' in out, out
    # mitmweb/mitmdump show the URL the client called
    assert "https://api.openai.com/v1/chat/completions" in server_log, server_log
    assert "outcome=ok" in server_log
