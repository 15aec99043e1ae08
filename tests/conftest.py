"""Shared fixtures: a real upstream emulator process and real mitmdump processes.

End-to-end tests talk to the gateway over sockets with the official `openai` SDK, exactly as
a user's tool would. Nothing here mocks the gateway or mitmproxy.
"""

from __future__ import annotations

import os
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
FIXTURES = Path(__file__).parent / "fixtures"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_http(url: str, proc: subprocess.Popen, log: Path, timeout: float = 30.0, proxy: str | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited early ({proc.returncode}):\n{log.read_text()[-3000:]}")
        try:
            httpx.get(url, timeout=1.0, proxy=proxy)
            return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up:\n{log.read_text()[-3000:]}")


def wait_for(check: Callable[[], Any], timeout: float = 8.0, interval: float = 0.1, what: str = "condition") -> Any:
    """Poll `check` until it returns something truthy (returned), or fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(interval)


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@dataclass
class Emulator:
    url: str
    proc: subprocess.Popen

    def control(self, path: str, payload: Any = None) -> Any:
        if payload is None:
            r = httpx.get(f"{self.url}/__control/{path}", timeout=5)
        else:
            r = httpx.post(f"{self.url}/__control/{path}", json=payload, timeout=5)
        r.raise_for_status()
        return r.json()

    def rules(self, *rules: dict[str, Any]) -> None:
        self.control("rules", {"rules": list(rules)})

    def reset(self) -> None:
        self.control("reset", {})

    def log(self) -> list[dict[str, Any]]:
        return self.control("log")["requests"]


@pytest.fixture(scope="session")
def emulator_proc(tmp_path_factory) -> Iterator[Emulator]:
    workdir = tmp_path_factory.mktemp("emulator")
    port_file, log = workdir / "port", workdir / "emulator.log"
    proc = subprocess.Popen([sys.executable, "-m", "tests.emulator", "--port", "0", "--port-file", str(port_file)],
                            cwd=ROOT, stdout=log.open("w"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 20
    while not port_file.exists() or not port_file.read_text().strip():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"emulator did not start:\n{log.read_text()}")
        time.sleep(0.05)
    emu = Emulator(port_file.read_text().strip(), proc)
    yield emu
    _stop(proc)


@pytest.fixture
def emulator(emulator_proc: Emulator) -> Emulator:
    """The shared emulator with rules, logs and counters cleared for this test."""
    emulator_proc.reset()
    return emulator_proc


@dataclass
class Gateway:
    url: str  # http://127.0.0.1:PORT (no /v1)
    proc: subprocess.Popen
    workdir: Path
    log_path: Path
    accounts_path: Path
    options: dict[str, str] = field(default_factory=dict)

    @property
    def v1(self) -> str:
        return self.url + "/v1"

    def log(self) -> str:
        return self.log_path.read_text()

    def openai(self, **kw: Any):
        import openai

        kw.setdefault("api_key", self.options.get("api_key", "sk-test"))
        kw.setdefault("max_retries", 0)  # the tests check the gateway's retries, not the SDK's
        kw.setdefault("timeout", 20)
        return openai.OpenAI(base_url=self.v1, **kw)

    def async_openai(self, **kw: Any):
        import openai

        kw.setdefault("api_key", self.options.get("api_key", "sk-test"))
        kw.setdefault("max_retries", 0)
        kw.setdefault("timeout", 20)
        return openai.AsyncOpenAI(base_url=self.v1, **kw)


def gemini_accounts(emulator_url: str, *keys: str) -> str:
    rows = "".join(f"""
  - provider: gemini
    email: {k}@example.com
    api_key: {k}
    base_url: {emulator_url}
""" for k in keys)
    return "accounts:" + rows


class GatewayFactory:
    """Starts mitmdump processes with the addon; all are stopped at the end of the session."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.running: list[Gateway] = []

    def start(self, accounts_yaml: str | None, *, mappings_yaml: str | None = None, env: dict[str, str] | None = None,
              extra_args: list[str] | None = None, regular: bool = False, nofile: int | None = None,
              **options: Any) -> Gateway:
        """`regular=True`: an explicit HTTP(S) proxy (for clients with a hard-coded api.openai.com)
        instead of the reverse proxy; `url` is then the proxy's address. `nofile`: the process's
        open-files limit (soft and hard)."""
        workdir = Path(tempfile.mkdtemp(dir=self.base))
        accounts = workdir / "accounts.yaml"
        opts = {k: (str(v).lower() if isinstance(v, bool) else str(v)) for k, v in options.items()}
        if accounts_yaml is not None:
            accounts.write_text(textwrap.dedent(accounts_yaml))
            opts.setdefault("accounts", str(accounts))
        if mappings_yaml is not None:
            (workdir / "mappings.yaml").write_text(textwrap.dedent(mappings_yaml))
            opts.setdefault("mappings", str(workdir / "mappings.yaml"))
        opts.setdefault("state_file", str(workdir / "state.json"))
        # The startup model check (a GET /v1beta/models) would land in the shared emulator's log and
        # rules of whatever test runs next; tests of it turn it on.
        opts.setdefault("check_models", "false")
        port = free_port()
        log = workdir / "mitmdump.log"
        cmd = [str(BIN / "mitmdump"), "-s", str(ROOT / "addon" / "gateway.py"),
               "--mode", (f"regular@{port}" if regular else f"reverse:http://127.0.0.1:9@{port}"),
               "--listen-host", "127.0.0.1",
               "--set", "connection_strategy=lazy", "--set", f"confdir={workdir / 'confdir'}"]
        for k, v in opts.items():
            cmd += ["--set", f"{k}={v}"]
        cmd += extra_args or []
        proc_env = {k: v for k, v in os.environ.items() if k not in ("GEMINI_API_KEY", "GATEWAY_API_KEY")}
        proc_env.update(env or {})
        limit = None if nofile is None else (lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile)))
        proc = subprocess.Popen(cmd, stdout=log.open("w"), stderr=subprocess.STDOUT, env=proc_env, cwd=workdir,
                                preexec_fn=limit)
        url = f"http://127.0.0.1:{port}"
        gw = Gateway(url, proc, workdir, log, accounts, opts)
        self.running.append(gw)
        # in regular mode, http://api.openai.com/healthz through the proxy is answered by the addon
        _wait_http(("http://api.openai.com" if regular else url) + "/healthz", proc, log,
                   proxy=url if regular else None)
        return gw

    def stop(self, gw: Gateway) -> None:
        _stop(gw.proc)

    def close(self) -> None:
        for gw in self.running:
            _stop(gw.proc)


