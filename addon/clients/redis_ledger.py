"""Client counters shared by every gateway instance on one Redis (`state=redis://...`).

Keys (the client's name in braces, so one client's keys share a Redis Cluster slot):
  oaigw:client:{NAME}        hash: requests, day, day_tokens, refused<SEP><reason>,
                             m<SEP><model><SEP>{requests,input_tokens,output_tokens}
  oaigw:client:{NAME}:rpm    sorted set: ticket -> admission time (ms): the last minute's requests
  oaigw:client:{NAME}:open   sorted set: ticket -> lease end (ms): requests open now
  oaigw:client-keys          hash: hex key digest -> the name it last belonged to (renames)

Admission is one Lua script (one round trip, atomic: no read-modify-write race between
instances) on Redis's own clock, so instances whose clocks differ still share one minute and one
UTC day. An open request holds a lease that this instance renews while it runs: a crashed
instance's slots free themselves. If Redis cannot answer within a second, this instance decides
alone from its memory (and says so in the log) rather than failing requests.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

import redis

from ..protocol.errors import GatewayError
from .config import Client, ClientsFile
from .ledger import MemoryLedger, Verdict, renames

log = logging.getLogger(__name__)

PREFIX = "oaigw:client:"
OWNERS = "oaigw:client-keys"
SEP = "\x1f"
LEASE_MS = 120_000  # an open request's slot, renewed every RENEW seconds while it runs
RENEW = 30.0
ADMIT_TIMEOUT = 1.0
RETRY = 1.0
MAX_PENDING = 10_000

_ADMIT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local day = math.floor(tonumber(t[1]) / 86400)
local rpm, maxc, tpd = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local u = redis.call('HMGET', KEYS[1], 'day', 'day_tokens')
local spent = 0
if tonumber(u[1]) == day then spent = tonumber(u[2]) or 0 end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - 60000)
local used = redis.call('ZCARD', KEYS[2])
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now)
local open = redis.call('ZCARD', KEYS[3])
local verdict = ''
if tpd > 0 and spent >= tpd then verdict = 'tokens_per_day'
elseif rpm > 0 and used >= rpm then verdict = 'rpm'
elseif maxc > 0 and open >= maxc then verdict = 'max_concurrent' end
if verdict == '' then
  redis.call('ZADD', KEYS[2], now, ARGV[4])
  redis.call('PEXPIRE', KEYS[2], 60000)
  used = used + 1
  if maxc > 0 then
    redis.call('ZADD', KEYS[3], now + tonumber(ARGV[5]), ARGV[4])
    redis.call('PEXPIRE', KEYS[3], ARGV[5])
    open = open + 1
  end
  redis.call('HINCRBY', KEYS[1], 'requests', 1)
else
  redis.call('HINCRBY', KEYS[1], 'refused' .. ARGV[6] .. verdict, 1)
end
local oldest, newest = -1, -1
if used > 0 then
  oldest = tonumber(redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')[2])
  newest = tonumber(redis.call('ZRANGE', KEYS[2], -1, -1, 'WITHSCORES')[2])
end
return {verdict, now, spent, used, oldest, newest, open}
"""

# Tokens of a finished request (to today's total, on Redis's clock) and its model's counters; frees its slot.
_SETTLE = """
local day = math.floor(tonumber(redis.call('TIME')[1]) / 86400)
if tonumber(redis.call('HGET', KEYS[1], 'day')) ~= day then redis.call('HSET', KEYS[1], 'day', day, 'day_tokens', 0) end
local tokens = tonumber(ARGV[2]) + tonumber(ARGV[3])
if tokens > 0 then redis.call('HINCRBY', KEYS[1], 'day_tokens', tokens) end
if ARGV[4] ~= '' then
  redis.call('HINCRBY', KEYS[1], ARGV[4] .. 'requests', 1)
  redis.call('HINCRBY', KEYS[1], ARGV[4] .. 'input_tokens', ARGV[2])
  redis.call('HINCRBY', KEYS[1], ARGV[4] .. 'output_tokens', ARGV[3])
end
if ARGV[1] ~= '' then redis.call('ZREM', KEYS[2], ARGV[1]) end
return 1
"""

