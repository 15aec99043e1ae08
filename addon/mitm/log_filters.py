"""Filters on mitmproxy's own log lines: what reads like a fault, or drowns the gateway's line per
request, but is only the gateway's plumbing."""

from __future__ import annotations

import logging

from .relay import Relay


class RelayNoise(logging.Filter):
    """Drops mitmproxy's connection chatter about the loopback relay hop ("server connect
    127.0.0.1:<relay port>", "Streaming response from 127.0.0.1.", and "Streaming request to
    127.0.0.1." for a refused body drained through the relay): it reads like a second server,
    or a fault, and the gateway's own line per request says what happened."""

    def __init__(self, relay: Relay) -> None:
        super().__init__()
        self.relay = relay
        self.announcing: set[tuple] = set()  # clients whose relay stream mitmproxy is about to announce

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.msg if isinstance(record.msg, str) else ""
        if msg.startswith(("server connect ", "server disconnect ")):
            return not (self.relay.port and msg.endswith(f" 127.0.0.1:{self.relay.port}"))
        if msg.startswith(("Streaming response from ", "Streaming request to ")):
            client = getattr(record, "client", None)
            if client is not None and tuple(client) in self.announcing:
                self.announcing.discard(tuple(client))
                return False
        return True


class ConnectionChatter(logging.Filter):
    """mitmproxy's "client connect" / "client disconnect" lines go to debug level: two lines per
    connection (a health probe's included) beside the gateway's own line per request, and thousands
    when idle connections are closed. `--set termlog_verbosity=debug` shows them."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno == logging.INFO and record.msg in ("client connect", "client disconnect"):
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return True


def quiet_dumper(master) -> None:
    """mitmdump prints every flow; a health probe or metrics scrape that went well is left out, as
    the gateway logs it at debug level only. (The dumper has no per-flow switch: its `match` is
    wrapped, once.)"""
    dumper = master.addons.get("dumper")
    if dumper is None or getattr(dumper.match, "gateway_quiet", False):
        return
    shown = dumper.match

    def match(flow) -> bool:
        return not flow.metadata.get("gateway_quiet") and shown(flow)

    match.gateway_quiet = True
    dumper.match = match
