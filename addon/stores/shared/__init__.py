"""State that outlives a request: where it is kept, and whether other gateway instances share it.

One option (`state`) picks the backend:
  * empty (default): this process only; account records and OAuth tokens persist in the local
    state file (addon/pool/state.py), Responses and other bounded data live in memory;
  * `redis://host:port/db` (or `rediss://`, `unix://`): every instance pointed at the same Redis
    shares cooldowns, disabled flags, usage counters, refreshed OAuth tokens (one refresh at a
    time across instances), the Responses behind `previous_response_id`, and any bounded
    key-value data a feature keeps (`SharedState.kv`).

Each kind of state has a small interface below, implemented in shared/local.py and
shared/redis_state.py. Hot paths never wait on Redis: account records are mirrored in memory
(changes are written and published at once, other instances apply them as they arrive) and
access tokens are cached until they near expiry.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any, Protocol

from ..bounded import BoundedKV
from ..response_store import ResponseStore

Token = tuple[str, float, str]  # access token, expiry (epoch seconds), fingerprint of the refresh token


class RecordSource(Protocol):
    """What an AccountRecords backend reads from and writes to (the account pool)."""

    def record(self, key: str) -> dict[str, Any] | None: ...  # one key's record

    def snapshot(self) -> dict[str, dict[str, Any]]: ...  # every key's full record (for the file)

    def apply(self, key: str, record: dict[str, Any]) -> None: ...  # fields changed elsewhere


class AccountRecords(Protocol):
    """Per-key account records (cooldown, failures, disabled reason, last status, credential
    fingerprint, and whatever else the pool keeps per key) plus additive usage counters."""

    def attach(self, pool: RecordSource) -> dict[str, dict[str, Any]]:
        """Bind the pool; returns the records saved so far (key -> record with counters)."""

    def changed(self, key: str, fields: tuple[str, ...]) -> None:
        """These fields of `key`'s record changed here (persist them; tell other instances).
        Field by field, so two instances changing different fields never undo each other."""

    def counted(self, key: str, model: str, delta: dict[str, int]) -> None:
        """Add to the usage counters of `key` for `model` (`requests` counts toward the key's total)."""


class TokenStore(Protocol):
    """Cache of OAuth access tokens per account, and the lock held while one is refreshed."""

    def load(self) -> dict[str, Token]: ...

    async def get(self, name: str) -> Token | None: ...

    async def put(self, name: str, token: Token) -> None: ...

    async def forget(self, name: str, access_token: str) -> None:
        """Drop the token of `name` if it is still `access_token` (a refused token)."""

    def lock(self, name: str) -> AbstractAsyncContextManager[None]:
        """Held while refreshing `name`'s token: one refresh at a time (across instances with Redis)."""


class SharedState(Protocol):
    accounts: AccountRecords
    tokens: TokenStore
    responses: ResponseStore
    state_file: Any  # the local StateStore, or None when Redis holds the state

    def kv(self, namespace: str, *, max_items: int, ttl: float) -> BoundedKV: ...

    def secret(self, name: str, make: Callable[[], str]) -> str:
        """A secret every instance of this deployment holds (e.g. the key that seals reasoning
        state): made once by `make`, kept with the state, the same after a restart. At start-up."""

    async def start(self) -> None: ...  # inside the running event loop

    async def aclose(self) -> None: ...

    def describe(self) -> str: ...  # where the state lives, for the log (no password)


REDIS_SCHEMES = ("redis://", "rediss://", "unix://")


def open_state(url: str, state_path: str | Path) -> SharedState:
    """The backend for the `state` option. Raises ValueError for an unusable value (and when
    Redis cannot be reached: better to refuse to start than to silently not share)."""
    if not url:
        from .local import LocalState

        return LocalState(state_path)
    if url.startswith(REDIS_SCHEMES):
        from .redis_state import RedisState

        return RedisState(url)
    raise ValueError(f"state must be empty (local file) or a redis:// URL, not {url.split('://')[0]!r}")


__all__ = ["AccountRecords", "BoundedKV", "RecordSource", "SharedState", "Token", "TokenStore", "open_state"]
