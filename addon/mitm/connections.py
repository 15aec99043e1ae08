"""Client connections that hold a file descriptor without asking anything.

mitmproxy closes a silent connection only after `tcp_timeout` (600 s), and accepts as many as the
open-files limit allows: ~20,000 idle sockets from one local process used to lock every other
client out (accept() failing with EMFILE). Two bounds, both per client connection:

* a connection that has not sent one complete request head within `header_timeout` seconds of
  connecting is closed (later requests on a kept-alive connection are not timed: a client that
  asked once is a client);
* each client address holds at most `per_address` connections: at the bound, its oldest
  connection with nothing in flight is closed to make room; if every one is busy, the new one is
  refused. The newest connection, the one about to ask, is the one kept.

`ConnectionGuard` is pure bookkeeping with a `close(client_id) -> bool` callback (testable without
mitmproxy); `ClientLimits` is the addon around it.
"""

from __future__ import annotations

import asyncio
import logging
import resource
import time
from collections import OrderedDict
from collections.abc import Callable

from mitmproxy import ctx, exceptions

log = logging.getLogger(__name__)


class _Conn:
    __slots__ = ("address", "opened", "asked", "active")

    def __init__(self, address: str, opened: float) -> None:
        self.address, self.opened = address, opened
        self.asked = False  # a complete request head (or a tunnel) arrived
        self.active = 0  # flows in progress (HTTP/2 carries several)


