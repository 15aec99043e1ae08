"""What each account's upstream serves: its model list, fetched at start and refreshed in the
background (hourly), never on a request's path; and the models an upstream answered 404 for,
remembered as absent on that account for a while.

The pool asks `may_serve(account, model)` (AccountPool.model_filter): a target missing from an
account's list is skipped on that account without a request -- when another account lists it; when
none does, every account is asked anyway (a list may be stale; the upstream's answer decides), and
a fallback chain moves on to its next target instead (addon/pool/fallback.py).

Lists come from providers that can list: the Gemini API's `models.list` (the models that generate
or embed), an OpenAI-compatible upstream's `GET /models`. Vertex AI's and Cloud Code's accounts are
not listed (their model catalogues are not per account), so their list is unknown and never filters.
A name Google re-routes to a listed successor counts as served (Google answers it).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from ..backends.gemini.lifecycle import rerouted_to
from ..protocol.errors import UpstreamError
from .accounts_file import Account

log = logging.getLogger(__name__)

REFRESH_SECONDS = 3600.0  # how often the lists are fetched again
ABSENT_SECONDS = 900.0  # a model an upstream answered 404 for is not asked there again for this long
MAX_ABSENT = 4096  # remembered (account, model) pairs: model names may be the client's
LISTABLE = frozenset({"gemini", "openai"})  # providers whose accounts have a model list of their own


class ModelLists:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._listed: dict[str, frozenset[str]] = {}  # account name -> what its upstream lists
        self._absent: dict[tuple[str, str], float] = {}  # (account, model) -> until
        self.version = 0  # bumped when a list changes (caches of "what is servable" follow it)

    def may_serve(self, acc: Account, model: str) -> bool:
        until = self._absent.get((acc.name, model))
        if until is not None:
            if until > self._clock():
                return False
            del self._absent[(acc.name, model)]
        listed = self._listed.get(acc.name)
        if listed is None:
            return True
        successor = rerouted_to(model)
        return model in listed or (successor is not None and successor in listed)

    def listed(self, acc_name: str) -> frozenset[str] | None:
        return self._listed.get(acc_name)

    def all_listed(self) -> list[str]:
        return sorted({m for names in self._listed.values() for m in names})

    def absent(self, acc_name: str, model: str) -> None:
        """The upstream said `model` does not exist on this account: do not ask it there for a while."""
        if len(self._absent) >= MAX_ABSENT:
            now = self._clock()
            self._absent = {k: v for k, v in self._absent.items() if v > now}
            if len(self._absent) >= MAX_ABSENT:
                self._absent.clear()
        self._absent[(acc_name, model)] = self._clock() + ABSENT_SECONDS

    def record(self, acc_name: str, names: Iterable[str]) -> None:
        names = frozenset(names)
        if self._listed.get(acc_name) != names:
            self._listed[acc_name] = names
            self.version += 1

    async def refresh(self, accounts: Iterable[Account], providers: Mapping[str, Any],
                      redact: Callable[[str], str] = str) -> dict[str, frozenset[str]]:
        """Fetch every listable account's models (one after another: a few requests an hour).
        An account that cannot be asked keeps its last list; returns what was fetched."""
        fetched: dict[str, frozenset[str]] = {}
        for acc in accounts:
            lister = getattr(providers.get(acc.provider), "list_models", None)
            if lister is None or acc.disabled or acc.provider not in LISTABLE:
                continue
            try:
                names = frozenset(await lister(acc))
            except (UpstreamError, ValueError, TypeError, AttributeError) as exc:
                log.warning("could not list the models of %s: %s", acc.name,
                            redact(getattr(exc, "message", type(exc).__name__)))
                continue
            self.record(acc.name, names)
            fetched[acc.name] = names
        return fetched
