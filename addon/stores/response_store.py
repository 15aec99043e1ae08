"""Where Responses live between requests: the state behind `previous_response_id`.

The Responses API is stateful where Chat Completions is not: `previous_response_id` names an
earlier answer whose whole conversation the new input continues, and `GET`/`DELETE
/v1/responses/{id}` read the same store. `ResponseStore` is the interface (async, so a store
shared between gateway instances can implement it); `MemoryResponseStore` is the embedded
default, `KVResponseStore` the shared one (Redis, through addon/stores/shared).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from ..protocol import canonical as c
from ..protocol import jsonfast
from .bounded import BoundedKV, BoundedMap


@dataclass(slots=True)
class StoredResponse:
    response: dict[str, Any]  # the Response object, as GET /v1/responses/{id} returns it
    conversation: list[c.Message]  # every turn up to and including this response's output
    stored_at: float
    size: int = 0  # approximate bytes, for the store's byte budget


def _signature_size(sig: c.Signature | None) -> int:
    return 0 if sig is None else len(sig.value) + len(sig.key or "") + len(sig.origin or "")


def stored_size(response: dict[str, Any], conversation: list[c.Message]) -> int:
    """What keeping a response costs: its conversation and every byte of the Response object it
    is returned as (metadata, tools, instructions, output): each can be as large as a request body."""
    return approx_size(conversation) + len(jsonfast.dumps(response))


def approx_size(conversation: list[c.Message]) -> int:
    """What a conversation costs to keep, roughly: its text, media data and tool calls."""
    total = 0
    for m in conversation:
        total += 64
        for p in m.content:
            total += len(getattr(p, "text", "") or "") + len(getattr(p, "data", "") or "") + len(
                getattr(p, "url", "") or "") + _signature_size(getattr(p, "signature", None))
        for t in m.tool_calls:
            total += len(t.id) + len(t.name) + len(t.arguments) + _signature_size(t.signature)
    return total


class ResponseStore(Protocol):
    async def put(self, response: dict[str, Any], conversation: list[c.Message]) -> None: ...
    async def get(self, response_id: str) -> StoredResponse | None: ...
    async def delete(self, response_id: str) -> bool: ...


class MemoryResponseStore:
    """Responses kept in this process.

    Limits: at most `max_items` responses and `max_bytes` of what they keep (default 1000
    and 256 MB; the least recently used go first) and each for at most `ttl` seconds after it was
    stored (default 1 hour); `store: false` responses are never kept (the front end does not call
    `put`). Each entry is charged for its Response object (metadata, tools, output, ...) and its
    whole conversation, shared history included: an upper bound of the memory held, so that chains
    of huge inputs (or huge tool lists) cannot grow past the budget. Empty
    after a restart and not shared between gateway instances, so a client chaining
    `previous_response_id` must keep talking to the same instance (or send the full input, as
    Codex CLI does), unless the gateway runs with `state=redis://...` (KVResponseStore).
    Each entry holds the whole canonical conversation; entries of one thread share their message
    objects, so a long chain costs a list of references per entry, not a copy of the history.
    """

    def __init__(self, max_items: int = 1000, ttl: float = 3600.0, max_bytes: int = 256 * 1024 * 1024,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._map: BoundedMap[StoredResponse] = BoundedMap(max_items, ttl, max_bytes=max_bytes,
                                                            size=lambda stored: stored.size, clock=clock)

    @property
    def bytes(self) -> int:
        return self._map.bytes

    async def put(self, response: dict[str, Any], conversation: list[c.Message]) -> None:
        # one larger than the whole budget is not kept (a later previous_response_id gets a 404)
        self._map.put(response["id"], StoredResponse(response, conversation, self._clock(),
                                                     stored_size(response, conversation)))

    async def get(self, response_id: str) -> StoredResponse | None:
        return self._map.get(response_id)

    async def delete(self, response_id: str) -> bool:
        return self._map.delete(response_id)

    def __len__(self) -> int:
        return len(self._map)


class KVResponseStore:
    """Responses in a shared key-value store (Redis with `state=redis://...`): any instance can
    continue a conversation another one answered. Each entry is the Response object and the
    whole conversation as JSON; bounds and expiry are the key-value store's, and an entry larger
    than `max_entry_bytes` is not kept (as the memory store keeps none beyond its budget)."""

    def __init__(self, kv: BoundedKV, max_entry_bytes: int = 64 * 1024 * 1024) -> None:
        self.kv = kv
        self.max_entry_bytes = max_entry_bytes

    async def put(self, response: dict[str, Any], conversation: list[c.Message]) -> None:
        size = stored_size(response, conversation)
        if size > self.max_entry_bytes:
            return
        # a long conversation takes longer than the event loop may be held: serialise it aside
        data = (await asyncio.to_thread(_dump, response, conversation) if size > OFF_LOOP_BYTES
                else _dump(response, conversation))
        if len(data) <= self.max_entry_bytes:
            await self.kv.put(response["id"], data)

    async def get(self, response_id: str) -> StoredResponse | None:
        raw = await self.kv.get(response_id)
        if raw is None:
            return None
        return await asyncio.to_thread(_load, raw) if len(raw) > OFF_LOOP_BYTES else _load(raw)

    async def delete(self, response_id: str) -> bool:
        return await self.kv.delete(response_id)


OFF_LOOP_BYTES = 256 * 1024  # (de)serialising more than this runs in a worker thread


def _dump(response: dict[str, Any], conversation: list[c.Message]) -> bytes:
    doc = {"response": response, "conversation": [encode(m) for m in conversation], "stored_at": time.time()}
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode()


def _load(raw: bytes) -> StoredResponse:
    doc = json.loads(raw)
    return StoredResponse(doc["response"], [decode(m) for m in doc["conversation"]], doc["stored_at"])


# ---- canonical dataclasses <-> JSON ------------------------------------------------------------
# Generic over the canonical module's dataclasses, tagged with the class name, so a field or
# part type added there round-trips without touching this code.

_CANONICAL = {name: cls for name, cls in vars(c).items() if dataclasses.is_dataclass(cls) and isinstance(cls, type)}


def encode(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        out = {"@": type(value).__name__}
        for f in dataclasses.fields(value):
            out[f.name] = encode(getattr(value, f.name))
        return out
    if isinstance(value, (list, tuple)):
        return [encode(v) for v in value]
    return value


def decode(value: Any) -> Any:
    if isinstance(value, dict) and "@" in value:
        cls = _CANONICAL[value["@"]]
        return cls(**{k: decode(v) for k, v in value.items() if k != "@"})
    if isinstance(value, list):
        return [decode(v) for v in value]
    return value