class ConnectionGuard:
    def __init__(self, close: Callable[[str], bool], *, header_timeout: float = 30.0, per_address: int = 4096,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.close = close
        self.header_timeout = header_timeout
        self.per_address = per_address
        self._clock = clock
        self._conns: dict[str, _Conn] = {}
        self._by_address: dict[str, OrderedDict[str, None]] = {}  # oldest first
        self._silent: OrderedDict[str, None] = OrderedDict()  # not asked yet, oldest first
        self._last_report = 0.0

    def __len__(self) -> int:
        return len(self._conns)

    def connected(self, client_id: str, address: str) -> str | None:
        """A new connection; returns why it is refused, or None. May close an idle one to make room."""
        same = self._by_address.setdefault(address, OrderedDict())
        while len(same) >= self.per_address:
            idle = next((cid for cid in same if self._conns[cid].active == 0), None)
            if idle is None:
                self._report(f"refused a connection from {address}: it holds {len(same)} busy connections "
                             f"(max_client_connections={self.per_address})")
                return "too many connections from this address"
            closed = self.close(idle)
            self._forget(idle)  # closed now, or closing already (its disconnect is on its way)
            if closed:
                self._report(f"closed the oldest idle connection from {address} to make room "
                             f"(max_client_connections={self.per_address})")
            same = self._by_address.setdefault(address, OrderedDict())
        self._conns[client_id] = _Conn(address, self._clock())
        same[client_id] = None
        self._silent[client_id] = None
        return None

    def started(self, client_id: str) -> None:
        """A request head (or tunnel) arrived on the connection."""
        conn = self._conns.get(client_id)
        if conn is not None:
            conn.active += 1
            if not conn.asked:
                conn.asked = True
                self._silent.pop(client_id, None)

    def ended(self, client_id: str) -> None:
        conn = self._conns.get(client_id)
        if conn is not None and conn.active > 0:
            conn.active -= 1

    def disconnected(self, client_id: str) -> None:
        self._forget(client_id)

    def sweep(self) -> int:
        """Close connections that stayed silent past the header timeout; returns how many."""
        deadline = self._clock() - self.header_timeout
        expired = []
        for cid in self._silent:  # oldest first: stop at the first one still in time
            if self._conns[cid].opened > deadline:
                break
            expired.append(cid)
        closed = 0
        for cid in expired:
            self._silent.pop(cid, None)  # asked nothing: closed, or gone already
            if self.close(cid):
                closed += 1
        if closed:
            log.info("closed %d connection(s) that sent no complete request within %gs (client_header_timeout)",
                     closed, self.header_timeout)
        return closed

    def _forget(self, client_id: str) -> None:
        conn = self._conns.pop(client_id, None)
        self._silent.pop(client_id, None)
        if conn is not None:
            same = self._by_address.get(conn.address)
            if same is not None:
                same.pop(client_id, None)
                if not same:
                    del self._by_address[conn.address]

    def _report(self, text: str) -> None:
        now = self._clock()
        if now - self._last_report >= 10.0:  # a flood must not flood the log as well
            self._last_report = now
            log.warning("%s", text)


class ClientLimits:
    """The guard as a mitmproxy addon (a sub-addon of the gateway's): its options, the hooks that
    tell it what each connection does, and a sweep once a second."""

    def __init__(self) -> None:
        self.guard = ConnectionGuard(close_client)
        self._sweeper: asyncio.Task | None = None

    def load(self, loader) -> None:
        loader.add_option("client_header_timeout", int, 30, "Seconds a new client connection may take to send its "
                          "first complete request head; silent or slow ones are closed then.")
        loader.add_option("max_client_connections", int, 0, "Connections one client address may hold; at the bound "
                          "its oldest idle one is closed for a new one. 0 = a quarter of the open-files limit.")

    def configure(self, updated: set[str]) -> None:
        opts = ctx.options
        if opts.client_header_timeout < 1 or opts.max_client_connections < 0:
            raise exceptions.OptionsError("client_header_timeout must be at least 1 and max_client_connections >= 0")
        self.guard.header_timeout = float(opts.client_header_timeout)
        self.guard.per_address = opts.max_client_connections or max(64, open_files_limit() // 4)

    def running(self) -> None:
        if self._sweeper is None:
            self._sweeper = asyncio.ensure_future(self._sweep())

    def done(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(min(1.0, self.guard.header_timeout / 4))
            self.guard.sweep()

    def client_connected(self, client) -> None:
        if client.error:
            return  # refused already (LAN access)
        refused = self.guard.connected(client.id, client.peername[0] if client.peername else "")
        if refused:
            client.error = refused

    def client_disconnected(self, client) -> None:
        self.guard.disconnected(client.id)

    # Busy from a request head (or a tunnel) to the end of its flow: the guard never closes a busy
    # connection to make room, and times out only connections that never asked anything.
    def requestheaders(self, flow) -> None:
        if "guard_started" not in flow.metadata and flow.live:
            flow.metadata["guard_started"] = True
            self.guard.started(flow.client_conn.id)

    def response(self, flow) -> None:
        if flow.metadata.pop("guard_started", None):
            self.guard.ended(flow.client_conn.id)

    error = response

    def http_connect(self, flow) -> None:
        self.guard.started(flow.client_conn.id)
        self.guard.ended(flow.client_conn.id)  # a tunnel asked; what goes through it is counted itself

    def tcp_start(self, flow) -> None:
        self.guard.started(flow.client_conn.id)

    def tcp_end(self, flow) -> None:
        self.guard.ended(flow.client_conn.id)

    tcp_error = tcp_end
    websocket_start = tcp_start
    websocket_end = tcp_end


def close_client(client_id: str) -> bool:
    """Close a client connection mitmproxy holds; False if it is gone already. (mitmproxy has no
    API for it: its proxyserver addon keeps each connection's handler, whose task is cancelled, as
    its own inactivity timeout does.)"""
    server = ctx.master.addons.get("proxyserver")
    handler = getattr(server, "connections", {}).get(client_id)
    io = handler.transports.get(handler.client) if handler is not None else None
    if io is None or io.handler is None or io.handler.done():
        return False
    io.handler.cancel("closed by the gateway")
    return True


def open_files_limit() -> int:
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return 1 << 20 if soft == resource.RLIM_INFINITY else soft


def raise_open_files_limit() -> None:
    """Each open stream holds about four sockets in this process (client, relay both ends,
    upstream): a soft limit of 1024, common by default, would cap it near 250 streams. Raise
    the soft limit to the hard one, as servers do; no privilege is needed for that."""
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if hard == resource.RLIM_INFINITY:
            hard = 1 << 20
        if soft != resource.RLIM_INFINITY and soft < hard:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ValueError, OSError) as exc:
        log.warning("could not raise the open files limit (%s); concurrent streams are capped by ulimit -n", exc)
