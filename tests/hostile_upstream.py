"""A deliberately broken upstream for the hardening tests (the emulator plays a well-behaved Google).

An aiohttp server on a thread of the test process. An account's `base_url` picks the misbehaviour
with its first path segment (`http://127.0.0.1:PORT/<mode>`); credential probes (`GET .../models`)
always succeed, so only the misbehaviour under test is seen:
  hugeline   a stream whose single SSE line never ends (256 MB); a non-streamed body of 100 MB
  redirect   302 to /leak (a followed redirect would carry the account's key there)
  malformed  200 with a body of the wrong shape (candidates: "nope")
  hang       no response headers for 30 s
  echokey    400 whose message echoes the key URL-encoded
  waitinf    429 with Retry-After: inf and RetryInfo of 31 years
  cutkey     400 with a plain-text (not JSON) body in which the key straddles characters 500 and
             2000 (where the gateway cut such text, and cuts it now), then 3000 more characters
  echoauth   400 (OpenAI's error shape) whose message echoes the Authorization (and api-key) header it got
`hits` counts requests per mode (and `leak`).
"""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from urllib.parse import quote

from aiohttp import web


class HostileUpstream:
    def __init__(self) -> None:
        self.hits: Counter[str] = Counter()
        self.url = ""
        self._loop = asyncio.new_event_loop()
        self._runner: web.AppRunner | None = None

    def start(self) -> HostileUpstream:
        ready = threading.Event()
        threading.Thread(target=self._run, args=(ready,), daemon=True).start()
        ready.wait(10)
        return self

    def _run(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self._loop)
        app = web.Application()
        app.router.add_route("*", "/{mode}/{rest:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        self._loop.run_until_complete(self._runner.setup())
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        self._loop.run_until_complete(site.start())
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"
        ready.set()
        self._loop.run_forever()

    def stop(self) -> None:
        # no graceful cleanup: a `hang` handler may still be sleeping; the thread is a daemon
        self._loop.call_soon_threadsafe(self._loop.stop)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        mode, rest = request.match_info["mode"], request.match_info["rest"]
        self.hits[mode] += 1
        if request.method == "GET" and rest.endswith("models"):
            return web.json_response({"models": []})
        await request.read()
        stream = "streamGenerateContent" in rest
        if mode == "hugeline":
            if not stream:
                resp = web.StreamResponse(headers={"content-type": "application/json"})
                await resp.prepare(request)
                for _ in range(100):
                    await resp.write(b" " * (1 << 20))
                return resp
            resp = web.StreamResponse(headers={"content-type": "text/event-stream"})
            await resp.prepare(request)
            await resp.write(b"data: ")
            try:
                for _ in range(256):
                    await resp.write(b"x" * (1 << 20))
            except ConnectionError:
                pass
            return resp
        if mode == "redirect":
            raise web.HTTPFound(f"/leak/{rest}")
        if mode == "malformed":
            return web.json_response({"candidates": "nope", "usageMetadata": {"promptTokenCount": "many"}})
        if mode == "hang":
            await asyncio.sleep(30)
            return web.json_response({})
        if mode == "echokey":
            key = request.headers.get("x-goog-api-key", "")
            return web.json_response({"error": {"code": 400, "status": "INVALID_ARGUMENT",
                                                "message": f"bad request for key={quote(key, safe='')}"}}, status=400)
        if mode == "cutkey":
            key = request.headers.get("x-goog-api-key", "")
            text = "x" * (500 - len(key) // 2 - 5) + " key=" + key + " "
            text += "y" * (2000 - len(key) // 2 - 5 - len(text)) + " key=" + key + " " + "z" * 3000
            return web.Response(status=400, text=text, content_type="text/plain")
        if mode == "echoauth":
            auth = request.headers.get("authorization", "(none)")
            if "api-key" in request.headers:
                auth += f" and api-key {request.headers['api-key']}"
            return web.json_response({"error": {"message": f"refused credentials {auth}", "type": "invalid_request",
                                                "code": None}}, status=400)
        if mode == "waitinf":
            return web.json_response({"error": {"code": 429, "status": "RESOURCE_EXHAUSTED", "message": "quota",
                                                "details": [{"@type": "type.googleapis.com/google.rpc.RetryInfo",
                                                             "retryDelay": "978307200s"}]}},
                                     status=429, headers={"retry-after": "inf"})
        return web.json_response({"error": {"code": 404, "message": f"no mode {mode}"}}, status=404)
