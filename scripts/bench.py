#!/usr/bin/env python3
"""Side-by-side benchmark, in one run on one machine: the gateway vs bare mitmproxy pass-through
(`mitmdump --mode reverse:` to the same upstream) vs LiteLLM (when `litellm` is on PATH).

Run it as `scripts/bench` (installs wrk and redis-server from Debian's packages when missing).
Load comes from `wrk` (C, one thread), with the request bodies in scripts/wrk/*.lua, so the
load generator costs little of the 2 cores it shares with what it measures; only ratios from
the same run are meant to be compared. Each comparison alternates the sides `--repeat` times
and prints the median and the range. What it measures:
  * req/s and p50/p99 latency (wrk's distribution), non-streaming and streaming (20 chunks),
    at `--connections` (32) and at 1 connection (the p50 the gateway adds over pass-through);
  * time to first byte of a stream at 1 connection (a small Python probe: wrk cannot);
  * resident memory with 1,000 streams open (slow upstream), gateway and bare pass-through,
    and the engine's and relay's own memory per open stream (tracemalloc, in this process);
  * the cost of a clients file (per-client keys and limits), with the counters in Redis: the same
    gateway with and without one, the key being a client's with limits it never reaches (every
    request is admitted by the Lua script: one Redis round trip);
  * 1 vs 2 gateway processes sharing one Redis (`state=redis://`): wrk drives each process on
    its own port at once and the req/s add up (a Python load balancer would cost more CPU than
    the gateway on 2 cores, and mitmproxy cannot share a listening port);
  * every ratio against the targets: non-streaming >= 1.0x pass-through, streaming >= 0.8x,
    p50 added at 1 connection <= 0.2 ms over pass-through.

  scripts/bench [--seconds 5] [--connections 32] [--repeat 3] [--streams 1000] [--skip-memory]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
WRK = ROOT / "scripts" / "wrk"
sys.path.insert(0, str(ROOT))
from tests.procstat import raise_fd_limit, rss_mb  # noqa: E402

CHAT = {"model": "gpt-4o", "messages": [{"role": "user", "content": "benchmark the gateway please"}]}
GEMINI = {"contents": [{"role": "user", "parts": [{"text": "benchmark the gateway please"}]}]}
GEN = "/v1beta/models/gemini-2.5-flash:generateContent"
SGEN = "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse"
CHUNKS = [f"chunk{i} " for i in range(20)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"port {port} did not open")


class Stack:
    """The processes of one run, stopped at the end."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen] = []
        self.tmp = Path(tempfile.mkdtemp(prefix="gateway-bench-"))

    def start(self, cmd: list[str], port: int, env: dict | None = None) -> subprocess.Popen:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, cwd=ROOT)
        self.procs.append(proc)
        wait_port(port)
        return proc

    def gateway(self, emu: str, *options: str) -> tuple[str, subprocess.Popen]:
        port = free_port()
        env = {**os.environ, "GEMINI_API_KEY": "bench-key", "GEMINI_BASE_URL": emu}
        sets = [a for o in ("connection_strategy=lazy", f"confdir={self.tmp}",
                            f"state_file={self.tmp}/state-{port}.json", *options) for a in ("--set", o)]
        proc = self.start([str(BIN / "mitmdump"), "-q", "-s", str(ROOT / "addon/gateway.py"), "--mode",
                           f"reverse:http://127.0.0.1:9@{port}", "--listen-host", "127.0.0.1", *sets], port, env)
        return f"http://127.0.0.1:{port}", proc

    def bare(self, emu: str) -> tuple[str, subprocess.Popen]:
        port = free_port()
        proc = self.start([str(BIN / "mitmdump"), "-q", "--mode", f"reverse:{emu}@{port}", "--listen-host",
                           "127.0.0.1", "--set", "stream_large_bodies=1", "--set", f"confdir={self.tmp}"], port)
        return f"http://127.0.0.1:{port}", proc

    def litellm(self, emu: str) -> tuple[str, subprocess.Popen] | None:
        exe = shutil.which("litellm")
        if exe is None:
            return None
        port = free_port()
        config = self.tmp / "litellm.yaml"
        # LiteLLM's OpenAI-compatible provider to the emulator's /openai/v1 (same emulated model).
        config.write_text(f"""model_list:
  - model_name: gpt-4o
    litellm_params:
      model: openai/gemini-2.5-flash
      api_base: {emu}/openai/v1
      api_key: bench-key
""")
        proc = self.start([exe, "--config", str(config), "--port", str(port), "--num_workers", "1"], port,
                          {**os.environ, "LITELLM_LOG": "ERROR"})
        return f"http://127.0.0.1:{port}", proc

    def redis(self) -> str:
        port = free_port()
        self.start(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                    "--dir", str(self.tmp)], port)
        return f"redis://127.0.0.1:{port}/0"

    def close(self) -> None:
        for p in self.procs:
            p.terminate()
        for p in self.procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(self.tmp, ignore_errors=True)


