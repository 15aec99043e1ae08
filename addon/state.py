"""Crash-safe JSON state file (cooldowns, disabled flags, tokens, usage counters).

Writes go to a temporary file in the same directory, are fsynced, then renamed over the
old file: a crash leaves either the old or the new version, never a torn one. Writes are
coalesced by the owner calling `flush_if_dirty()` periodically, not once per request.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


class StateStore:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._dirty = False
        self._collect: list[Callable[[dict[str, Any]], None]] = []

    def load(self) -> dict[str, Any]:
        try:
            with open(self.path, encoding="utf-8") as f:
                data = json.load(f)
            return data if isinstance(data, dict) else {}
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            log.warning("ignoring unreadable state file %s: %s", self.path, exc)
            return {}

    def add_source(self, collect: Callable[[dict[str, Any]], None]) -> None:
        """`collect(doc)` fills its part of the document at write time."""
        self._collect.append(collect)

    def mark_dirty(self) -> None:
        self._dirty = True

    def flush_if_dirty(self) -> None:
        if self._dirty:
            self.flush()

    def flush(self) -> None:
        self._dirty = False
        doc: dict[str, Any] = {"version": 1}
        for collect in self._collect:
            collect(doc)
        data = json.dumps(doc, indent=1, sort_keys=True).encode()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=self.path.name + ".", suffix=".tmp", dir=self.path.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, 0o600)  # it may hold OAuth access tokens
            os.replace(tmp, self.path)
        except BaseException:
            self._dirty = True  # try again at the next flush
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise
