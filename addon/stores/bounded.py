"""Bounded key-value data: the `BoundedKV` interface (kept in memory, or in Redis with
state=redis://) and `BoundedMap`, a bounded in-memory map: at most `max_items` entries (least
recently used go first), each kept for at most `ttl` seconds after it was stored. The in-memory
Responses store and the local key-value store are both this."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, Protocol, TypeVar

V = TypeVar("V")


class BoundedKV(Protocol):
    """Bytes by key, at most `max_items` (least recently used go first), each for `ttl` seconds."""

    async def get(self, key: str) -> bytes | None: ...

    async def put(self, key: str, value: bytes) -> None: ...

    async def delete(self, key: str) -> bool: ...


class BoundedMap(Generic[V]):
    def __init__(self, max_items: int, ttl: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_items = max_items
        self.ttl = ttl
        self._clock = clock
        self._items: OrderedDict[str, tuple[float, V]] = OrderedDict()

    def put(self, key: str, value: V) -> None:
        self._items[key] = (self._clock(), value)
        self._items.move_to_end(key)
        while len(self._items) > self.max_items:
            self._items.popitem(last=False)

    def get(self, key: str) -> V | None:
        entry = self._items.get(key)
        if entry is None:
            return None
        if self._clock() - entry[0] > self.ttl:
            del self._items[key]
            return None
        self._items.move_to_end(key)
        return entry[1]

    def stored_at(self, key: str) -> float | None:
        entry = self._items.get(key)
        return None if entry is None else entry[0]

    def delete(self, key: str) -> bool:
        return self._items.pop(key, None) is not None

    def __len__(self) -> int:
        return len(self._items)