# ---- load ------------------------------------------------------------------------------------

def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wrk(url: str, script: str, conns: int, seconds: float, stream: bool = False, pid: int | None = None) -> dict:
    """One wrk run; with `pid`, also that process's CPU time per request (less sensitive than
    req/s to whatever else the machine is doing)."""
    cpu0 = cpu_seconds(pid) if pid else 0.0
    out = subprocess.run(["wrk", "-t1", f"-c{conns}", f"-d{max(1, round(seconds))}s", "--timeout", "30s", "-s", str(WRK / script),
                          url], capture_output=True, text=True, env={**os.environ, "STREAM": "1" if stream else "0"})
    m = re.search(r"WRK_JSON (\{.*\})", out.stdout)
    if not m:
        raise RuntimeError(f"wrk failed: {out.stdout}\n{out.stderr}")
    r = json.loads(m.group(1))
    r["rps"] = r["requests"] / (r["duration_us"] / 1e6)
    r["errors"] = r["socket_errors"] + r["non_2xx"]
    r["cpu_ms"] = (cpu_seconds(pid) - cpu0) * 1000 / max(1, r["requests"]) if pid else float("nan")
    return r


def wrk_parallel(jobs: list[tuple[str, str, int, float, bool]]) -> dict:
    """Several wrk processes at once (one per gateway process); req/s add up."""
    procs = [subprocess.Popen(["wrk", "-t1", f"-c{c}", f"-d{max(1, round(s))}s", "--timeout", "30s", "-s", str(WRK / script), url],
                              stdout=subprocess.PIPE, text=True, env={**os.environ, "STREAM": "1" if st else "0"})
             for url, script, c, s, st in jobs]
    results = []
    for p in procs:
        out, _ = p.communicate()
        r = json.loads(re.search(r"WRK_JSON (\{.*\})", out).group(1))
        r["rps"] = r["requests"] / (r["duration_us"] / 1e6)
        results.append(r)
    return {"rps": sum(r["rps"] for r in results), "p50_us": max(r["p50_us"] for r in results),
            "p99_us": max(r["p99_us"] for r in results),
            "errors": sum(r["socket_errors"] + r["non_2xx"] for r in results)}


def compare(sides: dict[str, Callable[[], dict]], repeat: int) -> dict[str, list[dict]]:
    """Alternate the sides `repeat` times: drift in machine load hits every side alike."""
    out: dict[str, list[dict]] = {name: [] for name in sides}
    for _ in range(repeat):
        for name, run in sides.items():
            out[name].append(run())
    return out


def span(runs: list[dict], key: str, scale: float = 1.0, fmt: str = "{:.0f}") -> str:
    values = sorted(r[key] * scale for r in runs)
    m = fmt.format(statistics.median(values))
    return m if len(values) == 1 else f"{m} ({fmt.format(values[0])}–{fmt.format(values[-1])})"


