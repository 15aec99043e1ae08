"""At start, once and in the background: are the mapping's targets models the upstream serves?

A mapping target the upstream does not know fails every request mapped to it with a 404 (a name
from another tool, such as Antigravity's `gemini-3-pro-high`, or a model Google has shut down) or
is answered by another model (a name Google re-routes). Each listable account's model list (the
Gemini API's `GET /v1beta/models`, paged; an OpenAI-compatible `GET /models`: see model_lists.py)
is compared with the targets the account would serve; one warning per account names the missing
ones, what Google does with each retired one, and the fallback chains' next targets. It never
blocks or fails the start: an upstream that cannot be asked is reported and skipped.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from ..backends.gemini.lifecycle import advice
from ..config.mapping import ModelMap
from ..protocol.errors import UpstreamError
from .accounts_file import Account
from .model_lists import ModelLists

log = logging.getLogger(__name__)


def next_targets(mappings: ModelMap, target: str) -> list[str]:
    """The targets fallback chains move on to after `target`."""
    chains = [*mappings.exact.values(), *(w.chain for w in mappings.wildcards), mappings.default_chain]
    found = [chain[i + 1].model for chain in chains for i, t in enumerate(chain[:-1]) if t.model == target]
    return list(dict.fromkeys(m for m in found if m))


def warn_unserved(mappings: ModelMap, accounts: Iterable[Account], lists: ModelLists) -> dict[str, list[str]]:
    """Account name -> the mapping targets it would be asked for but does not list; logs a warning
    per account. Accounts without a known list are left out."""
    targets = mappings.targets()
    found: dict[str, list[str]] = {}
    for acc in accounts:
        listed = lists.listed(acc.name)
        if listed is None or acc.disabled:
            continue
        missing = [t for t in targets if acc.serves(t) and t not in listed]
        if not missing:
            continue
        found[acc.name] = missing
        named = []
        for t in missing:
            notes = [n for n in (advice(t),) if n]
            then = next_targets(mappings, t)
            if then:
                notes.append("fallback chains move on to " + ", ".join(then))
            named.append(t + (f" ({'; '.join(notes)})" if notes else ""))
        log.warning("account %s: the upstream does not serve mapping target(s) %s (not in its model list); requests "
                    "mapped there will fail or be answered by another model. Fix the target in the mappings file.",
                    acc.name, ", ".join(named))
    return found


async def unserved_targets(mappings: ModelMap, accounts: Iterable[Account], providers: Mapping[str, Any],
                           page_size: int | None = None,
                           redact: Callable[[str], str] = str) -> dict[str, list[str]]:
    """The listable accounts' lists fetched here and compared (see warn_unserved)."""
    lists = ModelLists()
    listable = [a for a in accounts if not a.disabled and callable(getattr(providers.get(a.provider), "list_models",
                                                                           None))]
    for acc in listable:
        if not any(acc.serves(t) for t in mappings.targets()):
            continue
        lister = providers[acc.provider].list_models
        try:
            served = await (lister(acc) if page_size is None else lister(acc, page_size))
        except (UpstreamError, ValueError, TypeError, AttributeError) as exc:
            log.warning("could not list the models of %s to check the mapping targets: %s", acc.name,
                        redact(getattr(exc, "message", type(exc).__name__)))
            continue
        lists.record(acc.name, served)
    return warn_unserved(mappings, listable, lists)
