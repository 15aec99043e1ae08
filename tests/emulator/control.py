"""The control API under ``/__control/``: fault rules, reset, request log, stats, config, token expiry."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from .state import STATE
from .wire import read_body

# The fields a rule may have; what each one does is in the package docstring.
RULE_KEYS = frozenset(
    {"match", "times", "status", "message", "details", "retry_delay", "retry_after", "reply",
     "delay_ms", "chunk_delay_ms", "cut_after", "drop"}
)
MATCH_KEYS = frozenset({"key", "path_contains", "model"})
REPLY_KEYS = frozenset({"text", "chunks", "function_calls", "finish_reason", "thought", "grounding"})
CONFIG_KEYS = frozenset({"token_ttl", "refresh_delay_ms", "signature_scope"})


def _check_rule(rule: Any) -> str | None:
    """Reject typos early: a silently ignored rule makes for a confusing test."""
    if not isinstance(rule, dict):
        return "rule must be an object"
    unknown = set(rule) - RULE_KEYS
    if unknown:
        return f"unknown rule keys: {sorted(unknown)}"
    if set(rule.get("match") or {}) - MATCH_KEYS:
        return f"unknown match keys: {sorted(set(rule['match']) - MATCH_KEYS)}"
    if "status" in rule and "reply" in rule:
        return "a rule has at most one action (status or reply)"
    details = rule.get("details", [])
    if not isinstance(details, list) or not all(isinstance(d, dict) and "@type" in d for d in details):
        return "details must be a list of Google error details, each with an @type"
    if "reply" in rule and (not isinstance(rule["reply"], dict) or set(rule["reply"]) - REPLY_KEYS):
        return f"reply must be an object with keys from {sorted(REPLY_KEYS)}"
    for key in ("times", "status", "cut_after"):
        if key in rule and (not isinstance(rule[key], int) or isinstance(rule[key], bool) or rule[key] < 0):
            return f"{key} must be a non-negative integer"
    for key in ("delay_ms", "chunk_delay_ms"):
        if key in rule and (not isinstance(rule[key], (int, float)) or rule[key] < 0):
            return f"{key} must be a non-negative number"
    return None


async def control_rules(request: web.Request) -> web.Response:
    state = request.app[STATE]
    if request.method == "GET":
        return web.json_response({"rules": state.rules})
    body, parsed = await read_body(request)
    rules = body.get("rules") if isinstance(body, dict) else None
    if not parsed or not isinstance(rules, list):
        return web.json_response({"error": 'expected {"rules": [...]}'}, status=400)
    for rule in rules:
        problem = _check_rule(rule)
        if problem:
            return web.json_response({"error": problem, "rule": rule}, status=400)
    # Copy: consuming `times` must not mutate the caller's objects (in-process tests).
    state.rules.extend(json.loads(json.dumps(r)) for r in rules if r.get("times") is None or r["times"] > 0)
    return web.json_response({"rules": len(state.rules)})


async def control_reset(request: web.Request) -> web.Response:
    request.app[STATE].reset()
    return web.json_response({"ok": True})


async def control_log(request: web.Request) -> web.Response:
    return web.json_response({"requests": list(request.app[STATE].log)})


async def control_stats(request: web.Request) -> web.Response:
    state = request.app[STATE]
    return web.json_response({"refreshes": dict(state.refreshes), "requests": state.requests,
                              "aborted_streams": state.aborted_streams,
                              "rules": len(state.rules), "tokens_issued": len(state.access_tokens)})


async def control_config(request: web.Request) -> web.Response:
    state = request.app[STATE]
    body, _ = await read_body(request)
    if not isinstance(body, dict) or set(body) - CONFIG_KEYS:
        return web.json_response({"error": f"config keys: {sorted(CONFIG_KEYS)}"}, status=400)
    if body.get("signature_scope", "turn") not in ("turn", "all"):
        return web.json_response({"error": 'signature_scope must be "turn" or "all"'}, status=400)
    if not all(isinstance(body.get(k, 0), (int, float)) and body.get(k, 0) >= 0
               for k in ("token_ttl", "refresh_delay_ms")):
        return web.json_response({"error": "token_ttl and refresh_delay_ms must be non-negative numbers"},
                                 status=400)
    for key, value in body.items():
        setattr(state, key, value)
    return web.json_response({k: getattr(state, k) for k in sorted(CONFIG_KEYS)})


async def control_service_accounts(request: web.Request) -> web.Response:
    """Register a service account's public key: {"client_email", "public_key" (PEM), "key_id"}; the
    token endpoint then verifies that account's JWT assertions with it."""
    body, _ = await read_body(request)
    if (not isinstance(body, dict) or set(body) - {"client_email", "public_key", "key_id"}
            or not isinstance(body.get("client_email"), str) or not isinstance(body.get("public_key"), str)):
        return web.json_response({"error": 'expected {"client_email", "public_key", "key_id"}'}, status=400)
    request.app[STATE].service_accounts[body["client_email"]] = {"public_key": body["public_key"],
                                                                 "key_id": body.get("key_id") or ""}
    return web.json_response({"service_accounts": len(request.app[STATE].service_accounts)})


async def control_expire(request: web.Request) -> web.Response:
    """Expire every issued access token now (cheaper than sleeping through a short TTL)."""
    state = request.app[STATE]
    for token in state.access_tokens:
        state.access_tokens[token] = 0.0
    return web.json_response({"expired": len(state.access_tokens)})
