"""Hardening, without sockets: each class of attack from the hardening issue as a property over a
family of inputs (hypothesis) or a unit check of the bound that defeats it. The same classes go
through a real mitmdump in tests/test_hardening_e2e.py."""

from __future__ import annotations

import asyncio
import json
import math
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from addon.pool.pool import MAX_COOLDOWN, MAX_USAGE_MODELS, OTHER_MODELS, AccountPool, AccountState
from addon.pool.accounts_file import parse_accounts
from addon.backends import MAX_UPSTREAM_DELAY, gemini, parse_duration, retry_after_header, well_formed
from addon.backends.schema import tool_parameters
from addon.protocol.limits import MAX_CLIENT_SCHEMA_NODES, check_schemas
from addon.engine import Engine, Fixed, Incoming, Settings
from addon.frontends import build_frontends
from addon.config.mapping import parse_mappings
from addon.pool.policy import RetryPolicy
from addon.protocol import canonical as c
from addon.protocol import limits
from addon.protocol.errors import GatewayError, UpstreamError
from addon.ops.redact import Redactor
from addon.stores.response_store import MemoryResponseStore
from addon.stores.shared.local import FileAccountRecords
from addon.pool.state import StateStore
from addon.upstream.sse import SSEParser
from tests.hostile_inputs import hostile_bodies, recursive_schemas
from tests.test_fuzz_unit import _TranslatingProvider

JSON = {"content-type": "application/json"}
FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


class _StrictWire(_TranslatingProvider):
    """Translates like the fuzz suite's stand-in and also encodes the upstream body as the
    providers do, but strictly: no NaN/Infinity, nothing that is not UTF-8 goes upstream."""

    async def complete(self, acc: Any, req: c.ChatRequest, model: str) -> c.Completion:
        json.dumps(gemini.build_request(req, model), allow_nan=False, ensure_ascii=False).encode()
        return await super().complete(acc, req, model)


def make_engine(**kw: Any) -> Engine:
    accounts = parse_accounts({"accounts": [{"provider": "gemini", "email": "a", "api_key": "k" * 12}]})
    return Engine(settings=Settings(**kw), mappings=Fixed(parse_mappings({"default": "gemini-2.5-flash"})),
                  accounts=Fixed(accounts), pool=AccountPool(), providers={"gemini": _StrictWire()},
                  frontends=build_frontends(MemoryResponseStore()))


# ---- 1. unbounded work -----------------------------------------------------------------------

def _count(node: Any) -> int:
    if isinstance(node, dict):
        return 1 + sum(_count(v) for v in node.values())
    if isinstance(node, list):
        return sum(_count(v) for v in node)
    return 0


@FAST
@given(recursive_schemas())
def test_schema_conversion_work_is_bounded(schema: dict[str, Any]) -> None:
    """$refs that refer to each other used to be expanded exponentially; whatever the family
    member, the converter's output (its work) stays bounded and nothing but a 400 is raised."""
    try:
        out = tool_parameters(schema, "f")
    except GatewayError as err:
        assert err.status == 400
        return
    assert out is None or _count(out) <= 25_000


def test_the_360_byte_schema_bomb_is_converted_in_bounded_work() -> None:
    bomb = {"type": "object", "properties": {"a": {"$ref": "#/$defs/A"}}, "$defs": {"A": {
        "type": "object", "properties": {k: {"$ref": "#/$defs/A"} for k in "xyzw"}}}}
    assert len(json.dumps(bomb)) < 360
    assert _count(tool_parameters(bomb, "f")) < 25_000


def test_schemas_too_large_to_walk_are_a_clear_400() -> None:
    wide = {"type": "object", "properties": {f"p{i}": {"type": "object"} for i in range(MAX_CLIENT_SCHEMA_NODES)}}
    with pytest.raises(GatewayError) as info:
        check_schemas([wide])
    assert info.value.status == 400 and info.value.code == "schema_too_complex"
    check_schemas([{"type": "object", "properties": {"a": {"type": "string"}}}], {"type": "object"})


