"""Crash-safe JSON state file (cooldowns, disabled flags, tokens, usage counters).

Writes go to a temporary file in the same directory, are fsynced, then renamed over the
old file: a crash leaves either the old or the new version, never a torn one. Changes are
coalesced: `mark_dirty()` schedules one write a second later (the document is collected on the
event loop, the file written in a worker thread so a slow disk never stalls requests), and
`close()` writes what is left at shutdown.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

FLUSH_DELAY = 1.0  # seconds: many changes, one write


class StateStore:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._dirty = False
        self._scheduled: asyncio.TimerHandle | None = None
        self._writing: asyncio.Future | None = None
        self._collect: list[Callable[[dict[str, Any]], None]] = []
        self._last_error: str | None = None  # a failing disk is reported once, not every second

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
        if self._scheduled is None and self._writing is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                return  # no loop (tools, tests): the owner flushes
            self._scheduled = loop.call_later(FLUSH_DELAY, self._flush_in_background)

    def flush_if_dirty(self) -> None:
        if self._dirty:
            self.flush()

    def flush(self) -> None:
        """Write now, on the calling thread."""
        self._write(self._document())

    def close(self) -> None:
        if self._scheduled is not None:
            self._scheduled.cancel()
            self._scheduled = None
        try:
            self.flush_if_dirty()
        except OSError as exc:
            log.warning("could not save gateway state: %s", exc)

    def _document(self) -> bytes:
        self._dirty = False
        doc: dict[str, Any] = {"version": 1}
        for collect in self._collect:
            collect(doc)
        # allow_nan=False: Infinity/NaN are not JSON; a value like that is a bug to hear about, not to persist
        return json.dumps(doc, indent=1, sort_keys=True, allow_nan=False).encode()

    def _flush_in_background(self) -> None:
        self._scheduled = None
        if not self._dirty:
            return
        try:
            data = self._document()
        except ValueError as exc:
            self._report(exc)
            return
        self._writing = asyncio.get_running_loop().run_in_executor(None, self._write, data)
        self._writing.add_done_callback(self._written)

    def _written(self, fut: asyncio.Future) -> None:
        self._writing = None
        if not fut.cancelled() and fut.exception() is not None:
            self._report(fut.exception())
        else:
            self._last_error = None
        if self._dirty:  # changed meanwhile (or the write failed): once more, a second later
            self.mark_dirty()

    def _report(self, exc: BaseException | None) -> None:
        text = f"{type(exc).__name__}: {exc}"
        if text != self._last_error:
            log.warning("could not save gateway state to %s: %s", self.path, text)
            self._last_error = text

    def _write(self, data: bytes) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=self.path.name + ".", suffix=".tmp", dir=self.path.parent)
        except OSError:
            self._dirty = True
            raise
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
