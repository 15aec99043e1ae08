#!/usr/bin/env python3
"""Side-by-side benchmark: the gateway vs bare mitmproxy pass-through to the same upstream.

Starts the upstream emulator (tests/emulator), one mitmdump with the gateway addon and one bare
mitmdump in reverse mode to the emulator, then drives each with the same closed-loop load
(N connections, fixed duration) and prints req/s, p50/p99 and the ratios against the gateway's targets:
  non-streaming >= 1.0x pass-through, streaming >= 0.8x, <= 1.5 ms p50 added at 1 connection,
  first streamed byte within 5 ms of the upstream's first chunk.
The load generator shares the machine's cores with what it measures; only the ratios,
measured in the same run, are meant to be compared.

  .venv/bin/python scripts/bench.py [--seconds 5] [--connections 32]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent

CHAT = {"model": "gpt-4o", "messages": [{"role": "user", "content": "benchmark the gateway please"}]}
GEMINI = {"contents": [{"role": "user", "parts": [{"text": "benchmark the gateway please"}]}]}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"port {port} did not open")


def start(cmd: list[str], env: dict | None = None, cwd: Path | None = None) -> subprocess.Popen:
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, cwd=cwd)


async def load(url: str, body: dict, headers: dict, conns: int, seconds: float, stream: bool) -> dict:
    lat: list[float] = []
    first: list[float] = []
    errors = 0
    payload = json.dumps(body).encode()
    connector = aiohttp.TCPConnector(limit=conns)
    async with aiohttp.ClientSession(connector=connector) as session:
        stop = time.perf_counter() + seconds

        async def worker() -> None:
            nonlocal errors
            while time.perf_counter() < stop:
                t0 = time.perf_counter()
                try:
                    async with session.post(url, data=payload, headers=headers) as resp:
                        if stream:
                            got_first = False
                            async for _ in resp.content.iter_any():
                                if not got_first:
                                    first.append(time.perf_counter() - t0)
                                    got_first = True
                        else:
                            await resp.read()
                        if resp.status != 200:
                            errors += 1
                            continue
                except aiohttp.ClientError:
                    errors += 1
                    continue
                lat.append(time.perf_counter() - t0)

        await asyncio.gather(*(worker() for _ in range(conns)))
    lat.sort()
    pct = lambda xs, p: xs[min(len(xs) - 1, int(len(xs) * p))] * 1000 if xs else float("nan")  # noqa: E731
    return {"rps": len(lat) / seconds, "p50": pct(lat, 0.5), "p99": pct(lat, 0.99), "errors": errors,
            "first_p50": statistics.median(first) * 1000 if first else float("nan")}


def row(name: str, r: dict) -> str:
    return (f"  {name:<34} {r['rps']:8.0f} req/s  p50 {r['p50']:7.2f} ms  p99 {r['p99']:7.2f} ms"
            f"  errors {r['errors']}" + (f"  first byte p50 {r['first_p50']:.2f} ms" if r["first_p50"] == r["first_p50"] else ""))


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--connections", type=int, default=32)
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp())
    emu_port, gw_port, bare_port = free_port(), free_port(), free_port()
    procs = [start([sys.executable, "-m", "tests.emulator", "--port", str(emu_port)], cwd=ROOT)]
    wait_port(emu_port)
    emu = f"http://127.0.0.1:{emu_port}"
    env = {**os.environ, "GEMINI_API_KEY": "bench-key", "GEMINI_BASE_URL": emu}
    common = ["--listen-host", "127.0.0.1", "-q", "--set", f"confdir={tmp}"]
    procs.append(start([str(BIN / "mitmdump"), "-s", str(ROOT / "addon/gateway.py"), "--mode",
                        f"reverse:http://127.0.0.1:9@{gw_port}", "--set", "connection_strategy=lazy", *common], env))
    procs.append(start([str(BIN / "mitmdump"), "--mode", f"reverse:{emu}@{bare_port}",
                        "--set", "stream_large_bodies=1", *common]))
    try:
        wait_port(gw_port)
        wait_port(bare_port)
        gw, bare = f"http://127.0.0.1:{gw_port}", f"http://127.0.0.1:{bare_port}"
        gkey = {"x-goog-api-key": "bench-key", "content-type": "application/json"}
        gen = "/v1beta/models/gemini-2.5-flash:generateContent"
        sgen = "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse"
        j = {"content-type": "application/json"}
        c, s = args.connections, args.seconds
        await load(gw + "/v1/chat/completions", CHAT, j, 4, 1.0, False)  # warm-up
        await load(bare + gen, GEMINI, gkey, 4, 1.0, False)

        print(f"non-streaming, {c} connections, {s:.0f}s each")
        b = await load(bare + gen, GEMINI, gkey, c, s, False)
        g = await load(gw + "/v1/chat/completions", CHAT, j, c, s, False)
        print(row("bare mitmproxy pass-through", b))
        print(row("gateway", g))
        print(f"  ratio gateway / pass-through: {g['rps'] / b['rps']:.2f}x (target >= 1.0x)")

        print(f"streaming, {c} connections")
        b = await load(bare + sgen, GEMINI, gkey, c, s, True)
        g = await load(gw + "/v1/chat/completions", {**CHAT, "stream": True}, j, c, s, True)
        print(row("bare mitmproxy pass-through", b))
        print(row("gateway", g))
        print(f"  ratio gateway / pass-through: {g['rps'] / b['rps']:.2f}x (target >= 0.8x)")

        print("1 connection, latency")
        d = await load(emu + gen, GEMINI, gkey, 1, s, False)
        b = await load(bare + gen, GEMINI, gkey, 1, s, False)
        g = await load(gw + "/v1/chat/completions", CHAT, j, 1, s, False)
        ds = await load(emu + sgen, GEMINI, gkey, 1, s, True)
        gs = await load(gw + "/v1/chat/completions", {**CHAT, "stream": True}, j, 1, s, True)
        print(row("upstream directly", d))
        print(row("bare mitmproxy pass-through", b))
        print(row("gateway", g))
        print(row("upstream directly, streaming", ds))
        print(row("gateway, streaming", gs))
        print(f"  p50 added by the gateway over the upstream: {g['p50'] - d['p50']:.2f} ms (target <= 1.5 ms;"
              f" bare mitmproxy alone adds {b['p50'] - d['p50']:.2f} ms)")
        added_first = gs["first_p50"] - ds["first_p50"]
        print(f"  first byte added by the gateway (streaming): {added_first:.2f} ms (target <= 5 ms)")
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(10)


if __name__ == "__main__":
    asyncio.run(main())
