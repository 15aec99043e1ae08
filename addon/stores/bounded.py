"""Bounded state: the `BoundedKV` interface (kept in memory, or in Redis with state=redis://) and
`BoundedMap`, the one bounded in-memory map every store of this process uses (the Responses
behind previous_response_id, thought signatures, the local key-value store).

A map holds at most `max_items` entries and `max_bytes` bytes, least recently used out first, each
entry for at most `ttl` seconds after it was stored. Every byte of what is kept is counted: an
entry costs its key, what `size(value)` says its value holds, and ENTRY_OVERHEAD for the
bookkeeping (dict slot, tuple, timestamps). An entry larger than the whole budget is not kept.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, Protocol, TypeVar

V = TypeVar("V")

ENTRY_OVERHEAD = 200  # bytes an entry costs beyond its key and value: dict slot, tuple, floats


class BoundedKV(Protocol):
    """Bytes by key, at most `max_items` (least recently used go first), each for `ttl` seconds."""

    async def get(self, key: str) -> bytes | None: ...

    async def put(self, key: str, value: bytes) -> None: ...

    async def delete(self, key: str) -> bool: ...


def _len(value: object) -> int:
    return len(value)  # type: ignore[arg-type]


class BoundedMap(Generic[V]):
    def __init__(self, max_items: int, ttl: float, *, max_bytes: int = 64 << 20,
                 size: Callable[[V], int] = _len, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_items = max_items
        self.max_bytes = max_bytes
        self.ttl = ttl
        self._size = size
        self._clock = clock
        self._items: OrderedDict[str, tuple[float, V, int]] = OrderedDict()  # key -> (stored at, value, cost)
        self.bytes = 0  # what the entries cost, as counted above

    def cost(self, key: str, value: V) -> int:
        return len(key) + self._size(value) + ENTRY_OVERHEAD

    def put(self, key: str, value: V) -> bool:
        """Keep `value` under `key` (replacing what was there); False if it alone exceeds max_bytes."""
        self.delete(key)
        cost = self.cost(key, value)
        if cost > self.max_bytes:
            return False
        self._items[key] = (self._clock(), value, cost)
        self.bytes += cost
        while len(self._items) > self.max_items or self.bytes > self.max_bytes:
            _, (_, _, oldest) = self._items.popitem(last=False)
            self.bytes -= oldest
        return True

    def get(self, key: str) -> V | None:
        entry = self._items.get(key)
        if entry is None:
            return None
        if self._clock() - entry[0] > self.ttl:
            self.delete(key)
            return None
        self._items.move_to_end(key)
        return entry[1]

    def stored_at(self, key: str) -> float | None:
        entry = self._items.get(key)
        return None if entry is None else entry[0]

    def delete(self, key: str) -> bool:
        entry = self._items.pop(key, None)
        if entry is None:
            return False
        self.bytes -= entry[2]
        return True

    def __len__(self) -> int:
        return len(self._items)
