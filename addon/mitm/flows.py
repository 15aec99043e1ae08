"""Small helpers on mitmproxy flows for the adapter (addon/gateway.py): answers set on a flow,
what mitmweb shows of it."""

from __future__ import annotations

import time

from mitmproxy import http
from mitmproxy.net.http import status_codes
from mitmproxy.proxy.mode_specs import ReverseMode

from ..ops.story import MARKS, Story
from ..protocol.errors import GatewayError


def duration(seconds: float) -> str:
    """3h05m, 4m10s, 12.0s: how long a cooldown still runs, for people."""
    if seconds >= 3600:
        return f"{int(seconds // 3600)}h{int(seconds % 3600 // 60):02d}m"
    if seconds >= 60:
        return f"{int(seconds // 60)}m{int(seconds % 60):02d}s"
    return f"{seconds:.1f}s"


def shutting_down() -> GatewayError:
    return GatewayError(503, "The gateway is shutting down; send the request again.", code="gateway_shutting_down")


def tell(flow: http.HTTPFlow, story: Story) -> None:
    flow.comment = story.comment()
    mark = story.mark()
    if mark or flow.marked in MARKS.values():  # leave a marker the user set alone
        flow.marked = mark


async def once(body: bytes):
    yield body


def whole_response(status: int, headers: dict[str, str], body: bytes) -> http.Response:
    """http.Response.make without its per-call work (header normalisation, content re-encoding
    checks): the engine's headers are already plain strings and the body is never encoded."""
    now = time.time()
    fields = [(k.encode(), v.encode("utf-8", "surrogateescape")) for k, v in headers.items()]
    fields.append((b"content-length", b"%d" % len(body)))
    return http.Response(b"HTTP/1.1", status, status_codes.RESPONSES.get(status, "").encode(), http.Headers(fields),
                         body, None, now, now)


def show_client_address(flow: http.HTTPFlow) -> None:
    """In reverse mode the request carries the placeholder target (127.0.0.1:9), which the gateway
    never contacts; show the address the client actually called (e.g. 127.0.0.1:8045, or
    https://api.openai.com when a hosts-file entry sends that name to a TLS listener) instead."""
    conn = flow.client_conn
    if isinstance(conn.proxy_mode, ReverseMode) and conn.sockname:
        req = flow.request
        scheme, host, port = "https" if conn.tls_established else "http", conn.sni or conn.sockname[0], conn.sockname[1]
        # mitmproxy's setters re-encode the URL parts (and the Host header) on every assignment
        if req.scheme != scheme:
            req.scheme = scheme
        if req.host != host:
            req.host = host
        if req.port != port:
            req.port = port