@FAST
@given(st.integers(min_value=limits.MAX_JSON_DEPTH + 1, max_value=20_000), st.sampled_from(["[", '{"a":']))
def test_deep_json_is_a_400(depth: int, opener: str) -> None:
    closer = "]" if opener == "[" else "}"
    with pytest.raises(GatewayError) as info:
        limits.parse_json((opener * depth + "1" + closer * depth).encode())
    assert info.value.status == 400


def test_huge_integers_and_too_many_containers_are_400s() -> None:
    for raw in (b'{"seed": ' + b"9" * 1_000_000 + b"}", b"[" + b"[]," * (limits.MAX_JSON_CONTAINERS + 1) + b"[]]"):
        with pytest.raises(GatewayError) as info:
            limits.parse_json(raw)
        assert info.value.status == 400
    with pytest.raises(GatewayError) as info:
        limits.check_counts({"messages": [{}] * (limits.MAX_ITEMS + 1)})
    assert info.value.status == 400 and info.value.param == "messages"


@FAST
@given(st.lists(st.integers(1, 5000), min_size=1, max_size=40), st.sampled_from([b"\n", b"\r\n"]))
def test_sse_parsing_is_split_independent_and_bounded(cuts: list[int], eol: bytes) -> None:
    events = b"".join(b"data: " + (b"%d" % i) * (i * 37 % 900) + eol + eol for i in range(30))
    whole = SSEParser().feed(events)
    parser, got, pos = SSEParser(), [], 0
    for cut in cuts:
        got += parser.feed(events[pos:pos + cut])
        pos += cut
    got += parser.feed(events[pos:]) + parser.flush()
    assert [e.data for e in got] == [e.data for e in whole]

    small = SSEParser(max_event=4096)
    with pytest.raises(UpstreamError) as info:
        for cut in cuts * 10:
            small.feed(b"x" * cut)  # one endless line, in pieces
        small.feed(b"x" * 4097)
    assert info.value.status == 502


def test_an_endless_sse_line_costs_linear_time() -> None:
    """200 MB in 64 KB pieces used to be re-concatenated at every piece (quadratic)."""
    parser = SSEParser()
    piece = b"x" * 65536
    with pytest.raises(UpstreamError):
        for _ in range(3200):
            parser.feed(piece)
    assert parser._pending <= parser._max + len(piece)  # noqa: SLF001 - the bound itself


# ---- 2. client text reaching URLs and headers ---------------------------------------------------

@FAST
@given(st.text(min_size=1, max_size=200))
def test_model_names_are_valid_path_segments_or_a_400(name: str) -> None:
    try:
        limits.check_model_name(name)
    except GatewayError as err:
        assert err.status == 400 and err.param == "model"
        return
    segment = quote(name, safe="")
    assert "/" not in segment and "?" not in segment and "#" not in segment and ".." not in name
    assert name.isascii() and name.isprintable() and len(name) <= limits.MAX_MODEL_NAME


@FAST
@given(st.text())
def test_header_values_never_break_the_header_block(text: str) -> None:
    value = limits.header_value(text)
    assert value.isascii() and value.isprintable() and "\r" not in value and "\n" not in value
    value.encode("latin-1")


class _Refusing:
    """An upstream that refuses the client's request with a credential-looking error."""

    def __init__(self, probe_error: UpstreamError | None) -> None:
        self.probe_error = probe_error
        self.probes = 0

    async def attempt(self, acc: Any) -> Any:
        raise UpstreamError(403, "The caller does not have permission")

    async def probe(self, acc: Any) -> UpstreamError | None:
        self.probes += 1
        return self.probe_error