# Old name's counters added to the new name's, then deleted: run by every instance that sees the
# rename, so it must be idempotent (the second run finds nothing to move).
_MERGE = """
local old = redis.call('HGETALL', KEYS[1])
local oday, otok = nil, 0
for i = 1, #old, 2 do
  local f, v = old[i], old[i + 1]
  if f == 'day' then oday = tonumber(v)
  elseif f == 'day_tokens' then otok = tonumber(v)
  else redis.call('HINCRBY', KEYS[4], f, v) end
end
if oday then
  local nday = tonumber(redis.call('HGET', KEYS[4], 'day'))
  if nday == nil or oday > nday then redis.call('HSET', KEYS[4], 'day', oday, 'day_tokens', otok)
  elseif nday == oday then redis.call('HINCRBY', KEYS[4], 'day_tokens', otok) end
end
redis.call('ZUNIONSTORE', KEYS[5], 2, KEYS[5], KEYS[2], 'AGGREGATE', 'MAX')
redis.call('PEXPIRE', KEYS[5], 60000)
redis.call('ZUNIONSTORE', KEYS[6], 2, KEYS[6], KEYS[3], 'AGGREGATE', 'MAX')
redis.call('PEXPIRE', KEYS[6], ARGV[1])
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
return #old
"""


def _keys(name: str) -> list[str]:
    base = f"{PREFIX}{{{name}}}"
    return [base, base + ":rpm", base + ":open"]


def _usage_from_hash(fields: dict[bytes, bytes], today: int) -> dict[str, Any]:
    out: dict[str, Any] = {"requests": 0, "refused": {}, "tokens_today": 0, "models": {}}
    day, day_tokens = None, 0
    for raw_key, raw_value in fields.items():
        key, value = raw_key.decode(errors="replace"), int(raw_value)
        parts = key.split(SEP)
        if key == "requests":
            out["requests"] = value
        elif key == "day":
            day = value
        elif key == "day_tokens":
            day_tokens = value
        elif parts[0] == "refused" and len(parts) == 2:
            out["refused"][parts[1]] = value
        elif parts[0] == "m" and len(parts) == 3:
            out["models"].setdefault(parts[1], {})[parts[2]] = value
    out["tokens_today"] = day_tokens if day == today else 0
    return out