def ratio_span(a: list[dict], b: list[dict], key: str = "rps") -> str:
    """Median and range of the per-round ratios a/b (each round ran side by side)."""
    ratios = sorted(x[key] / y[key] for x, y in zip(a, b))
    return f"{statistics.median(ratios):.2f}x ({ratios[0]:.2f}–{ratios[-1]:.2f})"


def table(title: str, results: dict[str, list[dict]]) -> None:
    print(f"\n{title}")
    for name, runs in results.items():
        cpu = (f"   CPU/req {span(runs, 'cpu_ms', fmt='{:.2f}')} ms" if runs[0].get("cpu_ms", float("nan")) ==
               runs[0].get("cpu_ms") else "")
        print(f"  {name:<30} {span(runs, 'rps'):>18} req/s   p50 {span(runs, 'p50_us', 1e-3, '{:.2f}'):>20} ms"
              f"   p99 {span(runs, 'p99_us', 1e-3, '{:.2f}'):>22} ms{cpu}   errors {sum(r['errors'] for r in runs)}")


# ---- time to first byte, open streams, memory per stream -------------------------------------

async def ttfb(sides: dict[str, tuple[str, dict, dict]], n: int) -> dict[str, dict]:
    """Median ms from sending a streaming request to its first body byte, one connection per side.
    The sides take turns request by request, so a change in machine load hits them alike."""
    firsts: dict[str, list[float]] = {name: [] for name in sides}
    sessions = {name: aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1)) for name in sides}
    try:
        for i in range(n + 5):
            for name, (url, body, headers) in sides.items():
                t0 = time.perf_counter()
                async with sessions[name].post(url, json=body, headers=headers) as resp:
                    await resp.content.readany()
                    t1 = time.perf_counter()
                    await resp.read()
                if i >= 5:  # warm-up
                    firsts[name].append((t1 - t0) * 1000)
    finally:
        for session in sessions.values():
            await session.close()
    return {name: {"ttfb_ms": statistics.median(v)} for name, v in firsts.items()}


async def hold_streams(url: str, body: dict, headers: dict, n: int, pid: int) -> dict:
    """n concurrent slow streams; the process's RSS while all are open."""
    peak, opened, completed = 0.0, 0, 0
    connector = aiohttp.TCPConnector(limit=0, force_close=True)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=180)) as session:
        async def one() -> None:
            nonlocal opened, completed
            async with session.post(url, json=body, headers=headers) as resp:
                await resp.content.readany()
                opened += 1
                await resp.read()
                completed += resp.status == 200

        async def sample() -> None:
            nonlocal peak
            while True:
                peak = max(peak, rss_mb(pid))
                await asyncio.sleep(0.25)

        idle = rss_mb(pid)
        sampler = asyncio.create_task(sample())
        await asyncio.gather(*(one() for _ in range(n)), return_exceptions=True)
        sampler.cancel()
    return {"idle_mb": idle, "peak_mb": peak, "completed": completed, "opened": opened}


