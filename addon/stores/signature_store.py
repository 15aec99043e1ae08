"""Where thought signatures live between requests, keyed by what the client echoes back.

Gemini hands out an opaque `thoughtSignature` (often 1 KB+) with each tool-calling step and wants
it back on that call in the next request. It cannot ride in the tool-call id (clients cap ids at
40 or 64 characters) and Gemini refuses it from any credential but the one that got it, so the
gateway keeps it here with its origin: key = the tool-call id (or a Responses reasoning item's
`encrypted_content`), value = `c.Signature` (signature, origin, model). The engine stores what an
answer carried before the client can see the answer, and puts the records back on the canonical
request (`hydrate`) before any attempt; the Gemini back end decides per attempt which to send.

`SignatureStore` is the interface; `MemorySignatureStore` is the embedded default and
`SharedSignatureStore` keeps them in the shared state (Redis) when several instances serve. A miss is never an
error: Gemini gets the documented dummy signature instead.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator, Callable, Collection, Iterable, Mapping
from typing import Protocol

from ..protocol import canonical as c
from .bounded import BoundedKV, BoundedMap

log = logging.getLogger(__name__)

class SignatureStore(Protocol):
    async def put(self, records: Mapping[str, c.Signature]) -> None: ...
    async def get(self, keys: Collection[str]) -> dict[str, c.Signature]: ...


class MemorySignatureStore:
    """Signatures kept in this process, least recently used first out.

    Limits: `max_items` entries (default 100 000), `max_bytes` of signature data (default 64 MiB;
    a Gemini signature is typically 0.3-4 KB) and `ttl` seconds per entry (default 24 hours: an
    agent loop left overnight falls back to the dummy). Empty after a restart and not shared
    between instances; either way a lost signature only means the dummy is sent.
    """

    def __init__(self, max_items: int = 100_000, max_bytes: int = 64 << 20, ttl: float = 86_400.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._map: BoundedMap[c.Signature] = BoundedMap(max_items, ttl, max_bytes=max_bytes, size=_signature_bytes,
                                                         clock=clock)

    @property
    def bytes(self) -> int:
        return self._map.bytes

    async def put(self, records: Mapping[str, c.Signature]) -> None:
        for key, sig in records.items():
            self._map.put(key, sig)

    async def get(self, keys: Collection[str]) -> dict[str, c.Signature]:
        found: dict[str, c.Signature] = {}
        for key in keys:
            sig = self._map.get(key)
            if sig is not None:
                found[key] = sig
        return found

    def __len__(self) -> int:
        return len(self._map)


def _signature_bytes(sig: c.Signature) -> int:
    # its key is the map's key (counted there); the strings it holds besides
    return len(sig.value) + len(sig.origin or "") + len(sig.model or "")


class SharedSignatureStore:
    """Signatures in a key-value namespace of the shared state (`state=redis://...`), so a tool
    loop whose next step lands on another gateway instance still finds them. Redis trouble only
    costs the real signature (the dummy is sent), never the request."""

    def __init__(self, kv: BoundedKV) -> None:
        self._kv = kv

    async def put(self, records: Mapping[str, c.Signature]) -> None:
        try:
            for key, sig in records.items():
                await self._kv.put(key, json.dumps([sig.value, sig.origin, sig.model]).encode())
        except Exception as exc:  # the answer must not fail because a signature could not be kept
            log.warning("could not keep thought signatures in the shared state: %s", type(exc).__name__)

    async def get(self, keys: Collection[str]) -> dict[str, c.Signature]:
        found: dict[str, c.Signature] = {}
        try:
            for key in keys:
                raw = await self._kv.get(key)
                if raw is None:
                    continue
                value, origin, model = json.loads(raw)
                if isinstance(value, str):
                    found[key] = c.Signature(value, origin, model, key=key)
        except Exception as exc:
            log.warning("could not read thought signatures from the shared state: %s", type(exc).__name__)
        return found


# ---- the engine's side: what to look up before a request, what to keep after an answer --------

def _wanted(req: c.ChatRequest) -> tuple[list[c.ToolCall], list[c.ReasoningPart]]:
    calls = [tc for m in req.messages for tc in m.tool_calls]
    parts = [p for m in req.messages if m.role == "assistant" for p in m.content
             if isinstance(p, c.ReasoningPart) and p.signature is not None and p.signature.key]
    return calls, parts


async def hydrate(store: SignatureStore, req: c.ChatRequest) -> None:
    """Put the stored record on each tool call and reasoning part of the history it belongs to.

    The store's record wins over what the client sent (it knows the origin); a miss leaves the
    client's own signature (Google's `extra_content`, an old id) or none."""
    calls, parts = _wanted(req)
    if not calls and not parts:
        return
    keys = {tc.id for tc in calls if tc.id}
    keys.update(p.signature.key for p in parts if p.signature and p.signature.key)
    found = await store.get(keys)
    if not found:
        return
    for tc in calls:
        if tc.id in found:
            tc.signature = found[tc.id]
    for p in parts:
        if p.signature and p.signature.key in found:
            p.signature = found[p.signature.key]


def issued(signatures: Iterable[c.Signature | None]) -> dict[str, c.Signature]:
    """The records to keep: signatures an upstream just issued, by the key the client will echo."""
    return {s.key: s for s in signatures if s is not None and s.key and s.value}


# `reasoning`: whether the client can ever send a reasoning signature back (a Responses reasoning
# item can, a chat message cannot); keys nobody will echo only crowd useful ones out of the store.

def in_completion(completion: c.Completion, reasoning: bool = True) -> dict[str, c.Signature]:
    return issued([tc.signature for ch in completion.choices for tc in ch.tool_calls]
                  + [ch.reasoning_signature for ch in completion.choices if reasoning])


def in_events(batch: list[c.StreamEvent], reasoning: bool = True) -> dict[str, c.Signature]:
    kinds = (c.ToolCallDelta, c.ReasoningDelta) if reasoning else c.ToolCallDelta
    return issued([ev.signature for ev in batch if isinstance(ev, kinds)])


async def remembering(store: SignatureStore, batches: AsyncIterator[list[c.StreamEvent]],
                      reasoning: bool = True) -> AsyncIterator[list[c.StreamEvent]]:
    """Pass stream batches on, storing the signatures each one carries before the client sees it."""
    try:
        async for batch in batches:
            records = in_events(batch, reasoning)
            if records:
                await store.put(records)
            yield batch
    finally:
        aclose = getattr(batches, "aclose", None)
        if aclose is not None:
            await aclose()