async def test_a_credential_error_whose_probe_passes_never_disables_the_account() -> None:
    pool = AccountPool()
    pool.update(parse_accounts({"accounts": [{"provider": "gemini", "email": e, "api_key": "k" * 12}
                                             for e in ("a", "b")]}))
    upstream = _Refusing(probe_error=None)
    policy = RetryPolicy(pool, probe=upstream.probe)
    for _ in range(5):
        with pytest.raises(GatewayError) as info:
            await policy.run("gemini-2.5-flash", upstream.attempt)
        assert info.value.status == 400 and info.value.code == "upstream_refused_request"
    assert all(pool.state(a).disabled_reason is None for a in pool.accounts)
    assert upstream.probes == 2  # one per account, then trusted for a while

    refused = _Refusing(probe_error=UpstreamError(400, "API key not valid", reason="API_KEY_INVALID"))
    policy = RetryPolicy(pool, probe=refused.probe)
    with pytest.raises(GatewayError):
        await policy.run("gemini-2.5-flash", refused.attempt)
    assert all(pool.state(a).disabled_reason for a in pool.accounts)  # confirmed: disabled

    pool2 = AccountPool()
    pool2.update(parse_accounts({"accounts": [{"provider": "gemini", "email": "a", "api_key": "k" * 12}]}))
    unknown = _Refusing(probe_error=UpstreamError(0, "connection failed"))
    with pytest.raises(GatewayError):
        await RetryPolicy(pool2, probe=unknown.probe).run("gemini-2.5-flash", unknown.attempt)
    assert pool2.state(pool2.accounts[0]).disabled_reason is None  # cannot tell: cooled, not disabled


# ---- 5. untrusted upstream values ------------------------------------------------------------------

@FAST
@given(st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-10**30, 10**30).map(float)))
def test_upstream_waits_are_finite_and_capped(seconds: float) -> None:
    for value in (retry_after_header({"retry-after": repr(seconds)}), retry_after_header({"retry-after-ms": str(seconds)}),
                  parse_duration(f"{abs(seconds):f}s") if math.isfinite(seconds) else None):
        assert value is None or (math.isfinite(value) and 0 <= value <= MAX_UPSTREAM_DELAY)


def test_cooldowns_never_persist_infinity(tmp_path) -> None:
    store = StateStore(tmp_path / "state.json")
    pool = AccountPool(FileAccountRecords(store))
    pool.update(parse_accounts({"accounts": [{"provider": "gemini", "email": "a", "api_key": "k" * 12}]}))
    acc = pool.accounts[0]
    assert pool.cool_down(acc, 429, math.inf) <= MAX_BACKOFF_OR_CAP
    assert pool.cool_down(acc, 429, 31 * 365 * 86400.0) == MAX_COOLDOWN
    for _ in range(2000):  # consecutive failures: 2 ** n must not overflow
        pool.cool_down(acc, 503, None)
    store.flush()
    text = (tmp_path / "state.json").read_text()
    assert "Infinity" not in text and "NaN" not in text
    assert AccountState.from_json({"cooldown_until": math.inf}).cooldown_until == 0.0


MAX_BACKOFF_OR_CAP = 300.0


def test_malformed_upstream_completions_are_502s() -> None:
    bad = [c.Completion([c.Choice(index="0")]), c.Completion([c.Choice(text=5)]),  # type: ignore[arg-type]
           c.Completion([c.Choice()], c.Usage(input_tokens=-1)), c.Completion([c.Choice(index=10**9)])]
    for comp in bad:
        with pytest.raises(UpstreamError) as info:
            well_formed(comp)
        assert info.value.status == 502


def test_encoded_forms_of_secrets_are_redacted() -> None:
    secret = "AIza+Sy/secret=key"
    red = Redactor([secret])
    for form in (secret, quote(secret, safe=""), quote(secret).replace("/", "%2F"), json.dumps(secret)[1:-1]):
        assert "[redacted]" in red(f"key={form} was refused") and form not in red(f"key={form}")