@pytest.fixture(scope="session")
def gateways(tmp_path_factory) -> Iterator[GatewayFactory]:
    factory = GatewayFactory(tmp_path_factory.mktemp("gateways"))
    yield factory
    factory.close()


@pytest.fixture(scope="session")
def gateway(gateways: GatewayFactory, emulator_proc: Emulator) -> Gateway:
    """One shared gateway with a single Gemini account ("alice") on the emulator, auth off."""
    return gateways.start(gemini_accounts(emulator_proc.url, "alice"))


def ensure_redis_server() -> str:
    """The redis-server binary; installed from Debian's packages when missing (CI: a clean
    machine, as root)."""
    found = shutil.which("redis-server")
    if found:
        return found
    if os.geteuid() != 0:
        pytest.skip("redis-server is not installed and installing it needs root: apt-get install redis-server")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-q", "--no-install-recommends", "redis-server"]
    if subprocess.run(install, env=env, capture_output=True).returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True, check=True)
        subprocess.run(install, env=env, capture_output=True, check=True)
    found = shutil.which("redis-server")
    assert found, "apt-get installed redis-server but it is not on PATH"
    return found


@dataclass
class RedisServer:
    url: str  # redis://127.0.0.1:PORT/0
    proc: subprocess.Popen

    def client(self):
        import redis

        return redis.Redis.from_url(self.url)

    def flush(self) -> None:
        with self.client() as r:
            r.flushdb()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory) -> Iterator[RedisServer]:
    """A private redis-server on a free loopback port, no persistence; stopped at the end."""
    binary = ensure_redis_server()
    workdir = tmp_path_factory.mktemp("redis")
    port = free_port()
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                             "--dir", str(workdir), "--daemonize", "no"],
                            stdout=(workdir / "redis.log").open("w"), stderr=subprocess.STDOUT)
    server = RedisServer(f"redis://127.0.0.1:{port}/0", proc)
    deadline = time.monotonic() + 20
    while True:
        try:
            with server.client() as r:
                r.ping()
            break
        except Exception:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not start:\n{(workdir / 'redis.log').read_text()}") from None
            time.sleep(0.05)
    yield server
    _stop(proc)


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """The session's Redis, emptied for this test."""
    redis_server.flush()
    return redis_server.url


def pytest_collection_modifyitems(config, items) -> None:
    if shutil.which("codex") is None and not os.environ.get("RUN_CODEX"):
        skip = pytest.mark.skip(reason="Codex CLI not installed: run scripts/test-codex")
        for item in items:
            if item.get_closest_marker("codex") is not None:  # not `keywords`: it holds path parts too
                item.add_marker(skip)
    if shutil.which("gemini") is None and not os.environ.get("RUN_GEMINI_CLI"):
        skip = pytest.mark.skip(reason="gemini-cli not installed: run scripts/test-gemini-cli")
        for item in items:
            if "gemini_cli" in item.keywords:
                item.add_marker(skip)
    if not os.environ.get("RUN_CLAUDE"):
        skip = pytest.mark.skip(reason="Claude Code is opt-in: run scripts/test-claude")
        for item in items:
            if "claude" in item.keywords:
                item.add_marker(skip)
