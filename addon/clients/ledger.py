"""A client's counters: requests in the last minute, requests open now, tokens spent today (UTC),
and its usage totals. The `Ledger` interface, and the one for a single gateway (memory, persisted in
the state file); redis_ledger.py shares them between instances.

Counters belong to the client's *name*, never to its key or its limits: a new key or a changed limit
keeps what was spent. A rename is followed through the key: the ledger remembers which name each
key digest (never a key) last belonged to, and when a name that is gone from the file handed its
key to a new name, the old counters move to the new one (`reconcile`).

Admission decides on the budget left *before* the request (its tokens are only known after the
answer): a request is refused once `tokens_per_day` is spent, not because it might overrun.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Protocol

from .config import Client, ClientsFile

WINDOW = 60.0  # seconds: `rpm` counts the requests of any such window
DAY = 86_400
REASONS = ("tokens_per_day", "rpm", "max_concurrent", "model")  # why a client's request was refused


def utc_day(now: float) -> int:
    """Days since the epoch: tokens_per_day resets when this changes (00:00 UTC)."""
    return int(now // DAY)


@dataclass(slots=True)
class Verdict:
    """What admission found. `refused` is None (admitted) or the limit that said no."""

    refused: str | None
    now: float  # the ledger's clock, epoch seconds
    spent_today: int  # tokens spent today before this request
    used: int  # requests in the last minute (this one included when admitted)
    oldest: float | None  # when the oldest of those was admitted
    open: int  # requests open now (this one included when admitted)
    newest: float | None = None  # when the newest of those was admitted


class Ledger(Protocol):
    async def admit(self, client: Client, ticket: str) -> Verdict:
        """Check the client's limits and, if none is reached, count the request (`ticket` is its
        unique id: it holds a concurrency slot until `settle`)."""

    def settle(self, name: str, ticket: str, model: str | None, tokens_in: int, tokens_out: int,
               held: bool) -> None:
        """The request is over: add its tokens, free its slot if it `held` one. Never waits."""

    def refused(self, name: str, reason: str) -> None:
        """Count a refusal decided outside `admit` (a model outside the allow-list)."""

    async def usage(self, names: list[str]) -> dict[str, dict[str, Any]]:
        """Per name: requests, refused (by reason), tokens_today, models, requests_last_minute, open."""

    async def reconcile(self, clients: ClientsFile) -> None:
        """A new clients file: move the counters of renamed clients (see the module docstring)."""

    async def start(self) -> None: ...

    async def aclose(self) -> None: ...


def renames(clients: ClientsFile, owners: dict[str, str]) -> list[tuple[str, str]]:
    """(old name, new name) pairs: a digest that belonged to a name no longer in the file now
    belongs to another name. `owners`: hex digest -> the name it last belonged to."""
    out = []
    for client in clients.clients:
        for digest in client.digests:
            old = owners.get(digest.hex())
            if old and old != client.name and old not in clients.by_name and (old, client.name) not in out:
                out.append((old, client.name))
    return out


def empty_usage() -> dict[str, Any]:
    return {"requests": 0, "refused": {}, "day": 0, "day_tokens": 0, "models": {}}


class MemoryLedger:
    """One gateway's counters, kept in memory and, when a state file is given, saved in its
    `clients` section (usage, today's tokens, the last minute's request times; open requests are
    this process's and start at zero)."""

    def __init__(self, state_file: Any = None, clock=time.time) -> None:
        self._clock = clock
        self._usage: dict[str, dict[str, Any]] = {}
        self._recent: dict[str, deque[float]] = {}
        self._open: dict[str, set[str]] = {}
        self._owners: dict[str, str] = {}  # hex key digest -> client name
        self._renamed: dict[str, str] = {}  # old name -> new: requests admitted before a rename settle there
        self._file = state_file
        if state_file is not None:
            saved = state_file.load().get("clients")
            if isinstance(saved, dict):
                self._restore(saved)
            state_file.add_source(self._collect)

    def _restore(self, saved: dict[str, Any]) -> None:
        now = self._clock()
        for name, rec in (saved.get("usage") or {}).items():
            if isinstance(rec, dict):
                usage = empty_usage()
                usage.update({k: rec[k] for k in usage if k in rec})
                self._usage[str(name)] = usage
                recent = [float(t) for t in rec.get("recent", []) if isinstance(t, (int, float)) and now - t < WINDOW]
                self._recent[str(name)] = deque(sorted(recent))
        owners = saved.get("keys")
        if isinstance(owners, dict):
            self._owners = {str(k): str(v) for k, v in owners.items()}

    def _collect(self, doc: dict[str, Any]) -> None:
        now = self._clock()
        usage = {}
        for name, rec in self._usage.items():
            recent = [t for t in self._recent.get(name, ()) if now - t < WINDOW]
            usage[name] = {**rec, "recent": recent}
        doc["clients"] = {"usage": usage, "keys": dict(self._owners)}

    def _dirty(self) -> None:
        if self._file is not None:
            self._file.mark_dirty()

    def _rec(self, name: str) -> dict[str, Any]:
        rec = self._usage.get(name)
        if rec is None:
            rec = self._usage[name] = empty_usage()
        return rec

    def _spent(self, rec: dict[str, Any], now: float) -> int:
        return int(rec["day_tokens"]) if rec["day"] == utc_day(now) else 0

    async def admit(self, client: Client, ticket: str) -> Verdict:
        return self.admit_now(client, ticket)

    def admit_now(self, client: Client, ticket: str) -> Verdict:
        now = self._clock()
        rec = self._rec(client.name)
        recent = self._recent.setdefault(client.name, deque())
        while recent and now - recent[0] >= WINDOW:
            recent.popleft()
        held = self._open.setdefault(client.name, set())
        spent = self._spent(rec, now)
        refused = None
        if client.tokens_per_day and spent >= client.tokens_per_day:
            refused = "tokens_per_day"
        elif client.rpm and len(recent) >= client.rpm:
            refused = "rpm"
        elif client.max_concurrent and len(held) >= client.max_concurrent:
            refused = "max_concurrent"
        if refused is None:
            recent.append(now)
            if client.max_concurrent:
                held.add(ticket)
            rec["requests"] += 1
        else:
            rec["refused"][refused] = rec["refused"].get(refused, 0) + 1
        self._dirty()
        return Verdict(refused, now, spent, len(recent), recent[0] if recent else None, len(held),
                       recent[-1] if recent else None)

    def settle(self, name: str, ticket: str, model: str | None, tokens_in: int, tokens_out: int,
               held: bool) -> None:
        name = self._renamed.get(name, name)
        if held:
            self._open.get(name, set()).discard(ticket)
        rec = self._rec(name)
        now = self._clock()
        day = utc_day(now)
        if rec["day"] != day:
            rec["day"], rec["day_tokens"] = day, 0
        rec["day_tokens"] += tokens_in + tokens_out
        if model is not None:
            m = rec["models"].setdefault(model, {"requests": 0, "input_tokens": 0, "output_tokens": 0})
            m["requests"] += 1
            m["input_tokens"] += tokens_in
            m["output_tokens"] += tokens_out
        self._dirty()

    def refused(self, name: str, reason: str) -> None:
        rec = self._rec(name)
        rec["refused"][reason] = rec["refused"].get(reason, 0) + 1
        self._dirty()

    async def usage(self, names: list[str]) -> dict[str, dict[str, Any]]:
        now = self._clock()
        out = {}
        for name in names:
            rec = self._usage.get(name) or empty_usage()
            recent = [t for t in self._recent.get(name, ()) if now - t < WINDOW]
            out[name] = {"requests": rec["requests"], "refused": dict(rec["refused"]),
                         "tokens_today": self._spent(rec, now), "requests_last_minute": len(recent),
                         "open": len(self._open.get(name, ())), "models": {m: dict(v) for m, v in rec["models"].items()}}
        return out

    async def reconcile(self, clients: ClientsFile) -> None:
        for old, new in renames(clients, self._owners):
            self._merge(old, new)
            self._renamed[old] = new
        for client in clients.clients:
            for digest in client.digests:
                self._owners[digest.hex()] = client.name
        self._dirty()

    def _merge(self, old: str, new: str) -> None:
        """Add `old`'s counters to `new`'s and forget `old` (a renamed client keeps its budget)."""
        src = self._usage.pop(old, None)
        if src is not None:
            dst = self._rec(new)
            dst["requests"] += src["requests"]
            for reason, n in src["refused"].items():
                dst["refused"][reason] = dst["refused"].get(reason, 0) + n
            if src["day"] > dst["day"]:
                dst["day"], dst["day_tokens"] = src["day"], src["day_tokens"]
            elif src["day"] == dst["day"]:
                dst["day_tokens"] += src["day_tokens"]
            for model, counts in src["models"].items():
                m = dst["models"].setdefault(model, {"requests": 0, "input_tokens": 0, "output_tokens": 0})
                for k, v in counts.items():
                    m[k] = m.get(k, 0) + v
        recent = self._recent.pop(old, None)
        if recent:
            self._recent[new] = deque(sorted([*self._recent.get(new, ()), *recent]))
        held = self._open.pop(old, None)
        if held:
            self._open.setdefault(new, set()).update(held)

    async def start(self) -> None:
        pass

    async def aclose(self) -> None:
        pass
