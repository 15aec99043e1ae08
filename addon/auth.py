"""Client authentication, as Antigravity Tools does it, plus the loopback-only and browser rules."""

from __future__ import annotations

import functools
import hmac
import ipaddress
from collections.abc import Collection, Mapping
from urllib.parse import parse_qsl, urlsplit

from .protocol.errors import GatewayError

AUTH_MODES = ("off", "strict", "all_except_health", "auto")


def effective_mode(mode: str, allow_lan_access: bool, has_key: bool = False) -> str:
    """`auto` protects everything but /healthz when the gateway is reachable from the LAN or a key
    is configured (a configured key that is silently not checked would be a trap)."""
    if mode == "auto":
        return "all_except_health" if allow_lan_access or has_key else "off"
    return mode


def presented_key(headers: Mapping[str, str]) -> str | None:
    """`Authorization: Bearer` first, then `x-api-key`, then `x-goog-api-key`."""
    auth = headers.get("authorization")
    if auth:
        scheme, _, value = auth.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    return headers.get("x-api-key") or headers.get("x-goog-api-key") or None


def exempt(mode: str, is_health: bool) -> bool:
    """Whether this request needs no key at all (`mode` is already effective)."""
    return mode == "off" or (mode == "all_except_health" and is_health)


def query_key(query: str) -> str | None:
    """The `key` parameter of a query string (Google's API takes its key there too)."""
    if "key=" not in query:
        return None
    for name, value in parse_qsl(query, keep_blank_values=True):
        if name == "key" and value:
            return value
    return None


def check(mode: str, api_key: str, is_health: bool, headers: Mapping[str, str], url_key: str | None = None) -> None:
    """Raises a 401 GatewayError unless the request may pass. `mode` is already effective;
    `url_key` is a key from the query string, where the surface accepts one (`?key=`)."""
    if exempt(mode, is_health):
        return
    key = presented_key(headers) or url_key
    if key is None:
        raise GatewayError(401, "Missing API key. Send it as 'Authorization: Bearer <key>', 'x-api-key' "
                                "or 'x-goog-api-key'.", code="missing_api_key")
    # compare_digest on bytes: constant time whatever the key's content (surrogateescape: header
    # bytes that are not UTF-8 arrive as lone surrogates and must be a 401, not a crash)
    if not hmac.compare_digest(key.encode("utf-8", "surrogateescape"), api_key.encode()):
        raise GatewayError(401, "Incorrect API key provided.", code="invalid_api_key")


@functools.lru_cache(maxsize=4096)  # asked on every request; a client's address rarely changes
def is_loopback(host: str | None) -> bool:
    if not host:
        return False
    try:
        addr = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    if addr.version == 6 and addr.ipv4_mapped is not None:  # ::ffff:127.0.0.1 on dual-stack sockets
        addr = addr.ipv4_mapped
    return addr.is_loopback


def _host_name(host: str) -> str:
    """'Example.COM:8045' -> 'example.com'; '[::1]:8045' -> '::1'."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1:].split("]", 1)[0]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def check_browser_headers(host: str | None, origin: str | None, allowed: Collection[str]) -> None:
    """Refuse what only a web page would send: a Host name that is not this gateway's (DNS
    rebinding: an attacker's name resolving to 127.0.0.1) and any Origin not explicitly allowed.
    IP literals and localhost are always fine as Host: a page cannot choose them for another site."""
    if "*" in allowed:
        return
    if host is not None:
        name = _host_name(host)
        if not (_is_ip(name) or name == "localhost" or name.endswith(".localhost") or name in allowed):
            raise GatewayError(403, f"Host '{name[:100]}' is not a name of this gateway (protection against DNS "
                                    "rebinding); add it with --set allowed_hosts=NAME.", code="host_not_allowed")
    if origin is not None:
        name = urlsplit(origin.strip()).hostname or origin.strip().lower()
        if name not in allowed:
            raise GatewayError(403, "Requests from web pages are refused (Origin header present); add the page's "
                                    "host with --set allowed_hosts=NAME to allow it.", code="origin_not_allowed")
