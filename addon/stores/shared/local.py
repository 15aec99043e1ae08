"""The embedded default: state for this process only, account records and tokens persisted in
the local state file (addon/pool/state.py), Responses and other bounded data in memory."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..bounded import BoundedMap
from ..response_store import MemoryResponseStore
from ...pool.state import StateStore
from . import RecordSource, Token

log = logging.getLogger(__name__)


class FileAccountRecords:
    """The pool's records in the state file's `accounts` section (the file is rewritten a second
    after a change, in a worker thread)."""

    def __init__(self, file: StateStore) -> None:
        self.file = file
        self._pool: RecordSource | None = None

    def attach(self, pool: RecordSource) -> dict[str, dict[str, Any]]:
        self._pool = pool
        self.file.add_source(self._collect)
        saved = self.file.load().get("accounts")
        return saved if isinstance(saved, dict) else {}

    def _collect(self, doc: dict[str, Any]) -> None:
        if self._pool is not None:
            doc["accounts"] = self._pool.snapshot()

    def changed(self, key: str, fields: tuple[str, ...]) -> None:
        self.file.mark_dirty()

    def counted(self, key: str, model: str, delta: dict[str, int]) -> None:
        self.file.mark_dirty()  # the pool has already added it to its records


class FileTokenStore:
    """Access tokens in the state file's `tokens` section; the refresh lock is the token manager's
    own per-account lock (one process)."""

    def __init__(self, file: StateStore) -> None:
        self.file = file
        self._tokens: dict[str, Token] = {}
        saved = file.load().get("tokens")
        for name, tok in (saved.items() if isinstance(saved, dict) else ()):
            if (isinstance(tok, dict) and isinstance(tok.get("access_token"), str)
                    and isinstance(tok.get("expires_at"), (int, float)) and isinstance(tok.get("owner"), str)):
                self._tokens[name] = (tok["access_token"], float(tok["expires_at"]), tok["owner"])
        file.add_source(self._collect)

    def _collect(self, doc: dict[str, Any]) -> None:
        doc["tokens"] = {name: {"access_token": tok, "expires_at": exp, "owner": owner}
                         for name, (tok, exp, owner) in self._tokens.items()}

    def load(self) -> dict[str, Token]:
        return dict(self._tokens)

    async def get(self, name: str) -> Token | None:
        return self._tokens.get(name)

    async def put(self, name: str, token: Token) -> None:
        self._tokens[name] = token
        self.file.mark_dirty()

    async def forget(self, name: str, access_token: str) -> None:
        tok = self._tokens.get(name)
        if tok is not None and tok[0] == access_token:
            del self._tokens[name]
            self.file.mark_dirty()

    def lock(self, name: str) -> contextlib.AbstractAsyncContextManager[None]:
        return contextlib.nullcontext()


class MemoryKV:
    def __init__(self, max_items: int, ttl: float) -> None:
        self._map: BoundedMap[bytes] = BoundedMap(max_items, ttl)

    async def get(self, key: str) -> bytes | None:
        return self._map.get(key)

    async def put(self, key: str, value: bytes) -> None:
        self._map.put(key, value)

    async def delete(self, key: str) -> bool:
        return self._map.delete(key)


class LocalState:
    def __init__(self, state_path: str | Path) -> None:
        self.state_file = StateStore(state_path)
        self.accounts = FileAccountRecords(self.state_file)
        self.tokens = FileTokenStore(self.state_file)
        self.responses = MemoryResponseStore()
        self._secrets: dict[str, str] | None = None  # the file's `secrets` section, once asked for

    def kv(self, namespace: str, *, max_items: int, ttl: float) -> MemoryKV:
        return MemoryKV(max_items, ttl)

    def secret(self, name: str, make: Callable[[], str]) -> str:
        """In the state file's `secrets` section; a new one is written at once (it must outlive a
        crash, not only a clean shutdown). If the file cannot be written it lives in memory only."""
        if self._secrets is None:
            saved = self.state_file.load().get("secrets")
            self._secrets = {k: v for k, v in saved.items() if isinstance(v, str)} if isinstance(saved, dict) else {}
            self.state_file.add_source(self._collect_secrets)
        value = self._secrets.get(name)
        if value is None:
            value = self._secrets[name] = make()
            try:
                self.state_file.flush()
            except OSError as exc:
                log.warning("could not save a new %s to %s (%s): it lasts until this gateway stops",
                            name, self.state_file.path, type(exc).__name__)
        return value

    def _collect_secrets(self, doc: dict[str, Any]) -> None:
        if self._secrets:
            doc["secrets"] = dict(self._secrets)

    async def start(self) -> None:
        pass

    async def aclose(self) -> None:
        self.state_file.close()

    def describe(self) -> str:
        return f"state file {self.state_file.path}"
