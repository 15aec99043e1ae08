"""Client connections that ask nothing, through a real mitmdump: one local process opening
thousands of idle sockets must not lock other requests out (it used to: accept() ran out of file
descriptors and legitimate requests timed out), and silent connections are closed after
`client_header_timeout` rather than mitmproxy's 600 s."""

from __future__ import annotations

import os
import selectors
import socket
import threading
import time

import httpx
import pytest

from tests.conftest import Emulator, GatewayFactory, gemini_accounts, wait_for
from tests.procstat import raise_fd_limit

pytestmark = pytest.mark.e2e

CHAT = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}


def open_idle(port: int, count: int, batch: int = 250) -> list[socket.socket]:
    """`count` connections that send nothing, opened a batch at a time without waiting for each
    (mitmproxy listens with a backlog of 100: a sequential opener would spend its time in SYN retries)."""
    held: list[socket.socket] = []
    for start in range(0, count, batch):
        pending = []
        for _ in range(min(batch, count - start)):
            s = socket.socket()
            s.setblocking(False)
            s.connect_ex(("127.0.0.1", port))
            pending.append(s)
        deadline = time.monotonic() + 5
        with selectors.DefaultSelector() as sel:
            for s in pending:
                sel.register(s, selectors.EVENT_WRITE)
            left = len(pending)
            while left and time.monotonic() < deadline:
                for key, _ in sel.select(timeout=0.5):
                    sel.unregister(key.fileobj)
                    left -= 1
        for s in pending:
            if s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0:
                held.append(s)
            else:
                s.close()
    return held


def closed_by_peer(s: socket.socket) -> bool:
    s.settimeout(0)
    try:
        return s.recv(1) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


def test_5000_idle_connections_do_not_stop_a_legitimate_request(gateways: GatewayFactory,
                                                                emulator: Emulator) -> None:
    raise_fd_limit()
    # 2048 open files: 5,000 idle sockets used to exhaust them (accept() failing with EMFILE, the
    # request below timing out), and nothing closed them for 600 s. Now one address holds at most a
    # quarter of the limit.
    gw = gateways.start(gemini_accounts(emulator.url, "busy"), nofile=2048, client_header_timeout=120)
    port = int(gw.url.rsplit(":", 1)[1])
    idle = open_idle(port, 5000)  # from the same address as the legitimate client below
    try:
        assert len(idle) > 4500
        started = time.monotonic()
        r = httpx.post(gw.v1 + "/chat/completions", json=CHAT, timeout=10)
        assert r.status_code == 200 and time.monotonic() - started < 2
        assert "max_client_connections=512" in gw.log()
        # the oldest idle ones made room: the gateway holds about a quarter of its file descriptors
        wait_for(lambda: len(os.listdir(f"/proc/{gw.proc.pid}/fd")) < 512 + 200, timeout=20,
                 what="the idle connections beyond the bound to be closed")
    finally:
        for s in idle:
            s.close()
    # once the flood has gone, nothing of it is left holding descriptors, and requests go on
    wait_for(lambda: len(os.listdir(f"/proc/{gw.proc.pid}/fd")) < 200, timeout=30, what="the closed sockets to go")
    assert httpx.post(gw.v1 + "/chat/completions", json=CHAT, timeout=10).status_code == 200


def test_a_slow_request_head_is_closed_but_a_kept_alive_connection_is_not(gateways: GatewayFactory,
                                                                          emulator: Emulator) -> None:
    gw = gateways.start(gemini_accounts(emulator.url, "slow"), client_header_timeout=1)
    port = int(gw.url.rsplit(":", 1)[1])
    slow = socket.create_connection(("127.0.0.1", port), timeout=5)
    slow.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # never finished
    with httpx.Client(timeout=10) as client:  # asks at once, then idles past the timeout, then asks again
        assert client.get(gw.url + "/healthz").status_code == 200
        time.sleep(2.5)
        assert closed_by_peer(slow)
        assert client.get(gw.url + "/healthz").status_code == 200
    slow.close()


def test_sigterm_lets_short_streams_finish_and_ends_long_ones_with_an_error_event(
        gateways: GatewayFactory, emulator: Emulator) -> None:
    gw = gateways.start(gemini_accounts(emulator.url, "stopping"), shutdown_grace_seconds=2)
    emulator.rules({"match": {"path_contains": "stream"}, "times": 1, "chunk_delay_ms": 1500,
                    "reply": {"chunks": [f"long{i} " for i in range(10)]}},
                   {"match": {"path_contains": "stream"}, "times": 1, "chunk_delay_ms": 300,
                    "reply": {"chunks": ["short1 ", "short2 ", "short3"]}})
    got: dict[str, str] = {}

    def stream(name: str, first_seen: threading.Event) -> None:
        text = ""
        with httpx.stream("POST", gw.v1 + "/chat/completions", timeout=30,
                          json={**CHAT, "stream": True, "messages": [{"role": "user", "content": name}]}) as r:
            for chunk in r.iter_text():
                text += chunk
                if "short" in text or "long" in text:
                    first_seen.set()
        got[name] = text

    events = [threading.Event(), threading.Event()]
    threads = [threading.Thread(target=stream, args=(name, ev)) for name, ev in zip(("long", "short"), events)]
    threads[0].start()
    assert events[0].wait(15)
    threads[1].start()
    assert events[1].wait(15)
    gw.proc.terminate()  # SIGTERM, as Ctrl-C in scripts/run sends
    for t in threads:
        t.join(30)
    assert gw.proc.wait(30) == 0
    assert "short3" in got["short"] and got["short"].rstrip().endswith("data: [DONE]"), got["short"]
    assert "long0" in got["long"] and "long9" not in got["long"], got["long"]
    assert "gateway_shutting_down" in got["long"], got["long"]  # the protocol's error event, not a silent cut
    log = gw.log()
    assert "shutting down: 2 open request(s) get 2s to finish" in log
    lines = [line for line in log.splitlines() if "route=/v1/chat/completions" in line]
    assert len(lines) == 2 and any("stream_error=" in line for line in lines), lines
    assert "Traceback" not in log and "CancelledError" not in log, log
