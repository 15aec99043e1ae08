"""Client authentication, as Antigravity Tools does it, plus the loopback-only rule."""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Mapping

from .protocol.errors import GatewayError

AUTH_MODES = ("off", "strict", "all_except_health", "auto")


def effective_mode(mode: str, allow_lan_access: bool) -> str:
    """`auto` protects everything but /healthz when the gateway is reachable from the LAN."""
    if mode == "auto":
        return "all_except_health" if allow_lan_access else "off"
    return mode


def presented_key(headers: Mapping[str, str]) -> str | None:
    """`Authorization: Bearer` first, then `x-api-key`, then `x-goog-api-key`."""
    auth = headers.get("authorization")
    if auth:
        scheme, _, value = auth.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    return headers.get("x-api-key") or headers.get("x-goog-api-key") or None


def check(mode: str, api_key: str, is_health: bool, headers: Mapping[str, str]) -> None:
    """Raises a 401 GatewayError unless the request may pass. `mode` is already effective."""
    if mode == "off" or (mode == "all_except_health" and is_health):
        return
    key = presented_key(headers)
    if key is None:
        raise GatewayError(401, "Missing API key. Send it as 'Authorization: Bearer <key>', 'x-api-key' "
                                "or 'x-goog-api-key'.", code="missing_api_key")
    # compare_digest on bytes: constant time whatever the key's content
    if not hmac.compare_digest(key.encode(), api_key.encode()):
        raise GatewayError(401, "Incorrect API key provided.", code="invalid_api_key")


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