async def memory_per_stream(emu: str, n: int) -> dict:
    """The engine's and the relay's own memory per open stream, without mitmproxy: n streams
    through Engine.handle (upstream connection, decoder, encoder) then claimed from the relay by
    raw sockets. tracemalloc attributes each allocation to the code on its stack."""
    from addon.engine import Fixed, Incoming, Settings
    from addon.config.mapping import parse_mappings
    from addon.mitm.relay import Relay
    from addon.wiring import Wiring, load_accounts

    os.environ.update(GEMINI_API_KEY="bench-key", GEMINI_BASE_URL=emu)
    tmp = Path(tempfile.mkdtemp(prefix="gateway-mem-"))
    wiring = Wiring(settings=Settings(), mappings=Fixed(parse_mappings({"default": "gemini-2.5-flash"})),
                    accounts=load_accounts(""), state_path=tmp / "state.json")
    relay = Relay()
    await relay.start()
    body = json.dumps({**CHAT, "stream": True}).encode()
    incoming = Incoming("POST", "/v1/chat/completions", {"content-type": "application/json"}, body, "127.0.0.1")
    await wiring.engine.handle(incoming)  # warm-up: imports, the session, the first connection
    tracemalloc.start(30)
    base = tracemalloc.take_snapshot()
    outcomes = await asyncio.gather(*(wiring.engine.handle(incoming) for _ in range(n)))
    after_engine = tracemalloc.take_snapshot()
    conns = []
    for out in outcomes:
        path = relay.register(out.status, out.headers, out.stream)
        reader, writer = await asyncio.open_connection("127.0.0.1", relay.port)
        writer.write(f"GET {path} HTTP/1.1\r\nhost: relay\r\n\r\n".encode())
        conns.append((reader, writer))
    for reader, _ in conns:
        await reader.readuntil(b"\r\n\r\n")
    await asyncio.sleep(0.5)
    after_relay = tracemalloc.take_snapshot()
    tracemalloc.stop()

    def attributed(snap: tracemalloc.Snapshot, pattern: str) -> int:
        traces = snap.filter_traces([tracemalloc.Filter(True, pattern, all_frames=True)])
        return sum(s.size for s in traces.statistics("filename"))

    addon = str(ROOT / "addon" / "*")
    relay_file = str(ROOT / "addon" / "relay.py")
    engine_kb = (attributed(after_engine, addon) - attributed(base, addon)) / n / 1024
    relay_kb = (attributed(after_relay, relay_file) - attributed(after_engine, relay_file)) / n / 1024
    for _, writer in conns:
        writer.close()
    await relay.close()
    await wiring.aclose()
    shutil.rmtree(tmp, ignore_errors=True)
    return {"engine_kb": engine_kb, "relay_kb": relay_kb}


# ---- the run ---------------------------------------------------------------------------------

def clients_cost(stack: Stack, emu: str, redis_url: str, c: int, s: float, n: int) -> None:
    """The same gateway (counters in Redis) without and with a clients file in which the benchmark's
    key (chat.lua sends `bench-key`) is a client with every limit, none of them reached."""
    import hashlib

    clients = stack.tmp / "clients.yaml"
    clients.write_text(f"clients:\n  - name: bench\n    key_sha256: {hashlib.sha256(b'bench-key').hexdigest()}\n"
                       "    rpm: 100000000\n    tokens_per_day: 1000000000000\n    max_concurrent: 100000\n")
    plain, plain_proc = stack.gateway(emu, f"state={redis_url}")
    limited, limited_proc = stack.gateway(emu, f"state={redis_url}", f"clients={clients}")
    for g in (plain, limited):
        wrk(g + "/v1/chat/completions", "chat.lua", 4, 1)
    for conns in (c, 1):
        sides = compare({
            "without a clients file": lambda k=conns: wrk(plain + "/v1/chat/completions", "chat.lua", k, s,
                                                          pid=plain_proc.pid),
            "with one (limits in Redis)": lambda k=conns: wrk(limited + "/v1/chat/completions", "chat.lua", k, s,
                                                              pid=limited_proc.pid)}, n)
        table(f"non-streaming, {conns} connection{'s' if conns > 1 else ''}, state in Redis", sides)
        w, wo = sides["with one (limits in Redis)"], sides["without a clients file"]
        added = sorted((a["p50_us"] - b["p50_us"]) / 1000 for a, b in zip(w, wo))
        print(f"  with / without: {ratio_span(w, wo)} req/s; p50 added {statistics.median(added):.2f} ms "
              f"({added[0]:.2f}–{added[-1]:.2f})")


