"""Where Responses live between requests: the state behind `previous_response_id`.

The Responses API is stateful where Chat Completions is not: `previous_response_id` names an
earlier answer whose whole conversation the new input continues, and `GET`/`DELETE
/v1/responses/{id}` read the same store. `ResponseStore` is the interface (async, so a store
shared between gateway instances, e.g. in Redis, can implement it); `MemoryResponseStore` is the
embedded default.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from .protocol import canonical as c


@dataclass(slots=True)
class StoredResponse:
    response: dict[str, Any]  # the Response object, as GET /v1/responses/{id} returns it
    conversation: list[c.Message]  # every turn up to and including this response's output
    stored_at: float
    size: int = 0  # approximate bytes, for the store's byte budget


def _signature_size(sig: c.Signature | None) -> int:
    return 0 if sig is None else len(sig.value) + len(sig.key or "") + len(sig.origin or "")


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

    Limits: at most `max_items` responses and `max_bytes` of their conversations (default 1000
    and 256 MB; the least recently used go first) and each for at most `ttl` seconds after it was
    stored (default 1 hour); `store: false` responses are never kept (the front end does not call
    `put`). Each entry is charged for its whole conversation, shared history included: an upper
    bound of the memory held, so that chains of huge inputs cannot grow past the budget. Empty after a restart and not shared
    between gateway instances, so a client chaining `previous_response_id` must keep talking to
    the same instance (or send the full input, as Codex CLI does).
    Each entry holds the whole canonical conversation; entries of one thread share their message
    objects, so a long chain costs a list of references per entry, not a copy of the history.
    """

    def __init__(self, max_items: int = 1000, ttl: float = 3600.0, max_bytes: int = 256 * 1024 * 1024,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.max_items = max_items
        self.max_bytes = max_bytes
        self.ttl = ttl
        self._clock = clock
        self._items: OrderedDict[str, StoredResponse] = OrderedDict()
        self.bytes = 0

    async def put(self, response: dict[str, Any], conversation: list[c.Message]) -> None:
        size = approx_size(conversation)
        self._drop(response["id"])
        if size > self.max_bytes:
            return  # larger than the whole budget: not kept (a later previous_response_id gets a 404)
        self._items[response["id"]] = StoredResponse(response, conversation, self._clock(), size)
        self.bytes += size
        while len(self._items) > self.max_items or self.bytes > self.max_bytes:
            _, oldest = self._items.popitem(last=False)
            self.bytes -= oldest.size

    def _drop(self, response_id: str) -> bool:
        entry = self._items.pop(response_id, None)
        if entry is not None:
            self.bytes -= entry.size
        return entry is not None

    async def get(self, response_id: str) -> StoredResponse | None:
        entry = self._items.get(response_id)
        if entry is None:
            return None
        if self._clock() - entry.stored_at > self.ttl:
            self._drop(response_id)
            return None
        self._items.move_to_end(response_id)
        return entry

    async def delete(self, response_id: str) -> bool:
        return self._drop(response_id)

    def __len__(self) -> int:
        return len(self._items)
