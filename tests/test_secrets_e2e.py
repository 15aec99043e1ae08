"""Secrets on the side paths an attack probe found, each through a real mitmdump: credentials in an
OpenAI-compatible account's base_url, keys cut in half by truncation, and keys in flows mitmproxy
refused itself or in headers the gateway does not read."""

from __future__ import annotations

import base64
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import BIN, ROOT, Emulator, GatewayFactory, free_port
from tests.hostile_upstream import HostileUpstream

pytestmark = pytest.mark.e2e

CHAT = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture(scope="module")
def hostile() -> Iterator[HostileUpstream]:
    server = HostileUpstream().start()
    yield server
    server.stop()


def fragments(secret: str, size: int = 8) -> list[str]:
    return [secret[i:i + size] for i in range(len(secret) - size + 1)]


def test_url_credentials_of_an_openai_account_are_sent_as_basic_auth_and_never_shown(
        gateways: GatewayFactory, hostile: HostileUpstream, tmp_path: Path) -> None:
    password = "pa55-url-secret-93x"
    basic = base64.b64encode(f"bob:{password}".encode()).decode()
    netloc = hostile.url.removeprefix("http://")
    gw = gateways.start(f"accounts:\n  - provider: openai\n    label: proxied\n"
                        f"    base_url: http://bob:{password}@{netloc}/echoauth/v1\n")
    r = httpx.post(gw.v1 + "/chat/completions", json=CHAT, timeout=30)
    assert r.status_code == 400, r.text
    # the upstream did get the credentials, as one Basic header (it echoed it: "Basic [redacted]")
    assert "refused credentials Basic [redacted]" in r.text
    seen = [r.text, httpx.get(gw.url + "/gateway/accounts", timeout=10).text]
    gw.proc.send_signal(signal.SIGUSR1)  # the pool dump in the log
    time.sleep(1.5)  # and the state file, written a second after a change
    gateways.stop(gw)
    seen += [gw.log(), Path(gw.options["state_file"]).read_text()]
    for text in seen:
        assert password not in text and basic not in text and basic[:12] not in text, text[:2000]


def test_url_credentials_next_to_an_api_key_are_refused_with_one_line(tmp_path: Path) -> None:
    accounts = tmp_path / "accounts.yaml"
    accounts.write_text("accounts:\n  - provider: openai\n    label: both\n"
                        "    base_url: http://bob:pa55-url-secret-93x@127.0.0.1:9/v1\n    api_key: sk-also-a-key-1234\n")
    port = free_port()
    proc = subprocess.run([str(BIN / "mitmdump"), "-s", str(ROOT / "addon" / "gateway.py"), "--mode",
                           f"reverse:http://127.0.0.1:9@{port}", "--listen-host", "127.0.0.1", "--set",
                           f"accounts={accounts}", "--set", f"confdir={tmp_path / 'conf'}"],
                          capture_output=True, text=True, timeout=60, cwd=tmp_path)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    errors = [line for line in out.splitlines() if "base_url carries credentials" in line]
    assert len(errors) == 1 and "api_key_header" in errors[0], out
    assert "pa55-url-secret-93x" not in out and "sk-also-a-key-1234" not in out and "Traceback" not in out


def test_url_credentials_work_next_to_an_api_key_in_its_own_header(
        gateways: GatewayFactory, hostile: HostileUpstream) -> None:
    """A server behind a basic-auth proxy that reads its own key from another header (Azure's
    `api-key`): both go up, neither is ever shown."""
    password, key = "pa55-url-secret-93x", "sk-also-a-key-123456"
    basic = base64.b64encode(f"bob:{password}".encode()).decode()
    netloc = hostile.url.removeprefix("http://")
    gw = gateways.start(f"accounts:\n  - provider: openai\n    label: both\n"
                        f"    base_url: http://bob:{password}@{netloc}/echoauth/v1\n"
                        f"    api_key: {key}\n    api_key_header: api-key\n")
    r = httpx.post(gw.v1 + "/chat/completions", json=CHAT, timeout=30)
    assert r.status_code == 400, r.text
    assert "refused credentials Basic [redacted] and api-key [redacted]" in r.text
    text = r.text + httpx.get(gw.url + "/gateway/accounts", timeout=10).text
    gateways.stop(gw)
    for secret in (password, basic, basic[:12], key):
        assert secret not in text + gw.log()


def test_a_key_at_a_truncation_point_leaves_no_fragment(gateways: GatewayFactory, emulator: Emulator,
                                                         hostile: HostileUpstream) -> None:
    key = "AIzaSECRETGEMINI-cut-0123456789abcdef"
    gw = gateways.start(f"accounts:\n  - provider: gemini\n    label: cutkey\n    api_key: {key}\n"
                        f"    base_url: {hostile.url}/cutkey\n")
    for body in (CHAT, {**CHAT, "stream": True}):
        r = httpx.post(gw.v1 + "/chat/completions", json=body, timeout=30)
        assert r.status_code == 400 and "[redacted]" in r.text
        assert not [f for f in fragments(key) if f in r.text], r.text
    time.sleep(1.2)
    text = httpx.get(gw.url + "/gateway/accounts", timeout=10).text + gw.log()
    assert not [f for f in fragments(key) if f in text]



def test_keys_leave_flows_mitmproxy_refused_and_headers_the_gateway_does_not_read(
        gateways: GatewayFactory, emulator: Emulator, tmp_path: Path) -> None:
    """Requests mitmproxy refuses before any gateway hook still become flows (mitmweb, -w files):
    their keys must go too, as must keys in headers the gateway never reads."""
    from mitmproxy import io

    key = "flow-file-gateway-key-5150"
    flows = tmp_path / "flows.mitm"
    gw = gateways.start(f"accounts:\n  - provider: gemini\n    label: a\n    api_key: k-123456\n"
                        f"    base_url: {emulator.url}\n", auth_mode="strict", api_key=key,
                        extra_args=["--set", f"save_stream_file={flows}"])
    auth = b"Authorization: Bearer " + key.encode() + b"\r\n"
    raw = [
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n" + auth
        + b"Content-Length: 2\r\nContent-Length: 3\r\nContent-Type: application/json\r\n\r\n{}",
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n" + auth
        + b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\nContent-Type: application/json\r\n\r\n0\r\n\r\n",
        b"CONNECT api.openai.com:443 HTTP/1.1\r\nHost: api.openai.com:443\r\n" + auth + b"\r\n",
        b"GET /v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization : Bearer " + key.encode() + b"\r\n\r\n",
        b"GET /v1/models?key=" + key.encode() + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nProxy-Authorization: Basic "
        + key.encode() + b"\r\napi-key: " + key.encode() + b"\r\n" + auth + b"\r\n",
    ]
    port = int(gw.url.rsplit(":", 1)[1])
    answers = []
    for request in raw:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(request)
            answers.append(s.recv(200).split(b"\r\n", 1)[0])
    assert answers[:4] == [b"HTTP/1.1 400 Bad Request"] * 4 and answers[4] == b"HTTP/1.1 200 OK", answers
    time.sleep(0.5)
    gateways.stop(gw)
    with open(flows, "rb") as f:
        recorded = list(io.FlowReader(f).stream())
    probed = [f for f in recorded if f.request.path != "/healthz"]  # (the fixture's start-up probes)
    assert len(probed) == 5 and sum(f.error is not None for f in probed) == 4
    assert key.encode() not in flows.read_bytes()
    assert probed[4].request.query["key"] == "[redacted]"
