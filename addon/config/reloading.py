"""A YAML file that reloads itself when it changes, checked at most once per interval.

Requests never read config: they call `current()`, which costs a clock read and, at most
once a second, one stat(). A file that fails to parse keeps the last good value and logs why,
once per edit (not at every look).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Generic, TypeVar

import yaml

T = TypeVar("T")
log = logging.getLogger(__name__)


def one_line(exc: BaseException) -> str:
    """Why a configuration file cannot be used, on one line: YAML's position and problem, the
    OS's reason, or the schema's message (which names the entry)."""
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem_mark is not None:
        mark = exc.problem_mark
        where = f" ({exc.context})" if exc.context else ""
        return f"line {mark.line + 1}, column {mark.column + 1}: {exc.problem}{where}"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return " ".join(str(exc).split()) or type(exc).__name__


class ReloadingFile(Generic[T]):
    def __init__(self, path: str | Path, parse: Callable[[Any], T], *, interval: float = 1.0) -> None:
        self.path = Path(path)
        self._parse = parse
        self._interval = interval
        self._stamp: tuple[int, int] | None = None
        self._bad_stamp: tuple[int, int] | None = None  # the broken version already warned about
        self._checked = 0.0
        self._value: T = self._load()  # first load raises: a broken file at startup is an error

    def _read_stamp(self) -> tuple[int, int]:
        st = os.stat(self.path)
        return st.st_mtime_ns, st.st_size

    def _load(self, *, reload: bool = False) -> T:
        stamp = self._read_stamp()
        with open(self.path, encoding="utf-8") as f:
            data = yaml.safe_load(f)
        if reload and data is None:
            # An editor truncates before it writes: an empty file is most likely half-saved.
            raise ValueError("the file is empty (half-written?); will look again")
        value = self._parse(data)
        self._stamp = stamp
        return value

    def current(self) -> T:
        now = time.monotonic()
        if now - self._checked >= self._interval:
            self._checked = now
            stamp = None
            try:
                stamp = self._read_stamp()
                if stamp != self._stamp and stamp != self._bad_stamp:
                    self._value = self._load(reload=True)
                    log.info("reloaded %s", self.path)
            except Exception as exc:  # keep serving with the last good version
                if stamp is None or stamp != self._bad_stamp:
                    log.warning("keeping the previous %s: %s", self.path.name, one_line(exc))
                self._bad_stamp = stamp
        return self._value
