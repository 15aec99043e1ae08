"""Many concurrent streams through one mitmdump, against a slow upstream.

The default run holds 200 streams open at once (10 chunks each over ~3 s); `LONG_TESTS=1` holds
1,000 streams (10 chunks over ~20 s), the size a team's coding agents reach. Every stream must
complete with all its chunks, no account may be blamed for a local wait, and the gateway's
resident memory at the peak is reported (and bounded).

The client is aiohttp with no connection limit (httpx and the openai SDK pool connections and
would queue the streams themselves); the test raises its own open-files limit, and the gateway
raises mitmdump's at start-up (each stream holds about four sockets there).
"""

from __future__ import annotations

import asyncio
import json
import os
import time

import aiohttp
import pytest

from tests.conftest import Emulator, GatewayFactory, gemini_accounts
from tests.procstat import raise_fd_limit, rss_mb

pytestmark = pytest.mark.e2e

LONG = bool(os.environ.get("LONG_TESTS"))
CHUNKS = [f"piece {i} " for i in range(10)]


async def one_stream(session: aiohttp.ClientSession, url: str) -> tuple[int, str, bool]:
    body = {"model": "gemini-2.5-flash", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    text, done = [], False
    async with session.post(url, json=body) as resp:
        buf = b""
        async for chunk in resp.content.iter_any():
            buf += chunk
            while b"\n\n" in buf:
                event, buf = buf.split(b"\n\n", 1)
                if not event.startswith(b"data: "):
                    continue
                payload = event[6:]
                if payload == b"[DONE]":
                    done = True
                    continue
                obj = json.loads(payload)
                for choice in obj.get("choices") or []:
                    if choice["delta"].get("content"):
                        text.append(choice["delta"]["content"])
        return resp.status, "".join(text), done


async def run_streams(url: str, n: int, pid: int) -> tuple[list, float]:
    """n concurrent streams; returns (results, gateway RSS in MB while all were open)."""
    peak = 0.0
    connector = aiohttp.TCPConnector(limit=0, force_close=True)
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        tasks = [asyncio.create_task(one_stream(session, url)) for _ in range(n)]

        async def sample() -> None:
            nonlocal peak
            while True:
                peak = max(peak, rss_mb(pid))
                await asyncio.sleep(0.2)

        sampler = asyncio.create_task(sample())
        results = await asyncio.gather(*tasks, return_exceptions=True)
        sampler.cancel()
    return results, peak


@pytest.mark.parametrize("n,chunk_ms", [(1000, 2000)] if LONG else [(200, 300)])
async def test_many_concurrent_slow_streams_all_complete(gateways: GatewayFactory, emulator: Emulator,
                                                         n: int, chunk_ms: int) -> None:
    raise_fd_limit()
    emulator.rules({"reply": {"chunks": CHUNKS}, "chunk_delay_ms": chunk_ms})
    gw = gateways.start(gemini_accounts(emulator.url, "scale"))
    idle = rss_mb(gw.proc.pid)
    t0 = time.monotonic()
    results, peak = await run_streams(gw.v1 + "/chat/completions", n, gw.proc.pid)
    took = time.monotonic() - t0
    failures = [r for r in results if isinstance(r, BaseException) or r != (200, "".join(CHUNKS), True)]
    print(f"\n{n} streams in {took:.1f}s; gateway RSS idle {idle:.0f} MB, peak {peak:.0f} MB "
          f"({(peak - idle) * 1024 / n:.0f} KB per open stream)")
    assert not failures, f"{len(failures)} of {n} streams failed, e.g. {failures[:3]}"
    assert "cooling" not in gw.log() and "disabled" not in gw.log()
    # 10 chunks spaced chunk_ms apart: every stream was open at the same time, none queued behind another
    assert took < (len(CHUNKS) * chunk_ms / 1000) * 1.5 + 10
    assert peak < 500, f"gateway RSS {peak:.0f} MB at {n} open streams (goal < 500 MB)"


async def test_waiting_for_a_free_upstream_connection_is_not_blamed_on_the_account(
        gateways: GatewayFactory, emulator: Emulator) -> None:
    # Two connections to the upstream host and a 1 s connect timeout: two of four streams wait
    # ~2.7 s for a free connection. That wait is local; the account must not cool down for it.
    emulator.rules({"reply": {"chunks": CHUNKS}, "chunk_delay_ms": 300})
    gw = gateways.start(gemini_accounts(emulator.url, "queue"), upstream_connections=2,
                        upstream_connect_timeout=1)
    t0 = time.monotonic()
    results, _ = await run_streams(gw.v1 + "/chat/completions", 4, gw.proc.pid)
    took = time.monotonic() - t0
    assert results == [(200, "".join(CHUNKS), True)] * 4
    assert took > 2 * 9 * 0.3, "the streams did not queue: the limit was not applied"
    assert "cooling" not in gw.log()