def test_a_secret_cut_by_an_earlier_truncation_leaves_no_fragment() -> None:
    from addon.protocol.errors import ERROR_TEXT_CHARS, clip

    secret = "AIzaSECRETGEMINI-0123456789"
    red = Redactor([secret], lambda: ["ya29.live-access-token-42"])
    for token in (secret, quote(secret, safe=""), "ya29.live-access-token-42"):
        for at in range(1, len(token)):
            text = "x" * (ERROR_TEXT_CHARS - at) + token + " tail"
            shown = red(f"Upstream error (400): {clip(text)} (more)")
            assert not [token[i:i + 4] for i in range(len(token) - 3) if token[i:i + 4] in shown[-60:]], shown[-60:]
    assert red(clip("y" * 3000)).endswith("y\u2026")  # no secret there: nothing masked


# ---- 7. unbounded state ------------------------------------------------------------------------

def test_usage_counters_per_account_are_bounded() -> None:
    pool = AccountPool()
    pool.update(parse_accounts({"accounts": [{"provider": "gemini", "email": "a", "api_key": "k" * 12}]}))
    acc = pool.accounts[0]
    for i in range(1000):
        pool.succeeded(acc, f"gemini-client-chosen-{i}")
    usage = pool.state(acc).usage
    assert len(usage) == MAX_USAGE_MODELS + 1 and usage[OTHER_MODELS]["requests"] == 1000 - MAX_USAGE_MODELS


async def test_the_response_store_keeps_a_byte_budget() -> None:
    store = MemoryResponseStore(max_bytes=20_000_000)
    for i in range(60):  # 60 x 5 MB inputs
        await store.put({"id": f"resp_{i}"}, [c.Message("user", [c.TextPart("x" * 5_000_000)])])
    assert store.bytes <= 20_000_000 and len(store) == 3
    assert await store.get("resp_59") is not None and await store.get("resp_0") is None
    await store.put({"id": "huge"}, [c.Message("user", [c.TextPart("x" * 30_000_000)])])
    assert await store.get("huge") is None and store.bytes <= 20_000_000


# ---- 8. wrong signals: every bad input is a 4xx ---------------------------------------------------

@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(hostile_bodies(), st.sampled_from(["/v1/chat/completions", "/v1/responses", "/v1/completions"]))
def test_bad_input_is_a_4xx_never_a_5xx(body: bytes, path: str) -> None:
    engine = make_engine()

    async def go():
        out = await engine.handle(Incoming("POST", path, JSON, body, "127.0.0.1"))
        return out

    out = asyncio.run(go())
    assert out.status in (200, 400), (out.status, body[:200], out.body[:300])
    if out.status == 400:
        assert set(json.loads(out.body)["error"]) == {"message", "type", "param", "code"}


@FAST
@given(st.binary(min_size=1, max_size=40))
def test_undecodable_key_headers_are_401s(raw: bytes) -> None:
    engine = make_engine(auth_mode="strict", api_key="the-right-key")
    headers = {"authorization": "Bearer " + raw.decode("utf-8", "surrogateescape")}
    out = asyncio.run(engine.handle(Incoming("GET", "/v1/models", headers, b"", "127.0.0.1")))
    assert out.status == 401


def test_the_connection_guard_times_out_silent_clients_and_makes_room_per_address() -> None:
    from addon.mitm.connections import ConnectionGuard

    now = [0.0]
    closed: list[str] = []
    guard = ConnectionGuard(lambda cid: closed.append(cid) is None, header_timeout=5, per_address=3,
                            clock=lambda: now[0])
    for cid in ("a", "b", "c"):
        assert guard.connected(cid, "10.0.0.1") is None
    guard.started("a")  # busy: never closed to make room
    assert guard.connected("d", "10.0.0.1") is None and closed == ["b"]  # the oldest idle one
    guard.disconnected("b")
    guard.started("c"), guard.started("d")
    assert guard.connected("e", "10.0.0.1") == "too many connections from this address"
    assert guard.connected("x", "10.0.0.2") is None  # another address is not affected
    guard.ended("a")
    now[0] = 6.0
    assert guard.sweep() == 1 and closed[-1] == "x"  # silent past the timeout; a, c, d asked
