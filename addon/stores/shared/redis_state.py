"""State shared by every gateway instance that points at one Redis (`state=redis://host:port/db`).

Keys (all under `oaigw:`):
  account:<key>        hash: field of the account record (cooldown_until, failures, disabled_reason,
                       ...) -> JSON value; written field by field, so instances changing
                       different fields never undo each other
  usage:<key>          hash: `requests` and `<model>\\x1f<counter>` -> integer, incremented
  events               pub/sub channel: {"from": instance id, "key", "record": changed fields}
  tokens               hash: account -> JSON [access token, expiry, refresh-token fingerprint]
  secret:<name>        a secret all instances share (the seal key), made by the first one (SET NX)
  token-lock:<name>    held (SET NX with expiry) by the one instance refreshing that token
  kv:<ns>:<key>        bounded key-value data (stored Responses, ...), with expiry; kv:<ns> is
                       the sorted set (by last use) that bounds how many are kept

The account pool never waits on Redis: each instance mirrors the records in memory, writes a
change (and publishes it) at once in a background task, and applies other instances' changes as
they arrive (after a reconnect it reads them all again). Redis holds OAuth access tokens, like
the state file does: keep it private (bind it to loopback or a private network, set a password).
If Redis becomes unreachable the gateway keeps serving from its mirror and token cache, logs a
warning, and retries; only stored Responses are unavailable meanwhile (503).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import redis
import redis.asyncio as aioredis

from ...protocol.errors import GatewayError
from ..response_store import KVResponseStore
from . import RecordSource, Token

log = logging.getLogger(__name__)

PREFIX = "oaigw:"
RECORDS = PREFIX + "account:"
USAGE = PREFIX + "usage:"
EVENTS = PREFIX + "events"
TOKENS = PREFIX + "tokens"
TOKEN_LOCK = PREFIX + "token-lock:"
SECRET = PREFIX + "secret:"
KV = PREFIX + "kv:"
SEP = "\x1f"  # between model and counter name in a usage field

TOKEN_LOCK_TTL = 30.0  # a crashed holder blocks the others at most this long
RESPONSES_MAX, RESPONSES_TTL = 10_000, 3600.0
RETRY = 1.0  # seconds before writing again after a failure

# Delete `id` only if it still holds the value this instance wrote (a lock, a refused token).
_RELEASE = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"
_FORGET = ("local v = redis.call('HGET', KEYS[1], ARGV[1]) "
           "if v and cjson.decode(v)[1] == ARGV[2] then return redis.call('HDEL', KEYS[1], ARGV[1]) end return 0")
# Store, index by time of use (µs), drop what expired from the index, then the least recently used over the bound.
_PUT = """
redis.call('SET', ARGV[1] .. ARGV[2], ARGV[3], 'PX', ARGV[4])
redis.call('ZADD', KEYS[1], ARGV[5], ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', tonumber(ARGV[5]) - 1000 * tonumber(ARGV[4]))
local over = redis.call('ZCARD', KEYS[1]) - tonumber(ARGV[6])
if over > 0 then
  local old = redis.call('ZPOPMIN', KEYS[1], over)
  for i = 1, #old, 2 do redis.call('DEL', ARGV[1] .. old[i]) end
end
return 1
"""


def _redacted(url: str) -> str:
    parts = urlsplit(url)
    if parts.password:
        host = parts.netloc.rsplit("@", 1)[1]
        parts = parts._replace(netloc=f"{parts.username or ''}:***@{host}")
    return urlunsplit(parts)


def _unavailable(exc: Exception) -> GatewayError:
    return GatewayError(503, f"The gateway's shared state (Redis) is unreachable ({type(exc).__name__}); "
                             "try again shortly.", code="state_unavailable")


class RedisState:
    def __init__(self, url: str) -> None:
        self.url = url
        self.id = secrets.token_hex(6)  # this instance, to skip its own published changes
        self.state_file = None
        self._client: aioredis.Redis | None = None
        # Read once, synchronously, at start-up: a gateway that cannot reach its Redis refuses to start
        # (silently not sharing would let instances cool and refresh independently).
        try:
            sync = redis.Redis.from_url(url, socket_connect_timeout=5, socket_timeout=5)
            try:
                initial = _load_records(sync)
            finally:
                sync.close()
        except (redis.RedisError, OSError, ValueError) as exc:
            raise ValueError(f"cannot use the state store {_redacted(url)}: {exc}") from None
        self.accounts = RedisAccountRecords(self, initial)
        self.tokens = RedisTokenStore(self)
        self.responses = KVResponseStore(self.kv("responses", max_items=RESPONSES_MAX, ttl=RESPONSES_TTL))

    @property
    def client(self) -> aioredis.Redis:
        # Created on first use inside the running loop; one connection pool for everything but pub/sub.
        if self._client is None:
            self._client = aioredis.Redis.from_url(self.url, socket_connect_timeout=5, socket_timeout=5,
                                                   health_check_interval=30)
        return self._client

    def kv(self, namespace: str, *, max_items: int, ttl: float) -> RedisKV:
        return RedisKV(self, namespace, max_items, ttl)

    def secret(self, name: str, make: Callable[[], str]) -> str:
        """At start-up (synchronous, like the first read of the records): the first instance's
        value wins (SET NX), every other one reads it."""
        try:
            sync = redis.Redis.from_url(self.url, socket_connect_timeout=5, socket_timeout=5)
            try:
                sync.set(SECRET + name, make(), nx=True)
                value = sync.get(SECRET + name)
            finally:
                sync.close()
        except (redis.RedisError, OSError) as exc:
            raise ValueError(f"cannot use the state store {_redacted(self.url)}: {exc}") from None
        if value is None:
            raise ValueError(f"the state store {_redacted(self.url)} lost the {name} just written")
        return value.decode()

    async def start(self) -> None:
        self.accounts.start()

    async def aclose(self) -> None:
        await self.accounts.stop()
        if self._client is not None:
            await self._client.aclose()

    def describe(self) -> str:
        return f"shared in {_redacted(self.url)}"


def _load_records(r: redis.Redis) -> dict[str, dict[str, Any]]:
    """Every account record with its usage counters, as the pool's state file section holds them."""
    out: dict[str, dict[str, Any]] = {}
    for record_key in r.scan_iter(match=RECORDS + "*", count=500):
        out[record_key.decode()[len(RECORDS):]] = _record(r.hgetall(record_key))
    for usage_key in r.scan_iter(match=USAGE + "*", count=500):
        name = usage_key.decode()[len(USAGE):]
        rec = out.setdefault(name, {})
        rec.update(_counters(r.hgetall(usage_key)))
    return out


def _record(fields: dict[bytes, bytes]) -> dict[str, Any]:
    out = {}
    for field, raw in fields.items():
        with contextlib.suppress(ValueError):
            out[field.decode()] = json.loads(raw)
    return out


def _counters(fields: dict[bytes, bytes]) -> dict[str, Any]:
    """usage hash fields -> {"requests": n, "usage": {model: {counter: n}}}."""
    rec: dict[str, Any] = {"usage": {}}
    for field, value in fields.items():
        model, _, counter = field.decode().partition(SEP)
        if not counter:
            rec[model] = int(value)  # the key's total: "requests"
        else:
            rec["usage"].setdefault(model, {})[counter] = int(value)
    return rec


class RedisAccountRecords:
    def __init__(self, state: RedisState, initial: dict[str, dict[str, Any]]) -> None:
        self.state = state
        self._initial = initial
        self._pool: RecordSource | None = None
        self._fields: dict[str, set[str]] = {}  # changed record fields not written yet
        self._deltas: dict[tuple[str, str], Counter[str]] = {}  # usage increments not written yet
        self._writer: asyncio.Task | None = None
        self._follower: asyncio.Task | None = None
        self._warned = 0.0

    def attach(self, pool: RecordSource) -> dict[str, dict[str, Any]]:
        self._pool = pool
        return self._initial

    def changed(self, key: str, fields: tuple[str, ...]) -> None:
        self._fields.setdefault(key, set()).update(fields)
        self._kick()

    def counted(self, key: str, model: str, delta: dict[str, int]) -> None:
        self._deltas.setdefault((key, model), Counter()).update(delta)
        self._kick()

    # ---- writing ----------------------------------------------------------------------------
    def _kick(self) -> None:
        if self._writer is None or self._writer.done():
            try:
                self._writer = asyncio.get_running_loop().create_task(self._write())
            except RuntimeError:
                pass  # no loop yet (start-up): start() writes what is pending

    async def _write(self) -> None:
        # Everything changed while the previous batch was in flight goes in one pipeline.
        while (self._fields or self._deltas) and self._pool is not None:
            changed, self._fields = self._fields, {}
            deltas, self._deltas = self._deltas, {}
            try:
                totals = await self._send(changed, deltas)
            except (redis.RedisError, OSError) as exc:
                for key, fields in changed.items():
                    self._fields.setdefault(key, set()).update(fields)
                for k, d in deltas.items():
                    self._deltas.setdefault(k, Counter()).update(d)
                self._warn(f"could not write account state to Redis ({exc}); retrying")
                await asyncio.sleep(RETRY)
                continue
            for key, rec in totals.items():
                self._pool.apply(key, rec)

    async def _send(self, changed: dict[str, set[str]],
                    deltas: dict[tuple[str, str], Counter[str]]) -> dict[str, dict[str, Any]]:
        assert self._pool is not None
        pipe = self.state.client.pipeline(transaction=False)
        for key, fields in changed.items():
            full = self._pool.record(key) or {}
            rec = {f: full[f] for f in fields if f in full}
            if rec:
                pipe.hset(RECORDS + key, mapping={f: json.dumps(v) for f, v in rec.items()})
                pipe.publish(EVENTS, json.dumps({"from": self.state.id, "key": key, "record": rec}))
        fields: list[tuple[str, str]] = []
        for (key, model), delta in deltas.items():
            requests = delta.get("requests", 0)
            for counter in ("requests", "input_tokens", "output_tokens"):
                pipe.hincrby(USAGE + key, f"{model}{SEP}{counter}", delta.get(counter, 0))
                fields.append((key, f"{model}{SEP}{counter}"))
            pipe.hincrby(USAGE + key, "requests", requests)
            fields.append((key, "requests"))
        results = await pipe.execute()
        # The increments answer with the shared totals: the mirror shows every instance's usage.
        per_key: dict[str, dict[bytes, bytes]] = {}
        for (key, field), total in zip(fields, results[len(results) - len(fields):]):
            per_key.setdefault(key, {})[field.encode()] = str(total).encode()
        return {key: _counters(f) for key, f in per_key.items()}

    def _warn(self, message: str) -> None:
        if time.monotonic() - self._warned > 30:  # once in a while, not per request
            self._warned = time.monotonic()
            log.warning(message)

    # ---- following the other instances ------------------------------------------------------
    def start(self) -> None:
        if self._follower is None:
            self._follower = asyncio.get_running_loop().create_task(self._follow())
        self._kick()

    async def stop(self) -> None:
        for task in (self._follower, self._writer):
            if task is not None and not task.done():
                if task is self._writer:
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(asyncio.shield(task), 2)  # last changes out before exit
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task

    async def _follow(self) -> None:
        while True:
            pubsub = self.state.client.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(EVENTS)
                await self._resync()  # whatever changed before (re)subscribing
                async for msg in pubsub.listen():
                    self._receive(msg.get("data"))
            except asyncio.CancelledError:
                raise
            except (redis.RedisError, OSError) as exc:
                self._warn(f"lost the Redis subscription ({exc}); reconnecting")
                await asyncio.sleep(RETRY)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()

    def _receive(self, data: Any) -> None:
        try:
            event = json.loads(data)
            if event["from"] != self.state.id and self._pool is not None and isinstance(event["record"], dict):
                self._pool.apply(str(event["key"]), event["record"])
        except (ValueError, KeyError, TypeError):
            log.debug("ignored a malformed state event")

    async def _resync(self) -> None:
        client = self.state.client
        async for record_key in client.scan_iter(match=RECORDS + "*", count=500):
            rec = _record(await client.hgetall(record_key))
            if self._pool is not None and rec:
                self._pool.apply(record_key.decode()[len(RECORDS):], rec)


class RedisTokenStore:
    """Access tokens in one hash; a refresh holds `token-lock:<name>` (SET NX PX) so one instance
    refreshes at a time while the others wait for its token. Redis trouble never blocks a
    request: the token manager then refreshes on its own."""

    def __init__(self, state: RedisState) -> None:
        self.state = state

    def load(self) -> dict[str, Token]:
        return {}  # read on demand

    async def get(self, name: str) -> Token | None:
        try:
            raw = await self.state.client.hget(TOKENS, name)
        except (redis.RedisError, OSError) as exc:
            log.warning("could not read a shared OAuth token from Redis: %s", exc)
            return None
        try:
            tok, expiry, owner = json.loads(raw) if raw else (None, None, None)
        except (ValueError, TypeError):
            return None
        return (tok, float(expiry), owner) if isinstance(tok, str) and isinstance(owner, str) else None

    async def put(self, name: str, token: Token) -> None:
        try:
            await self.state.client.hset(TOKENS, name, json.dumps(list(token)))
        except (redis.RedisError, OSError) as exc:
            log.warning("could not share a refreshed OAuth token through Redis: %s", exc)

    async def forget(self, name: str, access_token: str) -> None:
        try:
            await self.state.client.eval(_FORGET, 1, TOKENS, name, access_token)
        except (redis.RedisError, OSError) as exc:
            log.warning("could not drop a refused OAuth token from Redis: %s", exc)

    @contextlib.asynccontextmanager
    async def lock(self, name: str) -> AsyncIterator[None]:
        key, me = TOKEN_LOCK + name, secrets.token_hex(8)
        client = self.state.client
        held = False
        deadline = time.monotonic() + TOKEN_LOCK_TTL
        try:
            while not (held := bool(await client.set(key, me, nx=True, px=int(TOKEN_LOCK_TTL * 1000)))):
                if time.monotonic() > deadline:
                    log.warning("the token refresh lock of %s stayed taken; refreshing without it", name)
                    break
                await asyncio.sleep(0.05)  # the holder is refreshing; the caller then re-reads its token
        except (redis.RedisError, OSError) as exc:
            log.warning("Redis unreachable for the token refresh lock of %s (%s); refreshing without it", name, exc)
        try:
            yield
        finally:
            if held:
                with contextlib.suppress(redis.RedisError, OSError):
                    await client.eval(_RELEASE, 1, key, me)


def _now_us() -> int:
    return int(time.time() * 1_000_000)


class RedisKV:
    def __init__(self, state: RedisState, namespace: str, max_items: int, ttl: float) -> None:
        self.state = state
        self.index = f"{KV}{namespace}"
        self.prefix = f"{KV}{namespace}:"
        self.max_items = max_items
        self.ttl_ms = int(ttl * 1000)

    async def get(self, key: str) -> bytes | None:
        try:
            pipe = self.state.client.pipeline(transaction=False)
            pipe.get(self.prefix + key)
            pipe.zadd(self.index, {key: _now_us()}, xx=True)  # recently used: trimmed last
            value, _ = await pipe.execute()
        except (redis.RedisError, OSError) as exc:
            raise _unavailable(exc) from None
        return value

    async def put(self, key: str, value: bytes) -> None:
        try:
            await self.state.client.eval(_PUT, 1, self.index, self.prefix, key, value, self.ttl_ms,
                                         _now_us(), self.max_items)
        except (redis.RedisError, OSError) as exc:
            raise _unavailable(exc) from None

    async def delete(self, key: str) -> bool:
        try:
            pipe = self.state.client.pipeline(transaction=False)
            pipe.delete(self.prefix + key)
            pipe.zrem(self.index, key)
            deleted, _ = await pipe.execute()
        except (redis.RedisError, OSError) as exc:
            raise _unavailable(exc) from None
        return bool(deleted)