def emulator_rules(emu: str, *rules: dict) -> None:
    import urllib.request

    for path, payload in (("reset", {}), ("rules", {"rules": list(rules)})):
        req = urllib.request.Request(f"{emu}/__control/{path}", json.dumps(payload).encode(),
                                     {"content-type": "application/json"})
        urllib.request.urlopen(req, timeout=10).read()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=5.0, help="per wrk run")
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--repeat", type=int, default=3, help="rounds of each side-by-side comparison")
    ap.add_argument("--streams", type=int, default=1000, help="open streams for the memory measurement")
    ap.add_argument("--skip-memory", action="store_true")
    ap.add_argument("--skip-redis", action="store_true")
    ap.add_argument("--skip-clients", action="store_true", help="skip the with/without a clients file comparison")
    args = ap.parse_args()
    raise_fd_limit()  # the memory run holds --streams client connections
    if shutil.which("wrk") is None:
        sys.exit("bench: wrk is not installed; run scripts/bench (it installs it) or apt-get install wrk")

    stack = Stack()
    # Ctrl-C or kill: stop what was started (the finally below), not leave it running.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        emu_port = free_port()
        stack.start([sys.executable, "-m", "tests.emulator", "--port", str(emu_port)], emu_port)
        emu = f"http://127.0.0.1:{emu_port}"
        emulator_rules(emu, {"reply": {"chunks": CHUNKS}})  # every answer: 20 chunks when streamed
        gw, gw_proc = stack.gateway(emu)
        bare, bare_proc = stack.bare(emu)
        lite = stack.litellm(emu)
        c, s, n = args.connections, args.seconds, args.repeat
        print(f"bench {time.strftime('%Y-%m-%d %H:%M')} · {os.cpu_count()} cores · {c} connections · {s:.0f} s per run"
              f" · {n} rounds (median, range)" + ("" if lite else " · litellm not on PATH"))
        for url, script, path in ((gw, "chat.lua", "/v1/chat/completions"), (bare, "gemini.lua", GEN)):
            wrk(url + path, script, 4, 1)  # warm-up
        if lite:
            wrk(lite[0] + "/v1/chat/completions", "chat.lua", 4, 2)

        results = {}
        for stream in (False, True):
            sides = {"bare mitmproxy pass-through": lambda st=stream: wrk(bare + (SGEN if st else GEN), "gemini.lua",
                                                                          c, s, pid=bare_proc.pid),
                     "gateway": lambda st=stream: wrk(gw + "/v1/chat/completions", "chat.lua", c, s, st,
                                                      pid=gw_proc.pid)}
            if lite:
                sides["LiteLLM (1 worker)"] = lambda st=stream: wrk(lite[0] + "/v1/chat/completions", "chat.lua",
                                                                    c, s, st, pid=lite[1].pid)
            # the same answer through the Anthropic Messages front end (it may cost no more than chat)
            sides["gateway, /v1/messages"] = lambda st=stream: wrk(gw + "/v1/messages", "messages.lua", c, s, st,
                                                                   pid=gw_proc.pid)
            results[stream] = compare(sides, n)
            table(f"{'streaming (20 chunks)' if stream else 'non-streaming'}, {c} connections", results[stream])
            target = 0.8 if stream else 1.0
            g, b = results[stream]["gateway"], results[stream]["bare mitmproxy pass-through"]
            print(f"  gateway / pass-through: {ratio_span(g, b)} req/s (target >= {target}x); "
                  f"CPU per request, pass-through / gateway: {ratio_span(b, g, 'cpu_ms')}")
            if lite:
                print(f"  gateway / LiteLLM: {ratio_span(results[stream]['gateway'], results[stream]['LiteLLM (1 worker)'])}")
            print(f"  /v1/messages / chat: {ratio_span(results[stream]['gateway, /v1/messages'], g)} req/s")

        one = compare({"upstream directly": lambda: wrk(emu + GEN, "gemini.lua", 1, s),
                       "bare mitmproxy pass-through": lambda: wrk(bare + GEN, "gemini.lua", 1, s, pid=bare_proc.pid),
                       "gateway": lambda: wrk(gw + "/v1/chat/completions", "chat.lua", 1, s, pid=gw_proc.pid)}, n)
        table("non-streaming, 1 connection", one)
        added = sorted((g["p50_us"] - b["p50_us"]) / 1000 for g, b in zip(one["gateway"],
                                                                            one["bare mitmproxy pass-through"]))
        print(f"  p50 added over pass-through: {statistics.median(added):.2f} ms ({added[0]:.2f}–{added[-1]:.2f})"
              " (target <= 0.2 ms)")

        gkey = {"x-goog-api-key": "bench-key"}
        probes = {"upstream directly": (emu + SGEN, GEMINI, gkey),
                  "bare mitmproxy pass-through": (bare + SGEN, GEMINI, gkey),
                  "gateway": (gw + "/v1/chat/completions", {**CHAT, "stream": True}, {})}
        rounds = [asyncio.run(ttfb(probes, 100)) for _ in range(n)]
        first = {name: [r[name] for r in rounds] for name in probes}
        print("\ntime to first byte of a stream, 1 connection each, requests interleaved (Python probe)")
        for name, runs in first.items():
            print(f"  {name:<30} {span(runs, 'ttfb_ms', fmt='{:.2f}')} ms")
        added = sorted(g["ttfb_ms"] - b["ttfb_ms"] for g, b in zip(first["gateway"], first["bare mitmproxy pass-through"]))
        print(f"  gateway over pass-through: {statistics.median(added):.2f} ms ({added[0]:.2f}–{added[-1]:.2f})")

        if not args.skip_memory:
            emulator_rules(emu, {"reply": {"chunks": CHUNKS[:10]}, "chunk_delay_ms": 1000})
            print(f"\n{args.streams} open streams (10 chunks, 1 s apart)")
            for name, url, body, headers, pid in (
                    ("gateway", gw + "/v1/chat/completions", {**CHAT, "stream": True}, {}, gw_proc.pid),
                    ("bare mitmproxy pass-through", bare + SGEN, GEMINI, gkey, bare_proc.pid)):
                m = asyncio.run(hold_streams(url, body, headers, args.streams, pid))
                print(f"  {name:<30} RSS idle {m['idle_mb']:.0f} MB, peak {m['peak_mb']:.0f} MB "
                      f"({(m['peak_mb'] - m['idle_mb']) * 1024 / args.streams:.0f} KB per stream); "
                      f"{m['completed']}/{args.streams} completed")
            per = asyncio.run(memory_per_stream(emu, min(args.streams, 300)))
            print(f"  per open stream, the gateway's own code: engine + upstream client {per['engine_kb']:.1f} KB, "
                  f"relay {per['relay_kb']:.1f} KB (tracemalloc)")
            emulator_rules(emu, {"reply": {"chunks": CHUNKS}})

        if not args.skip_redis and shutil.which("redis-server"):
            url = stack.redis()
            g1, _ = stack.gateway(emu, f"state={url}")
            g2, _ = stack.gateway(emu, f"state={url}")
            for g in (g1, g2):
                wrk(g + "/v1/chat/completions", "chat.lua", 4, 1)
            for stream in (False, True):
                scale = compare({
                    "1 process": lambda st=stream: wrk(g1 + "/v1/chat/completions", "chat.lua", c, s, st),
                    "2 processes": lambda st=stream: wrk_parallel([(g + "/v1/chat/completions", "chat.lua", c // 2, s,
                                                                    st) for g in (g1, g2)])}, n)
                table(f"{'streaming' if stream else 'non-streaming'}, gateway processes sharing one Redis, "
                      f"{c} connections in all", scale)
                print(f"  2 / 1 processes: {ratio_span(scale['2 processes'], scale['1 process'])}")
            if not args.skip_clients:
                clients_cost(stack, emu, url, c, s, n)
    finally:
        stack.close()


if __name__ == "__main__":
    main()