class RedisLedger:
    def __init__(self, state: Any) -> None:
        """`state`: the RedisState (its client, created in the running loop)."""
        self.state = state
        self._admit = self._settle = self._merge = None  # redis-py Script objects, made on first use
        self._fallback = MemoryLedger()  # decides while Redis cannot answer
        self._open: dict[str, str] = {}  # ticket -> client name, this instance's open requests
        self._renamed: dict[str, str] = {}  # old name -> new: requests admitted before a rename settle there
        self._pending: list[tuple[str, str, str | None, int, int, bool]] = []
        self._writer: asyncio.Task | None = None
        self._renewer: asyncio.Task | None = None
        self._warned = 0.0

    def _scripts(self) -> None:
        if self._admit is None:
            client = self.state.client
            self._admit = client.register_script(_ADMIT)
            self._settle = client.register_script(_SETTLE)
            self._merge = client.register_script(_MERGE)

    def _warn(self, message: str) -> None:
        if time.monotonic() - self._warned > 30:  # once in a while, not per request
            self._warned = time.monotonic()
            log.warning(message)

    async def admit(self, client: Client, ticket: str) -> Verdict:
        self._scripts()
        args = [client.rpm or 0, client.max_concurrent or 0, client.tokens_per_day or 0, ticket, LEASE_MS, SEP]
        try:
            verdict, now, spent, used, oldest, newest, open_ = await asyncio.wait_for(
                self._admit(keys=_keys(client.name), args=args), ADMIT_TIMEOUT)
        except (redis.RedisError, OSError, asyncio.TimeoutError) as exc:
            self._warn(f"client limits: Redis did not answer ({type(exc).__name__}: {exc}); this instance "
                       "enforces them alone until it does")
            return self._fallback.admit_now(client, ticket)
        refused = verdict.decode() or None
        if refused is None and client.max_concurrent:
            self._open[ticket] = client.name
            self._kick_renewer()
        return Verdict(refused, now / 1000, int(spent), int(used), oldest / 1000 if oldest >= 0 else None,
                       int(open_), newest / 1000 if newest >= 0 else None)

    def settle(self, name: str, ticket: str, model: str | None, tokens_in: int, tokens_out: int,
               held: bool) -> None:
        self._open.pop(ticket, None)
        name = self._renamed.get(name, name)
        if held:
            self._fallback.settle(name, ticket, None, 0, 0, held)  # in case it was admitted there
        if len(self._pending) >= MAX_PENDING:
            self._warn("client usage: too many settlements waiting for Redis; dropping the oldest")
            del self._pending[0]
        self._pending.append((name, ticket if held else "", model, tokens_in, tokens_out, held))
        if self._writer is None or self._writer.done():
            with contextlib.suppress(RuntimeError):  # no running loop: start() sends what waits
                self._writer = asyncio.get_running_loop().create_task(self._write())

    def refused(self, name: str, reason: str) -> None:
        async def count() -> None:
            with contextlib.suppress(redis.RedisError, OSError):
                await self.state.client.hincrby(_keys(name)[0], f"refused{SEP}{reason}", 1)
        with contextlib.suppress(RuntimeError):
            asyncio.get_running_loop().create_task(count())

    async def _write(self) -> None:
        # Everything finished while the previous batch was in flight goes in one pipeline.
        self._scripts()
        while self._pending:
            batch, self._pending = self._pending, []
            pipe = self.state.client.pipeline(transaction=False)
            for name, ticket, model, tin, tout, _ in batch:
                field = f"m{SEP}{model}{SEP}" if model is not None else ""
                await self._settle(keys=[_keys(name)[0], _keys(name)[2]], args=[ticket, tin, tout, field], client=pipe)
            try:
                await pipe.execute()
            except (redis.RedisError, OSError) as exc:
                self._pending[:0] = batch
                self._warn(f"client usage: could not write to Redis ({exc}); retrying")
                await asyncio.sleep(RETRY)

    def _kick_renewer(self) -> None:
        if self._renewer is None or self._renewer.done():
            self._renewer = asyncio.get_running_loop().create_task(self._renew())

    async def _renew(self) -> None:
        """Keep the leases of this instance's open requests (only while some are open)."""
        while self._open:
            await asyncio.sleep(RENEW)
            pipe = self.state.client.pipeline(transaction=False)
            now_ms = int(time.time() * 1000)  # only extends: a skewed clock shortens or lengthens one lease
            for ticket, name in list(self._open.items()):
                key = _keys(name)[2]
                pipe.zadd(key, {ticket: now_ms + LEASE_MS}, xx=True)
                pipe.pexpire(key, LEASE_MS)
            try:
                await pipe.execute()
            except (redis.RedisError, OSError) as exc:
                self._warn(f"client limits: could not renew open-request leases in Redis ({exc})")

    async def usage(self, names: list[str]) -> dict[str, dict[str, Any]]:
        client = self.state.client
        try:
            seconds, micros = await client.time()  # the windows and the day on Redis's clock
            now_ms = seconds * 1000 + micros // 1000
            pipe = client.pipeline(transaction=False)
            for name in names:
                usage_key, rpm_key, open_key = _keys(name)
                pipe.hgetall(usage_key)
                pipe.zcount(rpm_key, now_ms - 60_000 + 1, "+inf")
                pipe.zcount(open_key, now_ms, "+inf")
            results = await pipe.execute()
        except (redis.RedisError, OSError) as exc:
            raise GatewayError(503, f"The gateway's shared state (Redis) is unreachable ({type(exc).__name__}); "
                                    "try again shortly.", code="state_unavailable") from None
        out = {}
        for i, name in enumerate(names):
            fields, recent, open_ = results[3 * i: 3 * i + 3]
            out[name] = {**_usage_from_hash(fields, seconds // 86_400), "requests_last_minute": recent, "open": open_}
        return out

    async def reconcile(self, clients: ClientsFile) -> None:
        self._scripts()
        try:
            owners = {k.decode(): v.decode() for k, v in (await self.state.client.hgetall(OWNERS)).items()}
            for old, new in renames(clients, owners):
                moved = await self._merge(keys=[*_keys(old), *_keys(new)], args=[LEASE_MS])
                self._renamed[old] = new
                for ticket, name in self._open.items():  # their leases moved with the merge
                    if name == old:
                        self._open[ticket] = new
                if moved:
                    log.info("client %s is now %s (same key): its counters moved with it", old, new)
            mapping = {d.hex(): c.name for c in clients.clients for d in c.digests}
            if mapping:
                await self.state.client.hset(OWNERS, mapping=mapping)
        except (redis.RedisError, OSError) as exc:
            self._warn(f"client renames: Redis unreachable ({exc}); counters of a renamed client move later")

    async def start(self) -> None:
        if self._pending:
            self._writer = asyncio.get_running_loop().create_task(self._write())

    async def aclose(self) -> None:
        if self._writer is not None and not self._writer.done():
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(self._writer), 2)  # last usage out before exit
        for task in (self._writer, self._renewer):
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
