"""The thought-signature store: bounds, expiry, and how the engine uses it around a request."""

from __future__ import annotations

from typing import Any

from addon.protocol import canonical as c
from addon.stores.bounded import ENTRY_OVERHEAD, BoundedMap
from addon.stores.signature_store import (
    MemorySignatureStore,
    hydrate,
    in_completion,
    in_events,
    remembering,
)


def sig(value: str, key: str, origin: str = "gemini:aaaa") -> c.Signature:
    return c.Signature(value, origin, "gemini-3-pro-preview", key)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def test_bounded_by_count_lru_first() -> None:
    store = MemorySignatureStore(max_items=2)
    await store.put({"a": sig("1", "a"), "b": sig("2", "b")})
    assert await store.get(["a"])  # a is now the most recently used
    await store.put({"c": sig("3", "c")})
    assert set(await store.get(["a", "b", "c"])) == {"a", "c"} and len(store) == 2


async def test_bounded_by_bytes() -> None:
    big = "x" * 1000
    one = len("k0") + 1000 + len("gemini:aaaa") + len("gemini-3-pro-preview") + ENTRY_OVERHEAD
    store = MemorySignatureStore(max_bytes=3 * one)
    for i in range(5):
        await store.put({f"k{i}": sig(big, f"k{i}")})
    assert len(store) == 3 and store.bytes == 3 * one
    assert set(await store.get([f"k{i}" for i in range(5)])) == {"k2", "k3", "k4"}
    await store.put({"k4": sig("small", "k4")})  # replacing an entry releases its bytes
    assert store.bytes == 2 * one + one - 995


async def test_entries_expire() -> None:
    clock = Clock()
    store = MemorySignatureStore(ttl=10, clock=clock)
    await store.put({"a": sig("1", "a")})
    clock.now = 10
    assert await store.get(["a"])
    clock.now = 10.5
    assert await store.get(["a"]) == {} and len(store) == 0 and store.bytes == 0


def _request(*messages: c.Message) -> c.ChatRequest:
    return c.ChatRequest(model="m", messages=list(messages))


async def test_hydrate_puts_stored_records_on_the_history_and_wins_over_the_clients() -> None:
    store = MemorySignatureStore()
    await store.put({"call_a": sig("stored-a", "call_a"), "sig_r": sig("stored-r", "sig_r")})
    client_sent = c.Signature("from-client")
    calls = [c.ToolCall("call_a", "f", "{}", client_sent), c.ToolCall("call_b", "f", "{}", client_sent),
             c.ToolCall("tool_1", "f", "{}")]
    reasoning = c.ReasoningPart("thought", c.Signature("", key="sig_r"))
    req = _request(c.Message("user", [c.TextPart("q")]),
                   c.Message("assistant", [reasoning], tool_calls=calls))
    await hydrate(store, req)
    assert calls[0].signature == sig("stored-a", "call_a")  # the store knows the origin
    assert calls[1].signature is client_sent  # a miss keeps what the client sent
    assert calls[2].signature is None  # ... or nothing
    assert reasoning.signature == sig("stored-r", "sig_r")


async def test_hydrate_without_history_does_not_ask_the_store() -> None:
    class Refusing:
        async def get(self, keys: Any) -> dict[str, c.Signature]:
            raise AssertionError("no lookup for a request without tool calls or reasoning")

        async def put(self, records: Any) -> None:
            raise AssertionError

    await hydrate(Refusing(), _request(c.Message("user", [c.TextPart("hi")])))  # type: ignore[arg-type]


async def test_what_an_answer_issued_is_kept_before_the_client_sees_it() -> None:
    completion = c.Completion([c.Choice(tool_calls=[c.ToolCall("call_x", "f", "{}", sig("s1", "call_x")),
                                                    c.ToolCall("call_y", "f", "{}")],
                                        reasoning_signature=sig("s2", "sig_y"))])
    assert set(in_completion(completion)) == {"call_x", "sig_y"}
    batch: list[c.StreamEvent] = [c.ReasoningDelta(0, "t", sig("s3", "sig_z")),
                                  c.ToolCallDelta(0, 0, "", id="call_z", name="f", signature=sig("s4", "call_z")),
                                  c.ToolCallDelta(0, 0, "{}"), c.TextDelta(0, "x")]
    assert set(in_events(batch)) == {"sig_z", "call_z"}
    # a chat client can never send a reasoning signature back: not kept for it
    assert set(in_completion(completion, reasoning=False)) == {"call_x"}
    assert set(in_events(batch, reasoning=False)) == {"call_z"}

    store = MemorySignatureStore()
    seen: list[int] = []

    async def upstream() -> Any:
        yield batch
        seen.append(len(store))  # the consumer got the batch; the store had it already
        yield [c.TextDelta(0, "more")]

    out = [b async for b in remembering(store, upstream())]
    assert out[0] is batch and seen == [2]


def test_the_one_bounded_map_counts_every_byte_it_keeps() -> None:
    clock = Clock()
    m: BoundedMap[bytes] = BoundedMap(3, ttl=10.0, max_bytes=3 * (2 + 100 + ENTRY_OVERHEAD), clock=clock)
    for k in ("k0", "k1", "k2"):
        assert m.put(k, b"x" * 100)
    assert len(m) == 3 and m.bytes == 3 * (2 + 100 + ENTRY_OVERHEAD)
    assert m.get("k0") == b"x" * 100  # used: k1 is now the oldest
    assert m.put("k3", b"y" * 100) and m.get("k1") is None and len(m) == 3
    assert m.put("k3", b"z" * 50) and m.bytes == 2 * (2 + 100 + ENTRY_OVERHEAD) + (2 + 50 + ENTRY_OVERHEAD)
    assert not m.put("big", b"b" * 10_000) and m.get("big") is None  # larger than the budget: not kept
    assert m.put("k4", b"w" * 100) and len(m) == 3 and m.get("k2") is None  # a fourth pushes the oldest out
    clock.now = 10.5
    assert m.get("k0") is None and m.get("k3") is None and m.bytes == 2 + 100 + ENTRY_OVERHEAD  # expired: gone
    assert m.delete("k4") and m.bytes == 0 and not m.delete("k4")
